"""Random identifiers for hot paths (record ids, request ids)."""

from __future__ import annotations

import os

_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def random_uuid4() -> str:
    """A random (version 4, RFC 9562) UUID in canonical text form.

    Same randomness as ``str(uuid.uuid4())`` (``os.urandom``) at a third of its cost: it is taken
    once per published record and once per inference request without an id.
    """
    x = os.urandom(16).hex()
    return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:]}"
