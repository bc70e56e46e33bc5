"""Stable fingerprints of JSON-like data (cache keys, prompt and config identities).

The text hashed is ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
(sets sorted, tuples as lists, objects through their ``to_dict``). Cache keys and sampling seeds
are fingerprints, so that text must never change: the fast paths below (and the hand-built cache
key text in ``records.py``) produce exactly the same characters as that ``json.dumps`` call.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

try:  # the C encoder ``json.dumps`` itself uses; made once here instead of on every call
    from json.encoder import c_make_encoder as _c_make_encoder
    from json.encoder import encode_basestring as _encode_str
except ImportError:  # pragma: no cover - an interpreter without the C accelerator
    _c_make_encoder = None
    _encode_str = None

_sha256 = hashlib.sha256


def _default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"cannot fingerprint an object of type {type(obj).__name__}")


def _not_serializable(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


if _c_make_encoder is not None:
    # (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys, allow_nan):
    # what json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False) builds
    _ENCODE = _c_make_encoder(None, _default, _encode_str, None, ":", ",", True, False, True)

    def canonical_json(obj: Any) -> str:
        """JSON with sorted keys and no whitespace: equal data gives equal text."""
        return "".join(_ENCODE(obj, 0))

    def json_str(text: str) -> str:
        """``text`` as a JSON string literal, exactly as ``canonical_json`` writes it."""
        return _encode_str(text)

    _ENCODE_PLAIN = _c_make_encoder(None, _not_serializable, _encode_str, None, ": ", ", ", False, False, True)

    def to_json(obj: Any) -> str:
        """``json.dumps(obj, ensure_ascii=False)`` (keys in their order, default separators), the encoder made once."""
        return "".join(_ENCODE_PLAIN(obj, 0))
else:  # pragma: no cover
    def canonical_json(obj: Any) -> str:
        """JSON with sorted keys and no whitespace: equal data gives equal text."""
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)

    def json_str(text: str) -> str:
        """``text`` as a JSON string literal, exactly as ``canonical_json`` writes it."""
        return json.dumps(text, ensure_ascii=False)

    def to_json(obj: Any) -> str:
        """``json.dumps(obj, ensure_ascii=False)`` (keys in their order, default separators)."""
        return json.dumps(obj, ensure_ascii=False)


def fingerprint(obj: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of ``obj``."""
    return _sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def fingerprint_text(text: str) -> str:
    """SHA-256 hex digest of already canonical JSON text (``fingerprint(x) == fingerprint_text(canonical_json(x))``)."""
    return _sha256(text.encode("utf-8")).hexdigest()


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived from any JSON-able parts (run seed, sample index, names)."""
    return int(_sha256(canonical_json(parts).encode("utf-8")).hexdigest()[:15], 16)
