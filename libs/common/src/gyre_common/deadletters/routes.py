"""HTTP routes for a consuming service's OWN dead letters (see docs/bus.md, "Dead letters").

* ``GET  /api/v1/dead-letters`` — the service's dead-letter topics (one per consumer group) with
  counts per partition and replay progress.
* ``GET  /api/v1/dead-letters/{topic}?partition=&offset=&limit=`` — a page of records (offset needs
  partition; ``limit`` 1..500, default 50); ``next`` says where the following page starts.
* ``GET  /api/v1/dead-letters/{topic}/{partition}/{offset}`` — one record: every header and the
  payload (JSON, decoded protobuf, or base64).
* ``POST /api/v1/dead-letters/{topic}/replay`` — body ``{"partition", "from_offset", "to_offset"}``
  (all optional; ``to_offset`` inclusive): re-publish to the original topic, answer how many.

A topic that is not one of this service's groups' dead-letter topics answers 404, whatever exists
on the broker. Bad parameters answer 422 (type, range: FastAPI's validation) or 400 (a combination,
e.g. ``offset`` without ``partition``), a missing topic/partition/offset 404, a broker that does not
answer 503. Wired by :func:`mount_dead_letter_routes` in each consuming service's bootstrap.

Authentication: a service that authenticates its own writes passes ``authorize`` (called with the
``authorization`` header before a replay; it raises :class:`~gyre_common.errors.Unauthenticated`
for 401); Gyre has no shared token scheme yet, so the reads follow the service's other reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from gyre_common.bus.consumer import Consumer
from gyre_common.deadletters.render import record_json
from gyre_common.deadletters.tools import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, MAX_PARTITION, DeadLetterTools
from gyre_common.errors import NotFound

if TYPE_CHECKING:
    from gyre_common.runner import ServiceContext

PREFIX = "/api/v1/dead-letters"


class ReplayRequest(BaseModel):
    """What to replay; every field optional (an empty body replays everything not replayed yet)."""

    model_config = ConfigDict(extra="forbid")

    partition: int | None = Field(default=None, ge=0, le=MAX_PARTITION, description="only this partition")
    from_offset: int | None = Field(default=None, ge=0, le=MAX_OFFSET,
                                    description="first offset, in each chosen partition (default: replay progress)")
    to_offset: int | None = Field(default=None, ge=0, le=MAX_OFFSET,
                                  description="last offset, inclusive (default: the end now)")


Authorize = Callable[[str | None], object]
"""Checks an ``authorization`` header value; raises (e.g. :class:`~gyre_common.errors.Unauthenticated`) to refuse."""


def dead_letter_router(tools: DeadLetterTools, groups: Iterable[str], *,
                       authorize: Authorize | None = None) -> APIRouter:
    """The routes above for the dead-letter topics of ``groups`` (consumer groups without prefix);
    ``authorize`` guards replay."""
    own = sorted({tools.topic_of(group) for group in groups})
    router = APIRouter(prefix=PREFIX, tags=["dead letters"])

    def check(topic: str) -> str:
        if topic not in own:
            raise NotFound(f"{topic!r} is not a dead-letter topic of this service (its are: {', '.join(own)})")
        return topic

    @router.get("")
    async def list_topics() -> dict[str, Any]:
        topics = await tools.list_topics([tools.group_of(t) for t in own])
        return {"dead_letters": [t.to_json() for t in topics], "max_limit": MAX_LIMIT}

    @router.get("/{topic}")
    async def list_records(
        topic: str,
        partition: Annotated[int | None, Query(ge=0, le=MAX_PARTITION, description="only this partition")] = None,
        offset: Annotated[int | None, Query(ge=0, le=MAX_OFFSET, description="first offset (needs partition)")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="records in the page")] = DEFAULT_LIMIT,
    ) -> dict[str, Any]:
        page = await tools.records(check(topic), partition=partition, offset=offset, limit=limit)
        return page.to_json()

    @router.get("/{topic}/{partition}/{offset}")
    async def show_record(topic: str, partition: Annotated[int, Path(ge=0, le=MAX_PARTITION)],
                          offset: Annotated[int, Path(ge=0, le=MAX_OFFSET)]) -> dict[str, Any]:
        record = await tools.record(check(topic), partition, offset)
        return record_json(record, tools.prefix)

    @router.post("/{topic}/replay")
    async def replay(topic: str, request: Annotated[ReplayRequest | None, Body()] = None,
                     authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        if authorize is not None:
            authorize(authorization)
        wanted = request or ReplayRequest()
        result = await tools.replay(check(topic), partition=wanted.partition, from_offset=wanted.from_offset,
                                    to_offset=wanted.to_offset)
        return result.to_json()

    return router


def consumer_groups(tasks: Sequence[tuple[str, object]]) -> list[str]:
    """Groups (without prefix) of the bus consumers among a service's background tasks, in order."""
    groups = [task.group for _, task in tasks if isinstance(task, Consumer)]
    return list(dict.fromkeys(groups))


def mount_dead_letter_routes(ctx: ServiceContext, *, authorize: Authorize | None = None) -> list[str]:
    """Add the dead-letter routes for every bus :class:`~gyre_common.bus.Consumer` the service has
    added with ``ctx.add_task`` so far (call it last in ``bootstrap``). Returns the groups; adds
    nothing when there are none. ``authorize`` guards replay (see the module docstring)."""
    groups = consumer_groups(ctx.tasks)
    if groups:
        tools = DeadLetterTools(ctx.kafka, client_id=f"{ctx.kafka.client_id}-{ctx.spec.name}-dlq")
        ctx.app.include_router(dead_letter_router(tools, groups, authorize=authorize))
    return groups
