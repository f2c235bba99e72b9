"""Input validation of the registry (gyre_registry.domain.validation, on requests decoded by
gyre_registry.convert), page tokens and tokens."""

from __future__ import annotations

import base64
import sys

import pytest

from gyre_contracts.gyre.events.v1 import common_pb2
from gyre_contracts.gyre.registry.v1 import registry_service_pb2 as pb
from gyre_registry import convert
from gyre_registry.auth import ANONYMOUS, Authenticator, parse_tokens
from gyre_registry.domain import paging, validation
from gyre_registry.domain.errors import InvalidArgument, Unauthenticated

SHA = "0123456789abcdef" * 4


def check_request(request: pb.CreateModelVersionRequest) -> None:
    """What CreateModelVersion checks of a request: decoded, then the domain's checks of the draft."""
    validation.version_draft(convert.version_draft(request))


def valid_request(**changes: object) -> pb.CreateModelVersionRequest:
    request = pb.CreateModelVersionRequest(
        model_name="churn.v2-model_x",
        artifact=common_pb2.ArtifactRef(uri="file:///tmp/a", sha256=SHA, size_bytes=10, format="skops"),
        signature=common_pb2.ModelSignature(inputs=[common_pb2.TensorSpec(name="x", datatype="FP64", shape=[-1])]),
        lineage=common_pb2.Lineage(metrics={"holdout_accuracy": 0.9}, dataset_fingerprint=SHA),
        evaluation=pb.HoldoutEvaluation(primary_metric="holdout_accuracy", holdout_id=SHA),
    )
    for name, value in changes.items():
        setattr(request, name, value)
    return request


@pytest.mark.parametrize("name", ["m", "churn", "Churn.V2", "a-b_c.d", "x" * 128])
def test_valid_model_names(name: str) -> None:
    assert validation.model_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 129, "a b", "a/b", "ü", ".", "..", "a;drop"])
def test_invalid_model_names(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validation.model_name(name)
    assert caught.value.field == "model_name"


@pytest.mark.parametrize("alias", ["production", "challenger", "v2-candidate", "a_1", "x" * 64])
def test_valid_aliases(alias: str) -> None:
    assert validation.alias(alias) == alias


@pytest.mark.parametrize("alias", ["", "Production", "123", "latest", "x" * 65, "a.b", "a b"])
def test_invalid_aliases(alias: str) -> None:
    with pytest.raises(InvalidArgument):
        validation.alias(alias)


def test_latest_only_where_allowed() -> None:
    assert validation.alias("latest", allow_latest=True) == "latest"


def test_valid_create_request_passes() -> None:
    check_request(valid_request())


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda r: r.ClearField("artifact"), "artifact"),
    (lambda r: setattr(r.artifact, "uri", ""), "artifact.uri"),
    (lambda r: setattr(r.artifact, "sha256", SHA.upper()), "artifact.sha256"),
    (lambda r: setattr(r.artifact, "sha256", SHA[:-1]), "artifact.sha256"),
    (lambda r: setattr(r.artifact, "size_bytes", -1), "artifact.size_bytes"),
    (lambda r: setattr(r.lineage, "dataset_fingerprint", "nothex"), "lineage.dataset_fingerprint"),
    (lambda r: setattr(r.lineage.reference_profile, "uri", "file:///p"), "lineage.reference_profile.sha256"),
    (lambda r: setattr(r.evaluation, "primary_metric", "roc_auc"), "evaluation.primary_metric"),
    (lambda r: r.signature.inputs.add(datatype="FP64"), "signature.inputs[1].name"),
    (lambda r: setattr(r, "model_name", "bad name"), "model_name"),
    (lambda r: r.tags.update({"": "x"}), "tags"),
    (lambda r: setattr(r, "description", "x" * 5001), "description"),
])
def test_invalid_create_requests_name_the_field(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    request = valid_request()
    mutate(request)
    with pytest.raises(InvalidArgument) as caught:
        check_request(request)
    assert caught.value.field == field
    assert str(caught.value).startswith(field + ":")


def test_window_end_before_start_is_invalid() -> None:
    request = valid_request()
    request.lineage.window_start.FromJsonString("2025-03-02T00:00:00Z")
    request.lineage.window_end.FromJsonString("2025-03-01T00:00:00Z")
    with pytest.raises(InvalidArgument, match=r"lineage\.window_end"):
        check_request(request)


@pytest.mark.parametrize(("size", "expected"), [(0, 100), (1, 1), (1000, 1000)])
def test_page_sizes(size: int, expected: int) -> None:
    assert validation.page_size(size) == expected


@pytest.mark.parametrize("size", [-1, 1001])
def test_bad_page_sizes(size: int) -> None:
    with pytest.raises(InvalidArgument, match="page_size"):
        validation.page_size(size)


def test_page_tokens_round_trip_and_reject_garbage() -> None:
    token = paging.encode_token({"v": 7})
    assert paging.decode_token(token, ("v",)) == {"v": 7}
    assert paging.decode_token("", ("v",)) is None
    for bad in ("%%%", "bm90IGpzb24", paging.encode_token({"n": "x"}), paging.encode_token([1])):  # type: ignore[dict-item]
        with pytest.raises(InvalidArgument, match="page_token"):
            paging.decode_token(bad, ("v",))


@pytest.mark.parametrize("depth", [600, 100_000])
def test_deeply_nested_page_tokens_are_invalid_arguments(depth: int) -> None:
    # 600 levels fit under the length cap: lower the recursion limit so the JSON parser recurses out
    # (as a deeper token would on the default limit); 100,000 levels are refused by their length.
    token = base64.urlsafe_b64encode(b"[" * depth).decode().rstrip("=")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)
    try:
        with pytest.raises(InvalidArgument, match="page_token"):
            paging.decode_token(token, ("v",))
    finally:
        sys.setrecursionlimit(limit)


def test_parse_tokens() -> None:
    assert parse_tokens(" alice:t1 , trainer:t2,") == {"t1": "alice", "t2": "trainer"}
    for bad in ("", "t1", "alice:", ":t1"):
        with pytest.raises(ValueError) as caught:
            parse_tokens(bad)
        assert "t1" not in str(caught.value)  # never echo a token


def test_authenticator_without_tokens_takes_the_claimed_actor() -> None:
    auth = Authenticator(None)
    assert not auth.enabled
    assert auth.actor(None) == ANONYMOUS
    assert auth.actor(None, "alice") == "alice"
    assert auth.actor(None, "not valid!") == ANONYMOUS


def test_authenticator_with_tokens() -> None:
    auth = Authenticator({"s3cret": "trainer"})
    assert auth.actor("Bearer s3cret", "mallory") == "trainer"
    assert auth.actor("bearer  s3cret ") == "trainer"
    for header in (None, "", "Basic s3cret", "Bearer", "Bearer wrong"):
        with pytest.raises(Unauthenticated):
            auth.actor(header)


def test_malformed_token_setting_stops_start_up_without_echoing_tokens() -> None:
    from gyre_common.settings import SettingsError
    from gyre_registry.bootstrap import authenticator
    from gyre_registry.settings import RegistrySettings

    with pytest.raises(SettingsError) as caught:
        authenticator(RegistrySettings(auth_tokens="alice:ok,leakytoken"))  # type: ignore[arg-type]
    assert "GYRE_REGISTRY_AUTH_TOKENS" in str(caught.value)
    assert "leakytoken" not in str(caught.value) and "alice:ok" not in str(caught.value)
    assert authenticator(RegistrySettings()).enabled is False
    assert authenticator(RegistrySettings(auth_tokens="alice:t")).actor("Bearer t") == "alice"  # type: ignore[arg-type]
