"""Encode stage: token ids in, vectors out. The runner sees only the ``Encoder`` interface."""

from worker.config import ModelSettings
from worker.encode.base import DummyEncoder, Encoder, ModelInfo

__all__ = ["DummyEncoder", "Encoder", "ModelInfo", "load_encoder"]


def load_encoder(settings: ModelSettings) -> Encoder:
    """Load the configured model (torch and transformers are imported only here)."""
    from worker.encode.transformer import TransformerEncoder

    return TransformerEncoder(settings)
