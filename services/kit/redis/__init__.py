"""Redis, optional and never fatal: the key store and the circuit breaker in front of it."""
