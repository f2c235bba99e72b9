"""Gyre embedded development stack."""
