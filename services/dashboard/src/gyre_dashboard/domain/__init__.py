"""What the dashboard shows: plain, immutable values with no I/O and no transport.

Every time is an aware UTC ``datetime`` (or None when the upstream did not say). Each part of the
overview that comes from another service is a :class:`Section`, whose ``error`` says why it may be
incomplete, so the page can show "unknown" for one part and still render the rest.

Modules: ``health`` (readiness verdicts, :class:`UpstreamError`), ``models`` (registry versions,
drift, quality, alerts), ``training`` (training jobs, tracking runs), ``overview`` (the sections
and their JSON form).
"""
