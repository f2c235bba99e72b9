"""Reference profiles written to the artifact store in the monitor's wire format."""

from __future__ import annotations

import asyncio

from gyre_common.artifacts import ArtifactRef, ArtifactStore
from gyre_common.profile import PROFILE_FORMAT, ReferenceProfile
from gyre_common.profile_wire import encode_profile
from gyre_trainer.ports import ProfileSink


class ArtifactProfileSink(ProfileSink):
    """Writes a binary ``gyre.monitor.v1.ReferenceProfile`` (:mod:`gyre_common.profile`) carrying the
    model name and version 0: the registry numbers the version only after the profile's URI went
    into the registration, so the monitor takes the number from the VERSION_CREATED event whose
    lineage points at the profile."""

    format = PROFILE_FORMAT

    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts

    async def save(self, profile: ReferenceProfile) -> ArtifactRef:
        return await asyncio.to_thread(self.artifacts.put, encode_profile(profile))
