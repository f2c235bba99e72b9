"""What a reference profile must be for the monitor to store it, whichever transport brings it.

:func:`gyre_common.profile.validate_profile` holds the rules every profile keeps (names, samples,
counts); these are the monitor's own on top: a profile that monitors nothing, or more than it can
test in one window, is refused. The HTTP route's request model states the same limits in its
schema (422); gRPC ``SetReferenceProfile`` gets them here (INVALID_ARGUMENT).
"""

from __future__ import annotations

from gyre_common.profile import ProfileError, ReferenceProfile

MAX_PROFILE_FEATURES = 10_000
"""Most features one reference profile may monitor."""

MAX_PROFILE_TEXT_CHARS = 1024
"""Longest feature name or dataset fingerprint, in characters."""


def check_reference_profile(profile: ReferenceProfile) -> None:
    """Refuse a profile the monitor cannot use.

    Raises:
        ProfileError: no features, more than :data:`MAX_PROFILE_FEATURES`, fewer than one row, a
            feature name or dataset fingerprint over :data:`MAX_PROFILE_TEXT_CHARS` characters.
    """
    if not profile.features:
        raise ProfileError("a reference profile needs at least one feature")
    if len(profile.features) > MAX_PROFILE_FEATURES:
        raise ProfileError(f"a reference profile may monitor at most {MAX_PROFILE_FEATURES} features, "
                           f"got {len(profile.features)}")
    if profile.rows < 1:
        raise ProfileError(f"rows must be at least 1 (the training set's rows), got {profile.rows}")
    for feature in profile.features:
        if len(feature.name) > MAX_PROFILE_TEXT_CHARS:
            raise ProfileError(f"feature name {feature.name[:40]!r}... is longer than {MAX_PROFILE_TEXT_CHARS} "
                               "characters")
    if len(profile.dataset_fingerprint) > MAX_PROFILE_TEXT_CHARS:
        raise ProfileError(f"dataset_fingerprint is longer than {MAX_PROFILE_TEXT_CHARS} characters")
