"""The one error type `gyre-stack` shows to its user."""

from __future__ import annotations


class StackError(Exception):
    """A stack command cannot do what was asked; the message says why and what to do."""
