"""The text loop end to end: every service as a real process on a real Tansu and PostgreSQL.

Generated English sentences on three topics (a few mislabelled) <- a plain aiokafka JSON producer
into a view with a TEXT feature; ``gyre train --backend torch-text`` fine-tunes all-MiniLM-L6-v2
with a new head (per-epoch curves in tracking) -> registry v1 (safetensors-text, BYTES in) ->
serving answers BYTES over gRPC and REST with entity_id / event_time -> corrected labels through
feedback reach the feature store -> French traffic -> one alert naming the text feature (its
embedding check) and one DRIFT retraining request -> v2 trained on the corrected labels ->
serving swaps under continuous traffic with zero failed calls -> dashboard.

The story and its checks live in ``gyre_stack.demo.text`` (``make demo-text`` plays it against the
stack of ``make up``); this test gives it a private stack with small windows, two trials and
three epochs at most, so it stays within a few minutes on two cores.
Run it alone with ``.venv/bin/pytest tests/e2e/test_text_loop.py -s``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.stack import Stack

from gyre_common.service import discover_services
from gyre_common.settings import KafkaSettings
from gyre_stack import demo
from gyre_stack.demo import text
from gyre_stack.prepare import create_topics

pytestmark = pytest.mark.e2e

#: Predictions per drift window: texts drawn from the 300 training texts never drift against them,
#: French texts always do; the monitor embeds at most this many per window, so keep it small.
WINDOW_ROWS = 150
#: Trials per training (v1 asks for them; the monitor's retraining gets the trainer's default, the same).
MAX_EVALS = 2

OVERRIDES = {
    "trainer": {"DEFAULT_MAX_EVALS": str(MAX_EVALS), "TEXT_MAX_EPOCHS": "3", "TORCH_THREADS": "2"},
    "serving": {"TORCH_THREADS": "1"},
    "monitor": {"WINDOW_SIZE": str(WINDOW_ROWS), "DRIFT_SHARE": "0.5"},
}


@pytest.fixture
def stack(broker: object, bootstrap_servers: str, database_url: str, unique: str,
          tmp_path: Path) -> Iterator[Stack]:
    started = Stack(bootstrap_servers, f"e2etext{unique}.", database_url, tmp_path / "artifacts", OVERRIDES)
    try:
        yield started
    finally:
        started.stop()


async def test_text_loop(stack: Stack) -> None:
    kafka = KafkaSettings(bootstrap_servers=stack.endpoints.bootstrap_servers,
                          topic_prefix=stack.endpoints.topic_prefix, default_partitions=2)
    await create_topics(kafka, discover_services())
    plan = demo.Plan(model="topics", feature_view="news", window_rows=WINDOW_ROWS, drifted=(text.TEXT_FEATURE,),
                     max_evals=MAX_EVALS, deadline_s=120.0)
    clock = demo.Clock()
    try:
        stack.start()
        await stack.wait_ready()
        clock(f"all {len(demo.SERVICES)} services ready")
        summary = await text.run_text_loop(stack.endpoints, plan, clock)
    except BaseException:
        print(stack.tails())
        raise
    clock(f"v2 promoted by {summary['promotion']}")

    corpus = text.corpus()
    # Corrections: one per mislabelled document, and they changed the training data.
    assert sorted(row for _, row, _ in summary["corrections"]) == list(corpus.mislabelled)
    assert summary["fingerprint_before"] != summary["fingerprint_after"]
    assert summary["v1"]["lineage"]["datasetFingerprint"] != summary["v2"]["lineage"]["datasetFingerprint"]
    # One alert, naming the text feature and its embedding check.
    alert = summary["alert"]
    drifted = {(d.feature, d.descriptor) for d in alert.feature_drifts if d.drifted}
    assert {feature for feature, _ in drifted} == {text.TEXT_FEATURE}
    assert (text.TEXT_FEATURE, "embedding") in drifted
    assert summary["v2"]["lineage"]["trainingRequestId"] == summary["drift_request"].request_id
    # The swap: zero failed calls, v1 then v2.
    assert summary["swap"]["failed"] == 0 and summary["swap"]["v2"] >= 20
    assert summary["promotion"] == "policy" or summary["promotion"].startswith("SetAlias")
