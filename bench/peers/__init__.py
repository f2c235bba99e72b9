"""Peers and harness of the serving benchmark: environments, servers, load generator."""
