"""The host URI policy (``services.uripolicy``): what it accepts, what it refuses and
why, and a property: no URI it accepts reaches libvirt with a parameter, transport or
path that runs a program, opens a socket or reads a file, however it is spelled."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtlife.services.uripolicy import ALLOWED_PARAMS, add_refusal, refusal, stored_refusal

ACCEPTED = ["qemu:///system", "qemu+unix:///system", "qemu://hv1/system",
            "qemu+ssh://root@10.0.0.2/system", "qemu+ssh://hv1.example.org:2222/system",
            "qemu+tls://[fd00::2]/system", "qemu+tcp://10.253.7.11/system",
            "qemu+tcp://h/system?mode=direct&no_verify=1", "qemu+ssh://h/system?no_tty=1"]


@pytest.mark.parametrize("uri", ACCEPTED)
def test_the_transports_an_operator_uses_are_accepted(uri: str) -> None:
    assert refusal(uri) is None


@pytest.mark.parametrize(("uri", "why"), [
    ("qemu+ext:///system?command=/bin/sh", "the ext transport runs a program"),
    ("qemu+ssh://h/system?command=/bin/sh", "'command' names a program"),
    ("qemu+ssh://h/system?COMMAND=/bin/sh", "'COMMAND' names a program"),
    ("qemu+ssh://h/system?netcat=/bin/sh", "'netcat' names a program"),
    ("qemu+ssh://h/system?proxy=netcat", "'proxy' chooses the program"),
    ("qemu+unix:///system?socket=/run/x", "'socket' names a socket"),
    ("qemu+ssh://h/system?keyfile=/k", "'keyfile' names a key file"),
    ("qemu+tls://h/system?pkipath=/p", "'pkipath' names a directory"),
    ("qemu+ssh://h/system?known_hosts=/k", "'known_hosts' names a file"),
    ("qemu+ssh://h/system?authfile=/a", "'authfile' names a credentials file"),
    ("qemu+tcp://h/system?name=test:///etc/shadow", "'name' names the URI"),
    ("qemu+ssh://h/system?tls_priority=NORMAL", "'tls_priority' is not one"),
    ("qemu+ssh://h/system?mode=x", "mode='x' has a value"),
    ("qemu+ssh://h/system?no_verify=1;command=x", "separated by ';'"),
    ("qemu+ssh://h/system?%63ommand=x", "'%' escapes"),
    ("qemu+ssh://h/system?mode", "'mode' is not NAME=VALUE"),
    ("qemu:///session", "'/session' is not /system"),
    ("qemu:///embed?root=/tmp/e", "'/embed' is not /system"),
    ("qemu+ssh://-oProxyCommand=x/system", "begins with '-'"),
    ("qemu+ssh://-l@h/system", "begins with '-'"),
    ("qemu+ssh:///system", "needs a host"),
    ("qemu+unix://h/system", "names no host"),
    ("qemu+tcp://h:99999/system", "not a port number"),
    ("qemu+tcp://h%20x/system", "'%' escapes"),
    ("qemu+tcp://h x/system", "spaces"),
    ("qemu+tcp://a'b/system", "not a host name"),
    ("qemu+tcp://h/system#frag", "'#' fragment"),
    ("qemu+libssh2://h/system", "transport 'libssh2'"),
    ("QEMU:///system", "driver 'QEMU'"),
    ("xen:///system", "driver 'xen'"),
    ("test:///default", "VIRTLIFE_ALLOW_TEST_URIS=1"),
    ("qemu:system", "not of the form"),
])
def test_refusals_say_why(uri: str, why: str) -> None:
    reason = refusal(uri)
    assert reason is not None and why in reason


def test_the_test_driver_only_where_allowed() -> None:
    assert refusal("test:///default", allow_test=True) is None
    assert refusal("test:///srv/data/node.xml", allow_test=True) is None
    assert refusal("test://h/default", allow_test=True) is not None
    assert refusal("test:///default?x=1", allow_test=True) is not None


def test_the_messages_say_what_to_do() -> None:
    added = add_refusal("hv9", "qemu:///session")
    assert added is not None and added.startswith("cannot add host hv9: the URI ")
    assert "`virtlife host add --allow-any-uri hv9 URI`" in added
    stored = stored_refusal("hv9", "qemu:///session")
    assert stored is not None and stored.startswith("host hv9 is not opened: ")
    assert "`virtlife host remove hv9`" in stored
    assert add_refusal("hv9", "qemu:///system") is None
    assert stored_refusal("hv9", "qemu:///system") is None


# -- the property ---------------------------------------------------------------------------

DANGEROUS = ["command", "netcat", "proxy", "socket", "keyfile", "pkipath", "known_hosts",
             "authfile", "name", "auth", "sshauth", "known_hosts_verify", "tls_priority",
             "no_sanity", "root"]


def _spellings(name: str) -> st.SearchStrategy[str]:
    """``name`` as a client could spell it for libvirt: any case, a letter escaped now
    and then (mostly plain, so that most URIs get past the grammar to the names)."""
    def spell(flags: list[tuple[bool, bool]]) -> str:
        out = []
        for ch, (upper, escape) in zip(name, flags, strict=False):
            c = ch.upper() if upper else ch
            out.append(f"%{ord(c):02x}" if escape else c)
        return "".join(out)
    some = st.sampled_from([False] * 5 + [True])  # whether to escape any letter at all
    return some.flatmap(lambda escaping: st.lists(
        st.tuples(some, st.booleans() if escaping else st.just(False)),
        min_size=len(name), max_size=len(name)).map(spell))


_ODD = "abcdmnopstxyz_-.=&;#/:@[]"  # letters, and what matters to a URI's grammar
_NAMES = st.one_of(st.sampled_from([*DANGEROUS, *ALLOWED_PARAMS]).flatmap(_spellings),
                   st.text(_ODD, max_size=6))
_VALUES = st.one_of(st.sampled_from(["0", "1", "auto", "direct", "legacy", "/bin/sh",
                                     "x;command=y", "x&command=y", ""]),
                    st.text(_ODD, max_size=6))
_SEPARATORS = st.sampled_from(["&"] * 6 + [";", "&&"])
_PARAMS = st.one_of(
    st.tuples(_NAMES, st.sampled_from(["="] * 6 + [""]), _VALUES, _SEPARATORS),
    st.tuples(st.sampled_from(list(ALLOWED_PARAMS)), st.just("="),  # allowed ones
              st.sampled_from(["0", "1", "auto", "direct"]), _SEPARATORS))
_QUERY = st.lists(_PARAMS, max_size=4).map(
    lambda items: "".join(f"{sep if i else ''}{n}{eq}{v}"
                          for i, (n, eq, v, sep) in enumerate(items)))
_URIS = st.builds(
    lambda scheme, user, host, port, path, query, tail: (
        f"{scheme}://{user}{host}{port}{path}" + (f"?{query}" if query is not None else "")
        + tail),
    st.sampled_from(["qemu", "qemu+ssh", "qemu+tls", "qemu+tcp", "qemu+unix", "qemu+ext",
                     "qemu+libssh2", "qemu+libssh", "QEMU+SSH", "qemu+EXT", "test",
                     "remote", "lxc", "qemu+ssh", "qemu+tcp"]),
    st.sampled_from(["", "", "", "root@", "-oProxyCommand=x@", "a%40b@", "@"]),
    st.one_of(st.sampled_from(["", "h", "10.0.0.2", "[::1]", "-oProxyCommand=x",
                               "h%2d", "localhost", "h", "10.0.0.2"]),
              st.text(_ODD, max_size=6)),
    st.sampled_from(["", "", ":22", ":x", ":0"]),
    st.sampled_from(["/system"] * 6 + ["/session", "/embed", "", "/default",
                                       "/etc/shadow", "/system/", "/%73ystem", "//system"]),
    st.one_of(st.none(), _QUERY),
    st.sampled_from([""] * 8 + ["#x", " ", "\n"]))
# an accepted URI with a query of every kind: most examples then reach the parameters
_QUERIED = st.builds(lambda base, query: f"{base}?{query}",
                     st.sampled_from([*ACCEPTED[:7], "test:///default"]), _QUERY)

PROGRAM_FILE_OR_SOCKET = {"command", "netcat", "proxy", "socket", "keyfile", "pkipath",
                          "known_hosts", "authfile", "name", "root"}


def _as_libvirt_reads_it(uri: str) -> tuple[str, str, str, list[str]]:
    """(driver+transport, host, path, parameter names) as libvirt would read them:
    names unescaped and compared without case, parameters split on '&' and ';'."""
    m = re.fullmatch(r"([^:]*)://([^/?#]*)([^?#]*)(?:\?([^#]*))?.*", uri, re.DOTALL)
    assert m is not None, uri
    scheme, authority, path, query = m.groups()
    host = unquote(authority.rpartition("@")[2])
    names = [unquote(p.partition("=")[0]).lower()
             for p in re.split(r"[&;]", query or "") if p]
    return scheme.lower(), host, unquote(path), names


@settings(max_examples=600, deadline=None)
@given(st.one_of(_URIS, _QUERIED), st.booleans())
def test_no_accepted_uri_carries_a_program_socket_or_file(uri: str, allow_test: bool
                                                           ) -> None:
    if refusal(uri, allow_test=allow_test) is not None:
        return
    scheme, host, path, names = _as_libvirt_reads_it(uri)
    assert not PROGRAM_FILE_OR_SOCKET & set(names), uri
    assert set(names) <= set(ALLOWED_PARAMS), uri
    assert "ext" not in scheme and not host.startswith("-"), uri
    if scheme == "test":
        assert allow_test and not names and not host, uri
    else:
        assert scheme in {"qemu", "qemu+ssh", "qemu+tls", "qemu+tcp", "qemu+unix"}, uri
        assert path == "/system", uri


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_no_accepted_string_carries_a_program_socket_or_file(uri: str) -> None:
    if refusal(uri, allow_test=True) is not None:
        return
    scheme, host, path, names = _as_libvirt_reads_it(uri)
    assert set(names) <= set(ALLOWED_PARAMS) and not host.startswith("-"), uri
    assert scheme in {"qemu", "qemu+ssh", "qemu+tls", "qemu+tcp", "qemu+unix", "test"}, uri
    assert scheme == "test" or path == "/system", uri
