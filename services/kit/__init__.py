"""The edges every service shares: wire, Kafka runtime, path base, broker, Redis, ops."""
