"""While a service's database is down, its APIs answer 503 / UNAVAILABLE (never 500 / UNKNOWN), and
work again once it is back (gyre_common.http.DependencyOutageMiddleware and
gyre_common.grpc_errors.DependencyOutageInterceptor, in every service the runner starts; MLflow's
paths through the MLflow gateway's error map)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from support.kafka import fast_kafka
from support.services import fast_settings, running
from support.waiting import wait_until

from gyre_common.bus import ensure_topics
from gyre_common.topics import FEEDBACK_EVENTS, INFERENCE_EVENTS, MONITOR_ALERTS, REGISTRY_EVENTS, TRAINING_REQUESTS
from gyre_contracts.gyre.feedback.v1 import feedback_service_pb2 as pb
from gyre_contracts.gyre.feedback.v1 import feedback_service_pb2_grpc as pb_grpc
from gyre_feedback.bootstrap import bootstrap
from gyre_feedback.service import SPEC
from gyre_feedback.settings import FeedbackSettings
from gyre_stack.postgres import Postgres, start_postgres_on_free_port
from gyre_tracking.bootstrap import bootstrap as tracking_bootstrap
from gyre_tracking.service import SPEC as TRACKING
from gyre_tracking.settings import TrackingSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = start_postgres_on_free_port(tmp_path_factory.mktemp("outage-pg") / "data")
    yield server
    server.destroy()


async def test_a_database_outage_answers_503_and_unavailable_then_recovers(
        private_postgres: Postgres, bootstrap_servers: str, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    kafka = fast_kafka(bootstrap_servers, f"out{unique}.")
    await ensure_topics(kafka, [INFERENCE_EVENTS, FEEDBACK_EVENTS, REGISTRY_EVENTS, MONITOR_ALERTS, TRAINING_REQUESTS])
    settings = fast_settings(FeedbackSettings)
    async with (running(SPEC, bootstrap, settings, kafka=kafka, database_url=private_postgres.url()) as service,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}", timeout=30) as http,
                grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel):
        stub = pb_grpc.FeedbackServiceStub(channel)
        write = {"prediction_id": "outage-1", "stars": 4}
        assert (await http.post("/api/v1/feedback", json=write)).status_code < 300
        await stub.GetPredictionFeedback(pb.GetPredictionFeedbackRequest(prediction_id="outage-1"))

        private_postgres.stop()
        with caplog.at_level(logging.WARNING):
            answer = await http.post("/api/v1/feedback", json={"prediction_id": "outage-2", "stars": 2})
            assert answer.status_code == 503, answer.text
            assert answer.json()["reason"] == "unavailable" and answer.json()["detail"]
            assert int(answer.headers["retry-after"]) >= 1
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.GetPredictionFeedback(pb.GetPredictionFeedbackRequest(prediction_id="outage-1"))
            assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
        outage_logs = [r for r in caplog.records if "dependency is unavailable" in r.getMessage()]
        assert outage_logs and all(r.levelno == logging.WARNING and r.exc_info is None for r in outage_logs)

        private_postgres.start()

        async def writes_again() -> bool:
            answer = await http.post("/api/v1/feedback", json={"prediction_id": "outage-3", "stars": 5})
            return answer.status_code < 300

        await wait_until(writes_again, what="feedback is stored again after PostgreSQL is back")
        reply = await stub.GetPredictionFeedback(pb.GetPredictionFeedbackRequest(prediction_id="outage-3"))
        assert len(reply.feedback) == 1


async def test_tracking_mlflow_paths_answer_temporarily_unavailable_while_the_database_is_down(
        private_postgres: Postgres, bootstrap_servers: str, unique: str, tmp_path: Path) -> None:
    """MLflow's REST paths are answered by the MLflow gateway, before the app's outage middleware:
    they too answer 503, in MLflow's shape (TEMPORARILY_UNAVAILABLE, which the mlflow client retries)."""
    kafka = fast_kafka(bootstrap_servers, f"outt{unique}.")
    settings = fast_settings(TrackingSettings, consume_events=False, artifacts_destination=str(tmp_path / "t"),
                             registry_url="http://127.0.0.1:9")
    async with (running(TRACKING, tracking_bootstrap, settings, kafka=kafka,
                        database_url=private_postgres.url()) as service,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}/api/2.0/mlflow",
                                  timeout=30) as mlflow):
        created = await mlflow.post("/experiments/create", json={"name": f"outage-{unique}"})
        assert created.status_code == 200, created.text
        experiment_id = created.json()["experiment_id"]

        private_postgres.stop()
        answer = await mlflow.post("/runs/create", json={"experiment_id": experiment_id})
        assert answer.status_code == 503, answer.text
        assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE" and answer.json()["message"]

        private_postgres.start()

        async def runs_again() -> bool:
            return (await mlflow.post("/runs/create", json={"experiment_id": experiment_id})).status_code == 200

        await wait_until(runs_again, what="tracking creates runs again after PostgreSQL is back")
