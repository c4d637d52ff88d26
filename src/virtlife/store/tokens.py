"""Bearer tokens of the REST API, stored as SHA-256 digests, never as the secret.

``create`` makes a token (``vl_`` + 43 URL-safe characters: 256 random bits) and
returns the secret once; only its digest is kept, so a copy of the store gives no way
in. A token has a unique name (what ``token list`` and ``token revoke`` use) and is
either read-write or read-only. ``check`` answers whether a presented secret is a
live token, records when it was last used, and compares digests in constant time.
This module only keeps the rows; ``api.auth`` decides what a token may do.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from virtlife import errors

if TYPE_CHECKING:
    from virtlife.store.db import Database

PREFIX = "vl_"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
# A token may be recorded as used at most this often (seconds): a busy client must not
# turn every request into a write.
TOUCH_EVERY_S = 60.0


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    name: str
    read_only: bool
    created_at: datetime
    last_used_at: datetime | None = None

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "read_only": self.read_only,
                "created_at": self.created_at.isoformat(),
                "last_used_at": None if self.last_used_at is None
                else self.last_used_at.isoformat()}


class Tokens:
    """The ``api_tokens`` table. Obtain it as ``Store.tokens``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _record(self, row: sqlite3.Row) -> TokenRecord:
        used = row["last_used_at"]
        return TokenRecord(str(row["name"]), bool(row["read_only"]),
                           self._db.parse_ts(str(row["created_at"])),
                           None if used is None else self._db.parse_ts(str(used)))

    def create(self, name: str, *, read_only: bool = False) -> str:
        """A new token named ``name``; returns its secret (shown once, never stored)."""
        if not NAME_RE.fullmatch(name):
            raise errors.InvalidInput(
                f"cannot create token {name!r}: a name is 1-64 letters, digits or _.@- "
                "and starts with a letter or digit")
        secret = PREFIX + secrets.token_urlsafe(32)
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    "INSERT INTO api_tokens (name, digest, read_only, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (name, digest(secret), int(read_only),
                     self._db.format_ts(datetime.now(UTC))))
        except sqlite3.IntegrityError:
            raise errors.AlreadyExists(
                f"cannot create token {name!r}: a token of that name exists; "
                f"revoke it first (`virtlife token revoke {name}`)") from None
        return secret

    def check(self, secret: str) -> TokenRecord | None:
        """The live token whose secret this is, or None."""
        if not secret.startswith(PREFIX) or len(secret) > 200:
            return None
        wanted = digest(secret)
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM api_tokens WHERE digest = ?",
                                (wanted,)).fetchall()
        if not rows or not hmac.compare_digest(str(rows[0]["digest"]), wanted):
            return None
        record = self._record(rows[0])
        now = datetime.now(UTC)
        if (record.last_used_at is None
                or (now - record.last_used_at).total_seconds() >= TOUCH_EVERY_S):
            try:
                with self._db.transaction() as conn:
                    conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE name = ?",
                                 (self._db.format_ts(now), record.name))
            except errors.StoreUnavailable:
                pass  # a read-only store still authenticates
        return record

    def list(self) -> list[TokenRecord]:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM api_tokens ORDER BY name").fetchall()
        return [self._record(r) for r in rows]

    def revoke(self, name: str) -> None:
        with self._db.transaction() as conn:
            gone = conn.execute("DELETE FROM api_tokens WHERE name = ?", (name,)).rowcount
        if not gone:
            raise errors.NotFound(f"no token named {name!r}; `virtlife token list` lists them")
