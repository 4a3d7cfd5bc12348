"""Every Redis key the worker writes, in one place."""

from __future__ import annotations

import hashlib


def dedup_key(namespace: str, model_fingerprint: str, doc_id: str) -> str:
    """``{ns}:dedup:v1:{model}:{hash(id)}``; the value is the content hash last embedded for the id.

    The id is hashed so arbitrary ids (any length, any bytes) make bounded, safe keys.
    """
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"{namespace}:dedup:v1:{model_fingerprint}:{digest}"
