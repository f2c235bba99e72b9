"""Bearer tokens for the trainer's write calls (SubmitTraining, CancelTrainingJob)."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from gyre_common import errors


class Unauthenticated(errors.Unauthenticated, PermissionError):
    """No token, or one that matches no configured subject."""


class TokenAuth:
    """Maps bearer tokens to subjects. With no tokens configured every caller is "anonymous"."""

    def __init__(self, tokens: SecretStr | None) -> None:
        self._tokens: list[tuple[str, str]] = []
        if tokens is not None:
            for pair in tokens.get_secret_value().split(","):
                subject, sep, token = pair.strip().partition(":")
                if not sep or not subject or not token:
                    raise ValueError("auth tokens must be comma-separated subject:token pairs")
                self._tokens.append((subject, token))

    @property
    def enabled(self) -> bool:
        """Whether write calls need a token."""
        return bool(self._tokens)

    def subject(self, authorization: str | None) -> str:
        """The subject of an ``authorization: Bearer <token>`` value. Raises :class:`Unauthenticated`."""
        if not self._tokens:
            return "anonymous"
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("missing bearer token (authorization: Bearer <token>)")
        for subject, known in self._tokens:
            # Constant-time comparison: the token must not leak through timing.
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                return subject
        raise Unauthenticated("unknown token")
