"""``virtlife.lazylog``: a module logger that loads ``logging`` only when a record can be
emitted, and ``virtlife.logs``' deferred set-up applied at that moment. Run in fresh
interpreters: pytest itself has ``logging`` loaded."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from virtlife.lazylog import get_logger


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)


def test_debug_and_info_do_not_load_logging_while_nothing_loaded_it() -> None:
    run = _python("import sys\n"
                  "from virtlife.lazylog import get_logger\n"
                  "log = get_logger('virtlife.x')\n"
                  "log.debug('d %s', 1); log.info('i %s', 2)\n"
                  "print('logging' in sys.modules)")
    assert run.stdout.strip() == "False"
    assert run.stderr == ""


def test_a_deferred_setup_formats_the_first_warning_as_setup_logging_does() -> None:
    run = _python("import sys\n"
                  "from virtlife.logs import setup_logging\n"
                  "from virtlife.lazylog import get_logger\n"
                  "setup_logging(0, None, defer=True)\n"
                  "print('logging' in sys.modules)\n"
                  "log = get_logger('virtlife.x')\n"
                  "log.info('dropped')\n"
                  "log.warning('careful %s', 'now')\n"
                  "print('logging' in sys.modules)")
    assert run.stdout.split() == ["False", "True"]
    # FORMAT: time, level, logger, thread, message (the default handler prints the
    # message alone)
    assert run.stderr.rstrip().endswith("WARNING virtlife.x [MainThread] careful now")
    assert "dropped" not in run.stderr


def test_reset_cancels_a_deferred_setup() -> None:
    run = _python("from virtlife.logs import reset_logging, setup_logging\n"
                  "from virtlife.lazylog import get_logger\n"
                  "setup_logging(0, None, defer=True)\n"
                  "reset_logging()\n"
                  "get_logger('virtlife.x').warning('plain')")
    assert run.stderr == "plain\n"  # logging's last-resort handler, not ours


def test_once_logging_is_loaded_info_reaches_the_real_logger(
        caplog: pytest.LogCaptureFixture) -> None:
    log = get_logger("virtlife.lazytest")
    with caplog.at_level(logging.DEBUG, logger="virtlife.lazytest"):
        log.debug("d %d", 1)
        log.info("i %d", 2)
        log.warning("w %d", 3)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("e %d", 4)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("DEBUG", "d 1"), ("INFO", "i 2"), ("WARNING", "w 3"), ("ERROR", "e 4")]
    assert caplog.records[-1].exc_info is not None
    # the record names the line that logged, not lazylog's
    assert {r.funcName for r in caplog.records} == {
        "test_once_logging_is_loaded_info_reaches_the_real_logger"}
    assert log.isEnabledFor(logging.DEBUG) is logging.getLogger(
        "virtlife.lazytest").isEnabledFor(logging.DEBUG)
