"""The JSON body of ``GET /api/vms``, written once for as long as its listing stays the same.

A served fleet's listing comes from the state cache and changes only with the events:
most requests between two events get the same rows. Writing 1000 rows as JSON (each
with the operations its state allows) cost the server tens of milliseconds a request,
which capped it at a few requests a second under load. ``ListingBodies`` keeps the last
body written for each query (all or active VMs, one host or every host) beside the rows
and unreachable hosts it was written from, and gives it again while a new listing has
exactly those rows and problems; any difference writes a new one. The body is a pure
function of the listing, so a kept body is never older than the listing it answers.
It decides nothing about what is listed: ``api.hub.cached_listing`` does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from virtlife.api.hub import state_dict
from virtlife.services.fleet import FleetListing, HostProblem, VMRow

Query = tuple[bool, str | None]  # (include_inactive, host)


def row_dict(row: VMRow) -> dict[str, object]:
    """A listing row as the API gives it: its fields and its state's allowed operations."""
    return {**row.as_dict(), **state_dict(row.host, row.name, row.state, row.uuid)}


def listing_dict(listing: FleetListing) -> dict[str, object]:
    return {"vms": [row_dict(r) for r in listing.rows],
            "unreachable": [{"host": p.host, "uri": p.uri, "message": p.message}
                            for p in listing.unreachable]}


def render(content: object) -> bytes:
    """JSON as FastAPI's ``JSONResponse`` writes it."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class _Kept:
    rows: tuple[VMRow, ...]
    unreachable: tuple[HostProblem, ...]
    body: bytes


class ListingBodies:
    """The last body of each query, with the listing it was written from."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[Query, _Kept] = {}

    def body(self, query: Query, listing: FleetListing) -> bytes:
        """The JSON body of ``listing`` (kept for ``query``: the same bytes while the
        rows and the unreachable hosts stay equal)."""
        rows, unreachable = tuple(listing.rows), tuple(listing.unreachable)
        with self._lock:
            kept = self._kept.get(query)
        if kept is not None and _same(kept.rows, rows) and kept.unreachable == unreachable:
            return kept.body
        body = render(listing_dict(listing))
        with self._lock:
            self._kept[query] = _Kept(rows, unreachable, body)
        return body


def _same(a: Sequence[VMRow], b: Sequence[VMRow]) -> bool:
    return len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b, strict=True))
