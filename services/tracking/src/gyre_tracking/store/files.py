"""Artifact bytes that MLflow clients upload through the server (MLflow's proxied artifact
access, ``mlflow-artifacts:/<path>``), kept in a local directory.

Paths are relative to the directory, ``/``-separated, as the MLflow client sends them
(``<experiment id>/<run id>/artifacts/<file>``). A path that could leave the directory (absolute,
``..``, backslashes, NUL) is refused with :class:`~gyre_tracking.domain.errors.InvalidArgument`.
A file is written to a temporary name and renamed into place, so readers never see half a file
and a retried upload replaces the previous bytes (MLflow's semantics: last upload wins).

File I/O runs in worker threads so that the event loop keeps serving other requests.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from gyre_tracking.domain.errors import InvalidArgument, NotFound

MAX_PATH_LENGTH = 4096
"""Longest relative artifact path accepted (characters)."""


@dataclass(frozen=True)
class FileEntry:
    """One entry of a directory listing.

    Attributes:
        name: the entry's name (no directory part), as MLflow's artifact API lists it.
        is_dir: whether it is a directory.
        size_bytes: file length; None for a directory.
    """

    name: str
    is_dir: bool
    size_bytes: int | None


def clean_relative_path(path: str, *, allow_empty: bool = True) -> str:
    """``path`` normalised (no leading/trailing ``/``), or InvalidArgument if it could escape the root.

    Args:
        allow_empty: whether "" (the root itself) is acceptable.
    """
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidArgument(f"artifact path is {len(path)} characters long; at most {MAX_PATH_LENGTH}")
    if "\\" in path or "\x00" in path:
        raise InvalidArgument(f"invalid artifact path {path[:200]!r}: backslashes and NUL are not allowed")
    stripped = path.strip("/")
    if path.startswith("/") and stripped:
        raise InvalidArgument(f"invalid artifact path {path[:200]!r}: it must be relative")
    if not stripped:
        if allow_empty:
            return ""
        raise InvalidArgument("artifact path must not be empty")
    parts = stripped.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidArgument(f"invalid artifact path {path[:200]!r}: no '.', '..' or empty parts")
    return posixpath.join(*parts)


class ProxiedArtifactFiles:
    """The directory holding proxied artifact uploads.

    Args:
        root: the directory (created when missing).
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def local_path(self, path: str, *, allow_empty: bool = True) -> Path:
        """Where a relative artifact path lives on disk (checked to stay under the root)."""
        clean = clean_relative_path(path, allow_empty=allow_empty)
        target = (self.root / clean).resolve() if clean else self.root
        # Symlinks inside the root must not lead out of it either.
        if target != self.root and self.root not in target.parents:
            raise InvalidArgument(f"invalid artifact path {path[:200]!r}: it leads outside the artifact root")
        return target

    async def write(self, path: str, chunks: AsyncIterator[bytes]) -> int:
        """Store the bytes of ``chunks`` at ``path`` (replacing a file already there).

        Returns:
            The number of bytes written.

        Raises:
            InvalidArgument: a bad path, or ``path`` names an existing directory.
        """
        target = self.local_path(path, allow_empty=False)
        if target.is_dir():
            raise InvalidArgument(f"artifact path {path!r} is a directory")
        await anyio.to_thread.run_sync(lambda: target.parent.mkdir(parents=True, exist_ok=True))
        fd, tmp_name = await anyio.to_thread.run_sync(
            lambda: tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part"))
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    if chunk:
                        await anyio.to_thread.run_sync(out.write, chunk)
                        written += len(chunk)
            await anyio.to_thread.run_sync(os.replace, tmp_name, target)
        except BaseException:
            await anyio.to_thread.run_sync(lambda: Path(tmp_name).unlink(missing_ok=True))
            raise
        return written

    def file_for_download(self, path: str) -> Path:
        """The file at ``path``, for streaming back. Raises NotFound (no such file), InvalidArgument."""
        target = self.local_path(path, allow_empty=False)
        if not target.is_file():
            raise NotFound(f"artifact {path!r} does not exist")
        return target

    async def list(self, path: str) -> list[FileEntry]:
        """Entries directly under ``path`` sorted by name; empty for a missing path or a file (as MLflow)."""
        target = self.local_path(path)

        def scan() -> list[FileEntry]:
            if not target.is_dir():
                return []
            entries = []
            with os.scandir(target) as found:
                for entry in found:
                    if entry.name.startswith(".") and entry.name.endswith(".part"):
                        continue  # an upload in progress
                    is_dir = entry.is_dir()
                    entries.append(FileEntry(entry.name, is_dir, None if is_dir else entry.stat().st_size))
            return sorted(entries, key=lambda e: e.name)

        return await anyio.to_thread.run_sync(scan)

    async def delete(self, path: str) -> None:
        """Remove the file or directory tree at ``path`` (a missing one is fine). Raises InvalidArgument."""
        target = self.local_path(path, allow_empty=False)

        def remove() -> None:
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)

        await anyio.to_thread.run_sync(remove)


PROXIED_SCHEME = "mlflow-artifacts:"
"""URI scheme of artifacts that clients upload through this server."""


def proxied_artifact_path(uri: str) -> str | None:
    """The path under the artifact directory of an ``mlflow-artifacts:`` URI (``mlflow-artifacts:/1/abc/artifacts``
    or ``mlflow-artifacts://host/1/abc/artifacts`` -> ``1/abc/artifacts``); None for other schemes."""
    if not uri.startswith(PROXIED_SCHEME):
        return None
    rest = uri[len(PROXIED_SCHEME):]
    if rest.startswith("//"):
        rest = rest[2:].partition("/")[2]
    return clean_relative_path(rest.lstrip("/"))
