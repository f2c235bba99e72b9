"""Protobuf event types by name, and the two wire encodings (protobuf, JSON) of their payloads.

Classes are found through protobuf's default descriptor pool, which knows every generated module
that has been imported. On a miss the bus imports the modules in :data:`EVENT_MODULES` once (so a
consumer works without importing the generated code itself) and looks again.
"""

from __future__ import annotations

import importlib
from functools import cache

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message

from gyre_common.topics import TOPICS, TopicSpec

EVENT_MODULES: tuple[str, ...] = ("gyre_contracts.gyre.events.v1.events_pb2",)
"""Generated modules imported on demand when a type name is not yet in the descriptor pool."""


class UnknownTopicError(ValueError):
    """A topic base name that is not in :data:`gyre_common.topics.TOPICS`."""


class EventDecodeError(ValueError):
    """A record whose payload cannot become its topic's event (a poison message).

    Attributes:
        reason: short machine-readable cause, put in the ``gyre_dlq_reason`` header.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def topic_spec(base: str) -> TopicSpec:
    """The :class:`TopicSpec` of a base topic name.

    Raises:
        UnknownTopicError: the name is not a Gyre topic; the message lists the known ones.
    """
    try:
        return TOPICS[base]
    except KeyError:
        known = ", ".join(sorted(TOPICS))
        raise UnknownTopicError(
            f"unknown topic {base!r}: Gyre topics are named in gyre_common.topics.TOPICS ({known}); "
            "pass the base name without the prefix"
        ) from None


@cache
def _import_event_modules() -> None:
    for module in EVENT_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            # Not generated yet (or trimmed install): names stay unresolvable and say so below.
            pass


def message_class(full_name: str) -> type[Message]:
    """The generated class of a protobuf message given its full name (``gyre.events.v1.X``).

    Raises:
        LookupError: no imported generated module defines that message.
    """
    return _message_class(full_name)


@cache
def _message_class(full_name: str) -> type[Message]:
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(full_name)
    except KeyError:
        _import_event_modules()
        try:
            descriptor = pool.FindMessageTypeByName(full_name)
        except KeyError:
            raise LookupError(
                f"protobuf message {full_name!r} is not known: import its generated *_pb2 module "
                "(run `make generate` if it does not exist)"
            ) from None
    return message_factory.GetMessageClass(descriptor)


def decode_protobuf(cls: type[Message], payload: bytes) -> Message:
    """Parse binary protobuf.

    Raises:
        EventDecodeError: the bytes are not a valid encoding of ``cls``.
    """
    event = cls()
    try:
        event.ParseFromString(payload)
    except (DecodeError, RuntimeError, ValueError) as exc:
        name = cls.DESCRIPTOR.full_name
        raise EventDecodeError("decode_error", f"invalid protobuf for {name}: {exc}") from exc
    return event


def decode_json(cls: type[Message], payload: bytes) -> Message:
    """Parse protobuf JSON (proto3 JSON mapping); unknown fields are an error, not silently dropped.

    Raises:
        EventDecodeError: the bytes are not UTF-8 JSON matching ``cls``.
    """
    event = cls()
    try:
        json_format.Parse(payload.decode("utf-8"), event, ignore_unknown_fields=False)
    except (json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
        raise EventDecodeError("decode_error", f"invalid JSON for {cls.DESCRIPTOR.full_name}: {exc}") from exc
    return event


def encode_json(event: Message) -> bytes:
    """Protobuf JSON of ``event`` (what external producers send), UTF-8."""
    return json_format.MessageToJson(event, indent=None).encode("utf-8")
