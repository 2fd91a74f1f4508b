"""Table-driven bad input for the nats_* modules against the real cluster.

Each case must fail with its clear message, and every stream the cases could touch (the
base stream and the would-be new one, their configs, message counts, creation times and
consumers, read from every node's /jsz) must be exactly as before. A base stream with messages and a consumer is there for cases that touch existing
objects.
"""
from __future__ import annotations

import pytest

from nats_support import account_snapshot, publish, remove_stream, run_module, stream_info, unique

BASE = unique("bad")
BASE_SUBJECTS = [f"{BASE}.events.>"]
NEW = f"{BASE}_new"

CASES = [
    # id, module, args, auth, expected message fragment
    ("overlapping-subjects", "nats_stream", {"name": NEW, "subjects": [f"{BASE}.events.k8s"]}, True,
     f"overlaps subject '{BASE}.events.>' of existing stream {BASE}"),
    ("bad-duration-word", "nats_stream", {"name": NEW, "subjects": [f"{NEW}.x"], "max_age": "forever"}, True,
     "max_age: cannot parse duration 'forever'"),
    ("bad-duration-unit", "nats_stream", {"name": NEW, "subjects": [f"{NEW}.x"], "duplicate_window": "10x"}, True,
     "duplicate_window: cannot parse duration '10x'"),
    ("negative-duration", "nats_stream", {"name": NEW, "subjects": [f"{NEW}.x"], "max_age": -5}, True,
     "max_age: a duration cannot be negative"),
    ("bad-size", "nats_stream", {"name": NEW, "subjects": [f"{NEW}.x"], "max_bytes": "10 parsecs"}, True,
     "max_bytes: cannot parse size '10 parsecs'"),
    ("replicas-above-peers", "nats_stream", {"name": NEW, "subjects": [f"{NEW}.x"], "replicas": 5}, True,
     "the cluster has fewer JetStream peers than the requested replicas"),
    ("duplicate-window-above-max-age", "nats_stream",
     {"name": NEW, "subjects": [f"{NEW}.x"], "max_age": "1m", "duplicate_window": "5m"}, True,
     "duplicate_window (5m) must not exceed max_age (1m)"),
    ("name-with-a-dot", "nats_stream", {"name": f"{NEW}.x", "subjects": [f"{NEW}.x"]}, True,
     f"stream name '{NEW}.x' contains '.'"),
    ("consumer-name-with-a-space", "nats_consumer", {"stream": BASE, "name": "my consumer"}, True,
     "consumer name 'my consumer' contains ' '"),
    ("unknown-option", "nats_stream", {"name": NEW, "subjects": [f"{NEW}.x"], "colour": "red"}, True,
     "Unsupported parameters for"),
    ("wrong-type", "nats_stream", {"name": NEW, "subjects": [f"{NEW}.x"], "replicas": "three"}, True,
     "argument 'replicas' is of type str and we were unable to convert to int"),
    ("bad-choice", "nats_stream", {"name": NEW, "subjects": [f"{NEW}.x"], "storage": "disk"}, True,
     "value of storage must be one of: file, memory"),
    ("mirror-with-subjects", "nats_stream", {"name": NEW, "subjects": [f"{NEW}.x"], "mirror": {"name": BASE}}, True,
     "parameters are mutually exclusive: mirror|subjects"),
    ("immutable-storage", "nats_stream", {"name": BASE, "storage": "memory"}, True,
     "cannot change storage on an existing stream (storage: current 'file', requested 'memory')"),
    ("immutable-retention", "nats_stream", {"name": BASE, "retention": "workqueue"}, True,
     "cannot change retention on an existing stream (retention: current 'limits', requested 'workqueue')"),
    ("unreachable-servers", "nats_stream",
     {"name": NEW, "subjects": [f"{NEW}.x"], "servers": ["nats://127.0.0.1:4299", "nats://127.0.0.1:4298"],
      "connect_timeout": 1}, True,
     "cannot connect to NATS servers tried (nats://127.0.0.1:4299, nats://127.0.0.1:4298): ConnectionRefusedError"),
    ("wrong-credentials", "nats_stream",
     {"name": NEW, "subjects": [f"{NEW}.x"], "user": "tapio", "password": "not-the-password"}, True,
     "authorization violation - the server rejected the credentials"),
    ("missing-creds-file", "nats_stream",
     {"name": NEW, "subjects": [f"{NEW}.x"], "creds_file": "/nonexistent/tapio.creds"}, False,
     "creds_file /nonexistent/tapio.creds does not exist"),
    ("invalid-nkey-seed", "nats_info", {"nkey_seed": "SUAXNOTASEED"}, False,
     "ErrInvalidSeed: nkeys: invalid seed"),
    ("user-without-password", "nats_info", {"user": "tapio"}, False,
     "parameters are required together: user, password"),
    ("consumer-on-missing-stream", "nats_consumer", {"stream": NEW, "name": "c1"}, True,
     f"stream {NEW} does not exist"),
    ("consumer-backoff-vs-max-deliver", "nats_consumer",
     {"stream": BASE, "name": "c1", "backoff": ["1s", "5s", "9s"], "max_deliver": 2}, True,
     "backoff has 3 steps but max_deliver is 2"),
    ("unknown-jetstream-domain", "nats_stream", {"name": BASE, "domain": "nowhere"}, True,
     "JetStream domain 'nowhere' is not enabled for this account/server (check the domain name)"),
    ("delete-a-stream-that-holds-messages", "nats_stream", {"name": BASE, "state": "absent"}, True,
     f"stream {BASE} holds 3 message(s) and 1 consumer(s): refusing to delete it"),
    ("delete-a-protected-stream", "nats_stream", {"name": BASE, "state": "absent", "force": True, "protected": True},
     True, f"stream {BASE} is protected: refusing to delete it"),
    ("delete-a-consumer-with-pending-messages", "nats_consumer", {"stream": BASE, "name": "pipeline",
                                                                   "state": "absent"}, True,
     f"consumer {BASE}/pipeline has 3 undelivered and 0 unacknowledged message(s): refusing to delete it"),
    ("consumer-filter-outside-stream", "nats_consumer",
     {"stream": BASE, "name": "c1", "filter_subject": "elsewhere.>"}, True,
     "filter subject 'elsewhere.>' matches none of the stream's subjects"),
    ("consumer-immutable-ack-policy", "nats_consumer", {"stream": BASE, "name": "pipeline", "ack_policy": "none"}, True,
     "cannot change ack_policy on an existing consumer (ack_policy: current 'explicit', requested 'none')"),
    ("consumer-pull-to-push", "nats_consumer",
     {"stream": BASE, "name": "pipeline", "deliver_subject": "push.here"}, True,
     "cannot change deliver_subject on an existing consumer (deliver_subject: current '', requested 'push.here')"),
    ("consumer-bad-duration", "nats_consumer", {"stream": BASE, "name": "c1", "ack_wait": "soon"}, True,
     "ack_wait: cannot parse duration 'soon'"),
    ("probe-subject-not-in-stream", "nats_probe", {"stream": BASE, "subjects": ["elsewhere.x"]}, True,
     "are not captured by stream"),
    ("replay-expects-missing-id", "nats_probe",
     {"stream": BASE, "mode": "replay", "replay_start_seq": 1, "expect_ids": ["0" * 32]}, True,
     f"did not return event id(s) ['{'0' * 32}']"),
]


@pytest.fixture(scope="module")
def base_stream(nats_lab):
    created = run_module("nats_stream", {"name": BASE, "subjects": BASE_SUBJECTS, "replicas": 3})
    assert not created["failed"], created.get("msg")
    assert not run_module("nats_consumer", {"stream": BASE, "name": "pipeline", "ack_policy": "explicit"})["failed"]
    publish(f"{BASE}.events.k8s", 3)
    yield BASE
    remove_stream(BASE)
    remove_stream(NEW)


@pytest.mark.parametrize(("module", "args", "auth", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly_and_changes_nothing(nats_lab, base_stream, module, args, auth, message):
    before = account_snapshot(nats_lab, BASE)
    assert before[base_stream]["messages"] == 3

    result = run_module(module, args, auth=auth)

    assert result["failed"], f"expected a failure, got {result}"
    assert message in result["msg"], result["msg"]
    assert result.get("changed") in (None, False)
    assert account_snapshot(nats_lab, BASE) == before
    assert stream_info(NEW) is None

