"""Every file path a caller gives the REST API, through the allowed-roots policy.

The project's rule: every path a caller gives goes through ``caller_paths``. An admin
token's path must only be a usable absolute path (``paths.absolute_path``); an
operator token's must also lie under the allowed roots of the machine the file is on
(``services.roots``: the VM's host, or this machine for a file the server itself
reads or writes), else 403 (``NotPermitted``) before anything looks at the file, so
that the answer says nothing about what is outside the roots. The roots are asked
once per request, and only for an operator.
"""

from __future__ import annotations

from fastapi import Request

from virtlife.paths import absolute_path
from virtlife.services.context import Services
from virtlife.services.roots import Roots, host_roots, machine_roots
from virtlife.store.tokens import Role, TokenRecord


class CallerPaths:
    """The paths of one request, on one machine (``host`` None: the server's own)."""

    def __init__(self, request: Request, token: TokenRecord, host: str | None) -> None:
        self._request = request
        self._token = token
        self._host = host
        self._roots: Roots | None = None

    def roots(self) -> Roots:
        if self._roots is None:
            svc: Services = self._request.app.state.services
            self._roots = (machine_roots(svc.fleet, svc.settings) if self._host is None
                           else host_roots(svc.fleet, self._host, svc.settings))
        return self._roots

    def __call__(self, path: str, what: str) -> str:
        """``path`` as the operation is to use it; 422 or 403 else."""
        if self._token.role.allows(Role.ADMIN):
            return absolute_path(path, what)
        return self.roots().check(path, what)


def caller_paths(request: Request, token: TokenRecord, host: str | None) -> CallerPaths:
    """The policy for the paths ``token``'s request names on ``host`` (None: here)."""
    return CallerPaths(request, token, host)
