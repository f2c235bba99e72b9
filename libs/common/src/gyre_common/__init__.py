"""Shared ground for every Gyre service."""
