"""Gyre's operator dashboard: one page (and one JSON endpoint) aggregating the other services.

It owns no data: every value on the page is read, on request, from the other services' REST APIs
(``/readyz``, the registry, the monitor, feedback and the trainer). See docs/services/dashboard.md.
"""
