"""What went over the topics: every record of some topics, read from the beginning, to check each hop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from google.protobuf.message import Message

from gyre_common.topics import full_name
from gyre_stack.demo.checks import poll


class TopicLog:
    """Every record of some topics, read from the beginning by a plain aiokafka consumer (no group).

    Values are decoded as the topic's protobuf message; records that do not decode (another
    producer's format, e.g. JSON) are skipped.
    """

    def __init__(self, bootstrap_servers: str, prefix: str, topics: dict[str, type[Message]]) -> None:
        """``topics``: base topic name (``training.events``) -> its message class."""
        self.prefix = prefix
        self.types = topics
        self.records: dict[str, list[Message]] = {base: [] for base in topics}
        self._consumer = AIOKafkaConsumer(*(full_name(base, prefix) for base in topics),
                                          bootstrap_servers=bootstrap_servers, group_id=None,
                                          enable_auto_commit=False, auto_offset_reset="earliest")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for record in self._consumer:
            base = record.topic[len(self.prefix):]
            try:
                message = self.types[base].FromString(record.value or b"")
            except Exception:  # a foreign record (e.g. JSON from another producer) is skipped, not fatal
                continue
            self.records[base].append(message)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    def of(self, topic: str, match: Callable[[Any], bool] = lambda _m: True) -> list[Any]:
        """The records of base topic ``topic`` seen so far that ``match``, in arrival order."""
        return [m for m in self.records[topic] if match(m)]

    async def wait(self, topic: str, match: Callable[[Any], bool], *, count: int = 1, within_s: float,
                   what: str) -> list[Any]:
        """The matching records once there are at least ``count``; LoopError after ``within_s`` seconds."""
        async def check() -> list[Any] | None:
            found = self.of(topic, match)
            return found if len(found) >= count else None
        return await poll(check, within_s=within_s, what=f"{what} on {topic}")
