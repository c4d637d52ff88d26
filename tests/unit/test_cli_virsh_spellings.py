"""virsh's spellings that ``virtlife migrate`` accepts ask the migration service for
exactly what virtlife's own spellings ask (issue 16): the command runs in-process under
click with a migration service that records its call."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from virtlife.cli.app import App
from virtlife.cli.migrate import migrate
from virtlife.cli.virsh import bare_flag


class Asked(Exception):
    """Raised by the recording service once it has seen the call."""


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def migrate(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("migrate", args, kwargs)

    def check(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("check", args, kwargs)

    def _record(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        kwargs.pop("progress", None)  # a closure of each run
        self.calls.append((name, args, kwargs))
        raise Asked


class FakeServices:
    def __init__(self) -> None:
        self.migrations = Recorder()


def asked(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[str, tuple[Any, ...],
                                                                   dict[str, Any]]:
    """The service call ``virtlife migrate web1 b ARGS`` makes."""
    services = FakeServices()
    monkeypatch.setattr(App, "services", property(lambda self: services))
    result = CliRunner().invoke(migrate, ["web1", "b", *args], obj=App(None, False))
    assert isinstance(result.exception, Asked), (result.exit_code, result.output)
    [call] = services.migrations.calls
    return call


@pytest.mark.parametrize(("virsh", "virtlife"), [
    (["--live", "--persistent", "--undefinesource", "--p2p", "--verbose",
      "--abort-on-error"], []),
    (["--copy-storage-all"], ["--copy-storage", "all"]),
    (["--copy-storage-inc"], ["--copy-storage", "inc"]),
    (["--copy-storage-all", "--copy-storage", "all"], ["--copy-storage", "all"]),
    (["--postcopy-after-precopy"], ["--postcopy", "always"]),
    (["--timeout-suspend"], ["--on-timeout", "pause"]),
    (["--timeout-postcopy", "--timeout", "30"], ["--on-timeout", "postcopy", "--timeout", "30"]),
    (["--live", "--check"], ["--check"]),
])
def test_a_virsh_spelling_asks_what_virtlifes_own_asks(
        monkeypatch: pytest.MonkeyPatch, virsh: list[str], virtlife: list[str]) -> None:
    assert asked(monkeypatch, *virsh) == asked(monkeypatch, *virtlife)


def test_the_comparison_sees_each_option() -> None:
    # the recorded calls differ where the options differ: the equalities above are real
    with pytest.MonkeyPatch.context() as mp:
        default = asked(mp, "--live")
        for other in (["--copy-storage", "inc"], ["--postcopy", "always"],
                      ["--on-timeout", "pause"], ["--suspended"], ["--keep-source"]):
            assert asked(mp, *other) != default, other


def test_live_is_the_live_kind_and_undefinesource_the_default_move(
        monkeypatch: pytest.MonkeyPatch) -> None:
    name, _, kwargs = asked(monkeypatch, "--live", "--undefinesource")
    assert name == "migrate"
    assert kwargs["options"].kind.value == "live"
    assert kwargs["move"].keep_source is False


def test_a_bare_flag_is_one_with_no_value_before_the_end_of_options() -> None:
    takes = {"--postcopy": ""}
    assert bare_flag(["web1", "b", "--postcopy"], takes) == "--postcopy"
    assert bare_flag(["web1", "b", "--postcopy", "--json"], takes) == "--postcopy"
    assert bare_flag(["web1", "b", "--postcopy", "always"], takes) is None
    assert bare_flag(["web1", "b", "--postcopy", "-"], takes) is None
    assert bare_flag(["web1", "b", "--postcopy=always"], takes) is None
    assert bare_flag(["--", "--postcopy"], takes) is None
