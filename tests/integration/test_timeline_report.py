"""tapio_timeline and the migration report's timeline against the lab's real simulator.

Read-only towards the lab: GET /timeline and GET /status of the default lab's simulator
(127.0.0.1:8787 + TAPIO_LAB_PORT_OFFSET), and (report test) the report playbook, which only
reads Kubernetes and NATS and writes into a temporary artifacts directory. Nothing is ever
POSTed to the simulator.

The module runs through ansible-playbook (cwd = the repository, so ansible.cfg's library and
module_utils apply). Its summary is checked against the rows read independently with
urllib over a fixed window (``until`` a few seconds in the past: those seconds no longer
change), so both reads see the same data.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import PORT_OFFSET, REPO_ROOT, VENV_BIN

pytestmark = pytest.mark.integration

SIM = f"http://127.0.0.1:{8787 + PORT_OFFSET}"
TIMELINE = f"{SIM}/timeline"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIELDS = ("emitted", "received_direct", "received_nats", "dropped", "duplicates")

PLAYBOOK = """---
- name: Run tapio_timeline for a test
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Run tapio_timeline
      ansible.legacy.tapio_timeline: "{{ item }}"
      loop: "{{ runs }}"
      register: timeline_runs
      ignore_errors: true

    - name: Run tapio_timeline in check mode
      ansible.legacy.tapio_timeline: "{{ item }}"
      loop: "{{ check_runs }}"
      register: timeline_check_runs
      check_mode: true
      ignore_errors: true

    - name: Write the results for the test
      ansible.builtin.copy:
        content: "{{ {'runs': timeline_runs.results, 'check_runs': timeline_check_runs.results} | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
      check_mode: false
"""


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (loopback lab URL)
        return json.load(response)


@pytest.fixture(scope="module")
def simulator() -> dict[str, Any]:
    try:
        status = get_json(f"{SIM}/status")
    except OSError as exc:
        pytest.fail(f"the lab's Tapio simulator is not answering at {SIM} ({exc}); run: scripts/lab up")
    return status


def run_timeline(runs: list[dict[str, Any]], check_runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run the module once per entry (in order; then the check-mode entries) in one playbook."""
    with tempfile.TemporaryDirectory(prefix="timeline-test-") as tmp:
        playbook = Path(tmp) / "timeline.yml"
        playbook.write_text(PLAYBOOK)
        result_file = Path(tmp) / "result.json"
        extra = Path(tmp) / "vars.json"
        extra.write_text(json.dumps({"runs": runs, "check_runs": check_runs or [], "result_file": str(result_file)}))
        env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
        done = subprocess.run([str(VENV_BIN / "ansible-playbook"), str(playbook), "-e", f"@{extra}"],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
        if not result_file.exists():
            raise AssertionError(f"the playbook wrote no result:\n{done.stdout}\n{done.stderr}")
        results = json.loads(result_file.read_text())
    results["_output"] = done.stdout + done.stderr
    return results


def independent_summary(rows: list[dict[str, Any]], since: int, until: int) -> dict[str, Any]:
    """Totals, window and row count of the rows in [since, until), computed here, not by the module."""
    kept = [r for r in rows if since <= r["t"] < until]
    sources: dict[str, dict[str, int]] = {}
    for r in kept:
        for source, counts in r["sources"].items():
            total = sources.setdefault(source, dict.fromkeys(FIELDS, 0))
            for name in FIELDS:
                total[name] += counts.get(name, 0)
    seconds = sorted({r["t"] for r in kept})
    return {"rows": len(seconds), "first": seconds[0] if seconds else None, "last": seconds[-1] if seconds else None,
            "sources": sources, "kept": kept}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_plot_and_summary_match_the_simulator_rows(simulator: dict[str, Any], tmp_path: Path) -> None:
    now = int(time.time())
    since, until = now - 300, now - 2
    dest = tmp_path / "timeline.png"
    args = {"url": TIMELINE, "since": since, "until": until, "dest": str(dest), "mode": "0644"}
    results = run_timeline(
        runs=[args, args],
        check_runs=[{**args, "title": "another title"}, {**args, "dest": str(tmp_path / "never.png")}])
    first, second = results["runs"]
    assert not first.get("failed"), first
    truth = independent_summary(get_json(f"{TIMELINE}?since={since}")["buckets"], since, until)
    assert truth["rows"] > 0, (f"the simulator reported no events between {since} and {until}: is it paused? "
                               f"(status: paused={simulator.get('paused')})")

    # The summary is the rows the test read itself.
    assert first["url"] == f"{TIMELINE}?since={since}"
    assert first["plotted"] is True
    assert first["rows"] == truth["rows"]
    assert (first["window"]["first"], first["window"]["last"]) == (truth["first"], truth["last"])
    assert first["window"]["seconds"] == truth["last"] - truth["first"] + 1
    assert {s: e["totals"] for s, e in first["sources"].items()} == truth["sources"]
    assert first["totals"] == {f: sum(t[f] for t in truth["sources"].values()) for f in FIELDS}
    assert first["run_id"] == get_json(f"{SIM}/status")["run_id"]

    # Every reported cutover is where the rows say: receipts on the new path at t, and
    # receipts on the old path only at some earlier second.
    by_second = {r["t"]: r["sources"] for r in truth["kept"]}
    for cut in first["cutovers"]:
        new, old = f"received_{cut['to']}", f"received_{cut['from']}"
        assert by_second[cut["t"]][cut["source"]][new] > 0, cut
        assert any(t < cut["t"] and c.get(cut["source"], {}).get(old, 0) > 0
                   and c.get(cut["source"], {}).get(new, 0) == 0 for t, c in by_second.items()), cut
    # And a source that went from direct only to NATS has a cutover.
    for source in truth["sources"]:
        pure = [("direct" if c[source]["received_direct"] else "nats") for t, c in sorted(by_second.items())
                if source in c and bool(c[source]["received_direct"]) != bool(c[source]["received_nats"])]
        if "direct" in pure and "nats" in pure[pure.index("direct"):]:
            assert first["sources"][source]["cutovers"], f"{source} switched paths but no cutover was found"

    # A real PNG, the bytes the module reported, written once.
    data = dest.read_bytes()
    assert data[:8] == PNG_MAGIC, data[:16]
    assert len(data) > 5000
    assert first["sha256"] == hashlib.sha256(data).hexdigest()
    assert first["changed"] is True
    assert oct(dest.stat().st_mode & 0o777) == "0o644"

    # The same window again: identical bytes, nothing changed.
    assert not second.get("failed"), second
    assert (second["changed"], second["sha256"]) == (False, first["sha256"])

    # Check mode: a new title would change the PNG, but nothing is written.
    retitled, elsewhere = results["check_runs"]
    assert (retitled["changed"], retitled["rows"]) == (True, truth["rows"])
    assert retitled["sha256"] != first["sha256"]
    assert dest.read_bytes() == data
    assert elsewhere["changed"] is True and elsewhere["totals"] == first["totals"]
    assert not (tmp_path / "never.png").exists()


def test_unreadable_endpoints_fail_naming_the_url_and_cause_or_warn(simulator: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/timeline"
    dest = tmp_path / "timeline.png"
    results = run_timeline(runs=[
        {"url": closed, "dest": str(dest), "timeout": 5},
        {"url": f"{SIM}/no-such-endpoint", "dest": str(dest)},
        {"url": f"{SIM}/status", "dest": str(dest)},
        {"url": closed, "dest": str(dest), "on_error": "warn"},
    ])
    refused, missing, other, warned = results["runs"]
    assert refused["failed"] is True
    assert refused["msg"].startswith(f"cannot read the timeline from {closed}: "), refused["msg"]
    assert "Connection refused" in refused["msg"], refused["msg"]
    assert missing["failed"] is True
    assert missing["msg"] == f"cannot read the timeline from {SIM}/no-such-endpoint: HTTP 404: Not Found", missing["msg"]
    assert other["failed"] is True
    assert other["msg"].startswith(f"{SIM}/status did not answer with timeline rows: expected a list of rows"), other["msg"]
    assert warned.get("failed") is not True, warned
    assert (warned["plotted"], warned["changed"]) == (False, False)
    assert closed in warned["error"] and "Connection refused" in warned["error"]
    assert f"no timeline plot: cannot read the timeline from {closed}" in results["_output"]
    assert not dest.exists()


def test_report_links_the_plot_and_a_rerun_changes_nothing(simulator: dict[str, Any], tmp_path: Path) -> None:
    """The report playbook (reads Kubernetes and NATS, writes only under tmp_path) writes the
    plot and its totals next to report.md; a second run reports changed=0, leaves report.md,
    report.json and the plot of the cutover byte-identical and says so; with
    migration_report_timeline_refresh the plot is redrawn, still changed=0."""
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}

    def report(**extra: Any) -> subprocess.CompletedProcess:
        command = [str(VENV_BIN / "ansible-playbook"), "playbooks/report.yml", "-e",
                   json.dumps({"tapio_artifacts_dir": str(tmp_path), "migration_report_timeline_minutes": 5,
                               "tapio_nats_reach": "direct",  # the loopback servers the test's simulator uses
                               **extra})]
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        return done

    first = report()
    report_dir = next(tmp_path.glob("report/*"))
    first_plot = (report_dir / "timeline.png").read_bytes()
    runs = [first, report()]
    assert (report_dir / "timeline.png").read_bytes() == first_plot
    assert "Timeline kept: nothing changed since" in runs[1].stdout
    runs.append(report(migration_report_timeline_refresh=True))
    report_md = (report_dir / "report.md").read_text()
    assert "![events per second per source](timeline.png)" in report_md
    assert "Received via NATS" not in report_md and "cutover(s)" not in report_md  # totals stay out of report.md
    assert (report_dir / "timeline.png").read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((report_dir / "timeline.json").read_text())
    assert summary["plotted"] is True and summary["rows"] > 0 and summary["minutes"] == 5
    assert summary["url"].startswith(f"{TIMELINE}?since=")
    timeline_md = (report_dir / "timeline.md").read_text()
    for source, entry in summary["sources"].items():
        assert f"| {source} | {entry['totals']['emitted']} | {entry['totals']['received_direct']} | " in timeline_md
    for run in runs[1:]:
        recap = [line for line in run.stdout.splitlines() if line.startswith("lab ")]
        assert recap and " changed=0 " in recap[-1], recap
    assert "Timeline: " in runs[2].stdout
