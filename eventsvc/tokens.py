"""Bearer tokens and their scopes: who may read, who may also write.

Tokens are kept only as SHA-256 digests and compared in constant time, so neither a memory
dump nor response timing gives one away. Nothing here ever logs a token.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

READ, WRITE = "ro", "rw"
# The console's sign-in cookie: it holds a token, and authorises reads only (see api/auth.py).
COOKIE_NAME = "eventsvc_token"
_DIGEST = re.compile(r"sha256:([0-9a-fA-F]{64})\Z")


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class TokenTable:
    """Digests of the configured tokens with their scopes; empty means the API is open."""

    entries: tuple[tuple[bytes, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def scope_of(self, token: str) -> str | None:
        """The token's scope (``rw`` or ``ro``), or None; checks every entry, whatever matches."""
        presented = digest(token)
        scope = None
        for known, known_scope in self.entries:
            if hmac.compare_digest(presented, known) and scope != WRITE:
                scope = known_scope
        return scope


def _split(value: str | Iterable[str] | None) -> list[str]:
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if item.strip()]


def parse_tokens_file(path: Path) -> list[tuple[bytes, str]]:
    """``token scope`` per line (scope ``rw`` or ``ro``), ``#`` comments, ``sha256:<hex>`` digests allowed."""
    entries = []
    for number, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in (READ, WRITE):
            raise ValueError(f"{path}:{number}: expected 'TOKEN rw' or 'TOKEN ro'")
        token, scope = parts
        match = _DIGEST.match(token)
        entries.append((bytes.fromhex(match.group(1)) if match else digest(token), scope))
    return entries


def tokens_from_config(config: Mapping[str, object]) -> TokenTable:
    """The token table the settings describe.

    Decided from the parsed table, never from the raw strings: a setting that is given but
    yields no token (``","``, ``" , "``, a file of comments only) is a ValueError naming it,
    so a typo can never turn into an open API. An empty string counts as not given.
    """
    api, read, path = (str(config.get(name) or "") for name in ("API_TOKENS", "READ_TOKENS", "TOKENS_FILE"))
    for name, value in (("API_TOKENS", api), ("READ_TOKENS", read)):
        if value and not _split(value):
            raise ValueError(f"EVENTSVC_{name} is set but holds no token ({value!r}); give at least one "
                             "token, or unset it for an open API on loopback")
    file_entries: list[tuple[bytes, str]] = []
    if path:
        try:
            file_entries = parse_tokens_file(Path(path))
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"EVENTSVC_TOKENS_FILE={path!r} cannot be read: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        except ValueError as exc:
            raise ValueError(f"EVENTSVC_TOKENS_FILE: {exc}") from None
        if not file_entries:
            raise ValueError(f"EVENTSVC_TOKENS_FILE={path!r} holds no token; add 'TOKEN rw' or 'TOKEN ro' "
                             "lines, or unset it for an open API on loopback")
    table = load_tokens(api, read)
    return TokenTable(table.entries + tuple(file_entries))


def load_tokens(api_tokens: str | Iterable[str] | None = None, read_tokens: str | Iterable[str] | None = None,
                tokens_file: str | Path | None = None) -> TokenTable:
    entries = [(digest(token), WRITE) for token in _split(api_tokens)]
    entries += [(digest(token), READ) for token in _split(read_tokens)]
    if tokens_file:
        entries += parse_tokens_file(Path(tokens_file))
    return TokenTable(tuple(entries))
