"""Gyre's closed loop, step by step, against running services (``gyre-stack demo``, ``make demo``).

The same story runs in two places:

* ``make demo`` (``gyre-stack demo``, :mod:`gyre_stack.demo.main`) plays it against the stack that
  ``make up`` started, finding every service where its settings say (defaults, or the ``GYRE_*``
  variables of this shell, as the stack reads them) and printing each step with its timing;
* ``tests/e2e/test_closed_loop.py`` starts a private stack (Tansu, PostgreSQL, every service as a
  subprocess on free ports) and runs :func:`run_loop` with assertions on every hop.

The story (docs/demo.md tells it in prose): a producer with nothing but aiokafka publishes the
breast-cancer dataset as JSON feature events; ``gyre train`` asks for a model; the trainer's
trials land in tracking and the best model in the registry, which promotes it to ``production``;
serving loads it and answers Open Inference Protocol calls over gRPC and REST; feedback is given
on some predictions; unshifted traffic raises nothing, traffic with a few features shifted by
5 standard deviations makes the monitor name exactly those features and ask (once) for
retraining; the trainer answers with version 2, which serving swaps in while a client keeps
calling; the dashboard shows all of it.

Modules: :mod:`~gyre_stack.demo.data` (the dataset and its drift), :mod:`~gyre_stack.demo.endpoints`
and :mod:`~gyre_stack.demo.plan` (where and what), :mod:`~gyre_stack.demo.checks` (polling to a
deadline), :mod:`~gyre_stack.demo.topiclog` (what went over the topics), :mod:`~gyre_stack.demo.loop`
(the steps' shared state) and :mod:`~gyre_stack.demo.steps` (one module per step),
:mod:`~gyre_stack.demo.story` (:func:`run_loop`), :mod:`~gyre_stack.demo.main` (the command).

Every wait polls a condition until a deadline; a step that does not happen in time fails with
what was expected and what was seen.
"""

from gyre_stack.demo.checks import LoopError, poll
from gyre_stack.demo.data import SHIFT_STD, T0, drifted_features, feature_names, rfc3339
from gyre_stack.demo.endpoints import SERVICES, Endpoints, Service, gyre_cli
from gyre_stack.demo.loop import Loop
from gyre_stack.demo.plan import Plan, demo_plan
from gyre_stack.demo.story import Clock, run_loop
from gyre_stack.demo.topiclog import TopicLog

__all__ = [
    "SERVICES",
    "SHIFT_STD",
    "T0",
    "Clock",
    "Endpoints",
    "Loop",
    "LoopError",
    "Plan",
    "Service",
    "TopicLog",
    "demo_plan",
    "drifted_features",
    "feature_names",
    "gyre_cli",
    "poll",
    "rfc3339",
    "run_loop",
]
