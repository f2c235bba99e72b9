"""How the trainer describes itself to the platform (entry point ``gyre.services: trainer``)."""

from __future__ import annotations

from gyre_common.service import ServiceSpec
from gyre_common.topics import TRAINING_EVENTS, TRAINING_REQUESTS
from gyre_trainer.settings import TrainerSettings

SPEC = ServiceSpec(
    name="trainer",
    settings=TrainerSettings,
    module="gyre_trainer",
    schema="trainer",
    migrations="gyre_trainer.migrations",
    consumes=(TRAINING_REQUESTS,),
    produces=(TRAINING_EVENTS,),
    outbox=True,
)
