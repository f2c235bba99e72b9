"""``python -m gyre_serving``: run serving until SIGTERM."""

from __future__ import annotations

from gyre_common.runner import run_service
from gyre_serving.bootstrap import bootstrap
from gyre_serving.service import SPEC


def main() -> None:
    run_service(SPEC, build=bootstrap)


if __name__ == "__main__":
    main()
