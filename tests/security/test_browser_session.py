"""The browser session's attacks (issue 16, section 3), each against a real served app
over libvirt's test driver: a page of another local port posting with the web UI's
cookie (text/plain XML, an empty form, a login form), a GET that logs out, a Host
header of another name (DNS rebinding), /docs and /openapi.json without a token, the
headers of every answer, and a revoked token's event stream and console staying open.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from api_support import QuietConsole, Served, served
from virtlife.api.auth import COOKIE

OTHER = "http://127.0.0.1:9999"  # another local port: the same site, another origin
REVOKED_WITHIN_S = 5.0 + 2.0  # the bound, and a margin for a loaded machine
DOMAIN = ("<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>"
          "<os><type>hvm</type></os></domain>")
XML = {"content-type": "application/xml"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "s.db", {"local": "test:///default"}, follow_events=False) as s:
        yield s


def browser(api: Served, **headers: str) -> httpx.Client:
    """A client that carries the web UI's cookie (and no Authorization), as a browser
    does on a page of any origin of the same site."""
    return httpx.Client(base_url=api.url, cookies={COOKIE: api.token}, headers=headers,
                        timeout=30)


def vm_names(api: Served) -> list[str]:
    with api.client() as c:
        return [v["name"] for v in c.get("/api/vms").json()["vms"]]


def own_origin(api: Served) -> str:
    return api.url  # http://127.0.0.1:PORT


# -- CSRF -------------------------------------------------------------------------------

def test_a_text_plain_post_from_another_port_defines_no_vm(api: Served) -> None:
    with browser(api, Origin=OTHER) as page:
        r = page.post("/api/hosts/local/define", content=DOMAIN.format(name="csrf1"),
                      headers={"content-type": "text/plain"})
    assert r.status_code == 403, r.text
    assert "own pages" in r.json()["error"]["message"]
    assert "csrf1" not in vm_names(api)


def test_an_empty_form_post_from_another_port_takes_no_snapshot(api: Served) -> None:
    with browser(api, Origin=OTHER) as page:
        r = page.post("/api/vms/local/test/snapshots", content=b"",
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 403, r.text
    with api.client() as c:
        assert c.get("/api/vms/local/test/snapshots").json() == []


REFUSED = {  # what a cookie write may carry and still be refused
    "no origin at all": {},
    "same-site": {"Sec-Fetch-Site": "same-site"},
    "cross-site": {"Sec-Fetch-Site": "cross-site"},
    "null origin": {"Origin": "null"},
    "other origin": {"Origin": OTHER, "Sec-Fetch-Site": "same-origin"},  # Origin decides
}


def test_a_cookie_write_must_come_from_the_servers_own_pages(api: Served) -> None:
    answers = {}
    for n, (what, headers) in enumerate(REFUSED.items()):
        with browser(api, **headers) as page:
            answers[what] = page.post("/api/hosts/local/define", headers=XML,
                                      content=DOMAIN.format(name=f"c{n}")).status_code
    assert answers == dict.fromkeys(REFUSED, 403)
    assert not {f"c{n}" for n in range(len(REFUSED))} & set(vm_names(api))
    # what the web UI's own pages send, and what a script with a bearer token sends
    with browser(api, Origin=own_origin(api)) as page:
        assert page.post("/api/hosts/local/define", content=DOMAIN.format(name="ok1"),
                         headers=XML).status_code == 200
        assert page.get("/api/vms").status_code == 200  # a read needs no origin
    with browser(api, **{"Sec-Fetch-Site": "same-origin"}) as page:
        assert page.post("/api/hosts/local/define", content=DOMAIN.format(name="ok2"),
                         headers=XML).status_code == 200
    with api.client() as c:  # no cookie, no Origin: the CLI, curl
        assert c.post("/api/hosts/local/define", content=DOMAIN.format(name="ok3"),
                      headers=XML).status_code == 200


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded",
                                  "multipart/form-data; boundary=x", None])
def test_define_takes_only_an_xml_content_type(api: Served, kind: str | None) -> None:
    body = DOMAIN.format(name="t1").encode()
    request = httpx.Request("POST", f"{api.url}/api/hosts/local/define", content=body,
                            headers={"Authorization": f"Bearer {api.token}"})
    if kind is not None:  # None: httpx sends bytes without one
        request.headers["content-type"] = kind
    assert request.headers.get("content-type") == kind
    with httpx.Client(timeout=30) as c:
        r = c.send(request)
    assert r.status_code == 415, r.text
    assert "application/xml" in r.json()["error"]["message"]
    assert "t1" not in vm_names(api)
    with api.client() as c:
        ok = c.post("/api/hosts/local/define", content=body,
                    headers={"content-type": "text/xml; charset=utf-8"})
    assert ok.status_code == 200, ok.text


def test_logout_is_post_only(api: Served) -> None:
    with browser(api) as page:  # an <img src=/logout> on any page of the site
        r = page.get("/logout", follow_redirects=False)
        assert r.status_code == 405
        assert "set-cookie" not in r.headers
        out = page.post("/logout", headers={"Origin": own_origin(api)},
                        follow_redirects=False)
        assert out.status_code == 303 and "virtlife_token" in out.headers["set-cookie"]


def test_a_login_form_from_another_origin_is_refused(api: Served) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as page:
        r = page.post("/login", data={"token": api.token, "next": "/"},
                      headers={"Origin": OTHER}, follow_redirects=False)
        assert r.status_code == 403
        assert "set-cookie" not in r.headers
        own = page.post("/login", data={"token": api.token, "next": "/"},
                        headers={"Origin": own_origin(api)}, follow_redirects=False)
        assert own.status_code == 303 and COOKIE in own.headers["set-cookie"]


# -- Host header, docs --------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/health", "/", "/login", "/api/vms"])
def test_a_request_for_another_host_name_is_refused(api: Served, path: str) -> None:
    port = api.url.rsplit(":", 1)[1]
    with api.client() as c:
        rebound = c.get(path, headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 400, rebound.text
        assert c.get(path, headers={"Host": f"localhost:{port}"}).status_code in (200, 303)
        assert c.get(path).status_code in (200, 303)  # 127.0.0.1:PORT


def test_the_api_description_needs_a_token_and_swagger_ui_is_off(api: Served) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as anyone:
        assert anyone.get("/openapi.json").status_code == 401
        assert anyone.get("/docs").status_code == 404
        assert anyone.get("/redoc").status_code == 404
    with api.client(token=api.read_only_token) as reader:
        spec = reader.get("/openapi.json")
    assert spec.status_code == 200 and "/api/vms" in spec.json()["paths"]


# -- headers ------------------------------------------------------------------------------

def test_every_answer_says_nosniff_and_no_store(api: Served) -> None:
    with api.client() as c, httpx.Client(base_url=api.url, timeout=30) as anyone:
        answers = {
            "health": anyone.get("/api/health"),
            "vms": c.get("/api/vms"),
            "vm": c.get("/api/vms/local/test"),
            "xml": c.get("/api/vms/local/test/xml"),
            "no token": anyone.get("/api/vms"),
            "unknown VM": c.get("/api/vms/local/nope"),
            "no route": c.get("/api/nothing-here"),
            "invalid": c.get("/api/history", params={"limit": 0}),
            "metrics": c.get("/metrics"),
            "openapi": c.get("/openapi.json"),
            "login page": anyone.get("/login"),
        }
        with c.stream("GET", "/api/events") as stream:
            answers["events"] = stream
    for what, r in answers.items():
        assert r.headers.get("x-content-type-options") == "nosniff", what
        assert r.headers.get("cache-control") == "no-store", what
    assert anyone_static_is_cacheable(api)


def anyone_static_is_cacheable(api: Served) -> bool:
    with httpx.Client(base_url=api.url, timeout=30) as anyone:
        r = anyone.get("/static/common.js")
    return r.status_code == 200 and r.headers.get("x-content-type-options") == "nosniff" \
        and "no-store" not in r.headers.get("cache-control", "")


# -- revocation ---------------------------------------------------------------------------

def _fresh_token(api: Served, name: str) -> str:
    secret: str = api.app.state.services.need_store().tokens.create(name)
    streams = getattr(api.app.state, "streams", None)
    if streams is not None:
        streams.recheck_s = 0.1  # checked this often in this test: it is quick
    return secret


def test_a_revoked_token_ends_its_event_stream(api: Served) -> None:
    secret = _fresh_token(api, "watcher")
    timeout = httpx.Timeout(30, read=REVOKED_WITHIN_S)
    seen: list[str] = []
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {secret}"},
                      timeout=timeout) as c, c.stream("GET", "/api/events") as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        for line in lines:
            seen.append(line)
            if line.startswith("event: hello"):
                break
        api.app.state.services.need_store().tokens.revoke("watcher")
        # read to the end: a stream that goes on past the bound is a ReadTimeout
        seen.extend(lines)
    assert "event: revoked" in seen, seen
    last = json.loads(next(x for x in reversed(seen) if x.startswith("data: "))[6:])
    assert last["type"] == "revoked" and "revoked" in last["message"]
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {secret}"},
                      timeout=30) as c:
        assert c.get("/api/events").status_code == 401


def test_a_revoked_token_ends_its_console(api: Served, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    secret = _fresh_token(api, "typist")
    console = QuietConsole()
    monkeypatch.setattr(api.app.state.services.consoles, "serial",
                        lambda ref, force=False: console)
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {secret}"},
                      timeout=30) as c:
        ticket = c.post("/api/vms/local/test/console-tickets", json={"kind": "serial"})
    assert ticket.status_code == 200, ticket.text
    url = api.url.replace("http://", "ws://") + ticket.json()["url"]
    closed: dict[str, Any] = {}
    with connect(url, open_timeout=30) as ws:
        ws.send(b"ls\r")
        api.app.state.services.need_store().tokens.revoke("typist")
        try:
            while True:  # nothing comes from the quiet console: only the close
                ws.recv(timeout=REVOKED_WITHIN_S)
        except ConnectionClosed as err:
            assert err.rcvd is not None
            closed = {"code": err.rcvd.code, "reason": err.rcvd.reason}
    assert closed["code"] == 1008 and "revoked" in closed["reason"], closed
    assert console.closed.is_set()


def test_the_host_names_a_server_answers_to() -> None:
    from virtlife.api.app import wildcard_names
    from virtlife.api.guard import allowed_hosts

    loopback = ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts("127.0.0.1") == loopback
    assert allowed_hosts("192.0.2.7", ["vm.example"]) == [*loopback, "vm.example",
                                                          "192.0.2.7"]
    assert allowed_hosts("[2001:db8::1]") == [*loopback, "[2001:db8::1]"]
    assert allowed_hosts("0.0.0.0") == loopback  # a wildcard is no name
    assert wildcard_names("127.0.0.1") == ()
    assert socket_name() in wildcard_names("0.0.0.0")


def socket_name() -> str:
    import socket

    return socket.gethostname()
