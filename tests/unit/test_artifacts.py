"""The artifact store returns exactly what was stored and refuses anything else."""

import hashlib

import pytest

from gyre_common.artifacts import ArtifactIntegrityError, ArtifactNotFoundError, LocalArtifactStore


def test_put_get_round_trip_and_idempotent(tmp_path):
    store = LocalArtifactStore(tmp_path)
    ref = store.put(b"model bytes")
    assert ref.sha256 == hashlib.sha256(b"model bytes").hexdigest()
    assert ref.size == len(b"model bytes")
    assert store.get(ref.uri, ref.sha256) == b"model bytes"
    assert store.put(b"model bytes") == ref


def test_tampered_artifact_is_refused(tmp_path):
    store = LocalArtifactStore(tmp_path)
    ref = store.put(b"good")
    path = next((tmp_path / "sha256").rglob(ref.sha256))
    path.write_bytes(b"evil")
    with pytest.raises(ArtifactIntegrityError, match="expected"):
        store.get(ref.uri)


def test_wrong_expected_digest_is_refused(tmp_path):
    store = LocalArtifactStore(tmp_path)
    ref = store.put(b"one")
    with pytest.raises(ArtifactIntegrityError):
        store.get(ref.uri, hashlib.sha256(b"two").hexdigest())


def test_missing_artifact(tmp_path):
    store = LocalArtifactStore(tmp_path)
    with pytest.raises(ArtifactNotFoundError):
        store.get((tmp_path / "sha256" / "ab" / ("ab" * 32)).as_uri())
