"""The embedded broker: Apache Kafka in a child JVM, its distribution, data-dir lock and salvage."""
