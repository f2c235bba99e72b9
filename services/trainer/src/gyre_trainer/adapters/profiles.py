"""Reference profiles written to the artifact store in the monitor's wire format."""

from __future__ import annotations

import asyncio

from gyre_common.artifacts import ArtifactRef, ArtifactStore
from gyre_trainer.adapters.convert import PROFILE_FORMAT, profile_to_proto
from gyre_trainer.domain.profile import ReferenceProfile
from gyre_trainer.ports import ProfileSink


class ArtifactProfileSink(ProfileSink):
    """Writes a binary ``gyre.monitor.v1.ReferenceProfile`` with the model name and version 0: the
    registry numbers the version only after the profile's URI went into the registration, so the
    monitor takes the number from the VERSION_CREATED event whose lineage points at the profile."""

    format = PROFILE_FORMAT

    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts

    async def save(self, profile: ReferenceProfile, model_name: str) -> ArtifactRef:
        data = profile_to_proto(profile, model_name).SerializeToString(deterministic=True)
        return await asyncio.to_thread(self.artifacts.put, data)
