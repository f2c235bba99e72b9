"""Moved to :mod:`gyre_common.outbox` (shared by registry, trainer, monitor and feedback).

Kept only so that existing imports (``store.py``, ``bootstrap.py``) keep working until they import
:mod:`gyre_common.outbox` directly; then delete this module.
"""

from gyre_common.outbox import OUTBOX_DDL, OutboxRelay, add_event

__all__ = ["OUTBOX_DDL", "OutboxRelay", "add_event"]
