"""Run every benchmark in bench/ in turn (``make bench``); ``--quick`` is passed on to each.

Each benchmark is a script that prints its own table with ratios against its peers and exits
non-zero only when it could not run. This runner exits non-zero if any of them did.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument("only", nargs="*", help="benchmark names to run (default: all), e.g. bus_throughput")
    args = parser.parse_args()
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    if args.only:
        scripts = [p for p in scripts if p.stem in args.only]
    failed: list[str] = []
    for script in scripts:
        print(f"=== {script.stem}", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(script), *(["--quick"] if args.quick else [])], check=False)
        print(f"=== {script.stem}: exit {result.returncode} in {time.monotonic() - started:.0f}s\n", flush=True)
        if result.returncode != 0:
            failed.append(script.stem)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
