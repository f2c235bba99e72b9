"""Pure monitor logic, no I/O and no transport: drift tests (``drift``), windows (``windows``),
alerting decisions (``alerts``), served predictions (``predictions``) and what a reference profile must
be (``profiles``)."""
