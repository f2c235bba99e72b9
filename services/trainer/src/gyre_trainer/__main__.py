"""``python -m gyre_trainer``: run the trainer until SIGTERM."""

from __future__ import annotations

from gyre_common.runner import run_service
from gyre_trainer.bootstrap import bootstrap
from gyre_trainer.service import SPEC


def main() -> None:
    run_service(SPEC, build=bootstrap)


if __name__ == "__main__":
    main()
