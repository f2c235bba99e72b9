"""Gyre's tracking service: experiments, runs, params, metrics, tags and artifact references."""
