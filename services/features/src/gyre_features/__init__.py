"""Gyre's feature store service: feature views, online/offline stores, point-in-time training sets."""
