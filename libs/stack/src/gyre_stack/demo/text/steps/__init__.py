"""The steps of the text story, one module each, in order: a ``features``, b ``training``, c ``serving``,
d ``corrections``, e ``drift``, f ``retrain``, g ``dashboard``.

Each module's ``run(loop)`` plays its step on a :class:`gyre_stack.demo.text.loop.TextLoop` and raises
:class:`gyre_stack.demo.checks.LoopError` when something does not happen as expected.
"""
