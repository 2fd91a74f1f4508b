"""Subject building (the seed's buildSubject) and the UnifiedEvent shape."""
from __future__ import annotations

import random
import re
import sys
from datetime import datetime

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "lab" / "simulator"))

from tapio_sim.events import (SEVERITIES, build_subject, decode, encode, event_id,  # noqa: E402
                              make_event, subject_token)


@pytest.mark.parametrize(("event", "prefix", "subject"), [
    ({"source": "k8s-collector", "type": "kubernetes", "context": {"namespace": "payments"}}, None,
     "tapio.events.k8s.payments.kubernetes"),
    ({"source": "k8s-collector", "type": "kubernetes", "k8s_context": {"namespace": "kube-system"}}, None,
     "tapio.events.k8s.kube-system.kubernetes"),
    ({"source": "k8s-collector", "type": "kubernetes"}, None, "tapio.events.k8s.default.kubernetes"),
    ({"source": "k8s-collector", "type": "kubernetes", "context": {"namespace": ""}}, None,
     "tapio.events.k8s.default.kubernetes"),
    ({"source": "systemd-collector", "type": "service", "data": {"service": "kubelet"}}, None,
     "tapio.events.systemd.kubelet.service"),
    ({"source": "systemd-collector", "type": "log", "attributes": {"service": "sshd"}}, None,
     "tapio.events.systemd.sshd.log"),
    ({"source": "systemd-collector", "type": "log"}, None, "tapio.events.systemd.unknown.log"),
    ({"source": "ebpf-collector", "type": "network"}, None, "tapio.events.ebpf.network"),
    ({"source": "cni-collector", "type": "network"}, None, "tapio.events.cni-collector.network"),
    # The pod's NATS_SUBJECT_PREFIX replaces the built-in prefix, the rest of the scheme stays.
    ({"source": "k8s-collector", "type": "kubernetes", "context": {"namespace": "a"}}, "simtest.x.events.k8s",
     "simtest.x.events.k8s.a.kubernetes"),
    ({"source": "ebpf-collector", "type": "memory"}, "tapio.events.ebpf", "tapio.events.ebpf.memory"),
    # A dot in a value would add a subject level; a missing type would end the subject with a dot.
    ({"source": "systemd-collector", "type": "service", "data": {"service": "kubelet.service"}}, None,
     "tapio.events.systemd.kubelet_service.service"),
    ({"source": "ebpf-collector"}, None, "tapio.events.ebpf.unknown"),
])
def test_build_subject(event: dict, prefix: str | None, subject: str) -> None:
    assert build_subject(event, prefix) == subject


def test_subject_token_strips_wildcards_and_separators() -> None:
    assert subject_token("a.b *>c", "x") == "a_b___c"
    assert subject_token(None, "default") == "default"


@pytest.mark.parametrize("kind", ["k8s", "systemd", "ebpf"])
def test_event_shape(kind: str) -> None:
    source = f"{kind}-collector"
    event = make_event(kind=kind, source=source, seq=42, run_id="abcd1234", pod="p-1", node="node-0",
                       workload=f"tapio-{kind}-collector", rng=random.Random(1))
    assert re.fullmatch(r"[0-9a-f]{32}", event["id"])
    assert event["id"] == event_id("abcd1234", source, 42)
    datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    assert event["timestamp"].endswith("Z")
    assert event["source"] == source
    assert event["severity"] in SEVERITIES
    assert event["message"]
    assert event["attributes"]["sequence"] == 42 and event["attributes"]["pod"] == "p-1"
    subject = build_subject(event)
    assert subject.startswith(f"tapio.events.{kind}.") and "" not in subject.split(".")
    if kind == "k8s":
        assert event["type"] == "kubernetes"
        assert event["k8s_context"]["namespace"] == event["context"]["namespace"]
        assert subject == f"tapio.events.k8s.{event['context']['namespace']}.kubernetes"
    if kind == "systemd":
        assert subject == f"tapio.events.systemd.{event['data']['service']}.{event['type']}"
    if kind == "ebpf":
        assert event["kernel"]["pid"] > 0
        assert subject.count(".") == 3
    assert decode(encode(event)) == (source, 42, event["id"], "abcd1234")


def test_event_ids_are_unique_per_run_source_and_sequence() -> None:
    ids = {event_id(run, src, seq) for run in ("r1", "r2") for src in ("a", "b") for seq in range(1000)}
    assert len(ids) == 4000


def test_decode_tells_foreign_events_from_garbage() -> None:
    assert decode(b'{"id":"x","source":"canary","attributes":{}}') is None
    with pytest.raises(ValueError):
        decode(b"not json")
    with pytest.raises(ValueError):
        decode(b"[1,2]")
