"""The agent client: what an agent imports to ask for a dataset over Kafka or gRPC."""

from services.client.agent import Dataset, GrpcTestDataClient, KafkaTestDataClient
from services.client.errors import GenerationFailed

__all__ = ["Dataset", "GenerationFailed", "GrpcTestDataClient", "KafkaTestDataClient"]
