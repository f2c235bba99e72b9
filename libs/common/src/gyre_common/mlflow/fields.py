"""The one reader of MLflow requests: a JSON body (POST, PATCH, DELETE) or query parameters (GET),
checked, then read field by field with MLflow's coercions.

:func:`read_fields` refuses, as INVALID_PARAMETER_VALUE (:class:`~gyre_common.errors.InvalidArgument`):
a body that is not a JSON object, JSON nested deeper than the decoder recurses, and any text that
PostgreSQL cannot store (a NUL character or an unpaired UTF-16 surrogate, in a value or a key, or
``%00`` in the query string). The body's size is bounded by the app's request-body limit
(``http_max_body_bytes``, :class:`gyre_common.limits.BodyLimitMiddleware`, which wraps the MLflow
gateways too): a longer body raises :class:`~gyre_common.errors.TooLarge` while it is read.

:class:`Fields` reads one parameter at a time as MLflow's server does (``"5"`` is accepted for an
int64, a number for a string id, ``"NaN"`` for a double) and raises InvalidArgument naming the
parameter otherwise; a value is echoed back shortened (:func:`shown`).
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Mapping
from typing import Any, TypeVar

from starlette.requests import Request

from gyre_common.errors import InvalidArgument, TooLarge

E = TypeVar("E")
F = TypeVar("F", bound="Fields")

_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlevel = 3

UNSTORABLE = "NUL characters and unpaired surrogates cannot be stored in text"
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
"""A JSON escape of NUL or of a UTF-16 surrogate (a simple pattern: no nested quantifiers)."""


def shown(value: Any) -> str:
    """A short repr of a request value for an error message (bounded in length and depth, so a
    deeply nested or huge value can neither flood the message nor overflow the stack)."""
    return _SHOWN.repr(value)


def check_storable_text(value: Any) -> None:
    """Refuse any string in ``value`` (a decoded JSON value, keys included) that PostgreSQL text
    cannot hold: one with a NUL character or an unpaired UTF-16 surrogate. Walked with a stack, not
    recursion, so nesting depth does not matter.

    Raises:
        InvalidArgument: naming the first such string.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidArgument(f"Invalid value {shown(item)} supplied: {UNSTORABLE}") from None
            if "\x00" in item:
                raise InvalidArgument(f"Invalid value {shown(item)} supplied: {UNSTORABLE}")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _query_fields(request: Request) -> dict[str, Any]:
    if b"%00" in request.scope.get("query_string", b""):
        raise InvalidArgument(f"the query string holds a NUL character (%00): {UNSTORABLE}")
    data: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key in data:
            previous = data[key]
            data[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            data[key] = value
    return data


async def read_fields(request: Request, cls: type[F], max_body_bytes: int | None = None) -> F:
    """The parameters of an MLflow request: the query string of a GET (a repeated parameter as a
    list), else the JSON body (an empty body: the query string, as MLflow's server reads a DELETE
    without a body).

    Args:
        cls: :class:`Fields` or a service's subclass (with accessors for its enums).
        max_body_bytes: a limit of this reader's own (None: the app's request-body limit alone).

    Raises:
        InvalidArgument: see the module docstring.
        TooLarge: the body is longer than the app's limit or ``max_body_bytes``.
    """
    if request.method == "GET":
        return cls(_query_fields(request), from_query=True)
    raw = await request.body()
    if max_body_bytes is not None and len(raw) > max_body_bytes:
        raise TooLarge(f"the request body has {len(raw)} bytes; at most {max_body_bytes}")
    if not raw.strip():
        return cls(_query_fields(request), from_query=True)
    try:
        # MLflow's client writes NaN and infinities as bare JSON tokens; json.loads accepts them.
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"malformed JSON request body: {exc}") from None
    except RecursionError:
        # Arrays or objects nested deeper than the decoder recurses: refused, not a 500.
        raise InvalidArgument("malformed JSON request body: nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    # Only bodies that may hold such text are walked: \u0000 or \uD800-\uDFFF escapes, or NUL
    # bytes (a UTF-16/32 body); a plain log-batch is not slowed down.
    if b"\x00" in raw or _SUSPECT_ESCAPE.search(raw):
        check_storable_text(body)
    return cls(body)


def small_number(text: str) -> int | None:
    """An enum number written as one or two ASCII digits ("3"), else None (``str.isdigit`` also
    holds for "²", which int() refuses)."""
    return int(text) if len(text) <= 2 and text.isascii() and text.isdigit() else None


def as_number(value: Any, name: str, *, required: bool = True) -> float:
    """A double from JSON: a number, or a numeric string including NaN and ±Infinity.

    Raises:
        InvalidArgument: missing (when required) or not a number.
    """
    if value is None or value == "":
        if required:
            raise InvalidArgument(f"Missing value for required parameter '{name}'")
        return 0.0
    if isinstance(value, bool):
        raise InvalidArgument(f"Invalid value {shown(value)} for parameter '{name}' supplied: expected a number")
    try:
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            return float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer beyond any double
        pass
    raise InvalidArgument(f"Invalid value {shown(value)} for parameter '{name}' supplied: expected a number")


class Fields:
    """Typed access to the parameters of one request (names as in MLflow's protos).

    Args:
        data: the JSON object, or the query parameters (a repeated one as a list).
        from_query: values came from a query string (everything is a string there; a repeated
            scalar reads as its last value).
    """

    def __init__(self, data: Mapping[str, Any], *, from_query: bool = False) -> None:
        self.data = data
        self.from_query = from_query

    def _scalar(self, name: str) -> Any:
        value = self.data.get(name)
        if isinstance(value, list) and self.from_query:
            return value[-1]
        return value

    def has(self, name: str) -> bool:
        """Whether the parameter was given (and is not null)."""
        return self.data.get(name) is not None

    def raw(self, name: str) -> Any:
        """The parameter as given (the last of a repeated query parameter), or None."""
        return self._scalar(name)

    def string(self, name: str, *, required: bool = False, default: str = "") -> str:
        """A string parameter; numbers are accepted as their decimal text (ids)."""
        value = self._scalar(name)
        if value is None or value == "":
            if required:
                raise InvalidArgument(f"Missing value for required parameter '{name}'")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidArgument(f"Invalid value {shown(value)} for parameter '{name}' supplied: expected a string")
        return str(value)

    def integer(self, name: str, *, required: bool = False, default: int | None = None) -> int | None:
        """An int64 parameter (a JSON number or a decimal string)."""
        value = self._scalar(name)
        if value is None or value == "":
            if required:
                raise InvalidArgument(f"Missing value for required parameter '{name}'")
            return default
        if isinstance(value, bool):
            raise InvalidArgument(f"Invalid value {shown(value)} for parameter '{name}' supplied: expected an integer")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise InvalidArgument(f"Invalid value {shown(value)} for parameter '{name}' supplied: expected an integer")

    def number(self, name: str, *, required: bool = True) -> float:
        """A double parameter; ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` are accepted as strings."""
        return as_number(self._scalar(name), name, required=required)

    def strings(self, name: str) -> list[str]:
        """A repeated string parameter."""
        value = self.data.get(name)
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, str | int):
                raise InvalidArgument(f"Invalid value {shown(item)} in parameter '{name}' supplied: expected strings")
        return [str(item) for item in items]

    def objects(self: F, name: str) -> list[F]:
        """A repeated message parameter (a JSON array of objects)."""
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise InvalidArgument(f"Invalid value for parameter '{name}' supplied: expected a list of objects")
        return [type(self)(item) for item in value]

    def key_values(self, name: str) -> list[tuple[str, str]]:
        """A repeated ``{key, value}`` message (tags, params) as pairs."""
        pairs = []
        for item in self.objects(name):
            pairs.append((item.string("key", required=True), item.string("value")))
        return pairs

    def enum(self, name: str, members: Mapping[str, E], numbers: Mapping[int, E], default: E) -> E:
        """A proto enum by name (``FINISHED``, any case) or number (3, ``"3"``); ``default`` when absent.

        Raises:
            InvalidArgument: naming the parameter and the names it takes.
        """
        value = self._scalar(name)
        if value is None or value == "":
            return default
        if isinstance(value, str) and value.upper() in members:
            return members[value.upper()]
        number = value if isinstance(value, int) and not isinstance(value, bool) else \
            small_number(value) if isinstance(value, str) else None
        if number is not None and number in numbers:
            return numbers[number]
        raise InvalidArgument(f"Invalid value {shown(value)} for parameter '{name}' supplied: use one of "
                              f"{', '.join(members)}")
