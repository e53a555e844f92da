"""The Kafka runtime: clients, the stream loop, offsets, deliveries, emit, replies, control."""
