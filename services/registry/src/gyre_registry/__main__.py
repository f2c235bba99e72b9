"""``python -m gyre_registry``: run the registry until SIGTERM."""

from __future__ import annotations

from gyre_common.runner import run_service
from gyre_registry.bootstrap import bootstrap
from gyre_registry.service import SPEC


def main() -> None:
    run_service(SPEC, build=bootstrap)


if __name__ == "__main__":
    main()
