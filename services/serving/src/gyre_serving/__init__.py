"""Gyre serving: the registry's production models over the Open Inference Protocol (V2).

Layers (docs/services/serving.md): ``domain`` (tensors, signatures, loaded models, inference
events; no I/O), ``handlers`` (the data plane every transport calls, and the model manager that
applies registry changes), adapters (``api_grpc``, ``api_http``, ``consumers``, ``registry_client``,
``emitter``) and ``bootstrap`` (the wiring).
"""
