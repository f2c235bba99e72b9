"""Generated protobuf and gRPC code for Gyre contracts. Do not edit: run `make generate`."""
