"""The content hash that deduplicates feedback: SHA-256 of a row's scrubbed fields as canonical JSON, and the
store's 64-bit dedupe key taken from it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

HASHED_FIELDS = ("agent_role", "prompt", "response", "rating", "response_a", "response_b", "preference", "rater")


def canonical_json(values: list[Any] | tuple[Any, ...]) -> bytes:
    """The hashed form: compact JSON, non-ASCII kept as UTF-8 (orjson writes exactly what json.dumps would)."""
    try:
        return orjson.dumps(values)
    except TypeError:  # e.g. a lone surrogate, which orjson refuses
        return json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def content_hash(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json([row.get(name) for name in HASHED_FIELDS])).hexdigest()


def content_keys(hashes: list[str]) -> list[int]:
    """[schema.content_key(h) for h in hashes], by numpy: each hash's first 16 hex digits as a signed big-endian
    64-bit integer."""
    import numpy as np

    return np.frombuffer(bytes.fromhex("".join([hash_[:16] for hash_ in hashes])), dtype=">i8").tolist()
