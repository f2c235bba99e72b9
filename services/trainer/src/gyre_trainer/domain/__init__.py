"""Pure training logic: datasets, holdout, search space, search, evaluation, signatures, profiles.

Nothing here does I/O or knows a transport; the service layer (:mod:`gyre_trainer.handlers`) feeds
it data and hands its results to tracking, the registry and the bus.
"""
