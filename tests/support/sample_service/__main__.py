"""Entry point: ``python -m tests.support.sample_service``."""

from gyre_common.runner import run_service

from . import SPEC, bootstrap


def main() -> None:
    run_service(SPEC, build=bootstrap)


if __name__ == "__main__":
    main()
