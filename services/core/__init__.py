"""Pure generation logic: models, plans, values, validation. No I/O, no transport, no SDK."""
