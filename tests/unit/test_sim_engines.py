"""The simulator's second correlation engines (the plan's A/B): configuration, the engine's
own ledger, and which pods get a consumer on which durable consumer."""
from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "lab" / "simulator"))

from tapio_sim import config  # noqa: E402
from tapio_sim import sim as sim_mod  # noqa: E402
from tapio_sim.kube import PodView  # noqa: E402
from tapio_sim.ledger import EngineLedger  # noqa: E402

ENGINE = {"name": "tapio-correlation-b", "container": "pipeline"}


def test_engine_config_fills_the_pipelines_mode_rules_and_refuses_what_cannot_work() -> None:
    cfg = config.load(None, {"engines": [ENGINE]})
    [engine] = cfg["engines"]
    assert engine == {**ENGINE, "kind": "Deployment", "mode_env": "TAPIO_OUTPUT_MODE", "nats_url_means_nats": True,
                      "consumer": None}
    assert cfg["env"]["consumer"] == "NATS_CONSUMER"
    assert config.load(None)["engines"] == []
    with pytest.raises(ValueError, match="needs 'name' and 'container'"):
        config.load(None, {"engines": [{"name": "b"}]})
    with pytest.raises(ValueError, match="is the pipeline"):
        config.load(None, {"engines": [{"name": "tapio-pipeline", "container": "pipeline"}]})
    with pytest.raises(ValueError, match="listed twice"):
        config.load(None, {"engines": [ENGINE, ENGINE]})


def test_engine_ledger_counts_stream_messages_and_the_events_they_carry_of_any_run() -> None:
    led = EngineLedger("b")
    assert led.receive(("k8s-collector", 1, "id", "run1"), "run1", 10)
    assert led.receive(("k8s-collector", 2, "id", "run1"), "run1", 11)
    assert led.receive(("k8s-collector", 1, "id", "run0"), "run1", 3)  # history of an earlier run
    assert not led.receive(("k8s-collector", 1, "id", "run1"), "run1", 10)  # redelivered
    assert led.receive(("k8s-collector", 2, "id", "run1"), "run1", 12)  # the stream holds it twice
    assert led.receive(("ebpf-collector", 5000, "id", "run1"), "run1", 70000)  # beyond the first buffers
    assert led.receive(None, "run1", 13) and not led.receive(None, "run1", 13)  # a canary, redelivered
    assert led.receive(None, "run1")  # no stream sequence: each delivery is a message
    assert led.summary() == {"received": 7, "events": 4, "current_run": 3, "earlier_runs": 1, "foreign": 2,
                             "repeated_events": 1, "deliveries": 9, "redeliveries": 2}


def test_the_stream_sequence_comes_from_the_ack_subject() -> None:
    from nats.aio.msg import Msg

    from tapio_sim.pipeline import stream_sequence

    ack = "$JS.ACK.TAPIO_EVENTS.engine-b.1.4242.17.1796590000000000000.0"
    assert stream_sequence(Msg(_client=None, subject="tapio.events.k8s.x", reply=ack)) == 4242
    assert stream_sequence(Msg(_client=None, subject="x", reply="_INBOX.x")) is None


class FakeConsumer:
    started: list["FakeConsumer"] = []

    def __init__(self, sim: Any, pod: PodView, servers: list[str], credentials: Any, ca: Any, inbox: Any,
                 consumer: str | None = None, engine: EngineLedger | None = None) -> None:
        self.pod, self.consumer, self.engine, self.credentials, self.inbox = pod, consumer, engine, credentials, inbox
        self.stopped = False

    async def start(self) -> None:
        FakeConsumer.started.append(self)

    async def stop(self) -> None:
        self.stopped = True


def test_an_engine_pod_on_nats_reads_the_consumer_its_env_names_into_its_own_ledger(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_mod, "PipelineConsumer", FakeConsumer)
    FakeConsumer.started = []
    simulator = sim_mod.Simulator(config.load(None, {"engines": [ENGINE]}))
    nats_env = {"TAPIO_OUTPUT_MODE": "nats", "NATS_URL": "nats://127.0.0.1:4222", "NATS_CONSUMER": "engine-b",
                "NATS_USER": "engine-b", "NATS_PASSWORD": "p", "NATS_INBOX_PREFIX": "_INBOX_engine-b"}
    assert ("__engine__tapio-correlation-b", "Deployment", "tapio-correlation-b", "pipeline") in simulator._workloads()

    async def reconcile(pods: dict[str, list[PodView]]) -> None:
        await simulator.reconcile(pods)
        await asyncio.sleep(0)  # let retired consumers stop

    pipeline = PodView("p1", "tapio-pipeline-1", "n", True, {"TAPIO_OUTPUT_MODE": "nats", "NATS_URL": "nats://127.0.0.1:4222"})
    direct = PodView("b1", "tapio-correlation-b-1", "n", True, {"TAPIO_OUTPUT_MODE": "direct"})
    asyncio.run(reconcile({"__pipeline__": [pipeline], "__engine__tapio-correlation-b": [direct]}))
    assert [(c.pod.uid, c.consumer, c.engine) for c in FakeConsumer.started] == [("p1", None, None)]

    on_nats = PodView("b2", "tapio-correlation-b-2", "n", True, nats_env)
    unready = PodView("b3", "tapio-correlation-b-3", "n", False, nats_env)
    asyncio.run(reconcile({"__pipeline__": [pipeline], "__engine__tapio-correlation-b": [on_nats, unready]}))
    [engine_consumer] = FakeConsumer.started[1:]
    assert engine_consumer.pod.uid == "b2" and engine_consumer.consumer == "engine-b"
    assert engine_consumer.engine is simulator.engine_ledgers["tapio-correlation-b"]
    assert engine_consumer.credentials == ("engine-b", "p") and engine_consumer.inbox == "_INBOX_engine-b"
    assert set(simulator.engine_consumers["tapio-correlation-b"]) == {"b2"} and set(simulator.consumers) == {"p1"}

    report = simulator.report(None)
    assert report["engines"]["tapio-correlation-b"]["consumers"] == 1
    assert report["engines"]["tapio-correlation-b"]["received"] == 0 and report["pipeline_consumers"] == 1

    # Switched back (its pods direct again): its consumer stops; the pipeline's stays.
    asyncio.run(reconcile({"__pipeline__": [pipeline], "__engine__tapio-correlation-b": [direct]}))
    assert engine_consumer.stopped and simulator.engine_consumers["tapio-correlation-b"] == {}
    assert set(simulator.consumers) == {"p1"}


def test_a_reset_gives_every_engine_a_new_ledger() -> None:
    simulator = sim_mod.Simulator(config.load(None, {"engines": [ENGINE]}))
    simulator.engine_ledgers["tapio-correlation-b"].receive(None, simulator.ledger.run_id, 1)
    simulator.reset()
    assert simulator.report(None)["engines"]["tapio-correlation-b"]["received"] == 0
