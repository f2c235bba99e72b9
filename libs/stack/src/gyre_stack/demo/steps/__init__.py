"""The steps of the story, one module each, in order: a ``features``, b ``training``, c ``serving``,
d ``feedback``, e ``drift``, f ``swap`` (with ``promotion``), g ``dashboard``.

Each module's ``run(loop)`` plays its step on a :class:`gyre_stack.demo.loop.Loop` and raises
:class:`gyre_stack.demo.checks.LoopError` when something does not happen as expected.
"""
