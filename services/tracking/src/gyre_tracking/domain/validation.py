"""Input rules, checked at the edge before anything is stored (MLflow's limits and name rules).

Every function raises :class:`~gyre_tracking.domain.errors.InvalidArgument` with a message that
names the offending field and value; :func:`check_param_conflicts` raises
:class:`~gyre_tracking.domain.errors.ParamConflict`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence

from gyre_tracking.domain.errors import InvalidArgument, ParamConflict
from gyre_tracking.domain.model import Metric, RunArtifact

MAX_KEY_LENGTH = 250
"""Longest metric, param or tag key (characters)."""
MAX_PARAM_VALUE_LENGTH = 6000
"""Longest param value (characters), as in MLflow."""
MAX_TAG_VALUE_LENGTH = 8000
"""Longest run tag value (characters), as in MLflow."""
MAX_EXPERIMENT_TAG_VALUE_LENGTH = 5000
"""Longest experiment tag value (characters), as in MLflow."""
MAX_EXPERIMENT_NAME_LENGTH = 256
"""Longest experiment name (characters)."""
MAX_RUN_NAME_LENGTH = 250
"""Longest run name (characters)."""
MAX_METRICS_PER_BATCH = 1000
"""Most metric points in one call or event."""
MAX_PARAMS_TAGS_PER_BATCH = 100
"""Most params, and most tags, in one call or event."""
MAX_ENTRIES_PER_BATCH = 1000
"""Most metrics, params and tags together in one LogBatch call (MLflow's limit)."""
MAX_ARTIFACT_URI_LENGTH = 2000
"""Longest artifact URI (characters)."""

_KEY_CHARS = re.compile(r"^[/\w.\- :]+$")
_RUN_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")
_EXPERIMENT_ID = re.compile(r"^[0-9]{1,18}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_INT64 = (-(2**63), 2**63 - 1)


def _shorten(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "…"


def validate_key(kind: str, key: str) -> str:
    """Check a metric, param or tag key: 1-250 characters out of letters, digits, ``_ - . / :`` and
    space, and no path tricks (``..``, leading or doubled ``/``), since MLflow may use keys as file names.

    Args:
        kind: "metric", "param" or "tag", for the message.
    """
    if not key:
        raise InvalidArgument(f"{kind} key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument(f"{kind} key {_shorten(key)!r} is longer than {MAX_KEY_LENGTH} characters")
    if not _KEY_CHARS.match(key):
        raise InvalidArgument(
            f"invalid {kind} key {_shorten(key)!r}: keys may only contain letters, digits, underscores (_), "
            "dashes (-), periods (.), spaces ( ), colons (:) and slashes (/)")
    normalised = posixpath.normpath(key)
    if normalised != key or normalised == "." or normalised.startswith(("..", "/")):
        raise InvalidArgument(f"invalid {kind} key {_shorten(key)!r}: it would resolve to the path "
                              f"{normalised!r} (no leading, trailing or doubled '/', no '.' or '..' parts)")
    return key


def validate_run_id(run_id: str) -> str:
    """A run id: 1-256 characters, letters, digits, ``_`` and ``-``, starting with a letter or digit."""
    if not run_id:
        raise InvalidArgument("run_id must not be empty")
    if not _RUN_ID.match(run_id):
        raise InvalidArgument(f"invalid run_id {_shorten(run_id)!r}: use 1-256 letters, digits, '_' or '-', "
                              "starting with a letter or digit")
    return run_id


def validate_experiment_id(experiment_id: str) -> str:
    """An experiment id: the decimal string of a non-negative integer."""
    if not experiment_id:
        raise InvalidArgument("experiment_id must not be empty")
    if not _EXPERIMENT_ID.match(experiment_id):
        raise InvalidArgument(f"invalid experiment_id {_shorten(experiment_id)!r}: expected a decimal integer")
    return experiment_id


def validate_experiment_name(name: str) -> str:
    """An experiment name: not blank, at most 256 characters (surrounding spaces are kept)."""
    if not name or not name.strip():
        raise InvalidArgument("experiment name must not be empty")
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        raise InvalidArgument(f"experiment name {_shorten(name)!r} is longer than {MAX_EXPERIMENT_NAME_LENGTH} "
                              "characters")
    return name


def validate_run_name(name: str) -> str:
    """A run name: at most 250 characters (may be empty: the server then picks one)."""
    if len(name) > MAX_RUN_NAME_LENGTH:
        raise InvalidArgument(f"run name {_shorten(name)!r} is longer than {MAX_RUN_NAME_LENGTH} characters")
    return name


def validate_metrics(metrics: Sequence[Metric]) -> list[Metric]:
    """At most 1000 points, valid keys, steps within int64. NaN and infinities are allowed (MLflow
    stores them as given)."""
    if len(metrics) > MAX_METRICS_PER_BATCH:
        raise InvalidArgument(f"{len(metrics)} metric points in one call; at most {MAX_METRICS_PER_BATCH}")
    for point in metrics:
        validate_key("metric", point.key)
        if not _INT64[0] <= point.step <= _INT64[1]:
            raise InvalidArgument(f"metric {point.key!r}: step {point.step} is outside int64")
        if point.timestamp.tzinfo is None:
            raise InvalidArgument(f"metric {point.key!r}: timestamp must be timezone-aware (UTC)")
    return list(metrics)


def normalise_params(params: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Validate params and fold repeats: the same key twice with the same value is one param; with
    different values it is an error (which one would be "the" value?).

    Returns:
        key -> value, in first-seen order.
    """
    result: dict[str, str] = {}
    for key, value in params:
        validate_key("param", key)
        if len(value) > MAX_PARAM_VALUE_LENGTH:
            raise InvalidArgument(f"param {key!r}: value is {len(value)} characters long; at most "
                                  f"{MAX_PARAM_VALUE_LENGTH}")
        seen = result.get(key)
        if seen is not None and seen != value:
            raise InvalidArgument(f"param {key!r} given twice with different values ({_shorten(seen)!r} and "
                                  f"{_shorten(value)!r})")
        result[key] = value
    if len(result) > MAX_PARAMS_TAGS_PER_BATCH:
        raise InvalidArgument(f"{len(result)} params in one call; at most {MAX_PARAMS_TAGS_PER_BATCH}")
    return result


def normalise_tags(tags: Iterable[tuple[str, str]], *, max_value_length: int = MAX_TAG_VALUE_LENGTH,
                   limit: int | None = MAX_PARAMS_TAGS_PER_BATCH) -> dict[str, str]:
    """Validate tags; a key given twice keeps its last value (tags are last-write-wins).

    Args:
        max_value_length: 8000 for run tags, 5000 for experiment tags.
        limit: most distinct tags accepted; None for no limit.
    """
    result: dict[str, str] = {}
    for key, value in tags:
        validate_key("tag", key)
        if len(value) > max_value_length:
            raise InvalidArgument(f"tag {key!r}: value is {len(value)} characters long; at most {max_value_length}")
        result[key] = value
    if limit is not None and len(result) > limit:
        raise InvalidArgument(f"{len(result)} tags in one call; at most {limit}")
    return result


def check_param_conflicts(run_id: str, attempted: Mapping[str, str], stored: Mapping[str, str]) -> None:
    """Raise :class:`ParamConflict` if a stored param has another value than the one attempted.

    Args:
        attempted: params of the call.
        stored: values already stored for (some of) those keys.
    """
    conflicts = [key for key, value in stored.items() if key in attempted and attempted[key] != value]
    if not conflicts:
        return
    details = "; ".join(
        f"{key!r} is {_shorten(stored[key])!r}, attempted {_shorten(attempted[key])!r}" for key in sorted(conflicts)
    )
    raise ParamConflict(f"params are write-once and run {run_id!r} already has different values: {details}")


def validate_artifact(artifact: RunArtifact) -> RunArtifact:
    """An artifact reference: a relative path like a key, a URI, a 64-hex sha256, a size >= 0."""
    if not artifact.path:
        raise InvalidArgument("artifact path must not be empty (e.g. 'model')")
    try:
        validate_key("artifact path", artifact.path)
    except InvalidArgument as exc:
        raise InvalidArgument(str(exc).replace("key ", "", 1)) from None
    if not artifact.uri:
        raise InvalidArgument(f"artifact {artifact.path!r}: uri must not be empty")
    if len(artifact.uri) > MAX_ARTIFACT_URI_LENGTH:
        raise InvalidArgument(f"artifact {artifact.path!r}: uri is longer than {MAX_ARTIFACT_URI_LENGTH} characters")
    if not _SHA256.match(artifact.sha256):
        raise InvalidArgument(f"artifact {artifact.path!r}: sha256 {_shorten(artifact.sha256)!r} is not 64 "
                              "lowercase hex digits")
    if artifact.size_bytes < 0:
        raise InvalidArgument(f"artifact {artifact.path!r}: size_bytes must not be negative")
    return artifact


def check_batch_total(metrics: int, params: int, tags: int) -> None:
    """Refuse a LogBatch with more than 1000 metrics, params and tags in all (MLflow's limit)."""
    total = metrics + params + tags
    if total > MAX_ENTRIES_PER_BATCH:
        raise InvalidArgument(f"a batch holds {total} entries ({metrics} metrics, {params} params, {tags} tags); "
                              f"at most {MAX_ENTRIES_PER_BATCH} in all")
