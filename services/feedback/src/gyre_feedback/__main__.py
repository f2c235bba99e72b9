"""``python -m gyre_feedback``: run the feedback service until SIGTERM."""

from __future__ import annotations

from gyre_common.runner import run_service
from gyre_feedback.bootstrap import bootstrap
from gyre_feedback.service import SPEC


def main() -> None:
    run_service(SPEC, build=bootstrap)


if __name__ == "__main__":
    main()
