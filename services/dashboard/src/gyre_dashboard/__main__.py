"""``python -m gyre_dashboard``: run the dashboard until SIGTERM."""

from __future__ import annotations

from gyre_common.runner import run_service
from gyre_dashboard.bootstrap import bootstrap
from gyre_dashboard.service import SPEC


def main() -> None:
    run_service(SPEC, build=bootstrap)


if __name__ == "__main__":
    main()
