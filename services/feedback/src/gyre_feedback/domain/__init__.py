"""Pure logic of the feedback service: validation, label matching, quality math, drop detection."""
