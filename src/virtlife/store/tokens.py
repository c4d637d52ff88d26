"""Bearer tokens of the REST API, stored as SHA-256 digests, never as the secret.

``create`` makes a token (``vl_`` + 43 URL-safe characters: 256 random bits) and
returns the secret once; only its digest is kept, so a copy of the store gives no way
in. A token has a unique name (what ``token list`` and ``token revoke`` use) and a
``Role``: reader < operator < admin. ``check`` answers whether a presented secret is a
live token, records when it was last used, and compares digests in constant time.
This module only keeps the rows; ``api.auth`` decides what a role may do.

Tokens made before roles existed were read-only or read-write: the store's migration
``0008_api_token_roles`` made the read-only ones readers and the read-write ones admins
(what they could do: anything), marking each such admin ``carried_over`` until
``take_carried_over`` hands its name out once, for the note that says so.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from virtlife import errors

if TYPE_CHECKING:
    from virtlife.store.db import Database
    from virtlife.store.sql import Row

PREFIX = "vl_"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
# A token may be recorded as used at most this often (seconds): a busy client must not
# turn every request into a write.
TOUCH_EVERY_S = 60.0


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class Role(StrEnum):
    """What a token may do, each role everything the one before may (``rank``).

    - ``reader``: sees everything but secrets (a VNC password);
    - ``operator``: lifecycle, consoles, snapshots, agent, migration; files only under
      the allowed roots, and domain XML that reaches nothing of the host;
    - ``admin``: everything, hosts, any path, any XML, what root on every host can do.
    """

    READER = "reader"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return ROLES.index(self)

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may."""
        return self.rank >= needed.rank

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls(text)
        except ValueError:
            raise errors.InvalidInput(
                f"unknown role {text!r}: give reader, operator or admin") from None


ROLES: tuple[Role, ...] = (Role.READER, Role.OPERATOR, Role.ADMIN)


@dataclass(frozen=True)
class TokenRecord:
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None = None

    @property
    def read_only(self) -> bool:
        """A reader: what ``read_only`` meant before roles (kept in the JSON)."""
        return self.role is Role.READER

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role.value, "read_only": self.read_only,
                "created_at": self.created_at.isoformat(),
                "last_used_at": None if self.last_used_at is None
                else self.last_used_at.isoformat()}


class Tokens:
    """The ``api_tokens`` table. Obtain it as ``Store.tokens``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _record(self, row: Row) -> TokenRecord:
        used = row["last_used_at"]
        return TokenRecord(str(row["name"]), Role(str(row["role"])),
                           self._db.parse_ts(str(row["created_at"])),
                           None if used is None else self._db.parse_ts(str(used)))

    def create(self, name: str, *, role: Role = Role.OPERATOR) -> str:
        """A new token named ``name`` with ``role``; returns its secret (shown once,
        never stored)."""
        if not NAME_RE.fullmatch(name):
            raise errors.InvalidInput(
                f"cannot create token {name!r}: a name is 1-64 letters, digits or _.@- "
                "and starts with a letter or digit")
        secret = PREFIX + secrets.token_urlsafe(32)
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    "INSERT INTO api_tokens (name, digest, role, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (name, digest(secret), Role(role).value,
                     self._db.format_ts(datetime.now(UTC))))
        except self._db.conflicts:
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

    def take_carried_over(self) -> builtins.list[str]:
        """The names of the tokens that were read-write before roles and became admins,
        each handed out once (the caller tells the operator); [] on a read-only store.

        One statement takes them: two processes asking at once (PostgreSQL's READ
        COMMITTED let both read the marks before either cleared them) get each name
        once between them, the second waiting for the first's row locks."""
        try:
            with self._db.transaction() as conn:
                rows = conn.execute("UPDATE api_tokens SET carried_over = 0"
                                    " WHERE carried_over = 1 RETURNING name").fetchall()
        except errors.StoreUnavailable:
            return []
        return sorted(str(r["name"]) for r in rows)

    def revoke(self, name: str) -> None:
        with self._db.transaction() as conn:
            gone = conn.execute("DELETE FROM api_tokens WHERE name = ?", (name,)).rowcount
        if not gone:
            raise errors.NotFound(f"no token named {name!r}; `virtlife token list` lists them")
