"""Strict JSON in, compact JSON out: the one place that decides what JSON we accept and write.

Python's json module accepts NaN, Infinity and repeated keys, and recurses without
a bound; a log that others audit must not contain any of those.
"""
from __future__ import annotations

import json
import math
from typing import Any

from .errors import BadRequest

MAX_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON: only finite numbers are accepted")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadRequest(f"duplicate key {key!r} in a JSON object")
            seen.add(key)
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise BadRequest(f"{text} is out of range: only finite numbers are accepted")
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float,
                            object_pairs_hook=_unique_keys)


_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_AS_PARENTHESES = bytes.maketrans(b"[]{}", b"()()")


def nesting_depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (checked before parsing).

    No loop over bytes in Python (a 32 MiB body would hold the interpreter lock for a second):
    escapes go first (``\\\\`` and ``\\"`` never end a string), then every odd stretch between
    quotes is a string's inside; what is left is cut to its brackets, written as parentheses.
    Each ``replace(b"()", b"")`` removes every innermost pair, that is exactly one level, at
    memchr speed: anything left after ``limit`` of them nests deeper than ``limit``. Brackets
    that never pair up are malformed JSON: the parser words that error.
    """
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(_AS_PARENTHESES, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        inner = brackets.replace(b"()", b"")
        if len(inner) == len(brackets):
            return False
        brackets = inner
    return bool(brackets)


def loads_strict(body: bytes) -> Any:
    """Parse a request body; raises BadRequest for bad UTF-8, bad JSON, NaN, repeated keys or deep nesting."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not valid UTF-8 (byte {exc.start})") from None
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and nesting_depth_exceeds(body, MAX_DEPTH):
        raise BadRequest(f"JSON nests deeper than {MAX_DEPTH} levels")
    try:
        return _decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BadRequest("JSON nests too deeply") from None
    except ValueError as exc:  # an integer beyond Python's digit limit, for one
        raise BadRequest(f"unacceptable JSON number: {exc}") from None


# Built once: json.dumps with any non-default option builds a new encoder on every call.
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_canonical = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False).encode


def dumps_compact(value: Any) -> str:
    """Compact, UTF-8-friendly JSON; raises ValueError on NaN/Infinity and TypeError on non-JSON values."""
    return _compact(value)


def canonical(value: Any) -> str:
    """A key-order-independent form, for comparing two payloads for equality."""
    return _canonical(value)
