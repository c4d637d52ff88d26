"""Exit codes that meant the wrong thing (issue 15 P), each through the real
``virtlife`` command: one meaning per code, and the message says what to do."""

from __future__ import annotations

import socket

from test_bad_input import EXIT_FAILED, virtlife


def test_serve_on_an_address_in_use_fails_with_exit_1_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = virtlife("serve", "--listen", f"127.0.0.1:{port}")
    assert "Traceback" not in run.err, run.err
    assert run.code == EXIT_FAILED, run.err
    last = run.err.splitlines()[-1]
    assert last == (f"virtlife: cannot serve on 127.0.0.1:{port}: the address is in use "
                    "(another server listens there); stop that server or choose another "
                    "--listen ADDR:PORT"), run.err
    assert "ERROR" not in run.err  # uvicorn's own line is not printed beside ours


def test_serve_on_an_address_this_host_lacks_fails_with_exit_1_naming_it() -> None:
    run = virtlife("serve", "--listen", "192.0.2.1:8080", "--insecure")
    assert run.code == EXIT_FAILED, run.err
    line = run.err.splitlines()[-1]
    assert line.startswith("virtlife: cannot serve on 192.0.2.1:8080: "), run.err


def test_an_empty_vm_name_is_bad_input_not_a_missing_vm() -> None:
    from test_bad_input import EXIT_USAGE, on_node, one_line_error

    for command in (["state", ""], ["suspend", " "]):
        line = one_line_error(on_node(*command), EXIT_USAGE)
        assert "names no VM" in line and "on host" not in line
