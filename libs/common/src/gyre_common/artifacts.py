"""Content-addressed artifact store: model files and other blobs, addressed by their sha256.

The trainer writes an artifact once and hands its :class:`ArtifactRef` (URI + sha256) to the
registry; serving reads it back through the same store and the digest is verified on every read,
so a corrupted or swapped file is refused instead of served. The default backend is a local
directory (``GYRE_ARTIFACTS_ROOT``), laid out as ``<root>/sha256/<2 hex>/<64 hex>``; because the
address is the content, writing the same bytes twice is a no-op and writers never race.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic_settings import SettingsConfigDict

from gyre_common.settings import GyreSettings


class ArtifactSettings(GyreSettings):
    """Where model artifacts are kept."""

    model_config = SettingsConfigDict(env_prefix="GYRE_ARTIFACTS_")

    root: str = ".gyre/artifacts"
    """Directory of the local artifact store. Every service that reads or writes artifacts must see the same one."""


class ArtifactIntegrityError(ValueError):
    """The stored bytes do not match the sha256 they are addressed by."""


class ArtifactNotFoundError(FileNotFoundError):
    """No artifact at the given URI."""


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact is and what it must hash to.

    Attributes:
        uri: location understood by the store (``file:///…`` for the local store).
        sha256: lowercase hex digest of the bytes.
        size: length in bytes.
    """

    uri: str
    sha256: str
    size: int


class ArtifactStore(ABC):
    """Interface every artifact backend implements."""

    @abstractmethod
    def put(self, data: bytes) -> ArtifactRef:
        """Store ``data`` and return its reference (idempotent for identical bytes)."""

    @abstractmethod
    def get(self, uri: str, sha256: str | None = None) -> bytes:
        """Read the artifact at ``uri``; raise :class:`ArtifactIntegrityError` if its digest is not
        ``sha256`` (or, when omitted, not the digest named by the URI)."""


class LocalArtifactStore(ArtifactStore):
    """Artifacts as files under one directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    @classmethod
    def from_settings(cls, settings: ArtifactSettings) -> LocalArtifactStore:
        return cls(settings.root)

    def _path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def put(self, data: bytes) -> ArtifactRef:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write beside the target and rename, so a reader never sees half a file.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return ArtifactRef(uri=path.as_uri(), sha256=digest, size=len(data))

    def get(self, uri: str, sha256: str | None = None) -> bytes:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ValueError(f"LocalArtifactStore reads file:// URIs, not {uri!r}")
        path = Path(unquote(parsed.path))
        expected = (sha256 or path.name).lower()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact at {uri}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ArtifactIntegrityError(f"artifact {uri} has sha256 {actual}, expected {expected}")
        return data
