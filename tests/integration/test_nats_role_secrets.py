"""The nats_streams role through ansible-playbook (playbooks/streams.yml), and the rule that
no secret ever appears in output, -vvv included."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from nats_support import (
    REPO_ROOT,
    SECRET,
    VENV_BIN,
    ansible_env,
    consumer_info,
    natscli,
    publish,
    remove_stream,
    stream_info,
    unique,
)

NS = 1_000_000_000
PLAYBOOKS = Path(__file__).resolve().parent / "nats_playbooks"


def play(extra_vars: dict, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    extra = tmp_path / "role-vars.json"
    extra.write_text(json.dumps(extra_vars))
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "playbooks/streams.yml", "-e", f"@{extra}", *flags],
                          cwd=REPO_ROOT, env=ansible_env(), capture_output=True, text=True, timeout=300)


def recap_changed(output: str) -> int:
    return int(re.search(r"^lab\s*:.*changed=(\d+)", output, re.M).group(1))


@pytest.fixture
def layout(nats_lab):
    events, advisories = unique("role").upper(), unique("roleadv").upper()
    prefix = events.lower()
    yield {
        "nats_streams_events_stream": {
            "name": events, "subjects": [f"{prefix}.events.>"], "retention": "limits", "storage": "file",
            "replicas": 3, "discard": "old", "max_age": "7d", "max_bytes": "64MB", "duplicate_window": "2m",
            "compression": "s2"},
        "nats_streams_pipeline_consumer": {"stream": events, "name": "tapio-pipeline", "ack_policy": "explicit",
                                           "ack_wait": "30s", "max_deliver": 5, "filter_subject": f"{prefix}.events.>"},
        "nats_streams_advisories_stream": {
            "name": advisories, "subjects": [f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{events}.>"],
            "storage": "file", "replicas": 3, "max_age": "30d", "max_bytes": "16MB"},
        "nats_streams_extra_consumers": [{"stream": events, "name": "flaky", "ack_wait": "1s", "max_deliver": 1,
                                          "filter_subject": f"{prefix}.events.flaky"}],
        "_prefix": prefix,
    }
    remove_stream(events)
    remove_stream(advisories)


def test_role_applies_layout_idempotently_and_keeps_gave_up_events(layout, tmp_path):
    events = layout["nats_streams_events_stream"]["name"]
    advisory_subject = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{events}.flaky"
    # When the lab already runs Tapio's own advisory stream (TAPIO_ADVISORIES captures all
    # MAX_DELIVERIES advisories), the test's stream would overlap it: read the advisory there.
    existing = natscli("stream", "ls", "--subject", advisory_subject, "--names").stdout.split()
    advisories = existing[0] if existing else layout["nats_streams_advisories_stream"]["name"]
    layout["nats_streams_advisories_enabled"] = not existing
    checked = play(layout, tmp_path, "--check", "--diff")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert recap_changed(checked.stdout) == 2 and stream_info(events) is None, "check mode must create nothing"

    first = play(layout, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    assert recap_changed(first.stdout) == 2  # the streams task and the consumers task
    assert ("item=" + layout["nats_streams_advisories_stream"]["name"] in first.stdout) is not bool(existing)

    again = play(layout, tmp_path, "-vvv")
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap_changed(again.stdout) == 0
    assert SECRET not in again.stdout + again.stderr
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in again.stdout  # the password was there, masked

    config = stream_info(events)["config"]
    assert config["num_replicas"] == 3 and config["compression"] == "s2" and config["storage"] == "file"
    assert config["duplicate_window"] == 120 * NS and config["max_age"] == 7 * 86400 * NS
    pipeline = consumer_info(events, "tapio-pipeline")["config"]
    assert pipeline["ack_policy"] == "explicit" and pipeline["max_deliver"] == 5

    # A consumer that gives up on an event (max_deliver reached) leaves an advisory behind.
    publish(f"{layout['_prefix']}.events.flaky", 1)
    natscli("consumer", "next", events, "flaky", "--no-ack")
    deadline = time.monotonic() + 15
    found = natscli("stream", "get", advisories, "--last-for", advisory_subject, "--json", check=False)
    while found.returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        found = natscli("stream", "get", advisories, "--last-for", advisory_subject, "--json", check=False)
    assert found.returncode == 0, f"no MAX_DELIVERIES advisory in {advisories}: {found.stderr}"
    advisory = json.loads(base64.b64decode(json.loads(found.stdout)["data"]))
    assert advisory["stream"] == events and advisory["consumer"] == "flaky" and advisory["deliveries"] == 1


def test_no_secret_in_verbose_output_even_on_failure(nats_lab, tmp_path):
    secrets = {"secret_token": "tok-S3CRET-do-not-print", "secret_password": "pw-S3CRET-do-not-print",
               "secret_seed": "SUAM-S3CRET-SEED-do-not-print"}
    extra = tmp_path / "secrets.json"
    extra.write_text(json.dumps(secrets))
    done = subprocess.run([str(VENV_BIN / "ansible-playbook"), str(PLAYBOOKS / "secrets.yml"), "-e", f"@{extra}",
                           "-vvv", "--diff"], cwd=REPO_ROOT, env=ansible_env(), capture_output=True, text=True,
                          timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    # Each wrong secret failed for its own reason (failed_when in the playbook), the right one worked.
    assert re.search(r"^lab\s*:.*ok=4.*failed=0", output, re.M), output[-1500:]
    assert output.count("VALUE_SPECIFIED_IN_NO_LOG_PARAMETER") >= 3  # the secrets were in the invocations, masked
    for secret in [*secrets.values(), SECRET]:
        assert secret not in output
