"""Opaque page tokens for keyset paging: base64url of a small JSON object."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from gyre_registry.domain.errors import InvalidArgument


def encode_token(position: dict[str, Any]) -> str:
    """A page token pointing after ``position`` (e.g. ``{"v": 7}``)."""
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, keys: tuple[str, ...], field: str = "page_token") -> dict[str, Any] | None:
    """The position in ``token`` (None for an empty token).

    Raises:
        InvalidArgument: the token was not made by :func:`encode_token` with exactly ``keys``.
    """
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(field, "is not a page token returned by this API") from None
    if not isinstance(position, dict) or tuple(sorted(position)) != tuple(sorted(keys)):
        raise InvalidArgument(field, "is not a page token returned by this API")
    return position
