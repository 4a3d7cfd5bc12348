"""Pooling and normalization, and reading them from a model's sentence-transformers files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from worker.errors import ModelLoadError

POOLINGS = ("mean", "cls", "last")


@dataclass(frozen=True)
class PoolingConfig:
    pooling: str = "mean"
    normalize: bool = False
    max_length: int | None = None


def read_sentence_transformers_config(model_dir: Path) -> PoolingConfig:
    """Pooling, normalization and max length as sentence-transformers would use them.

    A directory without sentence-transformers files gets mean pooling, no normalization, and the
    model's own length limit (what sentence-transformers does for a plain transformers model).
    """
    max_length = None
    bert_cfg = model_dir / "sentence_bert_config.json"
    if bert_cfg.is_file():
        max_length = json.loads(bert_cfg.read_text()).get("max_seq_length")
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return PoolingConfig(max_length=max_length)
    modules = json.loads(modules_file.read_text())
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    pooling = "mean"
    for m in modules:
        if m.get("type", "").endswith("Pooling"):
            pooling = _pooling_mode(
                json.loads((model_dir / m.get("path", "") / "config.json").read_text())
            )
    return PoolingConfig(pooling, normalize, max_length)


def _pooling_mode(cfg: dict) -> str:
    mode = cfg.get("pooling_mode")
    if mode is None:
        flags = {
            "cls": cfg.get("pooling_mode_cls_token"),
            "mean": cfg.get("pooling_mode_mean_tokens"),
            "last": cfg.get("pooling_mode_lasttoken"),
        }
        unsupported = [
            k
            for k in (
                "pooling_mode_max_tokens",
                "pooling_mode_mean_sqrt_len_tokens",
                "pooling_mode_weightedmean_tokens",
            )
            if cfg.get(k)
        ]
        chosen = [name for name, on in flags.items() if on]
        if unsupported or len(chosen) != 1:
            raise ModelLoadError(
                f"unsupported sentence-transformers pooling {cfg}; set EMBED_MODEL__POOLING"
            )
        return chosen[0]
    mode = {"lasttoken": "last", "mean_tokens": "mean", "cls_token": "cls"}.get(mode, mode)
    if mode not in POOLINGS:
        raise ModelLoadError(
            f"unsupported sentence-transformers pooling {mode!r}; set EMBED_MODEL__POOLING"
        )
    return mode


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states (batch, seq, dim) under an attention mask (batch, seq) of right-padded rows."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        last = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if mode == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    raise ValueError(f"unknown pooling {mode!r}")
