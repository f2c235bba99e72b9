"""Opaque page tokens for keyset paging: base64url of a small JSON object."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from gyre_registry.domain.errors import InvalidArgument

MAX_TOKEN_CHARS = 1024
"""Longest page token accepted: the ones :func:`encode_token` makes are a few dozen characters, and a
bound keeps a hostile one from costing more than that to refuse."""


def encode_token(position: dict[str, Any]) -> str:
    """A page token pointing after ``position`` (e.g. ``{"v": 7}``)."""
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, keys: tuple[str, ...], field: str = "page_token") -> dict[str, Any] | None:
    """The position in ``token`` (None for an empty token).

    Raises:
        InvalidArgument: the token was not made by :func:`encode_token` with exactly ``keys`` (too
            long, not base64url, not JSON, JSON nested deeper than the parser's recursion limit).
    """
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument(field, "is not a page token returned by this API")
    try:
        padded = token + "=" * (-len(token) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        # ValueError covers bad JSON and non-ASCII input; RecursionError a deeply nested array.
        raise InvalidArgument(field, "is not a page token returned by this API") from None
    if not isinstance(position, dict) or tuple(sorted(position)) != tuple(sorted(keys)):
        raise InvalidArgument(field, "is not a page token returned by this API")
    return position
