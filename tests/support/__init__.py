"""Helpers used only by the tests (never imported by Gyre's own packages)."""
