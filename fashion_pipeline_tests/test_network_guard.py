"""The tests' network guard itself: refusals are recorded in this process and in child Python processes, and a
test that catches a refusal still fails."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fashion_pipeline_tests.network_guard import recorded_attempts


def test_connections_and_lookups_beyond_loopback_are_refused_and_recorded() -> None:
    with recorded_attempts() as attempts:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("192.0.2.1", 80), timeout=1)
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo("example.com", 443)
        with pytest.raises(socket.gaierror):
            socket.gethostbyname("pypi.org")
        with socket.socket() as sock:
            assert sock.connect_ex(("198.51.100.7", 443)) == 111
    assert attempts == [
        "connect ('192.0.2.1', 80)",
        "getaddrinfo 'example.com'",
        "gethostbyname 'pypi.org'",
        "connect ('198.51.100.7', 443)",
    ]


def test_loopback_and_this_machine_stay_allowed() -> None:
    with recorded_attempts() as attempts:
        assert socket.getaddrinfo("localhost", 80)
        assert socket.gethostbyname("127.0.0.1") == "127.0.0.1"
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            socket.create_connection(server.getsockname(), timeout=5).close()
    assert attempts == []


def test_a_child_python_process_is_guarded_and_reports_back() -> None:
    script = "import socket\ntry:\n    socket.create_connection(('files.pythonhosted.org', 443), timeout=2)\nexcept OSError as e:\n    print(type(e).__name__)\n"
    with recorded_attempts() as attempts:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "gaierror"
    [attempt] = attempts
    assert attempt.startswith("getaddrinfo 'files.pythonhosted.org' (child process ")


def test_a_test_that_swallows_a_refusal_still_fails(tmp_path: Path) -> None:
    """Run in a pytest of its own: the autouse check turns a caught refusal into an error of that test (its
    call passes, its teardown errors)."""
    (tmp_path / "conftest.py").write_text(
        "from fashion_pipeline_tests.conftest import _no_network_attempts  # noqa: F401\n"
    )
    (tmp_path / "test_swallow.py").write_text(
        textwrap.dedent(
            """
            import contextlib, socket, subprocess, sys

            def test_swallows_in_process():
                with contextlib.suppress(OSError):
                    socket.create_connection(("192.0.2.1", 80), timeout=1)

            def test_swallows_in_a_child():
                subprocess.run([sys.executable, "-c", "import socket\\ntry: socket.gethostbyname('example.org')\\nexcept OSError: pass"], check=True)

            def test_stays_local():
                assert socket.gethostbyname("localhost")
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert "3 passed, 2 errors" in result.stdout, result.stdout[-3000:]
    assert "ERROR at teardown of test_swallows_in_process" in result.stdout
    assert "ERROR at teardown of test_swallows_in_a_child" in result.stdout
    assert "gethostbyname 'example.org' (child process" in result.stdout
