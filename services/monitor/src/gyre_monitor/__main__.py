"""``python -m gyre_monitor``: run the monitor until SIGTERM."""

from __future__ import annotations

from gyre_common.runner import run_service
from gyre_monitor.bootstrap import bootstrap
from gyre_monitor.service import SPEC


def main() -> None:
    run_service(SPEC, build=bootstrap)


if __name__ == "__main__":
    main()
