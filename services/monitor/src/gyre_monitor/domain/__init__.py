"""Pure monitor logic, no I/O: reference profiles, drift tests, windows, alerting decisions."""
