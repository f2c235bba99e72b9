"""Input checks at the registry's edge: names, aliases, digests, sizes. Raise :class:`InvalidArgument`.

The checks of whole request messages (artifact, signature, lineage, evaluation) are in
:mod:`gyre_registry.message_checks`, which knows the protobuf contracts; these know none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gyre_registry.domain.errors import InvalidArgument

MODEL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
ALIAS = re.compile(r"^[a-z0-9_\-]{1,64}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
LATEST = "latest"
"""Reserved alias: the newest version that is not archived."""

MAX_DESCRIPTION_CHARS = 5000
MAX_TAGS = 100
MAX_TAG_KEY_CHARS = 250
MAX_TAG_VALUE_CHARS = 5000
MAX_URI_CHARS = 2048
MAX_LINEAGE_ENTRIES = 1000
"""Most hyperparameters, metrics or feature views one lineage may carry."""
MAX_TENSORS = 10000
"""Most inputs (or outputs) one signature may declare."""
MAX_COMMENT_CHARS = 2000


def model_name(name: str, field: str = "model_name") -> str:
    """``name`` if valid: letters, digits, ``_``, ``-`` and ``.``, 1 to 128 characters."""
    if not MODEL_NAME.match(name):
        shown = name if len(name) <= 140 else name[:140] + "..."
        raise InvalidArgument(
            field, f"invalid model name {shown!r}: use letters, digits, '_', '-' and '.', at most 128 characters"
        )
    if name in (".", ".."):
        raise InvalidArgument(field, f"invalid model name {name!r}")
    return name


def alias(name: str, field: str = "alias", *, allow_latest: bool = False) -> str:
    """``name`` if it is a settable alias (or ``latest`` when ``allow_latest``).

    Aliases are lowercase letters, digits, ``_`` and ``-``, not all digits (that would read as a
    version number), at most 64 characters; ``latest`` is reserved.
    """
    if allow_latest and name == LATEST:
        return name
    if not ALIAS.match(name) or name.isdigit():
        raise InvalidArgument(
            field,
            f"invalid alias {name[:80]!r}: use lowercase letters, digits, '_' and '-', not all digits, "
            "at most 64 characters",
        )
    if name == LATEST:
        raise InvalidArgument(field, "'latest' is reserved: it always means the newest version")
    return name


def version_number(version: int, field: str = "version") -> int:
    """``version`` if it is a version number (1 or more)."""
    if version < 1:
        raise InvalidArgument(field, f"versions are numbered from 1, got {version}")
    return version


def text(value: str, field: str, max_chars: int) -> str:
    """``value`` if it has at most ``max_chars`` characters."""
    if len(value) > max_chars:
        raise InvalidArgument(field, f"at most {max_chars} characters, got {len(value)}")
    return value


def tags(values: Mapping[str, str], field: str = "tags") -> None:
    """Check a tag map: at most 100 tags, keys 1 to 250 characters, values at most 5000."""
    if len(values) > MAX_TAGS:
        raise InvalidArgument(field, f"at most {MAX_TAGS} tags, got {len(values)}")
    for key, value in values.items():
        if not key or len(key) > MAX_TAG_KEY_CHARS:
            raise InvalidArgument(field, f"tag keys need 1 to {MAX_TAG_KEY_CHARS} characters, got {key[:40]!r}")
        if len(value) > MAX_TAG_VALUE_CHARS:
            raise InvalidArgument(f"{field}[{key}]", f"at most {MAX_TAG_VALUE_CHARS} characters")


def sha256_hex(value: str, field: str) -> str:
    """``value`` if it is 64 lowercase hex characters."""
    if not SHA256_HEX.match(value):
        raise InvalidArgument(field, f"must be 64 lowercase hex characters (a SHA-256 digest), got {value[:80]!r}")
    return value


def page_size(size: int, field: str = "page_size") -> int:
    """The page size to use: 1 to 1000, 0 means 100."""
    if size == 0:
        return 100
    if not 1 <= size <= 1000:
        raise InvalidArgument(field, f"must be 1 to 1000 (or 0 for 100), got {size}")
    return size
