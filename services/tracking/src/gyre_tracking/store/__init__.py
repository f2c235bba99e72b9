"""Persistence of the tracking service: the interface (:mod:`.base`) and its PostgreSQL adapter."""

from gyre_tracking.store.base import RunHandle, TrackingSession, TrackingStore
from gyre_tracking.store.postgres import PostgresSession, PostgresStore

__all__ = ["PostgresSession", "PostgresStore", "RunHandle", "TrackingSession", "TrackingStore"]
