"""The web UI's pages and the console routes on libvirt's test driver, in process
(Starlette's TestClient): login and its cookie, redirects to /login, the static and
vendor files, console tickets (who may get one; another VM's, a used and an expired
one refused with 1008 and the reason), the .vv download. Real consoles and the
browser: tests/integration/test_api_consoles_real.py and test_web_browser_real.py."""

from __future__ import annotations

import configparser
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from support import NODE_URI
from virtlife.api.auth import COOKIE, Tickets

VNC_VM = ("<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>"
          "<os><type>hvm</type></os><devices><graphics type='vnc' port='5907' "
          "autoport='no' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/>"
          "</graphics></devices></domain>")


@dataclass
class Web:
    client: TestClient
    app: Any
    token: str
    read_only: str

    def vm(self, name: str, *, start: bool = True) -> None:
        lifecycle = self.app.state.services.lifecycle
        lifecycle.define(VNC_VM.format(name=name), host="t")
        if start:
            lifecycle.start(f"t/{name}")

    def ticket(self, name: str, kind: str = "vnc") -> dict[str, Any]:
        response = self.client.post(f"/api/vms/t/{name}/console-tickets", json={"kind": kind},
                                    headers={"Authorization": f"Bearer {self.token}"})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    from virtlife.api.app import create_app
    from virtlife.services.context import open_services
    from virtlife.store import open_store
    from virtlife.store.tokens import Role

    store_path = tmp_path / "serve.db"
    with open_store(store_path) as store:
        store.hosts.add("t", NODE_URI)
        token = store.tokens.create("rw", role=Role.ADMIN)
        read_only = store.tokens.create("ro", role=Role.READER)
    app = create_app(open_services(None, store_path=store_path), follow_events=False,
                     hosts=["127.0.0.1", "testserver"])  # TestClient's WebSockets' Host
    with TestClient(app, base_url="http://127.0.0.1") as client:
        web = Web(client, app, token, read_only)
        web.vm("test")
        yield web


def _close_of(web: Web, url: str) -> dict[str, Any]:
    with web.client.websocket_connect(url) as ws:
        message: dict[str, Any] = ws.receive()
    assert message["type"] == "websocket.close", message
    return message


def test_a_page_without_a_token_redirects_to_login_and_back(web: Web) -> None:
    response = web.client.get("/vm/t/test", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fvm%2Ft%2Ftest"
    form = web.client.get("/login", params={"next": "/vm/t/test"})
    assert 'name="next" value="/vm/t/test"' in form.text


def test_login_with_an_unknown_token_says_so_in_the_form(web: Web) -> None:
    response = web.client.post("/login", data={"token": "nope", "next": "/"},
                               follow_redirects=False)
    assert response.status_code == 401
    assert "not valid" in response.text
    assert COOKIE not in response.cookies


def test_login_sets_an_httponly_strict_cookie_that_opens_the_pages(web: Web) -> None:
    response = web.client.post("/login", data={"token": web.token, "next": "/vm/t/test"},
                               follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/vm/t/test"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    fleet = web.client.get("/")
    assert fleet.status_code == 200 and "/static/fleet.js" in fleet.text
    assert "default-src 'self'" in fleet.headers["content-security-policy"]
    assert web.client.get("/api/vms").status_code == 200  # the API takes the cookie too
    page = web.client.get("/vm/t/test")  # by its UUID, wherever it goes (below)
    assert page.status_code == 200 and "/static/vm.js" in page.text


def test_a_vm_page_by_host_and_name_goes_to_the_page_by_its_uuid(web: Web) -> None:
    web.client.post("/login", data={"token": web.read_only, "next": "/"})
    uuid = web.app.state.services.fleet.resolve("t/test").uuid()
    response = web.client.get("/vm/t/test", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/vm/{uuid}"
    page = web.client.get(f"/vm/{uuid.upper()}")
    assert f'data-uuid="{uuid}"' in page.text  # the canonical UUID; the host is found by
    assert 'data-host=""' in page.text          # the page, and followed when it moves
    # a VM that is not there now: the page by name, which says so (no redirect)
    missing = web.client.get("/vm/t/nosuch", follow_redirects=False)
    assert missing.status_code == 200
    assert 'data-host="t"' in missing.text and 'data-name="nosuch"' in missing.text
    assert 'data-uuid=""' in missing.text and "/api/vms/t/nosuch/viewer.vv" in missing.text
    wrong = web.client.get("/vm/not-a-uuid")
    assert wrong.status_code == 404 and "is not a VM" in wrong.text


def test_login_never_sends_the_browser_to_another_site(web: Web) -> None:
    response = web.client.post("/login", data={"token": web.token, "next": "//evil.example/"},
                               follow_redirects=False)
    assert response.headers["location"] == "/"


def test_logout_forgets_the_cookie(web: Web) -> None:
    web.client.post("/login", data={"token": web.token, "next": "/"})
    response = web.client.post("/logout", follow_redirects=False,
                               headers={"Origin": "http://127.0.0.1"})  # as the page's form
    assert response.headers["location"] == "/login"
    assert 'virtlife_token=""' in response.headers["set-cookie"] or \
        "max-age=0" in response.headers["set-cookie"].lower()
    assert web.client.get("/", follow_redirects=False).status_code == 303


def test_a_read_only_login_is_marked_on_the_page(web: Web) -> None:
    web.client.post("/login", data={"token": web.read_only, "next": "/"})
    assert 'data-read-only="1"' in web.client.get("/").text


def test_the_static_and_vendor_files_are_served(web: Web) -> None:
    for path in ("/static/common.js", "/static/app.css", "/vendor/novnc/core/rfb.js",
                 "/vendor/xterm/xterm/lib/xterm.mjs", "/vendor/xterm/xterm/css/xterm.css",
                 "/vendor/xterm/addon-fit/lib/addon-fit.mjs"):
        assert web.client.get(path).status_code == 200, path


def test_a_console_page_says_how_to_install_its_missing_vendor_code(
        web: Web, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    web.client.post("/login", data={"token": web.token, "next": "/"})
    monkeypatch.setenv("VIRTLIFE_XTERM_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("VIRTLIFE_NOVNC_DIR", str(tmp_path / "none"))
    serial = web.client.get("/vm/t/test/serial").text
    assert "npm ci" in serial and "serial.js" not in serial
    vnc = web.client.get("/vm/t/test/vnc").text
    assert "apt-get install novnc" in vnc and "vnc.js" not in vnc


def test_console_tickets_need_a_read_write_token_and_a_known_vm(web: Web) -> None:
    path = "/api/vms/t/test/console-tickets"
    assert web.client.post(path, json={"kind": "vnc"}).status_code == 401
    ro = web.client.post(path, json={"kind": "vnc"},
                         headers={"Authorization": f"Bearer {web.read_only}"})
    assert ro.status_code == 403
    auth = {"Authorization": f"Bearer {web.token}"}
    assert web.client.post("/api/vms/t/nosuch/console-tickets", json={"kind": "vnc"},
                           headers=auth).status_code == 404
    bad = web.client.post(path, json={"kind": "spice"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    body = web.ticket("test", "serial")
    assert body["expires_in"] == 60
    assert body["url"] == f"/ws/serial/t/test?ticket={body['ticket']}"


def test_a_ticket_for_another_vm_or_console_is_refused(web: Web) -> None:
    web.vm("other")
    issued = web.ticket("test", "vnc")
    closed = _close_of(web, f"/ws/vnc/t/other?ticket={issued['ticket']}")
    assert closed["code"] == 1008
    assert "is for the vnc console of t/test, not the vnc console of t/other" in \
        closed["reason"]
    serial = web.ticket("other", "serial")
    closed = _close_of(web, f"/ws/vnc/t/other?ticket={serial['ticket']}")
    assert closed["code"] == 1008 and "serial console" in closed["reason"]


def test_a_used_ticket_is_refused(web: Web) -> None:
    issued = web.ticket("test", "serial")
    # the first use is taken, whatever happens next (the test driver has no console
    # streams: the service's refusal comes back as 4000 + its HTTP status)
    first = _close_of(web, issued["url"])
    assert first["code"] >= 4000, first
    again = _close_of(web, issued["url"])
    assert again["code"] == 1008 and "used already" in again["reason"]


def test_an_expired_ticket_is_refused(web: Web) -> None:
    web.app.state.tickets = Tickets(ttl_s=0.05)
    issued = web.ticket("test", "vnc")
    time.sleep(0.1)
    closed = _close_of(web, issued["url"])
    assert closed["code"] == 1008 and "expired" in closed["reason"]


def test_a_vnc_console_of_a_shut_off_vm_closes_with_the_reason(web: Web) -> None:
    web.vm("off", start=False)
    closed = _close_of(web, web.ticket("off", "vnc")["url"])
    assert closed["code"] == 4409
    assert "not running" in closed["reason"] and len(closed["reason"].encode()) <= 123


def test_the_viewer_file_downloads_as_an_attachment_with_the_port(web: Web) -> None:
    web.vm("g1")
    response = web.client.get("/api/vms/t/g1/viewer.vv",
                              headers={"Authorization": f"Bearer {web.read_only}"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-virt-viewer"
    assert response.headers["content-disposition"] == "attachment; filename*=UTF-8''g1.vv"
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(response.text)
    assert parser["virt-viewer"]["port"] == "5907"
    off = web.client.get("/api/vms/t/nosuch/viewer.vv",
                         headers={"Authorization": f"Bearer {web.token}"})
    assert off.status_code == 404
