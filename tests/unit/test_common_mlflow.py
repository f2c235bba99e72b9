"""The shared MLflow layer (gyre_common.mlflow): error map, gateway, field reader, grammar (no I/O)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from gyre_common import errors
from gyre_common.mlflow.errors import DEFAULT_ERRORS, ErrorMap, MlflowNotImplemented
from gyre_common.mlflow.fields import Fields, read_fields
from gyre_common.mlflow.gateway import MlflowGateway, MlflowJSONResponse
from gyre_common.mlflow.search import (
    NUMERIC_OPS,
    BoolOp,
    Comparison,
    Dialect,
    Operand,
    OrderKey,
    parse_filter,
    parse_order_by,
)
from gyre_common.mlflow.search_sql import Args, Column, JsonbKeys, KeyedRows, where_sql


@pytest.mark.parametrize(("error", "code", "status"), [
    (errors.InvalidArgument("x"), "INVALID_PARAMETER_VALUE", 400),
    (errors.FailedPrecondition("x"), "INVALID_PARAMETER_VALUE", 400),
    (errors.NotFound("x"), "RESOURCE_DOES_NOT_EXIST", 404),
    (errors.AlreadyExists("x"), "RESOURCE_ALREADY_EXISTS", 400),
    (errors.TooLarge("x"), "INVALID_PARAMETER_VALUE", 413),
    (errors.ResourceExhausted("x"), "REQUEST_LIMIT_EXCEEDED", 429),
    (errors.Unauthenticated("x"), "UNAUTHENTICATED", 401),
    (errors.Unavailable("x"), "TEMPORARILY_UNAVAILABLE", 503),
    (MlflowNotImplemented("x"), "NOT_IMPLEMENTED", 501),
    (errors.GyreError("x"), "INTERNAL_ERROR", 500),
])
def test_the_shared_error_map(error: errors.GyreError, code: str, status: int) -> None:
    assert DEFAULT_ERRORS.code_of(error) == (code, status)


def test_overrides_come_first() -> None:
    class Conflict(errors.AlreadyExists):
        pass

    assert ErrorMap([(Conflict, "INVALID_PARAMETER_VALUE")]).code_of(Conflict("x")) == ("INVALID_PARAMETER_VALUE", 400)


def _data_error(cause: BaseException) -> asyncpg.DataError:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise asyncpg.DataError("invalid input for query argument $1") from inner
    except asyncpg.DataError as exc:
        return exc


def test_a_value_the_database_cannot_encode_is_invalid_not_a_500() -> None:
    for cause in (ValueError("x"), OverflowError("int too big"), UnicodeEncodeError("utf-8", "\ud800", 0, 1, "x")):
        answer = DEFAULT_ERRORS.answer(_data_error(cause))
        assert answer is not None and answer.status_code == 400
        assert json.loads(bytes(answer.body))["error_code"] == "INVALID_PARAMETER_VALUE"
    assert DEFAULT_ERRORS.answer(_data_error(KeyError("x"))) is None  # anything else stays a 500
    assert DEFAULT_ERRORS.answer(RuntimeError("x")) is None


def test_unavailable_exceptions_answer_503_with_the_services_message() -> None:
    error_map = ErrorMap(unavailable=(ConnectionRefusedError,), unavailable_message="away")
    answer = error_map.answer(ConnectionRefusedError())
    assert answer is not None and answer.status_code == 503
    assert json.loads(bytes(answer.body)) == {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "away"}


@pytest.mark.parametrize("failure", [
    ConnectionRefusedError(111, "Connect call failed"),
    asyncpg.PostgresConnectionError("the connection was closed"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    TimeoutError(),
])
def test_a_dependency_away_answers_temporarily_unavailable_without_its_text(failure: Exception) -> None:
    answer = DEFAULT_ERRORS.answer(failure)
    assert answer is not None and answer.status_code == 503
    body = json.loads(bytes(answer.body))
    assert body["error_code"] == "TEMPORARILY_UNAVAILABLE" and "retry later" in body["message"]
    assert "Connect call" not in body["message"]


async def _fallback(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("app")(scope, receive, send)


async def _forwarded(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("forwarded")(scope, receive, send)


async def _echo(request: Request) -> Response:
    fields = await read_fields(request, Fields)
    if fields.has("fail"):
        raise errors.NotFound("no such thing")
    return MlflowJSONResponse({"got": dict(fields.data)})


async def test_gateway_dispatches_forwards_maps_errors_and_names_unknown_calls() -> None:
    gateway = MlflowGateway(_fallback, {("POST", "/things/get"): _echo, ("GET", "/things/get"): _echo},
                            service="test", forward=lambda path: _forwarded if "/other/" in path else None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://t") as client:
        got = await client.post("/api/2.0/mlflow/things/get", json={"a": 1})
        assert got.json() == {"got": {"a": 1}}
        query = await client.get("/ajax-api/2.0/mlflow/things/get", params=[("k", "1"), ("k", "2")])
        assert query.json() == {"got": {"k": ["1", "2"]}}
        missing = await client.post("/api/2.0/mlflow/things/get", json={"fail": True})
        assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        unknown = await client.delete("/api/2.0/mlflow/things/get")
        assert unknown.status_code == 404 and unknown.json()["error_code"] == "ENDPOINT_NOT_FOUND"
        assert "DELETE /api/2.0/mlflow/things/get" in unknown.json()["message"]
        assert (await client.get("/api/2.0/mlflow/other/x")).text == "forwarded"
        assert (await client.get("/healthz")).text == "app"


async def _read(body: bytes, method: str = "POST", query: bytes = b"", limit: int | None = None) -> Fields:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": method, "path": "/", "query_string": query, "headers": []}
    return await read_fields(Request(scope, receive), Fields, max_body_bytes=limit)


@pytest.mark.parametrize(("body", "query", "message"), [
    (b"[1]", b"", "must be a JSON object"),
    (b"{", b"", "malformed JSON"),
    (b"[" * 100_000, b"", "malformed JSON"),
    (b'{"a": "\\u0000"}', b"", "NUL characters"),
    (b'{"\\ud800": 1}', b"", "unpaired surrogates"),
    (b"", b"a=%00", "%00"),
])
async def test_reader_refuses_what_postgresql_cannot_store_or_is_not_an_object(body: bytes, query: bytes,
                                                                               message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        await _read(body, query=query)


async def test_reader_limits_and_empty_bodies() -> None:
    with pytest.raises(errors.TooLarge):
        await _read(b'{"a": "' + b"x" * 100 + b'"}', limit=50)
    empty = await _read(b"", method="DELETE", query=b"name=m")
    assert empty.string("name") == "m"


# -- the shared grammar and its SQL ---------------------------------------------------------------

class _Refused(Exception):
    pass


def _refuse(field: str, message: str) -> Exception:
    return _Refused(f"{field}: {message}")


_TEXT = Operand("string", frozenset({"=", "!=", "IN"}))
_FLAT = Dialect(error=_refuse, prefixes={"tags": "tag"}, keyed={"tag": _TEXT},
                attributes={"n": Operand("integer", NUMERIC_OPS), "s": _TEXT}, bare_attributes=True, boolean=False)
_BOOLEAN = Dialect(error=_refuse, prefixes={"tags": "tag"}, keyed={"tag": _TEXT},
                   attributes={"n": Operand("number", NUMERIC_OPS)}, bare_attributes=True)


def test_one_grammar_two_dialects() -> None:
    assert parse_filter(_BOOLEAN, "n > 1 or (tags.a = 'x' and n < 2)") == [BoolOp("OR", (
        Comparison("attribute", "n", ">", 1.0),
        BoolOp("AND", (Comparison("tag", "a", "=", "x"), Comparison("attribute", "n", "<", 2.0)))))]
    assert parse_filter(_FLAT, "n > 1 AND tags.`a b` IN ('x')") == [
        Comparison("attribute", "n", ">", 1), Comparison("tag", "a b", "IN", ("x",))]
    for text, message in [("n > 1 OR n < 2", "OR is not supported"), ("(n > 1)", "parentheses are not supported"),
                          ("n > 1.5", "takes an integer"), (f"n > {2**63}", "outside"), ("s > 'x'", "does not apply"),
                          ("x = 'y'", "unknown attribute")]:
        with pytest.raises(_Refused, match=f"^filter: .*{message}"):
            parse_filter(_FLAT, text)
    assert parse_order_by(_FLAT, ["n DESC"]) == [OrderKey("attribute", "n", False)]
    with pytest.raises(_Refused, match=r"^order_by: "):
        parse_order_by(_FLAT, ["n sideways"])


def test_filters_compile_through_the_services_column_map() -> None:
    columns = {("attribute", "n"): Column("t.n", "::float8"), ("tag", "a"): JsonbKeys("t.tags"),
               ("tag", None): KeyedRows("tags", "x.owner = t.id")}
    args = Args(first=3)
    where = where_sql(parse_filter(_BOOLEAN, "n > 1 or tags.a = 'x' and tags.b != 'y'"), columns, args)
    assert where == ["(t.n > $3::float8 OR (t.tags @> jsonb_build_object($4::text, $5::text) AND "
                     "EXISTS (SELECT 1 FROM tags x WHERE x.owner = t.id AND x.key = $6::text "
                     "AND x.value <> $7::text)))"]
    assert args.values == [1.0, "a", "x", "b", "y"]
