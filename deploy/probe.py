#!/usr/bin/env python3
"""Container health probe: exit 0 when ``GET <url>`` answers 2xx within the timeout, 1 otherwise.

Installed in the service images as ``gyre-probe`` (the slim Python image has no curl or wget), and
used by docker-compose healthchecks, e.g. ``gyre-probe http://127.0.0.1:7100/readyz``.
Standard library only, so it works in any image that has Python.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

TIMEOUT_S = 3.0


def probe(url: str, timeout_s: float = TIMEOUT_S) -> bool:
    """Whether ``url`` answers with a 2xx status within ``timeout_s`` seconds."""
    # No proxies: the probe must reach the service in its own container, whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: gyre-probe URL", file=sys.stderr)
        return 2
    return 0 if probe(argv[1]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
