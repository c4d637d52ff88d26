"""The REST API's core routes over libvirt's test driver, through a real served app:
auth, VM listing, lifecycle actions as operations, refusals, events and metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_support import Served, served, sse_messages
from virtlife.store import open_store

VM = "/api/vms/local/test"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "store.db", {"local": "test:///default"}) as s:
        yield s


@pytest.fixture
def client(api: Served) -> Iterator[httpx.Client]:
    with api.client() as c:
        yield c


def _error(response: httpx.Response) -> dict[str, str]:
    body: dict[str, dict[str, str]] = response.json()
    return body["error"]


# -- auth -----------------------------------------------------------------------------

def test_health_needs_no_token_and_everything_else_does(api: Served) -> None:
    with api.client(token="") as anonymous:
        assert anonymous.get("/api/health").json()["status"] == "ok"
        for path in ("/api/vms", "/api/hosts", VM, "/api/operations", "/metrics",
                     "/api/events"):
            response = anonymous.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
            assert _error(response)["code"] == "unauthorized"
        assert anonymous.post(f"{VM}/actions/suspend").status_code == 401


def test_unknown_and_revoked_tokens_are_refused(api: Served, tmp_path: Path) -> None:
    with api.client(token="vl_not-a-real-token") as stranger:
        response = stranger.get("/api/vms")
        assert response.status_code == 401
        assert "not valid" in _error(response)["message"]
    with api.client() as c:
        assert c.get("/api/vms").status_code == 200
        with open_store(tmp_path / "store.db") as store:
            store.tokens.revoke(api.token_name)
        assert c.get("/api/vms").status_code == 401


def test_the_web_cookie_is_accepted_like_the_header(api: Served) -> None:
    with httpx.Client(base_url=api.url, cookies={"virtlife_token": api.token}) as c:
        assert c.get("/api/vms").status_code == 200


def test_a_read_only_token_reads_but_never_writes(api: Served) -> None:
    with api.client(token=api.read_only_token) as reader:
        assert reader.get("/api/vms").status_code == 200
        response = reader.post(f"{VM}/actions/suspend")
        assert response.status_code == 403
        assert _error(response)["code"] == "forbidden"
        assert reader.get(VM).json()["state"] == "running"  # nothing changed


# -- VMs and actions ----------------------------------------------------------------------

def test_the_listing_says_what_each_state_allows(client: httpx.Client) -> None:
    body = client.get("/api/vms").json()
    assert body["unreachable"] == []
    [row] = [r for r in body["vms"] if r["name"] == "test"]
    assert (row["host"], row["state"]) == ("local", "running")
    assert "suspend" in row["allowed"] and "shutdown" in row["allowed"]
    assert "start" not in row["allowed"] and "resume" not in row["allowed"]
    [host] = client.get("/api/hosts").json()
    load = host.pop("load")  # the background sampler's, once it has read (fleet tests)
    assert load is None or load["host"] == "local"
    assert host == {"name": "local", "uri": "test:///default", "reachable": True,
                    "problem": None, "vms": len(body["vms"]), "mode": "active"}


def test_an_action_is_an_operation_with_an_id_and_its_result(api: Served,
                                                            client: httpx.Client) -> None:
    response = client.post(f"{VM}/actions/suspend")
    assert response.status_code == 202
    op_id = response.json()["op_id"]
    assert response.json()["url"] == f"/api/operations/{op_id}"
    done = api.wait_operation(client, op_id)
    assert done["status"] == "ok"
    assert done["result"]["state"] == "paused"
    assert [u["stage"] for u in done["updates"]][-1] == "done"
    vm = client.get(VM).json()
    assert vm["state"] == "paused" and "resume" in vm["allowed"]
    history = client.get(f"{VM}/history").json()
    assert history[0]["op_id"] == op_id and history[0]["outcome"] == "ok"


def test_a_transition_the_state_forbids_is_refused_at_once(client: httpx.Client) -> None:
    response = client.post(f"{VM}/actions/resume")
    assert response.status_code == 409
    error = _error(response)
    assert error["code"] == "invalid_transition"
    assert error["message"] == "cannot resume test: it is running, not paused"
    assert client.get(VM).json()["state"] == "running"
    assert client.get(f"{VM}/history").json() == []  # no operation was started


@pytest.mark.parametrize(("body", "words"), [
    ({"force": True}, "suspend does not take force; it takes timeout_s"),
    ({"timeout_s": -1}, "timeout_s"),
    ({"nonsense": 1}, "nonsense"),
])
def test_bad_options_are_422_with_the_reason(client: httpx.Client, body: dict[str, object],
                                             words: str) -> None:
    response = client.post(f"{VM}/actions/suspend", json=body)
    assert response.status_code == 422
    assert _error(response)["code"] == "invalid_input"
    assert words in _error(response)["message"]


def test_save_without_a_path_is_refused(client: httpx.Client) -> None:
    response = client.post(f"{VM}/actions/save", json={})
    assert response.status_code == 422
    assert "save needs a path" in _error(response)["message"]


def test_unknown_hosts_vms_and_operations_are_404(client: httpx.Client) -> None:
    cases = {"/api/vms/nohost/test": "host_not_found", "/api/vms/local/novm": "vm_not_found",
             "/api/operations/0123456789ab": "not_found"}
    for path, code in cases.items():
        response = client.get(path)
        assert response.status_code == 404, path
        assert _error(response)["code"] == code
    assert client.post("/api/vms/nohost/test/actions/start").status_code == 404
    assert client.get("/api/vms", params={"host": "nohost"}).status_code == 404


# -- events and metrics -------------------------------------------------------------------

def test_the_event_stream_carries_the_new_state_and_the_operation(api: Served) -> None:
    with api.client() as c, api.client() as actor:
        started = threading.Event()

        def act() -> None:
            started.wait(10)
            actor.post(f"{VM}/actions/suspend").raise_for_status()

        thread = threading.Thread(target=act)
        thread.start()
        try:
            def seen(message: dict[str, object]) -> bool:
                started.set()
                return message.get("type") == "state" and message.get("state") == "paused"

            messages = sse_messages(c, until=seen)
        finally:
            started.set()
            thread.join(10)
    kinds = {m["type"] for m in messages}
    assert "hello" in kinds
    state = messages[-1]
    assert (state["host"], state["name"], state["label"]) == ("local", "test", "paused")
    assert "resume" in state["allowed"]  # type: ignore[operator]


def test_metrics_count_vms_hosts_and_operations(api: Served, client: httpx.Client,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # the gauges come from the state cache, which the suspend's lifecycle event updates
    # after the operation ended: the scrape waits for the hub's state message, which
    # is published once the cache holds the new state
    hub = api.app.state.hub
    paused = threading.Event()
    publish = hub.publish

    def watching(message: dict[str, object]) -> None:
        publish(message)
        if message.get("type") == "state" and message.get("state") == "paused":
            paused.set()

    monkeypatch.setattr(hub, "publish", watching)
    api.wait_operation(client, client.post(f"{VM}/actions/suspend").json()["op_id"])
    assert paused.wait(10), "no state message for the suspended VM"
    text = client.get("/metrics").text
    assert 'virtlife_vms{host="local",state="paused"} 1' in text
    assert 'virtlife_vms{host="local",state="running"} 0' in text
    assert 'virtlife_host_up{host="local"} 1' in text
    assert 'virtlife_operations_total{operation="suspend",outcome="ok"} 1' in text
    assert 'virtlife_operation_seconds_count{operation="suspend",outcome="ok"} 1' in text


def test_openapi_describes_the_routes(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/vms/{host}/{name}/actions/{action}" in spec["paths"]
    assert client.get("/docs").status_code == 404  # no Swagger UI (a CDN's code)


def test_a_bug_is_a_json_500_not_a_text_page(api: Served, client: httpx.Client,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    services = api.app.state.services

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(services.lifecycle, "info", broken)
    response = client.get("/api/vms/local/test")
    assert response.status_code == 500
    assert _error(response)["code"] == "internal_error"
    assert "RuntimeError" in _error(response)["message"]
    assert "boom" not in response.text  # the details stay in the server's log
