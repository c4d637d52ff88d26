"""Error translation: real libvirt errors (from the test driver) become our typed errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from virtlife import errors
from virtlife.hypervisor import Host
from virtlife.hypervisor.libvirt_api import calling, libvirt, translate


@pytest.fixture
def conn() -> Iterator[Any]:
    c = libvirt.open("test:///default")
    yield c
    c.close()


def _libvirt_error(fn: Callable[[], object]) -> Any:
    with pytest.raises(libvirt.libvirtError) as info:
        fn()
    return info.value


def test_missing_domain_becomes_vm_not_found(conn: Any) -> None:
    err = translate(_libvirt_error(lambda: conn.lookupByName("nope")), "look up nope")
    assert isinstance(err, errors.VMNotFound)
    assert str(err).startswith("cannot look up nope: ")


def test_malformed_xml_becomes_invalid_definition(conn: Any) -> None:
    err = translate(_libvirt_error(lambda: conn.defineXML("<domain type='test'><name>x")),
                    "define x")
    assert isinstance(err, errors.InvalidDefinition)
    assert "\n" not in str(err)  # libvirt's multi-line parser report is cut to one line


def test_definition_without_os_becomes_invalid_definition(conn: Any) -> None:
    xml = "<domain type='test'><name>x</name><memory>1024</memory></domain>"
    assert isinstance(translate(_libvirt_error(lambda: conn.defineXML(xml)), "define"),
                      errors.InvalidDefinition)


def test_same_name_other_uuid_becomes_vm_already_exists(conn: Any) -> None:
    xml = ("<domain type='test'><name>test</name><memory>1024</memory>"
           "<os><type>hvm</type></os></domain>")
    err = translate(_libvirt_error(lambda: conn.defineXML(xml)), "define test")
    assert isinstance(err, errors.VMAlreadyExists)


def test_driver_without_the_call_becomes_unsupported(conn: Any) -> None:
    dom = conn.lookupByName("test")
    err = translate(_libvirt_error(lambda: dom.pMWakeup(0)), "pmwakeup test")
    assert isinstance(err, errors.Unsupported)


def test_state_conflict_inside_libvirt_is_an_operation_failure(conn: Any) -> None:
    dom = conn.lookupByName("test")
    err = translate(_libvirt_error(lambda: dom.resume()), "resume test")
    assert isinstance(err, errors.VirtlifeError)
    assert "not paused" in str(err)


def test_refused_connection_becomes_host_unreachable() -> None:
    with pytest.raises(errors.HostUnreachable, match=r"cannot reach host far \(qemu\+tcp"):
        Host.open("far", "qemu+tcp://127.0.0.1:1/system")


def test_missing_node_file_becomes_host_unreachable() -> None:
    with pytest.raises(errors.HostUnreachable):
        Host.open("gone", "test:///nonexistent/node.xml")


def test_calling_reraises_translated_and_keeps_the_cause(conn: Any) -> None:
    with pytest.raises(errors.VMNotFound) as info:
        with calling("look up ghost"):
            conn.lookupByName("ghost")
    assert isinstance(info.value.__cause__, libvirt.libvirtError)


def test_every_virtlife_error_has_a_nonzero_exit_code() -> None:
    def walk(cls: type[errors.VirtlifeError]) -> Iterator[type[errors.VirtlifeError]]:
        yield cls
        for sub in cls.__subclasses__():
            yield from walk(sub)

    classes = list(walk(errors.VirtlifeError))
    assert len(classes) >= 15
    assert all(c.exit_code > 0 for c in classes)


def test_ambiguous_name_lists_candidates() -> None:
    err = errors.AmbiguousName("web1", ["a/web1", "b/web1"])
    assert str(err) == ("web1 is ambiguous: it exists as a/web1, b/web1; name it as HOST/web1: "
                        "a/web1 or b/web1")
    assert err.exit_code == 64  # bad input: what to type is in the message
