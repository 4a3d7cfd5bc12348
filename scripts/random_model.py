"""Write a randomly initialised BERT-shaped model directory, for speed benchmarks only.

The GPU targets are stated for shapes, not weights (BERT-base: 768 hidden, 12 layers; MiniLM-L6:
384 hidden, 6 layers), and a random model of the right shape costs the same per token. The
tokenizer is the bundled all-MiniLM-L6-v2's (BERT uncased, 30,522 tokens), so documents tokenize
exactly as they would for the real models.

    python scripts/random_model.py bert-base /tmp/models/bert-base
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import TypedDict


class Shape(TypedDict):
    """The ``BertConfig`` arguments that make a shape."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int


SHAPES: dict[str, Shape] = {
    "bert-base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "minilm-l6": {
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
    },
}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def write_model(shape: str, out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, max_position_embeddings=512, **SHAPES[shape])
    out.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--tokenizer",
        type=Path,
        help="directory with the tokenizer files (default: the bundled all-MiniLM-L6-v2)",
    )
    ns = parser.parse_args()
    if ns.tokenizer is None:
        from worker.encode.transformer import resolve_model_path

        ns.tokenizer = Path(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"))
    print(write_model(ns.shape, ns.out, ns.tokenizer))


if __name__ == "__main__":
    main()
