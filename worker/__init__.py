"""embedfleet worker: Kafka documents in, micro-batched transformer embeddings out."""

__version__ = "0.1.0"
