"""The nats_streams role through ansible-playbook (playbooks/streams.yml): its layout, the
shared names it takes from the inventory (tapio_events_stream, tapio_pipeline_consumer,
tapio_consume_subjects), and the rule that no secret ever appears in output, -vvv included."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from nats_support import (
    REPO_ROOT,
    SECRET,
    VENV_BIN,
    account_snapshot,
    ansible_env,
    consumer_info,
    consumer_names,
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
    # The lab's loopback servers, not the NATS the lab inventory installs in its namespace.
    extra.write_text(json.dumps({"tapio_nats_reach": "direct", **extra_vars}))
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
    # One task (nats_jetstream) would change, showing one diff per object it would create.
    assert recap_changed(checked.stdout) == 1 and stream_info(events) is None, "check mode must create nothing"
    # ...and shows its drift report: the declared objects the server lacks.
    assert f"stream {events}: declared, missing on the server (a run creates it)" in checked.stdout
    would = re.findall(r"^\+\+\+ after: (.+)$", checked.stdout, re.M)
    assert would == ([f"stream {events}"] + ([] if existing else [f"stream {advisories}"])
                     + [f"consumer {events}/tapio-pipeline", f"consumer {events}/flaky"]), would

    first = play(layout, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    assert recap_changed(first.stdout) == 1  # the streams and consumers task
    assert (stream_info(layout["nats_streams_advisories_stream"]["name"]) is not None) is not bool(existing)

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


def tapio_streams(nats_lab) -> dict:
    """Tapio's own streams (TAPIO_*), if the lab has them: config, creation time and
    consumer names, which a run under other names must leave alone (messages may grow:
    the simulator publishes into TAPIO_EVENTS once migrated)."""
    return {name: (stream["config"], stream["created"], sorted(stream["consumers"]))
            for name, stream in account_snapshot(nats_lab, "TAPIO_").items()}


@pytest.fixture
def renamed(nats_lab):
    stream = unique("renamed").upper()
    names = {"tapio_events_stream": stream, "tapio_pipeline_consumer": unique("pipeline").replace("_", "-"),
             "tapio_consume_subjects": f"{stream.lower()}.events.>",
             # The collectors publish inside the renamed subjects (the boilerplate refuses otherwise).
             "tapio_collectors": [{"name": f"tapio-{kind}-collector", "container": f"{kind}-collector",
                                   "subject_prefix": f"{stream.lower()}.events.{kind}"}
                                  for kind in ("k8s", "systemd", "ebpf")]}
    yield names
    remove_stream(stream)


def test_the_shared_names_rename_exactly_the_stream_and_consumer(renamed, nats_lab, tmp_path):
    stream, consumer = renamed["tapio_events_stream"], renamed["tapio_pipeline_consumer"]
    subject = renamed["tapio_consume_subjects"]
    before = tapio_streams(nats_lab)
    # Only the inventory's shared names change: the role's own defaults follow them. The
    # events stream is the role's default dict as written (its name and subjects templates
    # included) but with 64MB: the lab's 2GB per node has no room for a second 1GB stream
    # beside TAPIO_EVENTS. The advisory stream (shared by every stream) stays out.
    defaults = yaml.safe_load((REPO_ROOT / "roles/nats_streams/defaults/main.yml").read_text())
    extra = {**renamed, "nats_streams_advisories_enabled": False,
             "nats_streams_events_stream": {**defaults["nats_streams_events_stream"], "max_bytes": "64MB"}}
    first = play(extra, tmp_path, "--diff")
    assert first.returncode == 0, first.stdout[-3000:]
    assert recap_changed(first.stdout) == 1, first.stdout[-3000:]  # the streams and consumers task
    # Exactly the renamed stream and its consumer were created (one diff each).
    created = re.findall(r"^\+\+\+ after: (.+)$", first.stdout, re.M)
    assert created == [f"stream {stream}", f"consumer {stream}/{consumer}"], created

    config = stream_info(stream)["config"]
    assert config["subjects"] == [subject]
    assert config["num_replicas"] == 3 and config["retention"] == "limits" and config["duplicate_window"] == 120 * NS
    assert consumer_names(stream) == [consumer]
    pipeline = consumer_info(stream, consumer)["config"]
    assert pipeline["durable_name"] == consumer and pipeline["filter_subject"] == subject
    assert pipeline["ack_policy"] == "explicit" and pipeline["max_deliver"] == 5
    assert tapio_streams(nats_lab) == before, "TAPIO_* streams or their consumers changed"

    again = play(extra, tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap_changed(again.stdout) == 0, again.stdout[-3000:]


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
