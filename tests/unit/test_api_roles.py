"""Token roles on a served app over libvirt's test driver: every route declares the
role it needs (reader, operator or admin), a role below it is refused with a 403 that
names both, and the journal says which token acted (``api:NAME``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute

from api_support import Served, served
from virtlife.api.auth import admin, operator, reader
from virtlife.api.routes import Action

VM = "/api/vms/local/test"
ROLES = {reader: "reader", operator: "operator", admin: "admin"}
OPEN = {"/api/health"}  # no token at all


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "s.db", {"local": "test:///default"}, follow_events=False) as s:
        yield s


def _routes(routes: list[Any]) -> Iterator[Any]:
    """Every route of the app, the included routers' too (FastAPI includes them lazily)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def _declared(route: APIRoute) -> list[str]:
    return [ROLES[d.call] for d in route.dependant.dependencies if d.call in ROLES]


def test_every_api_route_declares_exactly_one_role(api: Served) -> None:
    """The project's rule: every new route declares its role."""
    seen = 0
    for route in _routes(api.app.routes):
        if isinstance(route, APIRoute) and route.include_in_schema:
            declared = _declared(route)
            if route.path in OPEN:
                assert declared == [], route.path
            else:
                assert len(declared) == 1, (route.path, route.methods, declared)
                seen += 1
        elif isinstance(route, APIWebSocketRoute):
            assert route.path.startswith("/ws/")  # a one-time ticket, minted by an operator
    assert seen >= 56  # every route there is today, at least (49 + the 7 fleet routes)


def test_reads_are_for_readers_and_changes_for_operators_or_admins(api: Served) -> None:
    roles: dict[str, set[str]] = {}
    for route in _routes(api.app.routes):
        if isinstance(route, APIRoute) and route.include_in_schema and route.path not in OPEN:
            for method in route.methods:
                roles.setdefault(method, set()).update(_declared(route))
    assert roles["GET"] == {"reader"}
    assert roles["POST"] == {"reader", "operator", "admin"}  # migrate/check only reads
    admins = {(m, r.path) for r in _routes(api.app.routes) if isinstance(r, APIRoute)
              for m in r.methods if _declared(r) == ["admin"]}
    assert admins == {("POST", "/api/hosts"), ("DELETE", "/api/hosts/{name}")}


def _error(response: httpx.Response) -> str:
    message: str = response.json()["error"]["message"]
    return message


def test_a_reader_is_refused_a_change_with_both_roles_named(api: Served) -> None:
    with api.client(token=api.read_only_token) as reader_client:
        response = reader_client.post(f"{VM}/actions/suspend")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
        message = _error(response)
        assert "needs an operator token" in message and "is a reader" in message
        assert "--role operator" in message
        assert reader_client.get(VM).json()["state"] == "running"


def test_an_operator_runs_vms_but_is_refused_the_hosts(api: Served) -> None:
    with api.client(token=api.operator_token) as op:
        response = op.post("/api/hosts", json={"name": "h2", "uri": "test:///default"})
        assert response.status_code == 403
        message = _error(response)
        assert "needs an admin token" in message
        assert f"token '{api.operator_name}' is an operator" in message
        assert op.delete("/api/hosts/local").status_code == 403
        assert [h["name"] for h in op.get("/api/hosts").json()] == ["local"]
        done = op.post(f"{VM}/actions/{Action.SUSPEND.value}")
        assert done.status_code == 202, done.text
        assert api.wait_operation(op, done.json()["op_id"])["status"] == "ok"
        assert op.get(VM).json()["state"] == "paused"
    with api.client() as root:  # the admin may
        added = root.post("/api/hosts", json={"name": "h2", "uri": "test:///default"})
        assert added.status_code == 201, added.text


def test_the_journal_names_the_token_that_acted(api: Served) -> None:
    with api.client(token=api.operator_token) as op:
        done = op.post(f"{VM}/actions/suspend")
        assert api.wait_operation(op, done.json()["op_id"])["status"] == "ok"
        history = op.get(f"{VM}/history").json()
    entry = next(e for e in history if e["operation"] == "suspend")
    assert (entry["user"], entry["process"]) == (f"api:{api.operator_name}", "server")
