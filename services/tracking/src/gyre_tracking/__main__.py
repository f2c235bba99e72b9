"""Start the tracking service: ``python -m gyre_tracking``."""

from gyre_common.runner import run_service
from gyre_tracking.bootstrap import bootstrap
from gyre_tracking.service import SPEC


def main() -> None:
    run_service(SPEC, build=bootstrap)


if __name__ == "__main__":
    main()
