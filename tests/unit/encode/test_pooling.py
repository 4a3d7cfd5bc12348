import json

import pytest
import torch

from worker.encode.pooling import pool, read_sentence_transformers_config
from worker.errors import ModelLoadError

HIDDEN = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]], [[2.0, 2.0], [4.0, 0.0], [6.0, 4.0]]])
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])


def test_mean_ignores_padding():
    assert pool(HIDDEN, MASK, "mean").tolist() == [[2.0, 1.0], [4.0, 2.0]]


def test_cls_takes_the_first_token():
    assert pool(HIDDEN, MASK, "cls").tolist() == [[1.0, 0.0], [2.0, 2.0]]


def test_last_takes_the_last_real_token_of_right_padded_rows():
    assert pool(HIDDEN, MASK, "last").tolist() == [[3.0, 2.0], [6.0, 4.0]]


def write_st(tmp_path, pooling_cfg, normalize=True, max_len=128):
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling_cfg))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_len}))


def test_reads_pooling_normalize_and_length(tmp_path):
    write_st(
        tmp_path,
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
        normalize=False,
        max_len=77,
    )
    cfg = read_sentence_transformers_config(tmp_path)
    assert (cfg.pooling, cfg.normalize, cfg.max_length) == ("cls", False, 77)


def test_reads_the_newer_pooling_mode_key(tmp_path):
    write_st(tmp_path, {"pooling_mode": "lasttoken"})
    assert read_sentence_transformers_config(tmp_path).pooling == "last"


def test_a_plain_model_gets_mean_without_normalization(tmp_path):
    cfg = read_sentence_transformers_config(tmp_path)
    assert (cfg.pooling, cfg.normalize, cfg.max_length) == ("mean", False, None)


def test_unsupported_pooling_is_a_clear_error(tmp_path):
    write_st(tmp_path, {"pooling_mode_max_tokens": True})
    with pytest.raises(ModelLoadError, match="EMBED_MODEL__POOLING"):
        read_sentence_transformers_config(tmp_path)
