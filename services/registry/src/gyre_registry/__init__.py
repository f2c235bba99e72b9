"""Gyre's model registry: registered models, numbered versions, aliases, promotion, audit log.

See docs/services/registry.md.
"""
