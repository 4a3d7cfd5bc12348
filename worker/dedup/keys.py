"""Every Redis key the worker writes, in one place."""

from __future__ import annotations

import hashlib
import json


def output_fingerprint(
    model_fingerprint: str, long_text: dict, vector_dtype: str = "float32"
) -> str:
    """The model's fingerprint, changed by any long-text setting other than the defaults and by an
    output vector type other than float32: a new chunk size, policy or vector type gives new
    outputs, so nothing embedded under the old ones is skipped. (The defaults leave it as it was.)"""
    from worker.config import LongTextSettings

    if long_text == LongTextSettings().model_dump() and vector_dtype == "float32":
        return model_fingerprint
    parts: list = [model_fingerprint, long_text] + (
        [vector_dtype] if vector_dtype != "float32" else []
    )
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


def dedup_key(namespace: str, model_fingerprint: str, doc_id: str) -> str:
    """``{ns}:dedup:v1:{model}:{hash(id)}``; the value is the content hash last embedded for the id.

    The id is hashed so arbitrary ids (any length, any bytes) make bounded, safe keys.
    """
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"{namespace}:dedup:v1:{model_fingerprint}:{digest}"
