"""Gyre feedback: human feedback on predictions and model quality per version."""
