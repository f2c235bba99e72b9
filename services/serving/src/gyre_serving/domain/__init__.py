"""Serving's pure logic: tensors, signatures, loaded models and inference events (no I/O)."""
