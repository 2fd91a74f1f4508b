"""The collectors' NATS gates against the lab's real JetStream cluster.

Each test uses a stream of its own (subjects migtest.<id>.>) with a durable consumer standing
in for the pipeline's, and collectors whose subject prefixes point into it, so nothing here
touches TAPIO_EVENTS. A publisher thread stands in for the collectors that switched (kwok runs
no container); the engine's gates read the stream through NATS.
"""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import nats
import pytest
from nats.js.api import AckPolicy

from conftest import KubeLab, NatsLab
from migration_lab import COLLECTORS, MigrationLab, make_lab
from nats_support import fetch_served

pytestmark = pytest.mark.integration


class Publisher:
    """Publishes one message every 0.2 s on each given subject until stopped."""

    def __init__(self, nats_lab: NatsLab, subjects: list[str]) -> None:
        self.nats_lab, self.subjects = nats_lab, subjects
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self.run()), daemon=True)

    async def run(self) -> None:
        nc = await nats.connect(servers=self.nats_lab.servers, user=self.nats_lab.user, password=self.nats_lab.password)
        js = nc.jetstream()
        while not self.stop.is_set():
            for subject in self.subjects:
                await js.publish(subject, b'{"type":"test"}')
            await asyncio.sleep(0.2)
        await nc.drain()

    def __enter__(self) -> "Publisher":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


async def _jetstream(nats_lab: NatsLab, action: str, name: str, subjects: tuple[str, ...] = (),
                     consumer: str = "") -> list[str]:
    """create the stream and its durable consumer, list its consumers, or delete it."""
    nc = await nats.connect(servers=nats_lab.servers, user=nats_lab.user, password=nats_lab.password)
    js = nc.jetstream()
    try:
        if action == "create":
            await js.add_stream(name=name, subjects=list(subjects), num_replicas=1)
            await js.add_consumer(name, durable_name=consumer, ack_policy=AckPolicy.EXPLICIT)
        elif action == "delete":
            await js.delete_stream(name)
            return []
        return sorted(c.name for c in await js.consumers_info(name))
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def gate_stream(nats_lab: NatsLab) -> Iterator[dict]:
    tag = uuid.uuid4().hex[:8]
    setup = {"stream": f"MIGTEST_{tag}", "prefix": f"migtest.{tag}", "consumer": "pipeline"}
    asyncio.run(_jetstream(nats_lab, "create", setup["stream"], (f"{setup['prefix']}.>",), setup["consumer"]))
    yield setup
    asyncio.run(_jetstream(nats_lab, "delete", setup["stream"]))


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    yield from make_lab(kube_lab, "gates", tmp_path_factory.mktemp("artifacts"))


def gate_vars(gate_stream: dict, **extra: object) -> dict:
    collectors = [{"name": name, "container": name.removeprefix("tapio-").removesuffix("-collector") + "-collector",
                   "subject_prefix": f"{gate_stream['prefix']}.{name.split('-')[1]}"} for name in COLLECTORS]
    return {"tapio_migration_nats_checks": True, "tapio_collectors_require_pipeline": False,
            "tapio_collectors": collectors, "tapio_events_stream": gate_stream["stream"],
            "tapio_consume_subjects": f"{gate_stream['prefix']}.>",
            "tapio_pipeline_consumer": gate_stream["consumer"], "tapio_collectors_gate_timeout": 20,
            "tapio_collectors_gate_consumer_prefix": "gate-", **extra}


def kill_run(pid: int) -> None:
    """SIGKILL ansible-playbook and every process under it, as a lost runner loses them.
    Ansible's workers call setsid(), so killing the process group alone would leave the
    worker running the engine call to its end."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    doomed, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in doomed:
                doomed.add(child)
                frontier.append(child)
    for victim in doomed:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def gate_consumers(nats_lab: NatsLab, gate_stream: dict) -> list[str]:
    return [c for c in asyncio.run(_jetstream(nats_lab, "list", gate_stream["stream"])) if c.startswith("gate-")]


def test_a_run_killed_during_a_gate_is_gated_by_the_next_run(lab: MigrationLab, nats_lab: NatsLab,
                                                             gate_stream: dict) -> None:
    """SIGKILL the run while the canary waits for its first message (switched, not gated):
    the re-run finds it on NATS with its gate consumer still there, runs its gates instead of
    taking it for migrated, then switches the others. Runs first: the collectors start direct."""
    extra = gate_vars(gate_stream, tapio_collectors_max_pending=100000, tapio_collectors_gate_timeout=120)
    run = lab.start_playbook("playbooks/collectors.yml", extra=extra)
    try:
        deadline = time.monotonic() + 180
        while not (lab.env("tapio-k8s-collector").get("TAPIO_OUTPUT_MODE") == "nats"
                   and gate_consumers(nats_lab, gate_stream) == ["gate-tapio-k8s-collector"]):
            assert run.poll() is None and time.monotonic() < deadline, "the run ended before the canary's gate"
            time.sleep(0.5)
        time.sleep(2)  # inside the gate's wait for a first message (nothing publishes)
    finally:
        kill_run(run.pid)
        run.wait(timeout=30)
    # The killed run's renewer gives its Lease back a few seconds after the run ended; the
    # re-run below, if it comes first, watches the Lease and takes it once it is gone.
    assert lab.env("tapio-k8s-collector")["TAPIO_OUTPUT_MODE"] == "nats"
    assert "TAPIO_OUTPUT_MODE" not in lab.env("tapio-systemd-collector")

    subjects = [f"{gate_stream['prefix']}.{kind}.x.y" for kind in ("k8s", "systemd", "ebpf")]
    with Publisher(nats_lab, subjects):
        again = lab.playbook("playbooks/collectors.yml", extra=extra)
    assert again.rc == 0, again.explain()
    assert "tapio-k8s-collector: switched by an interrupted run, not gated yet" in again.stdout, again.explain()
    assert "tapio-k8s-collector: on NATS with its gate consumer still there" in again.stdout
    assert all(lab.env(name)["TAPIO_OUTPUT_MODE"] == "nats" for name in COLLECTORS)
    assert gate_consumers(nats_lab, gate_stream) == []

    # Back to direct for the tests below (no drain: nothing acks this module's consumer).
    back = lab.rollback("restore", extra=gate_vars(gate_stream, tapio_rollback_drain=False))
    assert back.rc == 0, back.explain()


def test_a_collector_without_new_messages_fails_the_subjects_gate(lab: MigrationLab, nats_lab: NatsLab,
                                                                    gate_stream: dict) -> None:
    """k8s publishes (passes); systemd publishes nothing: restored, run stopped, ebpf untouched."""
    ebpf_before = lab.daemonset("tapio-ebpf-collector")
    with Publisher(nats_lab, [f"{gate_stream['prefix']}.k8s.default.kubernetes"]):
        run = lab.playbook("playbooks/collectors.yml", extra=gate_vars(gate_stream, tapio_collectors_max_pending=100000))
    assert run.rc != 0, run.explain()
    assert "Collector(s) tapio-systemd-collector failed the subjects gate" in run.stdout, run.explain()
    assert lab.env("tapio-k8s-collector")["TAPIO_OUTPUT_MODE"] == "nats"
    assert lab.daemonset("tapio-systemd-collector")["spec"] == lab.record("DaemonSet", "tapio-systemd-collector")["spec"]
    assert lab.daemonset("tapio-ebpf-collector")["metadata"]["resourceVersion"] == ebpf_before["metadata"]["resourceVersion"]
    assert asyncio.run(_jetstream(nats_lab, "list", gate_stream["stream"])) == [gate_stream["consumer"]], \
        "the gate consumers were not removed"


def test_a_pipeline_consumer_falling_behind_fails_the_lag_gate(lab: MigrationLab, nats_lab: NatsLab,
                                                               gate_stream: dict) -> None:
    """Messages flow for every collector but nobody acks: pending > 0 fails the consumer lag gate."""
    subjects = [f"{gate_stream['prefix']}.{kind}.x.y" for kind in ("k8s", "systemd", "ebpf")]
    with Publisher(nats_lab, subjects):
        run = lab.playbook("playbooks/collectors.yml", extra=gate_vars(gate_stream, tapio_collectors_max_pending=0))
    assert run.rc != 0, run.explain()
    assert "Collector(s) tapio-systemd-collector failed the consumer lag gate" in run.stdout, run.explain()
    assert "TAPIO_OUTPUT_MODE" not in lab.env("tapio-systemd-collector")


def test_all_gates_pass_while_every_collector_publishes(lab: MigrationLab, nats_lab: NatsLab, gate_stream: dict) -> None:
    subjects = [f"{gate_stream['prefix']}.{kind}.x.y" for kind in ("k8s", "systemd", "ebpf")]
    with Publisher(nats_lab, subjects):
        run = lab.playbook("playbooks/collectors.yml", extra=gate_vars(gate_stream, tapio_collectors_max_pending=100000))
    assert run.rc == 0, run.explain()
    assert all(lab.env(name)["TAPIO_OUTPUT_MODE"] == "nats" for name in COLLECTORS)


async def _ack_everything(nats_lab: NatsLab, stream: str, consumer: str) -> int:
    """Play the pipeline: fetch and ack until the durable consumer has nothing left."""
    nc = await nats.connect(servers=nats_lab.servers, user=nats_lab.user, password=nats_lab.password)
    js = nc.jetstream()
    acked = 0
    try:
        sub = await js.pull_subscribe_bind(consumer, stream)
        while (await js.consumer_info(stream, consumer)).num_pending > 0 or acked == 0:
            try:
                messages = await fetch_served(sub, 500, timeout=2)
            except nats.errors.TimeoutError:
                break
            for message in messages:
                await message.ack_sync()
            acked += len(messages)
        return acked
    finally:
        await nc.close()


def test_rollback_returns_the_collectors_then_waits_for_the_drain_before_the_pipeline(
        lab: MigrationLab, nats_lab: NatsLab, gate_stream: dict) -> None:
    """Nothing acks the stand-in pipeline consumer: the collectors go back, the drain wait
    stalls (nothing moves for the progress deadline) and the pipeline is not touched; once
    everything is acked the rollback completes."""
    pipeline_before = lab.deployment()
    extra = gate_vars(gate_stream, tapio_rollback_progress_deadline=6)
    run = lab.rollback("restore", extra=extra)
    assert run.rc != 0, run.explain()
    assert f"drain of consumer {gate_stream['stream']}/{gate_stream['consumer']}: no progress for 6s" in run.stdout, \
        run.explain()
    assert all("TAPIO_OUTPUT_MODE" not in lab.env(name) for name in COLLECTORS)
    assert lab.deployment()["metadata"]["resourceVersion"] == pipeline_before["metadata"]["resourceVersion"]

    assert asyncio.run(_ack_everything(nats_lab, gate_stream["stream"], gate_stream["consumer"])) > 0
    again = lab.rollback("restore", extra=extra)
    assert again.rc == 0, again.explain()


async def _stream_without_consumer(nats_lab: NatsLab, stream: str, subject: str, messages: int) -> int:
    """The pipeline's consumer deleted while the stream still holds undelivered events; the
    number of messages the stream then holds."""
    nc = await nats.connect(servers=nats_lab.servers, user=nats_lab.user, password=nats_lab.password)
    js = nc.jetstream()
    try:
        for index in range(messages):
            await js.publish(subject, f"event {index}".encode())
        await js.delete_consumer(stream, "pipeline")
        return (await js.stream_info(stream)).state.messages
    finally:
        await nc.close()


def test_rollback_refuses_to_switch_the_pipeline_back_when_its_consumer_is_gone(
        lab: MigrationLab, nats_lab: NatsLab, gate_stream: dict) -> None:
    """The pipeline reads NATS; its durable consumer is deleted with 5 events in the stream:
    the rollback stops before the pipeline goes back, naming the consumer, the count and the
    next step; with tapio_rollback_drain=false it switches back (the user's explicit choice).
    Runs last in this module: it deletes the module stream's consumer."""
    extra = gate_vars(gate_stream)
    switched = lab.playbook("playbooks/pipeline.yml", extra=extra)
    assert switched.rc == 0, switched.explain()
    assert lab.env("tapio-pipeline")["TAPIO_OUTPUT_MODE"] == "nats"
    stream = gate_stream["stream"]
    messages = asyncio.run(_stream_without_consumer(nats_lab, stream, f"{gate_stream['prefix']}.k8s.x", 5))
    assert messages >= 5

    refused = lab.rollback("switch", extra=extra)
    assert refused.rc != 0, refused.explain()
    assert f"durable consumer {stream}/pipeline does not exist" in refused.stdout, refused.explain()
    assert f"{messages} message(s) in stream {stream}" in refused.stdout
    assert "tapio_rollback_drain=false" in refused.stdout
    assert lab.env("tapio-pipeline")["TAPIO_OUTPUT_MODE"] == "nats", "the pipeline must stay on NATS"

    accepted = lab.rollback("switch", extra={**extra, "tapio_rollback_drain": False})
    assert accepted.rc == 0, accepted.explain()
    assert lab.env("tapio-pipeline")["TAPIO_OUTPUT_MODE"] == "direct"


async def _stream_near_its_limit(nats_lab: NatsLab, name: str, subject: str, max_msgs: int, unread: int) -> None:
    """A stream (limits, discard old) whose pipeline consumer has *unread* messages it never acked."""
    nc = await nats.connect(servers=nats_lab.servers, user=nats_lab.user, password=nats_lab.password)
    js = nc.jetstream()
    try:
        await js.add_stream(name=name, subjects=[f"{subject}.>"], num_replicas=1, max_msgs=max_msgs)
        await js.add_consumer(name, durable_name="pipeline", ack_policy=AckPolicy.EXPLICIT)
        for index in range(unread):
            await js.publish(f"{subject}.k8s.x", f"event {index}".encode())
    finally:
        await nc.close()


def test_a_stream_near_its_limits_stops_the_migration_before_anything_changes(lab: MigrationLab,
                                                                               nats_lab: NatsLab) -> None:
    """90 of the stream's 100 messages are unread by the pipeline's consumer: at 100 the stream
    (discard old) would drop unread events. migrate.yml stops in preflight naming the stream and
    its fill level, with every object and record untouched."""
    tag = uuid.uuid4().hex[:8]
    stream, prefix = f"MIGFULL_{tag}", f"migfull.{tag}"
    asyncio.run(_stream_near_its_limit(nats_lab, stream, prefix, max_msgs=100, unread=90))
    try:
        versions, records = lab.settled_resource_versions(), lab.state_configmap()
        run = lab.playbook("migrate.yml", extra={
            **gate_vars({"stream": stream, "prefix": prefix, "consumer": "pipeline"}), "tapio_nats_install": False,
            "tapio_nats_monitor_urls": nats_lab.monitor_urls, "tapio_consume_subjects": f"{prefix}.>",
            "migration_preflight_probe": False})
        assert run.rc != 0, run.explain()
        assert (f"preflight: Stream {stream} is 90% full by max_msgs, at or above the 80% limit "
                "(tapio_stream_fill_limit): unacknowledged: 90 of 100 messages (90%)") in run.stdout, run.explain()
        assert "discards events the pipeline has not acknowledged" in run.stdout, run.explain()
        assert lab.resource_versions() == versions
        assert lab.state_configmap() == records
        # A higher limit lets the same preflight pass: the check is the limit, not the stream.
        passed = lab.playbook("playbooks/preflight.yml", extra={
            **gate_vars({"stream": stream, "prefix": prefix, "consumer": "pipeline"}), "tapio_nats_install": False,
            "tapio_nats_monitor_urls": nats_lab.monitor_urls, "migration_preflight_probe": False,
            "tapio_stream_fill_limit": 95})
        assert passed.rc == 0, passed.explain()
        assert f"stream {stream} is 90% full (unacknowledged: 90 of 100 messages (90%)" in passed.stdout, passed.explain()
    finally:
        asyncio.run(_jetstream(nats_lab, "delete", stream))
