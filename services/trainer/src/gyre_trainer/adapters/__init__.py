"""Adapters of the trainer's ports: gRPC clients of features, tracking and the registry, the
artifact-backed profile sink, protobuf conversions and the outbox relay to Kafka."""
