"""Checking, at registration, that a version's artifact exists and is what its ArtifactRef says."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from gyre_registry.domain.errors import FailedPrecondition
from gyre_registry.domain.models import ArtifactRef

_CHUNK = 1 << 20


class ArtifactVerifier(Protocol):
    """Checks an artifact reference; raises :class:`FailedPrecondition` when it does not hold."""

    async def verify(self, ref: ArtifactRef, field: str) -> None: ...


class NoVerification:
    """Accepts every reference (``GYRE_REGISTRY_VERIFY_ARTIFACTS=false``)."""

    async def verify(self, ref: ArtifactRef, field: str) -> None:
        return None


class FileArtifactVerifier:
    """Reads ``file://`` artifacts and checks their SHA-256 and size; other schemes pass unread.

    The file is hashed in a worker thread in 1 MiB chunks, so a large model neither blocks the
    event loop nor sits in memory.
    """

    async def verify(self, ref: ArtifactRef, field: str) -> None:
        parsed = urlparse(ref.uri)
        if parsed.scheme != "file":
            return
        path = Path(unquote(parsed.path))
        try:
            digest, size = await asyncio.to_thread(_hash_file, path)
        except FileNotFoundError:
            raise FailedPrecondition(f"{field}.uri: no artifact at {ref.uri}") from None
        except OSError as exc:
            raise FailedPrecondition(f"{field}.uri: cannot read {ref.uri}: {exc.strerror or exc}") from None
        if digest != ref.sha256:
            raise FailedPrecondition(
                f"{field}.sha256: the artifact at {ref.uri} has sha256 {digest}, not {ref.sha256}")
        if ref.size_bytes and size != ref.size_bytes:
            raise FailedPrecondition(
                f"{field}.size_bytes: the artifact at {ref.uri} has {size} bytes, not {ref.size_bytes}")


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
