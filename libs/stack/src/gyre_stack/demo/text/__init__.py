"""The text story (``make demo-text``, ``gyre-stack demo --text``): Gyre's loop for a text
classifier built by transfer learning, against running services.

Generated English sentences on three topics go in as JSON feature events with a ``text`` feature;
``gyre train --backend torch-text`` fine-tunes all-MiniLM-L6-v2 with a new head (per-epoch curves
in tracking); version 1 answers BYTES over gRPC and REST with ``entity_id`` / ``event_time``
parameters; corrected labels posted as feedback reach the feature store; French traffic makes the
monitor raise one alert naming the text feature; the retraining it asks for trains version 2 on
the corrected labels; serving swaps to it under continuous traffic with no failed call.

Modules: :mod:`~gyre_stack.demo.text.data` (the generated corpus and its drift),
:mod:`~gyre_stack.demo.text.plan`, :mod:`~gyre_stack.demo.text.loop` (state and BYTES calls),
:mod:`~gyre_stack.demo.text.steps` (one function per step), :mod:`~gyre_stack.demo.text.story`
(:func:`run_text_loop`), :mod:`~gyre_stack.demo.text.main` (the command). The registry, drift-window
and promotion helpers of the tabular story are reused through a :class:`gyre_stack.demo.Loop`.
"""

from gyre_stack.demo.text.data import MISLABELLED, ROWS, TOPICS, TextCorpus, corpus, french_texts
from gyre_stack.demo.text.loop import TextLoop
from gyre_stack.demo.text.plan import LABEL, TEXT_FEATURE, text_plan
from gyre_stack.demo.text.story import run_text_loop

__all__ = ["LABEL", "MISLABELLED", "ROWS", "TEXT_FEATURE", "TOPICS", "TextCorpus", "TextLoop", "corpus",
           "french_texts", "run_text_loop", "text_plan"]
