"""Gyre's deep-learning models, shared by the trainer (fine-tuning), serving (inference) and the
monitor (text embeddings for drift): see :mod:`gyre_ml.encoders` and :mod:`gyre_ml.text_model`."""
