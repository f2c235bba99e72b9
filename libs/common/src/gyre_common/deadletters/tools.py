"""Looking at dead-letter topics and replaying their records, straight on the broker.

A consumer group's dead letters live in ``<prefix><group>.dlq`` (:func:`gyre_common.topics.dead_letter_topic`):
the original key, value and headers plus ``gyre_dlq_*`` headers saying why and where from
(:func:`gyre_common.bus.headers.dead_letter_headers`). This module lists those topics with their
counts, pages through their records, reads one record, and replays records to their original topic.

Replay guarantee: a record counts as replayed only once the broker acknowledged it (``acks=all``);
nothing is deleted (Kafka topics are append-only), so a failure mid-way loses nothing, it only
leaves records to replay again. Progress is the committed offset of the consumer group
``<prefix><group>.replay`` on each partition of the dead-letter topic, committed after each
acknowledged batch: "replay everything" resumes where the last one stopped instead of sending the
same records twice. An explicit ``from_offset`` replays again from there. Progress only moves
forward and only over a range that joins it (replaying offset 10 alone while progress is at 0 does
not mark 0..9 as replayed). Replaying a record twice is still harmless: the replayed record keeps
its ``ce_id`` and every Gyre consumer dedupes on it.

Every method opens its own short-lived broker clients: these are operator calls, rare and small.
Errors are :mod:`gyre_common.errors` classes, so the HTTP routes and the CLI map them the same way:
:class:`~gyre_common.errors.InvalidArgument` (bad topic name, offsets), :class:`~gyre_common.errors.NotFound`
(no such topic, partition or offset), :class:`~gyre_common.errors.Unavailable` (the broker did not
answer, or a replay stopped half-way: :class:`ReplayInterrupted` says how many were replayed).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from gyre_common.bus.headers import (
    CE_ID,
    CE_TYPE,
    DLQ_ATTEMPTS,
    DLQ_ERROR,
    DLQ_GROUP,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TIME,
    DLQ_TOPIC,
)
from gyre_common.bus.publisher import producer_config
from gyre_common.errors import InvalidArgument, NotFound, Unavailable
from gyre_common.settings import KafkaSettings
from gyre_common.topics import DEAD_LETTER_SUFFIX, TOPICS, dead_letter_topic

DEFAULT_LIMIT = 50
"""Records in one page when the caller gives no limit."""
MAX_LIMIT = 500
"""Most records in one page: a page is held in memory and sent as one JSON document."""
REPLAY_BATCH = 500
"""Records sent before waiting for their acknowledgements and committing progress."""
REPLAY_GROUP_SUFFIX = ".replay"
"""``<prefix><group>`` + this is the consumer group that holds a dead-letter topic's replay progress."""
REPLAYED_FROM = "gyre_replayed_from"
"""Header on a replayed record: ``<dlq topic>/<partition>/<offset>`` it was replayed from."""
DLQ_HEADER_PREFIX = "gyre_dlq_"
MAX_SKIPPED_LISTED = 100
"""Skipped records named one by one in a replay result (the count is always exact)."""


@dataclass(frozen=True)
class PartitionCounts:
    """One partition of a dead-letter topic.

    Attributes:
        start_offset: first offset still kept (log start).
        end_offset: offset the next record will get.
        replayed_offset: replay progress (next offset "replay all" would send), None if never replayed.
    """

    partition: int
    start_offset: int
    end_offset: int
    replayed_offset: int | None = None

    @property
    def count(self) -> int:
        """Records kept in this partition."""
        return max(self.end_offset - self.start_offset, 0)

    @property
    def pending(self) -> int:
        """Records "replay all" would still send."""
        resume = max(self.replayed_offset or 0, self.start_offset)
        return max(self.end_offset - resume, 0)

    def to_json(self) -> dict[str, object]:
        return {"partition": self.partition, "start_offset": self.start_offset, "end_offset": self.end_offset,
                "count": self.count, "replayed_offset": self.replayed_offset, "pending": self.pending}


@dataclass(frozen=True)
class DeadLetterTopic:
    """A dead-letter topic and its counts (``exists`` is False when no consumer has created it yet)."""

    topic: str
    group: str
    exists: bool
    partitions: tuple[PartitionCounts, ...] = ()

    @property
    def count(self) -> int:
        """Records kept, all partitions (end offset minus start offset, summed)."""
        return sum(p.count for p in self.partitions)

    @property
    def pending(self) -> int:
        """Records "replay all" would still send, all partitions."""
        return sum(p.pending for p in self.partitions)

    def to_json(self) -> dict[str, object]:
        return {"topic": self.topic, "group": self.group, "exists": self.exists, "count": self.count,
                "pending": self.pending, "replay_group": replay_group(self.topic),
                "partitions": [p.to_json() for p in self.partitions]}


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of a dead-letter topic, as stored (bytes untouched)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_consumer(cls, record: ConsumerRecord) -> DeadLetterRecord:
        return cls(record.topic, record.partition, record.offset, record.timestamp, record.key, record.value,
                   tuple(record.headers or ()))

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` as text (invalid UTF-8 replaced), None when absent."""
        for key, value in reversed(self.headers):
            if key == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def timestamp(self) -> datetime:
        """The record's broker timestamp, aware UTC."""
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def original_topic(self) -> str | None:
        """The topic the record was consumed from (``gyre_dlq_topic``), with prefix."""
        return self.header(DLQ_TOPIC)

    @property
    def reason(self) -> str | None:
        """``gyre_dlq_reason``: why it was dead-lettered."""
        return self.header(DLQ_REASON)

    def summary(self) -> dict[str, object]:
        """What a listing shows: coordinates, key, original topic and the dead-letter reason headers."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": _iso(self.timestamp),
            **_bytes_field("key", self.key),
            "original_topic": self.original_topic,
            "original_partition": _int_or_none(self.header(DLQ_PARTITION)),
            "original_offset": _int_or_none(self.header(DLQ_OFFSET)),
            "reason": self.reason,
            "error": self.header(DLQ_ERROR),
            "attempts": _int_or_none(self.header(DLQ_ATTEMPTS)),
            "group": self.header(DLQ_GROUP),
            "dead_lettered_at": self.header(DLQ_TIME),
            "ce_id": self.header(CE_ID),
            "ce_type": self.header(CE_TYPE),
            "replayed_from": self.header(REPLAYED_FROM),
        }


@dataclass(frozen=True)
class RecordPage:
    """A page of records; ``next`` is where the following page starts (partition and offset), None at the end."""

    topic: str
    records: tuple[DeadLetterRecord, ...]
    next: tuple[int, int] | None

    def to_json(self) -> dict[str, object]:
        return {"topic": self.topic, "records": [r.summary() for r in self.records],
                "next": None if self.next is None else {"partition": self.next[0], "offset": self.next[1]}}


@dataclass
class ReplayResult:
    """What a replay did.

    Attributes:
        replayed: records re-published and acknowledged by the broker.
        skipped: records that cannot be replayed (no or unknown original topic), as
            ``(partition, offset, why)``; at most :data:`MAX_SKIPPED_LISTED` are listed.
        skipped_count: all skipped records.
        ranges: per partition, the offsets looked at: ``(first, last)`` inclusive.
        progress: per partition, the replay progress after the call (None: never replayed).
    """

    topic: str
    replayed: int = 0
    skipped: list[tuple[int, int, str]] = field(default_factory=list)
    skipped_count: int = 0
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    progress: dict[int, int | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "replayed": self.replayed,
            "skipped_count": self.skipped_count,
            "skipped": [{"partition": p, "offset": o, "why": why} for p, o, why in self.skipped],
            "ranges": [{"partition": p, "from_offset": a, "to_offset": b} for p, (a, b) in sorted(self.ranges.items())],
            "progress": [{"partition": p, "replayed_offset": o} for p, o in sorted(self.progress.items())],
        }


class ReplayInterrupted(Unavailable):
    """The broker failed during a replay; ``replayed`` records were acknowledged (and their progress
    committed) before it. Nothing is lost: run the replay again."""

    def __init__(self, message: str, replayed: int) -> None:
        super().__init__(message)
        self.replayed = replayed


def replay_group(topic: str) -> str:
    """The consumer group holding the replay progress of dead-letter topic ``topic``:
    ``gyre.monitor.dlq`` -> ``gyre.monitor.replay``."""
    return topic.removesuffix(DEAD_LETTER_SUFFIX) + REPLAY_GROUP_SUFFIX


def replay_headers(record: DeadLetterRecord) -> list[tuple[str, bytes]]:
    """The headers a replayed record carries: the original ones (CloudEvents, trace context, the
    producer's own) in order, without ``gyre_dlq_*`` or an earlier replay mark, plus
    ``gyre_replayed_from``."""
    kept = [(k, v) for k, v in record.headers if not k.startswith(DLQ_HEADER_PREFIX) and k != REPLAYED_FROM]
    kept.append((REPLAYED_FROM, f"{record.topic}/{record.partition}/{record.offset}".encode()))
    return kept


class DeadLetterTools:
    """Dead-letter topics of the stack ``settings`` points at (its broker and ``topic_prefix``).

    Args:
        settings: broker address and prefix; broker calls are bounded by ``request_timeout_ms``.
        client_id: Kafka client id (default ``<settings.client_id>-dlq``).
    """

    def __init__(self, settings: KafkaSettings, *, client_id: str | None = None) -> None:
        self.settings = settings
        self.prefix = settings.topic_prefix
        self._client_id = client_id or f"{settings.client_id}-dlq"
        # One replay at a time per topic in this process: two at once would both read the same
        # progress and send the same records twice (harmless, but pointless).
        self._replay_locks: dict[str, asyncio.Lock] = {}

    @property
    def _timeout_s(self) -> float:
        return max(self.settings.request_timeout_ms / 1000, 1.0)

    # -- names ----------------------------------------------------------------------------------

    def topic_of(self, group: str) -> str:
        """The dead-letter topic of ``group`` (a group name without prefix)."""
        return dead_letter_topic(group, self.prefix)

    def group_of(self, topic: str) -> str:
        """The consumer group (without prefix) whose dead letters ``topic`` holds.

        Raises:
            InvalidArgument: ``topic`` is not a dead-letter topic of this prefix.
        """
        if not topic.endswith(DEAD_LETTER_SUFFIX) or not topic.startswith(self.prefix):
            raise InvalidArgument(
                f"{topic!r} is not a dead-letter topic: those are named "
                f"'{self.prefix}<group>{DEAD_LETTER_SUFFIX}' (prefix from GYRE_KAFKA_TOPIC_PREFIX)")
        group = topic[len(self.prefix):-len(DEAD_LETTER_SUFFIX)]
        if not group:
            raise InvalidArgument(f"{topic!r} names no consumer group")
        return group

    # -- clients --------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _consumer(self, group_id: str | None = None) -> AsyncIterator[AIOKafkaConsumer]:
        """A consumer that never joins a group (partitions are assigned by hand); with ``group_id``
        it can read and commit that group's offsets."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            client_id=self._client_id,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=self.settings.request_timeout_ms,
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                await consumer.start()
        except (KafkaError, TimeoutError, OSError) as exc:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise self._unavailable(exc) from None
        try:
            yield consumer
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _unavailable(self, exc: BaseException) -> Unavailable:
        what = type(exc).__name__ if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return Unavailable(f"the Kafka broker at {self.settings.bootstrap_servers} did not answer ({what})")

    @contextlib.asynccontextmanager
    async def _broker_errors(self) -> AsyncIterator[None]:
        try:
            yield
        except (KafkaError, TimeoutError, OSError) as exc:
            raise self._unavailable(exc) from None

    async def _partitions(self, consumer: AIOKafkaConsumer, topic: str, *, refresh: bool = True) -> list[int]:
        """Sorted partitions of ``topic``, [] when it does not exist."""
        if refresh:
            await consumer.topics()  # fetches the cluster's metadata (never auto-creates a topic)
        return sorted(consumer.partitions_for_topic(topic) or ())

    async def _counts(self, consumer: AIOKafkaConsumer, topic: str, partitions: Sequence[int],
                      ) -> list[PartitionCounts]:
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return []
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        progress = {tp: await consumer.committed(tp) for tp in tps}
        return [PartitionCounts(tp.partition, starts[tp], ends[tp], progress[tp]) for tp in tps]

    # -- look ----------------------------------------------------------------------------------

    async def list_topics(self, groups: Iterable[str] | None = None) -> list[DeadLetterTopic]:
        """Dead-letter topics with their counts and replay progress, sorted by name.

        Args:
            groups: consumer groups (without prefix) to report, existing or not; None means every
                ``<prefix>*.dlq`` topic on the broker.

        Raises:
            Unavailable: the broker did not answer.
        """
        async with self._consumer() as meta, self._broker_errors():
            names = await meta.topics()
            if groups is None:
                chosen = sorted(n for n in names if n.startswith(self.prefix) and n.endswith(DEAD_LETTER_SUFFIX)
                                and len(n) > len(self.prefix) + len(DEAD_LETTER_SUFFIX))
            else:
                chosen = sorted({self.topic_of(g) for g in groups})
            partitions = {name: await self._partitions(meta, name, refresh=False) for name in chosen}
        found: list[DeadLetterTopic] = []
        for name in chosen:
            counts: list[PartitionCounts] = []
            if partitions[name]:
                async with self._consumer(replay_group(name)) as consumer, self._broker_errors():
                    counts = await self._counts(consumer, name, partitions[name])
            found.append(DeadLetterTopic(name, self.group_of(name), bool(partitions[name]), tuple(counts)))
        return found

    async def describe(self, topic: str) -> DeadLetterTopic:
        """One dead-letter topic with its counts.

        Raises:
            InvalidArgument: not a dead-letter topic name. NotFound: it does not exist.
            Unavailable: the broker did not answer.
        """
        group = self.group_of(topic)
        async with self._consumer(replay_group(topic)) as consumer, self._broker_errors():
            partitions = await self._partitions(consumer, topic)
            if not partitions:
                raise NotFound(f"dead-letter topic {topic!r} does not exist (nothing was dead-lettered "
                               "by that group yet, or its consumer never started)")
            counts = await self._counts(consumer, topic, partitions)
        return DeadLetterTopic(topic, group, True, tuple(counts))

    async def records(self, topic: str, *, partition: int | None = None, offset: int | None = None,
                      limit: int = DEFAULT_LIMIT) -> RecordPage:
        """A page of records in (partition, offset) order.

        With ``partition``: that partition from ``offset`` (default: its first kept record; an
        offset below it starts there). Without: every partition from its start, partition by
        partition, until ``limit`` records; ``offset`` then needs ``partition``. ``next`` in the
        answer is where the page stopped: pass it back as ``partition`` and ``offset`` to read on.

        Raises:
            InvalidArgument: a bad topic name, a negative offset or partition, ``offset`` without
                ``partition``, ``limit`` outside 1..:data:`MAX_LIMIT`.
            NotFound: no such topic or partition.
            Unavailable: the broker did not answer.
        """
        self.group_of(topic)
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        if offset is not None and partition is None:
            raise InvalidArgument("offset needs a partition: offsets are per partition")
        _non_negative(partition=partition, offset=offset)
        async with self._consumer() as consumer, self._broker_errors():
            partitions = await self._existing_partitions(consumer, topic, partition)
            tps = [TopicPartition(topic, p) for p in partitions]
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            records: list[DeadLetterRecord] = []
            next_position: tuple[int, int] | None = None
            for tp in tps:
                begin = max(offset if offset is not None else 0, starts[tp])
                if begin >= ends[tp]:
                    continue
                if len(records) >= limit:
                    next_position = (tp.partition, begin)
                    break
                got = await self._read(consumer, tp, begin, ends[tp], limit - len(records))
                records.extend(got)
                after = got[-1].offset + 1 if got else ends[tp]
                if after < ends[tp]:
                    next_position = (tp.partition, after)
                    break
        return RecordPage(topic, tuple(records), next_position)

    async def record(self, topic: str, partition: int, offset: int) -> DeadLetterRecord:
        """The record at ``partition``/``offset``.

        Raises:
            InvalidArgument: a bad topic name, negative partition or offset.
            NotFound: no such topic, partition, or no record kept at that offset.
            Unavailable: the broker did not answer.
        """
        self.group_of(topic)
        _non_negative(partition=partition, offset=offset)
        async with self._consumer() as consumer, self._broker_errors():
            await self._existing_partitions(consumer, topic, partition)
            tp = TopicPartition(topic, partition)
            start = (await consumer.beginning_offsets([tp]))[tp]
            end = (await consumer.end_offsets([tp]))[tp]
            if not start <= offset < end:
                kept = f"offsets {start}..{end - 1} are kept" if end > start else "it is empty"
                raise NotFound(f"no record at offset {offset} of {topic} partition {partition} ({kept})")
            got = await self._read(consumer, tp, offset, offset + 1, 1)
        if not got or got[0].offset != offset:
            raise NotFound(f"no record at offset {offset} of {topic} partition {partition}")
        return got[0]

    async def _existing_partitions(self, consumer: AIOKafkaConsumer, topic: str, partition: int | None) -> list[int]:
        partitions = await self._partitions(consumer, topic)
        if not partitions:
            raise NotFound(f"dead-letter topic {topic!r} does not exist")
        if partition is None:
            return partitions
        if partition not in partitions:
            raise NotFound(f"{topic} has no partition {partition} (it has {partitions[0]}..{partitions[-1]})")
        return [partition]

    async def _read(self, consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, stop: int,
                    limit: int) -> list[DeadLetterRecord]:
        """Up to ``limit`` records of ``tp`` with ``start <= offset < stop``.

        Raises:
            TimeoutError: the broker gave nothing new for ``request_timeout_ms``.
        """
        consumer.assign([tp])
        consumer.seek(tp, start)
        out: list[DeadLetterRecord] = []
        position = start
        last_progress = time.monotonic()
        while len(out) < limit and position < stop:
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=min(limit - len(out), MAX_LIMIT))
            for record in batch.get(tp, ()):
                if record.offset >= stop or len(out) >= limit:
                    break
                out.append(DeadLetterRecord.from_consumer(record))
            now_at = await consumer.position(tp)
            if now_at > position:
                position, last_progress = now_at, time.monotonic()
            elif time.monotonic() - last_progress > self._timeout_s:
                raise TimeoutError(f"no records from {tp.topic}/{tp.partition} at offset {position}")
        return out

    # -- replay --------------------------------------------------------------------------------

    async def replay(self, topic: str, *, partition: int | None = None, from_offset: int | None = None,
                     to_offset: int | None = None) -> ReplayResult:
        """Re-publish dead letters to their original topic; see the module docstring for the guarantee.

        Each record goes to ``gyre_dlq_topic`` with its original key, value and headers, minus the
        ``gyre_dlq_*`` ones, plus ``gyre_replayed_from``; the partition follows from the key as
        for any publish. Records dead-lettered while the replay runs are left for the next one.

        Args:
            partition: only this partition (default: all).
            from_offset: first offset to replay, in every chosen partition (default: the replay
                progress, or the first kept record).
            to_offset: last offset to replay, inclusive (default: the end of the partition now).

        Returns:
            How many records were replayed (acknowledged), which were skipped and the new progress.

        Raises:
            InvalidArgument: bad names or offsets (``from_offset`` > ``to_offset``, negatives).
            NotFound: no such topic or partition.
            ReplayInterrupted: the broker failed part-way; the result so far is in ``replayed``.
            Unavailable: the broker did not answer before anything was sent.
        """
        self.group_of(topic)
        _non_negative(partition=partition, from_offset=from_offset, to_offset=to_offset)
        if from_offset is not None and to_offset is not None and from_offset > to_offset:
            raise InvalidArgument(f"from_offset {from_offset} is after to_offset {to_offset}")
        lock = self._replay_locks.setdefault(topic, asyncio.Lock())
        async with lock:
            return await self._replay(topic, partition, from_offset, to_offset)

    async def _replay(self, topic: str, partition: int | None, from_offset: int | None,
                      to_offset: int | None) -> ReplayResult:
        result = ReplayResult(topic)
        async with self._consumer(replay_group(topic)) as consumer:
            async with self._broker_errors():
                partitions = await self._existing_partitions(consumer, topic, partition)
                counts = await self._counts(consumer, topic, partitions)
            producer = AIOKafkaProducer(**producer_config(self.settings, self._client_id))  # type: ignore[arg-type]
            async with self._broker_errors(), asyncio.timeout(self._timeout_s):
                await producer.start()
            try:
                for part in counts:
                    await self._replay_partition(consumer, producer, topic, part, from_offset, to_offset, result)
            except (KafkaError, TimeoutError, OSError) as exc:
                raise ReplayInterrupted(
                    f"replay of {topic} stopped after {result.replayed} acknowledged records: "
                    f"{self._unavailable(exc)}; run it again to go on (consumers dedupe on ce_id)",
                    result.replayed) from None
            finally:
                with contextlib.suppress(Exception):
                    await producer.stop()
        return result

    async def _replay_partition(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, topic: str,
                                part: PartitionCounts, from_offset: int | None, to_offset: int | None,
                                result: ReplayResult) -> None:
        tp = TopicPartition(topic, part.partition)
        progress = part.replayed_offset
        resume = max(progress if progress is not None else part.start_offset, part.start_offset)
        begin = max(from_offset if from_offset is not None else resume, part.start_offset)
        # The end is fixed now: a replayed record that fails again is dead-lettered behind it, and
        # chasing the end would replay it in a loop.
        stop = min(part.end_offset, to_offset + 1 if to_offset is not None else part.end_offset)
        result.progress[part.partition] = progress
        if begin >= stop:
            return
        result.ranges[part.partition] = (begin, stop - 1)
        # Progress is "everything before this offset was replayed": it may only move over a range
        # that starts at or before it, and never backwards.
        advances = begin <= resume
        position = begin
        while position < stop:
            batch = await self._read(consumer, tp, position, stop, REPLAY_BATCH)
            if not batch:
                break
            acks = []
            for record in batch:
                target, why = self._target(record)
                if target is None:
                    result.skipped_count += 1
                    if len(result.skipped) < MAX_SKIPPED_LISTED:
                        result.skipped.append((record.partition, record.offset, why))
                    continue
                acks.append(await producer.send(target, record.value, key=record.key, headers=replay_headers(record)))
            async with asyncio.timeout(self._timeout_s * 2):
                await asyncio.gather(*acks)
            result.replayed += len(acks)
            position = batch[-1].offset + 1
            if advances and position > resume:
                await consumer.commit({tp: OffsetAndMetadata(position, "")})
                resume = position
                result.progress[part.partition] = position

    def _target(self, record: DeadLetterRecord) -> tuple[str | None, str]:
        """Where a record is replayed to, or None and why it cannot be."""
        original = record.original_topic
        if not original:
            return None, f"no {DLQ_TOPIC} header: the original topic is unknown"
        base = original.removeprefix(self.prefix)
        if not original.startswith(self.prefix) or base not in TOPICS:
            return None, f"original topic {original!r} is not a Gyre topic of prefix {self.prefix!r}"
        return original, ""


MAX_PARTITION = 2**31 - 1
"""Kafka partitions are int32 and offsets int64: larger numbers are refused, never sent."""
MAX_OFFSET = 2**63 - 1


def _non_negative(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 0:
            raise InvalidArgument(f"{name} must be 0 or more, got {value}")
        ceiling = MAX_PARTITION if name == "partition" else MAX_OFFSET
        if value is not None and value > ceiling:
            raise InvalidArgument(f"{name} must be at most {ceiling}, got {value}")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _bytes_field(name: str, value: bytes | None) -> dict[str, object]:
    """``{name: text}`` for UTF-8 bytes, else ``{name: None, name_base64: ...}`` (None stays None)."""
    if value is None:
        return {name: None}
    try:
        return {name: value.decode("utf-8")}
    except UnicodeDecodeError:
        return {name: None, f"{name}_base64": base64.b64encode(value).decode("ascii")}
