"""The contracts in proto/ and the code generated from them (libs/contracts)."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor
from google.protobuf.message import Message

from gyre_common.topics import TOPICS
from gyre_contracts.gyre.events.v1 import common_pb2, events_pb2
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2 as oip
from gyre_contracts.inference.v2 import grpc_predict_v2_pb2_grpc as oip_grpc

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "generate_contracts.py"
PROTO_DIR = REPO / "proto"
OUT_DIR = REPO / "libs" / "contracts" / "src" / "gyre_contracts"

SERVICE_MODULES = {
    "gyre_contracts.gyre.tracking.v1.tracking_service_pb2_grpc": "TrackingService",
    "gyre_contracts.gyre.features.v1.features_service_pb2_grpc": "FeaturesService",
    "gyre_contracts.gyre.trainer.v1.trainer_service_pb2_grpc": "TrainerService",
    "gyre_contracts.gyre.registry.v1.registry_service_pb2_grpc": "RegistryService",
    "gyre_contracts.gyre.feedback.v1.feedback_service_pb2_grpc": "FeedbackService",
    "gyre_contracts.gyre.monitor.v1.monitor_service_pb2_grpc": "MonitorService",
    "gyre_contracts.inference.v2.grpc_predict_v2_pb2_grpc": "GRPCInferenceService",
}


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )


# --- code generation -------------------------------------------------------------------------


def test_committed_generated_code_is_up_to_date() -> None:
    result = run_script("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_fails_and_names_the_stale_files_when_a_proto_changes(tmp_path: Path) -> None:
    protos = tmp_path / "proto"
    shutil.copytree(PROTO_DIR, protos)
    events = protos / "gyre" / "events" / "v1" / "events.proto"
    text = events.read_text()
    changed = text.replace(
        "  string source = 6;\n", "  string source = 6;\n  // Added by the test.\n  string added = 99;\n", 1
    )
    assert changed != text, "the test's anchor in events.proto moved; update the test"
    events.write_text(changed)
    (protos / "gyre" / "events" / "v1" / "extra.proto").write_text(
        'syntax = "proto3";\npackage gyre.events.v1;\nmessage Extra {}\n'
    )

    result = run_script("--check", "--proto-dir", str(protos), "--out-dir", str(OUT_DIR))

    assert result.returncode == 1
    assert "stale    gyre/events/v1/events_pb2.py" in result.stderr
    assert "missing  gyre/events/v1/extra_pb2.py" in result.stderr
    assert "make generate" in result.stderr


def test_generate_then_check_round_trips_and_reports_extra_files(tmp_path: Path) -> None:
    out = tmp_path / "gyre_contracts"
    assert run_script("--out-dir", str(out)).returncode == 0
    assert (out / "gyre" / "events" / "v1" / "events_pb2.pyi").exists()
    # Protos without a service get no (empty) gRPC module.
    assert not (out / "gyre" / "events" / "v1" / "events_pb2_grpc.py").exists()
    assert run_script("--check", "--out-dir", str(out)).returncode == 0

    (out / "gyre" / "events" / "v1" / "leftover_pb2.py").write_text("# from a deleted proto\n")
    result = run_script("--check", "--out-dir", str(out))
    assert result.returncode == 1
    assert "extra    gyre/events/v1/leftover_pb2.py" in result.stderr


def test_generated_imports_are_rooted_at_gyre_contracts() -> None:
    offenders = [
        f"{path.relative_to(OUT_DIR)}: {line.strip()}"
        for path in sorted(OUT_DIR.rglob("*_pb2*.py*"))
        if path.suffix in (".py", ".pyi")
        for line in path.read_text().splitlines()
        if re.match(r"\s*(from|import) (gyre|inference)\b", line)
    ]
    assert offenders == []


# --- events ----------------------------------------------------------------------------------


def test_every_topic_names_an_event_message_of_gyre_events_v1() -> None:
    pool = descriptor_pool.Default()
    for spec in TOPICS.values():
        descriptor = pool.FindMessageTypeByName(spec.event_type)
        assert descriptor.file.name == "gyre/events/v1/events.proto", spec
        assert getattr(events_pb2, descriptor.name).DESCRIPTOR is descriptor


def _gyre_files() -> list[FileDescriptor]:
    files = [events_pb2.DESCRIPTOR, common_pb2.DESCRIPTOR]
    for module in SERVICE_MODULES:
        if module.startswith("gyre_contracts.gyre."):
            files.append(importlib.import_module(module.removesuffix("_grpc")).DESCRIPTOR)
    return files


def _enums(descriptor: FileDescriptor | Descriptor) -> list[EnumDescriptor]:
    found = list(descriptor.enum_types_by_name.values())
    for message in (
        descriptor.message_types_by_name.values()
        if isinstance(descriptor, FileDescriptor)
        else descriptor.nested_types
    ):
        found += _enums(message)
    return found


def test_every_gyre_enum_has_an_explicit_unspecified_zero() -> None:
    enums = [enum for file in _gyre_files() for enum in _enums(file)]
    assert len(enums) >= 8
    for enum in enums:
        assert enum.values_by_number[0].name.endswith("_UNSPECIFIED"), enum.full_name


def sample_events() -> list[Message]:
    feature = events_pb2.FeatureEvent(
        feature_view="customer_stats",
        entity_id="c-42",
        values={
            "orders_30d": common_pb2.FeatureValue(int64_value=2**40),
            "avg_basket_eur": common_pb2.FeatureValue(double_value=53.2),
            "segment": common_pb2.FeatureValue(string_value="gold"),
            "churned": common_pb2.FeatureValue(bool_value=False),
            "unknown": common_pb2.FeatureValue(),
        },
        source="test",
    )
    feature.event_time.FromJsonString("2025-03-01T12:00:00Z")
    request = events_pb2.TrainingRequest(
        request_id="drift-alert-1",
        model_name="churn",
        feature_view="customer_stats",
        label="churned",
        reason=events_pb2.TRAINING_REASON_DRIFT,
        evidence={"alert_id": "alert-1", "drift_share": "0.6"},
        requested_by="monitor",
        search=events_pb2.SearchConfig(max_evals=20, estimator_families=["random_forest"]),
        promote_to_alias="champion",
    )
    request.window_start.FromJsonString("2025-02-01T00:00:00Z")
    feedback = events_pb2.FeedbackEvent(
        feedback_id="f-1",
        prediction_id="p-1",
        corrected_label=common_pb2.FeatureValue(string_value="yes"),
        comment="wrong",
    )
    alert = events_pb2.MonitorAlert(
        alert_id="alert-1",
        kind=events_pb2.ALERT_KIND_DRIFT,
        model_name="churn",
        model_version=3,
        feature_drifts=[
            events_pb2.FeatureDrift(
                feature="a", test_name="ks", statistic=0.4, p_value=0.001, threshold=0.05, drifted=True
            ),
            events_pb2.FeatureDrift(feature="b", test_name="wasserstein", statistic=0.05, threshold=0.1),
        ],
        dataset_drift=True,
        drift_share=0.5,
        drift_share_threshold=0.5,
    )
    registry = events_pb2.RegistryEvent(
        kind=events_pb2.REGISTRY_EVENT_KIND_ALIAS_SET,
        model_name="churn",
        version=4,
        alias="champion",
        previous_version=3,
        artifact=common_pb2.ArtifactRef(uri="file:///tmp/a", sha256="0" * 64, format="skops"),
        lineage=common_pb2.Lineage(training_request_id="drift-alert-1", metrics={"roc_auc": 0.91}),
    )
    inference = events_pb2.InferenceEvent(
        prediction_id="p-1",
        model_name="churn",
        model_version=4,
        inputs={"a": common_pb2.FeatureValue(double_value=1.0)},
        outputs={"predict": common_pb2.FeatureValue(int64_value=1)},
        latency_ms=1.25,
        shadow=True,
    )
    return [feature, request, feedback, alert, registry, inference]


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).__name__)
def test_event_round_trips_through_binary_and_json(event: Message) -> None:
    assert type(event).FromString(event.SerializeToString(deterministic=True)) == event
    as_json = json_format.MessageToJson(event)
    assert json_format.Parse(as_json, type(event)()) == event


def test_oneof_and_optional_presence_survive_the_wire() -> None:
    feature, _, feedback, alert, *_ = sample_events()
    assert isinstance(feature, events_pb2.FeatureEvent)
    decoded = events_pb2.FeatureEvent.FromString(feature.SerializeToString())
    assert decoded.values["churned"].WhichOneof("kind") == "bool_value"  # False is still "set"
    assert decoded.values["unknown"].WhichOneof("kind") is None  # missing stays missing
    assert isinstance(feedback, events_pb2.FeedbackEvent)
    assert events_pb2.FeedbackEvent.FromString(feedback.SerializeToString()).WhichOneof("rating") == (
        "corrected_label"
    )
    assert isinstance(alert, events_pb2.MonitorAlert)
    drifts = events_pb2.MonitorAlert.FromString(alert.SerializeToString()).feature_drifts
    assert drifts[0].HasField("p_value") and not drifts[1].HasField("p_value")


def test_documented_feature_event_json_example_parses() -> None:
    doc = (REPO / "docs" / "contracts.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", doc, flags=re.S)
    assert blocks, "docs/contracts.md lost its FeatureEvent JSON example"
    event = json_format.Parse(blocks[0], events_pb2.FeatureEvent())
    assert event.feature_view == "customer_stats"
    assert event.event_time.ToJsonString() == "2025-03-01T12:00:00Z"
    assert event.values["orders_30d"].int64_value == 7
    assert event.values["churned"].WhichOneof("kind") == "bool_value"
    # snake_case names are accepted too; unknown fields are rejected.
    snake = json.dumps({"feature_view": "v", "entity_id": "e", "values": {"x": {"double_value": 1}}})
    assert json_format.Parse(snake, events_pb2.FeatureEvent()).values["x"].double_value == 1.0
    with pytest.raises(json_format.ParseError):
        json_format.Parse('{"featureView": "v", "featureVeiw": "typo"}', events_pb2.FeatureEvent())


# --- gRPC services ---------------------------------------------------------------------------


@pytest.mark.parametrize("module_name", sorted(SERVICE_MODULES))
def test_every_service_has_a_stub_and_a_servicer(module_name: str) -> None:
    module = importlib.import_module(module_name)
    service = SERVICE_MODULES[module_name]
    assert hasattr(module, f"{service}Stub")
    assert hasattr(module, f"{service}Servicer")
    assert hasattr(module, f"add_{service}Servicer_to_server")


# --- Open Inference Protocol wire compatibility ----------------------------------------------

# Field numbers of KServe's grpc_predict_v2.proto / Triton's grpc_service.proto.
OIP_FIELD_NUMBERS = {
    "ModelReadyRequest": {"name": 1, "version": 2},
    "ServerMetadataResponse": {"name": 1, "version": 2, "extensions": 3},
    "ModelMetadataResponse": {"name": 1, "versions": 2, "platform": 3, "inputs": 4, "outputs": 5},
    "ModelMetadataResponse.TensorMetadata": {"name": 1, "datatype": 2, "shape": 3},
    "ModelInferRequest": {
        "model_name": 1,
        "model_version": 2,
        "id": 3,
        "parameters": 4,
        "inputs": 5,
        "outputs": 6,
        "raw_input_contents": 7,
    },
    "ModelInferRequest.InferInputTensor": {
        "name": 1,
        "datatype": 2,
        "shape": 3,
        "parameters": 4,
        "contents": 5,
    },
    "ModelInferRequest.InferRequestedOutputTensor": {"name": 1, "parameters": 2},
    "ModelInferResponse": {
        "model_name": 1,
        "model_version": 2,
        "id": 3,
        "parameters": 4,
        "outputs": 5,
        "raw_output_contents": 6,
    },
    "ModelInferResponse.InferOutputTensor": {
        "name": 1,
        "datatype": 2,
        "shape": 3,
        "parameters": 4,
        "contents": 5,
    },
    "InferParameter": {
        "bool_param": 1,
        "int64_param": 2,
        "string_param": 3,
        "double_param": 4,
        "uint64_param": 5,
    },
    "InferTensorContents": {
        "bool_contents": 1,
        "int_contents": 2,
        "int64_contents": 3,
        "uint_contents": 4,
        "uint64_contents": 5,
        "fp32_contents": 6,
        "fp64_contents": 7,
        "bytes_contents": 8,
    },
}


@pytest.mark.parametrize("message", sorted(OIP_FIELD_NUMBERS))
def test_oip_field_numbers_match_the_published_protocol(message: str) -> None:
    descriptor = descriptor_pool.Default().FindMessageTypeByName(f"inference.{message}")
    numbers = {field.name: field.number for field in descriptor.fields}
    assert numbers == OIP_FIELD_NUMBERS[message]


def test_oip_service_and_method_paths_match_existing_clients() -> None:
    service = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert set(service.methods_by_name) >= {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    }
    assert service.methods_by_name["ModelInfer"].input_type.full_name == "inference.ModelInferRequest"
    assert hasattr(oip_grpc, "GRPCInferenceServiceStub")


def test_oip_wire_bytes_are_the_published_encoding() -> None:
    request = oip.ModelInferRequest(model_name="m", raw_input_contents=[b"\x01"])
    # field 1 (tag 0x0a) "m"; field 7, length-delimited (tag 0x3a) b"\x01"
    assert request.SerializeToString() == b"\x0a\x01m\x3a\x01\x01"
    response = oip.ModelInferResponse(raw_output_contents=[b"\x02"])
    assert response.SerializeToString() == b"\x32\x01\x02"  # field 6, length-delimited
