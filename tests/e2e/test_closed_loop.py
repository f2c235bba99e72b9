"""The closed loop end to end: every service as a real process on a real Tansu and PostgreSQL.

Features <- a plain aiokafka JSON producer; ``gyre train`` -> trainer -> tracking + registry ->
serving (OIP gRPC and REST) -> inference.events -> feedback and monitor; drifted traffic -> alert
and one DRIFT retraining request -> version 2 -> serving swaps under load -> dashboard.

The story and its assertions live in the package ``gyre_stack.demo`` (``make demo`` plays the same story against
the stack of ``make up``); this test gives it a private stack: its own database, topic prefix,
artifact folder and free ports, with small monitor windows and few trials so it stays fast.
Run it alone with ``.venv/bin/pytest -m e2e``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.stack import DRIFT_SHARE, MAX_EVALS, WINDOW_ROWS, Stack

from gyre_common.service import discover_services
from gyre_common.settings import KafkaSettings
from gyre_stack import demo
from gyre_stack.prepare import create_topics

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(broker: object, bootstrap_servers: str, database_url: str, unique: str,
          tmp_path: Path) -> Iterator[Stack]:
    started = Stack(bootstrap_servers, f"e2e{unique}.", database_url, tmp_path / "artifacts")
    try:
        yield started
    finally:
        started.stop()


async def test_closed_loop(stack: Stack) -> None:
    kafka = KafkaSettings(bootstrap_servers=stack.endpoints.bootstrap_servers,
                          topic_prefix=stack.endpoints.topic_prefix, default_partitions=2)
    # What `make up` does before starting services: every topic, and the dead-letter topics.
    await create_topics(kafka, discover_services())
    plan = demo.Plan(model="cancer", feature_view="breast_cancer", window_rows=WINDOW_ROWS,
                     drifted=demo.drifted_features(DRIFT_SHARE, demo.feature_names()), max_evals=MAX_EVALS,
                     deadline_s=90.0)
    assert len(plan.drifted) == 3
    clock = demo.Clock()
    try:
        stack.start()
        await stack.wait_ready()
        clock(f"all {len(demo.SERVICES)} services ready")
        summary = await demo.run_loop(stack.endpoints, plan, clock)
    except BaseException:
        print(stack.tails())
        raise
    clock(f"v2 promoted by {summary['promotion']}")
    alert = summary["alert"]
    assert sorted(d.feature for d in alert.feature_drifts if d.drifted) == sorted(plan.drifted)
    assert summary["promotion"] == "policy" or summary["promotion"].startswith("SetAlias")
