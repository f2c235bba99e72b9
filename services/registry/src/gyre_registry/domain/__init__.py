"""Pure registry logic: validation, the promotion policy, paging. No I/O, no transport."""
