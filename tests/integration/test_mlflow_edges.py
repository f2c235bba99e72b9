"""MLflow's REST edges of tracking and registry under generated garbage: never a 5xx, and the
connection stays open.

The MLflow paths are answered by ASGI gateways in front of FastAPI, so they are not in the
services' OpenAPI documents and Schemathesis (tests/integration/test_fuzz_openapi.py) cannot reach
them. Here Hypothesis generates the requests instead: random JSON of every type where each field
goes, huge and negative numbers, long strings, filters made of grammar fragments, random page
tokens (garbage, base64 of non-JSON, JSON of the wrong shape, huge offsets) and version numbers.
Each one goes to a real tracking service (registry paths through its proxy to a real registry
service) over ONE keep-alive HTTP connection: an answer of 500 or more fails the test, and so does
a connection the server closed (the next request on it would fail).

Generation is derandomised and bounded (``EXAMPLES`` per endpoint), so the file runs in about a
minute on two cores. The requests are sent from a worker thread: the services run on the test's
event loop, which must keep turning while the synchronous client waits for their answers.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlencode

import hypothesis
import pytest
from hypothesis import HealthCheck, Phase, Verbosity, given
from hypothesis import strategies as st
from support.kafka import fast_kafka
from support.services import fast_settings, running

from gyre_common.bus import ensure_topics
from gyre_common.topics import REGISTRY_EVENTS
from gyre_registry.bootstrap import bootstrap as registry_bootstrap
from gyre_registry.service import SPEC as REGISTRY
from gyre_registry.settings import RegistrySettings
from gyre_tracking import bootstrap as tracking_bootstrap_module
from gyre_tracking.service import SPEC as TRACKING
from gyre_tracking.settings import TrackingSettings

pytestmark = pytest.mark.integration

EXAMPLES = 100
"""Generated requests per endpoint (and method)."""

PREFIX = "/api/2.0/mlflow"

MAX_QUERY_CHARS = 60_000
"""Longest query string sent: uvicorn refuses a request line of 64 KiB or more before the app sees
it (400 "Invalid HTTP request received." and a closed connection), which is the HTTP server's limit,
not the MLflow layer's answer."""


@dataclass
class Seeded:
    """What exists before the fuzzing starts, so that generated requests also reach past the lookups."""

    tracking: tuple[str, int]
    experiment_id: str
    run_id: str
    model: str


@pytest.fixture
async def seeded(bootstrap_servers: str, unique: str, database_url: str, tmp_path: Any) -> AsyncIterator[Seeded]:
    kafka = fast_kafka(bootstrap_servers, f"e{unique}.")
    await ensure_topics(kafka, [REGISTRY_EVENTS])
    registry_settings = fast_settings(RegistrySettings, outbox_poll_interval_s=0.2, outbox_max_backoff_s=0.5)
    async with running(REGISTRY, registry_bootstrap, registry_settings, kafka=kafka,
                       database_url=database_url) as registry:
        tracking_settings = fast_settings(TrackingSettings, consume_events=False,
                                          registry_url=f"http://127.0.0.1:{registry.http_port}",
                                          default_artifact_root=(tmp_path / "artifacts").as_uri())
        async with running(TRACKING, tracking_bootstrap_module.bootstrap, tracking_settings, kafka=kafka,
                           database_url=database_url) as tracking:
            address = ("127.0.0.1", tracking.http_port)
            seeded = await asyncio.to_thread(_seed, address)
            yield seeded


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
          query: str = "") -> tuple[int, bytes, bool]:
    """One request on ``conn``: status, body and whether the server means to close the connection."""
    headers = {"content-type": "application/json"} if body is not None else {}
    conn.request(method, f"{PREFIX}{path}{'?' + query if query else ''}", body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read(), response.will_close


def _seed(address: tuple[str, int]) -> Seeded:
    conn = http.client.HTTPConnection(*address, timeout=60)
    try:
        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            status, answer, _ = _call(conn, "POST", path, json.dumps(body).encode())
            assert status == 200, (path, answer)
            return json.loads(answer)  # type: ignore[no-any-return]

        experiment_id = post("/experiments/create", {"name": "edges"})["experiment_id"]
        run_id = post("/runs/create", {"experiment_id": experiment_id, "start_time": 1_700_000_000_000})[
            "run"]["info"]["run_id"]
        post("/runs/log-batch", {"run_id": run_id, "metrics": [
            {"key": "loss", "value": 1.0 / (step + 1), "timestamp": 1_700_000_000_000 + step, "step": step}
            for step in range(5)], "params": [{"key": "C", "value": "0.5"}]})
        post("/registered-models/create", {"name": "edges"})
        post("/model-versions/create", {"name": "edges", "source": "s3://bucket/model", "run_id": run_id})
        return Seeded(address, experiment_id, run_id, "edges")
    finally:
        conn.close()


# -- strategies ---------------------------------------------------------------------------------------

HUGE_NUMBERS = st.sampled_from([-1, 0, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 10**20, 10**300,
                                1e300, -1e300, 1.5, -0.0])
NUMBERS = st.one_of(st.integers(), HUGE_NUMBERS, st.floats(allow_nan=False))
LONG_TEXT = st.sampled_from(["x" * 10_000, "1" * 10_000 + "x", "(" * 3000 + "a" + ")" * 3000, "\\" * 5000,
                             "'" * 4001, "é" * 3000])
UNSTORABLE_TEXT = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff"])
"""Text PostgreSQL cannot hold (a NUL character, an unpaired surrogate)."""
TEXT = st.one_of(st.text(max_size=40), LONG_TEXT, UNSTORABLE_TEXT)
JSON = st.recursive(st.none() | st.booleans() | NUMBERS | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)

FILTER_BITS = st.sampled_from([
    "metrics.loss", "params.C", "tags.`a b`", "attributes.status", "attributes.start_time", "name",
    "run_id", "version_number", "tags.x", " and ", " AND ", " or ", " IN ", " NOT IN ", " LIKE ", " IS NULL ",
    "(", ")", ",", "=", "!=", "<", ">=", "'x'", '"y"', "'", "`", "1", "-2.5", "1e999", "99999999999999999999",
    "\u0661", " ",
])
FILTERS = st.one_of(st.lists(FILTER_BITS, max_size=30).map("".join), TEXT, JSON)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


PAGE_TOKENS = st.one_of(
    TEXT,
    st.binary(max_size=60).map(_b64),                                               # base64 of garbage
    st.text(max_size=30).map(lambda text: _b64(text.encode())),                     # base64 of non-JSON
    JSON.map(lambda value: _b64(json.dumps(value).encode())),                       # JSON of any shape
    st.one_of(NUMBERS, TEXT).flatmap(lambda offset: st.sampled_from([
        _b64(json.dumps({"offset": offset}).encode()), _b64(json.dumps({"o": offset}).encode())])),
    st.just(_b64(b"[" * 50_000)),                                                   # nesting past recursion
    JSON,
)
VERSIONS = st.one_of(st.sampled_from(["abc", "1e9", "-1", "0", "1", "99999999999999999999", "1.0", " 1", "\u0661",
                                      "9" * 5000, "", "+1", "0x1"]), NUMBERS, JSON)


def fields(**shapes: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A body with some of the given fields (each from its strategy, or any JSON), and sometimes
    a stray one."""
    return st.fixed_dictionaries({}, optional={
        **{name: st.one_of(shape, JSON) for name, shape in shapes.items()}, "stray": JSON})


def requests_for(seed: Seeded) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
    """Generated bodies per endpoint (paths below the prefix)."""
    run_ids = st.one_of(st.just(seed.run_id), TEXT)
    experiment_ids = st.one_of(st.just(seed.experiment_id), st.sampled_from(["0", "-1", "99999999999999999999"]),
                               TEXT)
    models = st.one_of(st.just(seed.model), TEXT)
    metric = st.fixed_dictionaries({}, optional={"key": st.one_of(st.just("loss"), TEXT), "value": NUMBERS,
                                                 "timestamp": NUMBERS, "step": NUMBERS})
    key_value = st.fixed_dictionaries({}, optional={"key": TEXT, "value": TEXT})
    return {
        "/runs/search": fields(experiment_ids=st.lists(experiment_ids, max_size=3), filter=FILTERS,
                               order_by=st.lists(FILTERS, max_size=3), max_results=NUMBERS, page_token=PAGE_TOKENS,
                               run_view_type=st.sampled_from(["ALL", "1", "²", "7"])),
        "/runs/create": fields(experiment_id=experiment_ids, start_time=NUMBERS, run_name=TEXT,
                               tags=st.lists(key_value, max_size=3), user_id=TEXT),
        "/runs/log-batch": fields(run_id=run_ids, metrics=st.lists(metric, max_size=4),
                                  params=st.lists(key_value, max_size=3), tags=st.lists(key_value, max_size=3)),
        "/metrics/get-history": fields(run_id=run_ids, metric_key=st.one_of(st.just("loss"), TEXT),
                                       max_results=NUMBERS, page_token=PAGE_TOKENS),
        "/experiments/search": fields(filter=FILTERS, order_by=st.lists(FILTERS, max_size=3), max_results=NUMBERS,
                                      page_token=PAGE_TOKENS, view_type=st.sampled_from(["ALL", "3", "²"])),
        "/registered-models/search": fields(filter=FILTERS, order_by=st.lists(FILTERS, max_size=3),
                                            max_results=NUMBERS, page_token=PAGE_TOKENS),
        "/model-versions/search": fields(filter=FILTERS, order_by=st.lists(FILTERS, max_size=3), max_results=NUMBERS,
                                         page_token=PAGE_TOKENS),
        "/model-versions/get": fields(name=models, version=VERSIONS),
        "/runs/update": fields(run_id=run_ids, status=st.sampled_from(["FINISHED", "3", "²", "99"]), end_time=NUMBERS,
                               run_name=TEXT),
        "/runs/log-metric": fields(run_id=run_ids, key=st.one_of(st.just("loss"), TEXT), value=NUMBERS,
                                   timestamp=NUMBERS, step=NUMBERS),
        "/registered-models/alias": fields(name=models, alias=st.one_of(st.just("production"), TEXT)),
    }


GET_ONLY = {"/registered-models/search", "/model-versions/search", "/model-versions/get", "/registered-models/alias"}
"""The registry's read endpoints answer GET only (MLflow's methods); tracking's take GET and POST."""


def _query(body: dict[str, Any]) -> str:
    """``body`` as MLflow's GET form: each scalar as text, a list as a repeated parameter."""
    pairs: list[tuple[str, str]] = []
    for name, value in body.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((name, item if isinstance(item, str) else json.dumps(item)))
    return urlencode(pairs, errors="surrogatepass")


# -- the test -----------------------------------------------------------------------------------------

def _fuzz(seed: Seeded, failures: list[str]) -> None:
    conn = http.client.HTTPConnection(*seed.tracking, timeout=60)

    def check(label: str, send: Callable[[], tuple[int, bytes, bool]]) -> None:
        try:
            status, answer, closing = send()
        except (http.client.HTTPException, OSError) as exc:
            failures.append(f"{label}: the connection broke ({type(exc).__name__}: {exc})")
            conn.close()
            return
        if status >= 500 or closing:
            failures.append(f"{label}: {status}{' and Connection: close' if closing else ''} {answer[:300]!r}")

    settings = hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                                   phases=[Phase.explicit, Phase.generate], verbosity=Verbosity.quiet,
                                   suppress_health_check=list(HealthCheck))
    def sender(path: str, method: str) -> Callable[[dict[str, Any]], None]:
        def send(body: dict[str, Any]) -> None:
            if method == "POST":
                data = json.dumps(body).encode()
                check(f"POST {path} {data[:300]!r}", lambda: _call(conn, "POST", path, data))
            else:
                query = _query(body)
                if len(query) > MAX_QUERY_CHARS:
                    return
                check(f"GET {path}?{query[:300]}", lambda: _call(conn, "GET", path, query=query))
        return send

    try:
        for path, bodies in requests_for(seed).items():
            for method in ["GET"] if path in GET_ONLY else ["POST", "GET"]:
                settings(given(body=bodies)(sender(path, method)))()
        # Bodies that are not even JSON objects, on one endpoint of each service.
        for path in ("/runs/search", "/registered-models/create"):
            for raw in (b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 50_000, b"\xff\xfe", b"[]", b"nul", b"1e999999",
                        '{"name": "x"}'.encode("utf-16"), '{"name": "\\u0000"}'.encode("utf-16-le")):
                check(f"POST {path} {raw[:40]!r}...", partial(_call, conn, "POST", path, raw))
    finally:
        conn.close()


async def test_mlflow_edges_answer_4xx_never_5xx_and_keep_the_connection(seeded: Seeded) -> None:
    failures: list[str] = []
    await asyncio.to_thread(_fuzz, seeded, failures)
    assert not failures, "\n".join(failures[:20])


# -- the reported cases, with the answers MLflow gives ---------------------------------------------------

BAD_PAGE_TOKENS = [
    "garbage!",                                         # not base64
    _b64(b"\xff\xfe\x00garbage"),                       # base64 of bytes that are not text
    _b64(b"not json"),                                  # base64 of text that is not JSON
    _b64(b"[1, 2]"), _b64(b'{"offset": "x", "o": "x"}'),  # JSON of the wrong shape
    _b64(b'{"offset": -1, "o": -1}'),                   # negative offsets
    _b64(b'{"offset": 99999999999999999999, "o": 99999999999999999999}'),  # beyond bigint
    _b64(b"[" * 5_000),                                 # nested past the decoder's recursion
]


async def test_reported_cases_answer_what_mlflow_answers(seeded: Seeded) -> None:
    def expect(method: str, path: str, body: dict[str, Any] | None, status: int, code: str, fragment: str = "",
               query: str = "") -> dict[str, Any]:
        conn = http.client.HTTPConnection(*seeded.tracking, timeout=60)
        try:
            got, answer, closing = _call(conn, method, path, None if body is None else json.dumps(body).encode(),
                                         query)
        finally:
            conn.close()
        assert (got, closing) == (status, False), (method, path, got, answer[:300])
        data: dict[str, Any] = json.loads(answer)
        if code:
            assert data["error_code"] == code and fragment in data["message"], data
        return data

    def in_thread() -> None:
        ids = [seeded.experiment_id]
        long_filter = "metrics.loss < " + "1" * 9_984 + "x"
        assert len(long_filter) == 10_000
        expect("POST", "/runs/search", {"experiment_ids": ids, "filter": long_filter}, 400, "INVALID_PARAMETER_VALUE",
               "10000 characters long; at most 8192")
        nested = "(" * 3000 + "metrics.loss < 1" + ")" * 3000
        expect("POST", "/runs/search", {"experiment_ids": ids, "filter": nested}, 400, "INVALID_PARAMETER_VALUE",
               "nested more than 32 levels deep")
        expect("POST", "/experiments/search", {"filter": nested}, 400, "INVALID_PARAMETER_VALUE", "nested more than")
        expect("POST", "/runs/search", {"experiment_ids": ids, "order_by": ["metrics.a" + "a" * 2000]}, 400,
               "INVALID_PARAMETER_VALUE", "at most 1024")
        expect("POST", "/runs/search", {"experiment_ids": ids, "max_results": 50_001}, 400, "INVALID_PARAMETER_VALUE",
               "1 to 50000")
        assert len(expect("POST", "/runs/search", {"experiment_ids": ids, "max_results": 50_000}, 200, "")["runs"]) == 1
        for token in BAD_PAGE_TOKENS:
            expect("POST", "/runs/search", {"experiment_ids": ids, "page_token": token}, 400, "INVALID_PARAMETER_VALUE",
                   "page_token")
            expect("POST", "/experiments/search", {"page_token": token}, 400, "INVALID_PARAMETER_VALUE", "page_token")
            expect("POST", "/metrics/get-history", {"run_id": seeded.run_id, "metric_key": "loss",
                                                    "page_token": token}, 400, "INVALID_PARAMETER_VALUE", "page_token")
            for path in ("/registered-models/search", "/model-versions/search"):
                expect("GET", path, None, 400, "INVALID_PARAMETER_VALUE", "page_token",
                       urlencode({"page_token": token}))
        expect("GET", "/model-versions/search", None, 400, "INVALID_PARAMETER_VALUE", "outside",
               urlencode({"filter": "version_number > 99999999999999999999"}))

        # Version numbers: not an integer is INVALID_PARAMETER_VALUE; an integer no version has is
        # RESOURCE_DOES_NOT_EXIST (MLflow's own answers), on reads and writes alike.
        for version, status, code in [("abc", 400, "INVALID_PARAMETER_VALUE"), ("1e9", 400, "INVALID_PARAMETER_VALUE"),
                                      ("-1", 404, "RESOURCE_DOES_NOT_EXIST"), ("0", 404, "RESOURCE_DOES_NOT_EXIST"),
                                      ("99999999999999999999", 404, "RESOURCE_DOES_NOT_EXIST")]:
            expect("GET", "/model-versions/get", None, status, code, "version",
                   urlencode({"name": seeded.model, "version": version}))
            expect("POST", "/registered-models/alias", {"name": seeded.model, "alias": "production",
                                                        "version": version}, status, code, "version")
            expect("PATCH", "/model-versions/update", {"name": seeded.model, "version": version, "description": "d"},
                   status, code, "version")
        assert expect("GET", "/model-versions/get", None, 200, "",
                      query=urlencode({"name": seeded.model, "version": "1"}))["model_version"]["version"] == "1"

    await asyncio.to_thread(in_thread)


async def test_metric_history_is_paged_at_mlflows_cap(seeded: Seeded) -> None:
    def in_thread() -> None:
        conn = http.client.HTTPConnection(*seeded.tracking, timeout=60)
        try:
            def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                status, answer, _ = _call(conn, "POST", path, json.dumps(body).encode())
                return status, json.loads(answer)

            run_id = post("/runs/create", {"experiment_id": seeded.experiment_id})[1]["run"]["info"]["run_id"]
            for first in range(0, 25_001, 1000):
                status, _ = post("/runs/log-batch", {"run_id": run_id, "metrics": [
                    {"key": "m", "value": 0.5, "timestamp": 1, "step": step}
                    for step in range(first, min(first + 1000, 25_001))]})
                assert status == 200
            # No max_results: MLflow's largest page (25,000) and a token, never an unbounded answer.
            status, page = post("/metrics/get-history", {"run_id": run_id, "metric_key": "m"})
            assert status == 200 and len(page["metrics"]) == 25_000 and page["metrics"][-1]["step"] == 24_999
            status, rest = post("/metrics/get-history", {"run_id": run_id, "metric_key": "m",
                                                         "page_token": page["next_page_token"]})
            assert status == 200 and [m["step"] for m in rest["metrics"]] == [25_000]
            assert "next_page_token" not in rest
            status, small = post("/metrics/get-history", {"run_id": run_id, "metric_key": "m", "max_results": 3,
                                                          "page_token": page["next_page_token"]})
            assert [m["step"] for m in small["metrics"]] == [25_000]
            status, error = post("/metrics/get-history", {"run_id": run_id, "metric_key": "m", "max_results": 25_001})
            assert status == 400 and error["error_code"] == "INVALID_PARAMETER_VALUE"
        finally:
            conn.close()

    await asyncio.to_thread(in_thread)
