"""lab/bin/labproc: the lab's process supervisor (real processes, no servers needed)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

LABPROC = REPO_ROOT / "lab" / "bin" / "labproc"


def labproc(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(LABPROC), "--state", str(state), *args],
                          capture_output=True, text=True, timeout=60)


def test_start_is_idempotent_and_stop_ends_the_process(tmp_path: Path) -> None:
    first = labproc(tmp_path, "start", "sleeper", "--", "sleep", "300")
    assert first.returncode == 0, first.stderr
    started = json.loads(first.stdout)
    assert started["changed"] is True
    again = json.loads(labproc(tmp_path, "start", "sleeper", "--", "sleep", "300").stdout)
    assert again == {"name": "sleeper", "pid": started["pid"], "changed": False}
    status = labproc(tmp_path, "status", "sleeper")
    assert status.returncode == 0 and json.loads(status.stdout) == {"sleeper": started["pid"]}
    stopped = json.loads(labproc(tmp_path, "stop", "sleeper").stdout)
    assert stopped["changed"] is True
    assert labproc(tmp_path, "status", "sleeper").returncode == 3
    assert json.loads(labproc(tmp_path, "stop", "sleeper").stdout)["changed"] is False


def test_replace_restarts_only_a_process_started_with_another_command(tmp_path: Path) -> None:
    first = json.loads(labproc(tmp_path, "start", "sleeper", "--replace", "--", "sleep", "300").stdout)
    same = json.loads(labproc(tmp_path, "start", "sleeper", "--replace", "--", "sleep", "300").stdout)
    assert same == {"name": "sleeper", "pid": first["pid"], "changed": False}
    other = json.loads(labproc(tmp_path, "start", "sleeper", "--replace", "--replace-grace", "5",
                               "--", "sleep", "301").stdout)
    assert other["changed"] is True and other["pid"] != first["pid"]
    assert not Path(f"/proc/{first['pid']}").exists() or "Z" in Path(f"/proc/{first['pid']}/stat").read_text().split()[2]
    # Without --replace a running process is left alone, whatever its command line.
    kept = json.loads(labproc(tmp_path, "start", "sleeper", "--", "sleep", "302").stdout)
    assert kept == {"name": "sleeper", "pid": other["pid"], "changed": False}
    labproc(tmp_path, "stop", "sleeper")


def test_a_taken_port_is_refused_with_its_number(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = labproc(tmp_path, "start", "web", "--port", str(port), "--", "sleep", "5")
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert not (tmp_path / "pids" / "web.pid").exists()


def test_a_server_that_dies_reports_its_log_tail(tmp_path: Path) -> None:
    result = labproc(tmp_path, "start", "broken", "--ready-url", "http://127.0.0.1:9/never", "--timeout", "10",
                     "--", "sh", "-c", "echo 'fatal: config invalid at line 3' >&2; exit 7")
    assert result.returncode == 1
    assert "broken exited with code 7 before it was ready" in result.stderr
    assert "fatal: config invalid at line 3" in result.stderr


def test_start_without_a_command_is_a_usage_error(tmp_path: Path) -> None:
    result = labproc(tmp_path, "start", "nothing")
    assert result.returncode == 2
    assert "start needs a command after --" in result.stderr


@pytest.fixture(autouse=True)
def _stop_leftovers(tmp_path: Path):  # noqa: ANN202 - fixture
    yield
    for pid_file in (tmp_path / "pids").glob("*.pid") if (tmp_path / "pids").exists() else []:
        labproc(tmp_path, "stop", pid_file.stem)
