"""Start the features service: ``python -m gyre_features``."""

from gyre_common.runner import run_service
from gyre_features.bootstrap import bootstrap
from gyre_features.service import SPEC


def main() -> None:
    run_service(SPEC, build=bootstrap)


if __name__ == "__main__":
    main()
