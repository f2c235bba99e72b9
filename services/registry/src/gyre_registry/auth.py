"""Who is calling: bearer tokens for writes, as simple as DESIGN.md's first step needs.

When ``GYRE_REGISTRY_AUTH_TOKENS`` is set (``subject:token`` pairs), every write needs
``authorization: Bearer <token>`` with one of those tokens, and the token's subject is the actor
recorded in the audit log. When it is unset, writes are open and the actor is whatever the caller
puts in ``x-gyre-actor`` (or ``anonymous``): fine for the embedded stack, not for production.
Roles (viewer, scientist, approver, admin) come later.
"""

from __future__ import annotations

import hmac
import re

from gyre_registry.domain.errors import Unauthenticated

ANONYMOUS = "anonymous"
_ACTOR = re.compile(r"^[\w.@:\-]{1,128}$")


def parse_tokens(spec: str) -> dict[str, str]:
    """``"alice:t1, trainer:t2"`` -> ``{"t1": "alice", "t2": "trainer"}``.

    Raises:
        ValueError: an entry without ``subject:`` or with an empty token (the message never
            contains a token).
    """
    tokens: dict[str, str] = {}
    for position, entry in enumerate(part.strip() for part in spec.split(",")):
        if not entry:
            continue
        subject, sep, token = entry.partition(":")
        if not sep or not subject.strip() or not token.strip():
            raise ValueError(f"auth token entry {position + 1} is not 'subject:token'")
        tokens[token.strip()] = subject.strip()
    if not tokens:
        raise ValueError("no auth tokens given")
    return tokens


class Authenticator:
    """Turns request credentials into the actor of a write.

    Args:
        tokens: token -> subject; None disables authentication.
    """

    def __init__(self, tokens: dict[str, str] | None) -> None:
        self._tokens = tokens

    @property
    def enabled(self) -> bool:
        """Whether writes need a token."""
        return self._tokens is not None

    def actor(self, authorization: str | None, claimed_actor: str | None = None) -> str:
        """The actor of a write.

        Args:
            authorization: the ``authorization`` header/metadata value, e.g. ``Bearer abc``.
            claimed_actor: ``x-gyre-actor``; used only while authentication is off.

        Raises:
            Unauthenticated: tokens are configured and none (or an unknown one) was given.
        """
        if self._tokens is None:
            if claimed_actor and _ACTOR.match(claimed_actor):
                return claimed_actor
            return ANONYMOUS
        if not authorization:
            raise Unauthenticated("this registry requires 'authorization: Bearer <token>' for writes")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization header must be 'Bearer <token>'")
        token = token.strip()
        subject = None
        # Compare against every token in constant time, so timing reveals nothing about them.
        for known, who in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                subject = who
        if subject is None:
            raise Unauthenticated("unknown token")
        return subject
