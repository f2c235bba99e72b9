"""Gyre monitor: drift of served inputs against each model version's reference profile."""
