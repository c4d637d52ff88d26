"""The checks every front end shares: VM names virtlife creates, domain XML size and
encoding, option values, and the logging set-up."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import pytest

from virtlife import errors
from virtlife.cli.params import COUNT, MAX_SECONDS, SECONDS, FilePath
from virtlife.logs import FORMAT, reset_logging, setup_logging
from virtlife.xml.domain import (
    MAX_VM_NAME,
    MAX_XML_BYTES,
    check_xml_size,
    decode_xml,
    disk_files,
    domain_name,
    validate_vm_name,
)

# -- VM names --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t1", "web-1", "db_2", "a.b", "vm+x", "X", "9lives",
                                  "a" * MAX_VM_NAME])
def test_plain_names_are_accepted(name: str) -> None:
    assert validate_vm_name(name) == name


@pytest.mark.parametrize("name", [
    "", "../x", "a/b/c", "/abs", ".hidden", "-opt", "a b", "tab\there", "new\nline",
    "nul\x00", "été", "a" * (MAX_VM_NAME + 1), "..", ".", "semi;colon", "$(reboot)",
])
def test_names_that_are_not_plain_file_names_are_refused(name: str) -> None:
    with pytest.raises(errors.InvalidInput) as refused:
        validate_vm_name(name)
    assert refused.value.exit_code == 64
    assert "\n" not in str(refused.value)


# -- domain XML ------------------------------------------------------------------------


def test_xml_up_to_the_limit_is_accepted_and_one_byte_more_refused() -> None:
    check_xml_size(b"x" * MAX_XML_BYTES)
    with pytest.raises(errors.InvalidInput, match="larger than 1 MiB"):
        check_xml_size(b"x" * (MAX_XML_BYTES + 1))


def test_the_limit_counts_utf8_bytes_not_characters() -> None:
    with pytest.raises(errors.InvalidInput):
        check_xml_size("é" * (MAX_XML_BYTES // 2 + 1))


def test_bytes_that_are_not_utf8_are_refused_naming_the_source() -> None:
    with pytest.raises(errors.InvalidInput, match=r"web1\.xml is not UTF-8.*0xff"):
        decode_xml(b"<domain>\xff</domain>", "web1.xml")


def test_oversized_xml_never_reaches_the_parser() -> None:
    huge = "<domain><name>x</name>" + " " * MAX_XML_BYTES + "</domain>"
    with pytest.raises(errors.InvalidInput):
        domain_name(huge)


def test_disk_files_lists_the_file_sources() -> None:
    xml = ("<domain><devices><disk type='file'><source file='/i/a.qcow2'/></disk>"
           "<disk type='block'><source dev='/dev/sdb'/></disk></devices></domain>")
    assert disk_files(xml) == {"/i/a.qcow2"}


# -- option values ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "1e400", "abc", "",
                                   str(MAX_SECONDS * 2)])
def test_seconds_must_be_positive_finite_and_at_most_a_week(value: str) -> None:
    with pytest.raises(click.BadParameter):
        SECONDS.convert(value, None, None)


@pytest.mark.parametrize(("value", "seconds"), [("0.5", 0.5), ("60", 60.0), ("1e-3", 0.001)])
def test_seconds_accepts_plain_numbers(value: str, seconds: float) -> None:
    assert SECONDS.convert(value, None, None) == seconds


@pytest.mark.parametrize("value", ["0", "-5", str(2**63)])
def test_counts_start_at_one_and_fit_in_sqlite(value: str) -> None:
    with pytest.raises(click.BadParameter):
        COUNT.convert(value, None, None)


def test_an_empty_path_is_refused() -> None:
    with pytest.raises(click.BadParameter, match="empty path"):
        FilePath().convert("", None, None)


# -- logging ---------------------------------------------------------------------------


@pytest.fixture
def clean_logging() -> object:
    yield None
    reset_logging()


@pytest.mark.usefixtures("clean_logging")
def test_log_file_lines_carry_time_level_logger_and_thread(tmp_path: Path) -> None:
    path = tmp_path / "virtlife.log"
    setup_logging(0, path)
    logging.getLogger("virtlife.test").info("hello %s", "there")
    logging.getLogger("virtlife.test").debug("not without -vv")
    reset_logging()
    (line,) = path.read_text().splitlines()
    assert " INFO " in line and " virtlife.test " in line and "[MainThread]" in line
    assert line.endswith("hello there")
    assert line[:4].isdigit()  # starts with the date
    assert "%(asctime)s" in FORMAT


@pytest.mark.usefixtures("clean_logging")
@pytest.mark.parametrize(("verbosity", "level"), [(0, logging.WARNING), (1, logging.INFO),
                                                  (2, logging.DEBUG), (5, logging.DEBUG)])
def test_each_v_shows_more_on_stderr(verbosity: int, level: int,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(verbosity, None)
    log = logging.getLogger("virtlife.test")
    for lvl in (logging.DEBUG, logging.INFO, logging.WARNING):
        log.log(lvl, "at %s", logging.getLevelName(lvl))
    err = capsys.readouterr().err
    for lvl in (logging.DEBUG, logging.INFO, logging.WARNING):
        assert (f"at {logging.getLevelName(lvl)}" in err) == (lvl >= level), err


@pytest.mark.usefixtures("clean_logging")
def test_setting_up_again_replaces_the_handlers(tmp_path: Path) -> None:
    setup_logging(1, tmp_path / "a.log")
    setup_logging(1, tmp_path / "b.log")
    assert len(logging.getLogger("virtlife").handlers) == 2
    reset_logging()
    assert logging.getLogger("virtlife").handlers == []
    assert logging.getLogger("virtlife").level == logging.NOTSET


@pytest.mark.usefixtures("clean_logging")
def test_a_log_file_that_cannot_be_written_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidInput, match="cannot write the log file"):
        setup_logging(0, tmp_path)  # a directory
    with pytest.raises(errors.InvalidInput):
        setup_logging(0, tmp_path / "missing" / "x.log")
