"""``gyre dlq``: look at dead letters and replay them, straight on the Kafka broker.

Why the broker and not the services' HTTP routes (``/api/v1/dead-letters``, which serve the same
operations): dead letters matter most when a consumer is broken, crash-looping or not deployed, and
the broker is then the one thing that still answers; ``show`` and ``replay`` need only a topic name,
not which service and where it listens. The operations are :class:`gyre_common.deadletters.DeadLetterTools`,
the same code the HTTP routes call, so both give the same answers.

Commands:

* ``gyre dlq list [--service S | --group G ...]`` — dead-letter topics with counts and replay progress;
* ``gyre dlq list TOPIC [--partition P] [--offset O] [--limit N]`` — records of one topic (reason headers);
* ``gyre dlq show TOPIC PARTITION OFFSET`` — one record: every header, the payload decoded;
* ``gyre dlq replay TOPIC [--partition P] [--from-offset O] [--to-offset O] [--offset O]`` — re-publish
  to the original topic (``--offset`` alone: one record); "all" resumes after what was replayed.

Environment: ``GYRE_KAFKA_BOOTSTRAP_SERVERS`` and ``GYRE_KAFKA_TOPIC_PREFIX`` (or ``--bootstrap-servers``,
``--topic-prefix``), like the services. ``--output json`` prints the JSON the HTTP routes answer.

Exit codes: 0 done; 1 a replay left records it could not replay (listed); 2 bad arguments or
nothing at that name/offset; 3 the broker could not be reached or a replay stopped part-way (run
it again: what was acknowledged is not sent twice, and consumers dedupe on ``ce_id`` anyway).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gyre_common.deadletters import DeadLetterTools
    from gyre_common.settings import KafkaSettings

EXIT_OK, EXIT_SKIPPED, EXIT_BAD_REQUEST, EXIT_UNAVAILABLE = 0, 1, 2, 3


def _offset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_parser(commands: Any) -> None:
    """Add ``dlq`` and its sub-commands to ``gyre``'s sub-parsers."""
    dlq = commands.add_parser("dlq", help="list, show and replay dead letters (on the Kafka broker)",
                              description="Dead letters of Gyre's consumer groups, read and replayed on the "
                                          "broker (GYRE_KAFKA_BOOTSTRAP_SERVERS, GYRE_KAFKA_TOPIC_PREFIX).")
    dlq.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (env GYRE_KAFKA_BOOTSTRAP_SERVERS)")
    dlq.add_argument("--topic-prefix", help="topic prefix (env GYRE_KAFKA_TOPIC_PREFIX, default gyre.)")
    dlq.add_argument("--output", choices=("text", "json"), default="text", help="text (default) or json")
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")

    listing = actions.add_parser("list", help="dead-letter topics with counts, or the records of one topic")
    listing.add_argument("topic", nargs="?", help="a dead-letter topic (e.g. gyre.monitor.dlq): list its records")
    scope = listing.add_mutually_exclusive_group()
    scope.add_argument("--service", help="only this service's groups (its *consumer_group settings)")
    scope.add_argument("--group", action="append", help="only this consumer group (repeatable)")
    listing.add_argument("--partition", type=_offset, help="records of this partition only")
    listing.add_argument("--offset", type=_offset, help="first offset (needs --partition)")
    listing.add_argument("--limit", type=int, default=None, help="records in the page (default 50, at most 500)")

    show = actions.add_parser("show", help="one record: every header and the payload")
    show.add_argument("topic")
    show.add_argument("partition", type=_offset)
    show.add_argument("offset", type=_offset)

    replay = actions.add_parser("replay", help="re-publish dead letters to their original topic")
    replay.add_argument("topic")
    replay.add_argument("--partition", type=_offset, help="only this partition")
    replay.add_argument("--from-offset", type=_offset,
                        help="first offset, replayed again even if done before (default: where the last replay "
                             "stopped)")
    replay.add_argument("--to-offset", type=_offset, help="last offset, inclusive (default: the end now)")
    replay.add_argument("--offset", type=_offset, help="exactly this record (needs --partition)")


def run(args: argparse.Namespace) -> int:
    """Run one ``gyre dlq`` command; the exit code."""
    try:
        from gyre_common import errors
        from gyre_common.deadletters import DeadLetterTools
        from gyre_common.settings import KafkaSettings, SettingsError, load_settings
    except ImportError as exc:
        print(f"gyre dlq: needs the gyre-common package: pip install 'gyre-cli[dlq]' ({exc})", file=sys.stderr)
        return EXIT_BAD_REQUEST
    overrides = {name: value for name, value in (("bootstrap_servers", args.bootstrap_servers),
                                                 ("topic_prefix", args.topic_prefix)) if value is not None}
    try:
        kafka = load_settings(KafkaSettings, **overrides)
        tools = DeadLetterTools(kafka, client_id=f"{kafka.client_id}-cli")
        body, code = asyncio.run(_dispatch(args, tools, kafka))
    except SettingsError as exc:
        print(f"gyre dlq: {exc}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    except errors.GyreError as exc:
        print(f"gyre dlq {args.dlq_command}: {exc.reason}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE if isinstance(exc, errors.Unavailable) else EXIT_BAD_REQUEST
    if args.output == "json":
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        print(_text(args, body))
    return code


async def _dispatch(args: argparse.Namespace, tools: DeadLetterTools, kafka: KafkaSettings,
                    ) -> tuple[dict[str, Any], int]:
    from gyre_common.deadletters import DEFAULT_LIMIT, MAX_LIMIT, record_json
    from gyre_common.errors import InvalidArgument

    if args.dlq_command == "show":
        return record_json(await tools.record(args.topic, args.partition, args.offset), kafka.topic_prefix), EXIT_OK
    if args.dlq_command == "replay":
        first, last = args.from_offset, args.to_offset
        if args.offset is not None:
            if args.partition is None or first is not None or last is not None:
                raise InvalidArgument("--offset replays one record: give it with --partition, without "
                                      "--from-offset/--to-offset")
            first = last = args.offset
        result = await tools.replay(args.topic, partition=args.partition, from_offset=first, to_offset=last)
        return result.to_json(), EXIT_SKIPPED if result.skipped_count else EXIT_OK
    if args.topic is not None:
        if args.service or args.group:
            raise InvalidArgument("--service/--group choose topics to list; with a TOPIC, leave them out")
        limit = DEFAULT_LIMIT if args.limit is None else args.limit
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidArgument(f"--limit must be between 1 and {MAX_LIMIT}")
        page = await tools.records(args.topic, partition=args.partition, offset=args.offset, limit=limit)
        return page.to_json(), EXIT_OK
    if args.partition is not None or args.offset is not None or args.limit is not None:
        raise InvalidArgument("--partition, --offset and --limit page through a TOPIC's records: name the topic")
    groups = args.group or (service_groups(args.service) if args.service else None)
    topics = await tools.list_topics(groups)
    return {"dead_letters": [t.to_json() for t in topics], "max_limit": MAX_LIMIT}, EXIT_OK


def service_groups(name: str) -> list[str]:
    """The consumer groups of installed service ``name``: the values of its settings ending in
    ``consumer_group`` (from the environment, like the service reads them).

    Raises:
        gyre_common.errors.NotFound: no installed service has that name, or it has no consumer group.
    """
    from gyre_common.errors import NotFound
    from gyre_common.service import discover_services
    from gyre_common.settings import SettingsError

    specs = {spec.name: spec for spec in discover_services()}
    spec = specs.get(name)
    if spec is None:
        raise NotFound(f"no installed service {name!r} (installed: {', '.join(sorted(specs)) or 'none'})")
    fields = [f for f in spec.settings.model_fields if f.endswith("consumer_group")]
    if not fields:
        raise NotFound(f"service {name!r} has no consumer group, so no dead-letter topic")
    try:
        settings: Any = spec.settings()
        return [str(getattr(settings, f)) for f in fields]
    except (SettingsError, ValueError):
        # Another of its settings is missing or invalid here: the groups' defaults still apply.
        return [str(spec.settings.model_fields[f].default) for f in fields]


def _text(args: argparse.Namespace, body: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]]
    if args.dlq_command == "show":
        lines = [f"{body['topic']} partition {body['partition']} offset {body['offset']}  {body['timestamp']}",
                 f"key: {body.get('key')}", "headers:"]
        for h in body["headers"]:
            value = h["value"] if "value" in h else f"(base64) {h['value_base64']}"
            lines.append(f"  {h['name']}: " + value.replace("\n", "\n    "))
        payload = body["payload"]
        kind = payload["encoding"] + (f" {payload['event_type']}" if payload.get("event_type") else "")
        lines.append(f"payload ({kind}, {payload['size']} bytes):")
        if payload.get("decode_error"):
            lines.append(f"  decode error: {payload['decode_error']}")
        value = payload["value"]
        lines.append(json.dumps(value, indent=2, sort_keys=True) if not isinstance(value, str) else value)
        return "\n".join(lines)
    if args.dlq_command == "replay":
        lines = [f"replayed {body['replayed']} record(s) from {body['topic']}"]
        lines += [f"  partition {r['partition']}: offsets {r['from_offset']}..{r['to_offset']}" for r in body["ranges"]]
        if body["skipped_count"]:
            lines.append(f"skipped {body['skipped_count']} record(s) that cannot be replayed:")
            lines += [f"  partition {s['partition']} offset {s['offset']}: {s['why']}" for s in body["skipped"]]
        return "\n".join(lines)
    if "records" in body:
        rows = [("PARTITION", "OFFSET", "TIMESTAMP", "KEY", "ORIGINAL TOPIC", "REASON", "ERROR")]
        rows += [(str(r["partition"]), str(r["offset"]), r["timestamp"], str(r.get("key")), str(r["original_topic"]),
                  str(r["reason"]), _cut(str(r["error"] or ""), 60)) for r in body["records"]]
        out = _table(rows)
        if body["next"]:
            out += f"\nmore: --partition {body['next']['partition']} --offset {body['next']['offset']}"
        return out
    rows = [("TOPIC", "GROUP", "COUNT", "PENDING", "PARTITIONS (start..end)")]
    for topic in body["dead_letters"]:
        spans = " ".join(f"{p['partition']}:{p['start_offset']}..{p['end_offset']}"
                         for p in topic["partitions"] if p["count"])
        rows.append((topic["topic"], topic["group"], str(topic["count"]), str(topic["pending"]),
                     spans if topic["exists"] else "(not created yet)"))
    return _table(rows)


def _cut(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
