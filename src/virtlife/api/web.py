"""The web UI of ``virtlife serve``: login, the fleet page, a VM's page, its two consoles,
and the static files they load.

Pages are small server-rendered HTML shells; a few ES modules under ``static/`` fill
them from the REST API and follow ``/api/events``, so the browser does with the API
exactly what any other client does (no build step, no framework). The login form
checks a token and keeps it in the HttpOnly, SameSite=Strict ``virtlife_token``
cookie, which the API, the event stream and the console ticket requests accept; a
page asked for without a valid one redirects to ``/login``. The consoles' vendor code
is served as it is installed: noVNC from Debian's ``novnc`` package at
``/vendor/novnc`` and xterm.js from ``web/node_modules`` at ``/vendor/xterm``; when
either is missing its page says how to install it. This module decides nothing about
VMs: buttons follow the ``allowed`` lists the API computes.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode

import anyio.to_thread
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from virtlife import __version__, errors
from virtlife.api import consoles
from virtlife.api.auth import COOKIE, authenticate
from virtlife.api.limits import auth_limiter
from virtlife.services.fleet import as_uuid
from virtlife.store.tokens import TokenRecord

STATIC = Path(__file__).resolve().parent / "static"
REPO = Path(__file__).resolve().parents[3]
NOVNC_DEFAULT = Path("/usr/share/novnc")
XTERM_DEFAULT = REPO / "web" / "node_modules"
CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def novnc_dir() -> Path:
    """noVNC's files (``core/rfb.js`` inside): ``VIRTLIFE_NOVNC_DIR``, else Debian's."""
    return Path(os.environ.get("VIRTLIFE_NOVNC_DIR") or NOVNC_DEFAULT)


def xterm_dir() -> Path:
    """A ``node_modules`` holding ``@xterm/xterm`` and ``@xterm/addon-fit``:
    ``VIRTLIFE_XTERM_DIR``, else the repository's ``web/node_modules``."""
    return Path(os.environ.get("VIRTLIFE_XTERM_DIR") or XTERM_DEFAULT)


def novnc_missing() -> str | None:
    where = novnc_dir()
    if (where / "core" / "rfb.js").is_file():
        return None
    return (f"noVNC is not installed (no core/rfb.js in {where}): install Debian's novnc "
            "package (apt-get install novnc; scripts/setup.sh does it), or point "
            "VIRTLIFE_NOVNC_DIR at a noVNC checkout, then restart virtlife serve.")


def xterm_missing() -> str | None:
    where = xterm_dir()
    if all((where / "@xterm" / p).is_file() for p in ("xterm/lib/xterm.mjs",
                                                       "addon-fit/lib/addon-fit.mjs")):
        return None
    return (f"xterm.js is not installed (no @xterm/xterm in {where}): run `npm ci` in the "
            "repository's web/ directory (scripts/setup.sh does it), or point "
            "VIRTLIFE_XTERM_DIR at a node_modules holding @xterm/xterm and "
            "@xterm/addon-fit, then restart virtlife serve.")


# -- rendering ----------------------------------------------------------------------------

def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def vm_path(host: str, name: str, tail: str = "") -> str:
    return f"/vm/{quote(host, safe='')}/{quote(name, safe='')}{tail}"


def page(title: str, body: str, *, user: TokenRecord | None = None,
         scripts: tuple[str, ...] = (), data: dict[str, str] | None = None,
         styles: tuple[str, ...] = (), status: int = 200) -> HTMLResponse:
    attrs = "".join(f' data-{k}="{esc(v)}"' for k, v in (data or {}).items())
    if user is not None:
        attrs += (f' data-role="{esc(user.role.value)}"'
                  f' data-read-only="{"1" if user.read_only else ""}"')
        who = (f'<span class="who">{esc(user.name)} ({esc(user.role.value)})</span>'
               '<form method="post" action="/logout"><button>Log out</button></form>')
    else:
        who = ""
    links = "".join(f'<link rel="stylesheet" href="{esc(s)}">'
                    for s in ("/static/app.css", *styles))
    tags = "".join(f'<script type="module" src="{esc(s)}"></script>' for s in scripts)
    text = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)} · virtlife</title>{links}{tags}</head>"
            f"<body{attrs}><header><a class=\"brand\" href=\"/\">virtlife</a>"
            f'<span class="version">{esc(__version__)}</span>{who}</header>'
            f"<main>{body}</main></body></html>")
    return HTMLResponse(text, status_code=status,
                        headers={"Content-Security-Policy": CSP,
                                 "X-Content-Type-Options": "nosniff",
                                 "Referrer-Policy": "same-origin",
                                 "Cache-Control": "no-store"})


def login_page(next_url: str, message: str = "", status: int = 200) -> HTMLResponse:
    error = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    body = (f'<section class="login"><h1>Log in</h1>{error}'
            '<form method="post" action="/login">'
            f'<input type="hidden" name="next" value="{esc(next_url)}">'
            '<label>Token <input type="password" name="token" autocomplete="current-password" '
            'required autofocus></label><button type="submit">Log in</button></form>'
            '<p class="hint">A token comes from <code>virtlife token create NAME --role '
            'ROLE</code> (<code>reader</code> only looks, <code>operator</code> runs VMs, '
            '<code>admin</code> can do anything).</p></section>')
    return page("Log in", body, status=status)


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path on this server only."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    return value


def page_user(request: Request) -> TokenRecord | Response:
    """The page's token record, or the redirect to ``/login`` (or an error page)."""
    try:
        return authenticate(request)
    except HTTPException as err:
        if err.status_code == 401:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
        return page("Unavailable", f'<p class="error">{esc(err.detail)}</p>',
                    status=err.status_code)


def vm_page_path(uuid: str) -> str:
    return f"/vm/{quote(uuid, safe='')}"


def vm_page(user: TokenRecord, host: str, name: str, uuid: str) -> HTMLResponse:
    """A VM's page: by ``uuid`` (``host`` and ``name`` found by the page's script, and
    followed when the VM moves), or by ``host`` and ``name`` alone for a VM that was
    not found."""
    label = name or uuid
    vv = (f"/api/vms/{quote(host, safe='')}/{quote(name, safe='')}/viewer.vv"
          if host else "#")
    body = (f'<p class="crumbs"><a href="/">Fleet</a> / <span id="vm-host">{esc(host)}</span>'
            f'</p><h1 id="vm-name">{esc(label)}</h1>'
            '<p id="banner" class="banner" role="status"></p>'
            '<section id="state"><h2>State</h2><div class="body">Loading…</div></section>'
            '<section id="consoles"><h2>Consoles</h2><p class="actions">'
            f'<a class="button" id="open-vnc" href="{esc(vm_path(host, name, "/vnc"))}">'
            'VNC console</a> '
            f'<a class="button" id="open-serial" '
            f'href="{esc(vm_path(host, name, "/serial"))}">Serial console</a> '
            f'<a class="button" id="download-vv" href="{esc(vv)}" download>'
            'remote-viewer file (.vv)</a></p></section>'
            '<section id="media"><h2>CD-ROMs</h2><div class="body">Loading…</div>'
            '</section>'
            '<section id="graphics"><h2>VNC graphics</h2><div class="body">Loading…</div>'
            '</section>'
            '<section id="details"><h2>Details</h2><div class="body"></div></section>'
            '<section id="agent"><h2>Guest agent</h2><div class="body">Loading…</div>'
            '</section>'
            '<section id="snapshots"><h2>Snapshots</h2><div class="body">Loading…</div>'
            '</section>'
            '<section id="migrate"><h2>Migrate</h2><div class="body">Loading…</div>'
            '</section>'
            '<section id="history"><h2>History</h2><div class="body">Loading…</div>'
            '</section>')
    return page(label, body, user=user, scripts=("/static/vm.js",),
                data={"host": host, "name": name, "uuid": uuid})


def missing_section(message: str) -> str:
    return f'<p class="error" id="missing">{esc(message)}</p>'


# -- routes -------------------------------------------------------------------------------

def install(app: FastAPI, static_root: Path | None = None) -> None:
    """Add the web UI's pages, static files and console routes to ``app``."""
    app.include_router(consoles.router)
    app.mount("/static", StaticFiles(directory=static_root or STATIC), name="static")
    app.mount("/vendor/novnc", StaticFiles(directory=novnc_dir(), check_dir=False),
              name="novnc")
    app.mount("/vendor/xterm", StaticFiles(directory=xterm_dir() / "@xterm",
                                           check_dir=False), name="xterm")

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> Response:
        return login_page(safe_next(next))

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        raw = await request.body()  # at most guard.LOGIN_BODY_MAX: 413 past it
        fields = parse_qs(raw.decode(errors="replace"))
        token = (fields.get("token") or [""])[0].strip()
        next_url = safe_next((fields.get("next") or ["/"])[0])
        if not token:
            return login_page(next_url, "Give a token.", 400)
        store = request.app.state.services.need_store()
        record = await anyio.to_thread.run_sync(store.tokens.check, token,
                                                limiter=auth_limiter())
        if record is None:
            return login_page(next_url, "This token is not valid (unknown or revoked).", 401)
        response = RedirectResponse(next_url, status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
        return response

    @app.post("/logout", include_in_schema=False)  # a link or an <img> cannot log out
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @app.get("/", include_in_schema=False)
    def fleet_page(request: Request) -> Response:
        user = page_user(request)
        if isinstance(user, Response):
            return user
        body = ('<h1>Fleet</h1><p id="banner" class="banner" role="status"></p>'
                '<div id="fleet"><p class="muted">Loading…</p></div>'
                '<section id="new-vm"><h2>New VM</h2><div class="body"></div></section>'
                '<section id="add-host"><h2>Add host</h2><div class="body"></div></section>')
        return page("Fleet", body, user=user, scripts=("/static/fleet.js",))

    @app.get("/vm/{host}/{name}", include_in_schema=False)
    def vm_page_by_name(request: Request, host: str, name: str) -> Response:
        """A VM's page as HOST/NAME: resolved once to its UUID, which the page follows
        (a VM that moves host or is renamed is still the page's). A VM that cannot be
        found now gets the page by name, which says so."""
        user = page_user(request)
        if isinstance(user, Response):
            return user
        try:
            uuid = request.app.state.services.fleet.resolve(f"{host}/{name}").uuid()
        except errors.VirtlifeError:
            uuid = ""
        if uuid:
            return RedirectResponse(vm_page_path(uuid), status_code=303)
        return vm_page(user, host, name, "")

    @app.get("/vm/{uuid}", include_in_schema=False)
    def vm_page_by_uuid(request: Request, uuid: str) -> Response:
        """A VM's page by its UUID, wherever it runs: the page finds its host."""
        user = page_user(request)
        if isinstance(user, Response):
            return user
        canonical = as_uuid(uuid)
        if canonical is None:
            return page("Not found", f'<p class="error">{esc(uuid)} is not a VM\'s UUID; '
                        'a VM\'s page is /vm/UUID or /vm/HOST/NAME.</p>', user=user,
                        status=404)
        return vm_page(user, "", "", canonical)

    def console_page(request: Request, host: str, name: str, kind: str) -> Response:
        """The page of one console: ``vnc`` (noVNC) or ``serial`` (xterm.js)."""
        user = page_user(request)
        if isinstance(user, Response):
            return user
        vnc = kind == "vnc"
        missing = novnc_missing() if vnc else xterm_missing()
        extra = ('<button id="cad" disabled>Ctrl-Alt-Del</button>' if vnc
                 else '<button id="takeover" hidden>Take over</button>')
        body = (f'<p class="crumbs"><a href="/">Fleet</a> / {esc(host)} / '
                f'<a href="{esc(vm_path(host, name))}">{esc(name)}</a></p>'
                '<div class="console-bar"><span id="status" role="status">Connecting…</span>'
                f'<button id="reconnect" hidden>Reconnect</button>{extra}</div>'
                + (missing_section(missing) if missing
                   else f'<div id="{"screen" if vnc else "terminal"}"></div>'))
        styles = () if missing or vnc else ("/vendor/xterm/xterm/css/xterm.css",)
        return page(f"{name} {'VNC' if vnc else 'serial'}", body, user=user,
                    scripts=() if missing else (f"/static/{kind}.js",), styles=styles,
                    data={"host": host, "name": name})

    @app.get("/vm/{host}/{name}/vnc", include_in_schema=False)
    def vnc_page(request: Request, host: str, name: str) -> Response:
        return console_page(request, host, name, "vnc")

    @app.get("/vm/{host}/{name}/serial", include_in_schema=False)
    def serial_page(request: Request, host: str, name: str) -> Response:
        return console_page(request, host, name, "serial")
