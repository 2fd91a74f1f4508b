"""Declared extra consumers (``tapio_nats_extra_consumers``) and replay windows
(library/nats_replay_window.py) against a real nats-server of this module's own.

The server runs the users.conf the nats_cluster role renders (its ``conf`` entry point, as
test_nats_reload does), so the extra consumers' users and permissions are the ones the toolkit
ships; the nats_streams role (tests/integration/nats_playbooks/streams_role.yml) creates the
stream, the pipeline's consumer and the extra consumers from the same list. Every refusal is the
server's own ``Permissions Violation``. The replay module runs in process (nats_support.run_direct)
against the same server; its counts are checked against what the test published and what a
reader of the replay consumer receives, and the pipeline consumer's state is compared before
and after.
"""
from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any, Iterator

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout

from nats_support import REPO_ROOT, run_direct
from standalone_nats import StandaloneServer, start_nats
from test_nats_install import playbook

pytestmark = pytest.mark.integration

STREAM, PIPELINE = "TAPIO_EVENTS", "tapio-pipeline"
ADMIN = ("tapio", "extra-test-admin")
PASSWORDS = {PIPELINE: "extra-test-pipeline", "tapio-k8s-collector": "extra-test-k8s",
             "siem-export": "extra-test-siem", "engine-b": "extra-test-engine-b"}
EXTRA = [{"name": "siem-export", "filter_subjects": ["tapio.events.k8s.>"], "deliver_policy": "all",
          "ack_wait": "10s", "max_ack_pending": 50},
         {"name": "engine-b", "replay": True}]
VIOLATION = re.compile(r"permissions violation for (publish|subscription) to \"?([^\"\s]+)", re.I)
PLAYBOOKS = Path(__file__).resolve().parent / "nats_playbooks"
NS = 1_000_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneServer]:
    root = tmp_path_factory.mktemp("extra-consumers")
    rendered = playbook(REPO_ROOT / "tests/integration/nats_install/render_conf.yml", extra={
        "render_conf_dest": str(root / "rendered.conf"), "nats_cluster_component_users": True,
        "nats_cluster_auth_user": ADMIN[0], "nats_cluster_auth_password": ADMIN[1],
        "nats_cluster_component_passwords": PASSWORDS, "nats_cluster_pipeline": {"name": PIPELINE},
        "nats_cluster_collectors": [{"name": "tapio-k8s-collector", "subject_prefix": "tapio.events.k8s"}],
        "nats_cluster_extra_consumers": EXTRA, "nats_cluster_events_stream": STREAM,
        "nats_cluster_pipeline_consumer": PIPELINE})
    assert rendered.rc == 0, rendered.out[-3000:]
    home = root / "server"
    home.mkdir()
    (home / "users.conf").write_text((root / "users.conf").read_text())

    def config(client_port: int, monitor_port: int, store: Path) -> str:
        return (f'listen: 127.0.0.1:{client_port}\nhttp: 127.0.0.1:{monitor_port}\n'
                f'jetstream {{ store_dir: "{store}", max_file_store: 64M, max_memory_store: 16M }}\n'
                'include "users.conf"\n')

    started = start_nats(home, config, "(extra consumers)")
    try:
        applied = playbook(PLAYBOOKS / "streams_role.yml", extra={
            "nats_streams_servers": [started.url], "nats_streams_user": ADMIN[0], "nats_streams_password": ADMIN[1],
            "nats_streams_kube_port_forward": {}, "nats_streams_verify": False,
            "nats_streams_advisories_enabled": False, "nats_streams_events_stream_name": STREAM,
            "nats_streams_pipeline_consumer_name": PIPELINE, "nats_streams_events_subject": "tapio.events.>",
            "nats_streams_events_stream": {"name": STREAM, "subjects": ["tapio.events.>"], "storage": "file",
                                           "replicas": 1},
            "tapio_nats_extra_consumers": EXTRA})
        assert applied.rc == 0, applied.out[-3000:]
        yield started
    finally:
        started.stop()


class Client:
    """One user's connection, on its own inbox, collecting the server's permission refusals."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.url, self.user, self.password = url, user, password
        self.refused: list[tuple[str, str]] = []
        self.nc: Any = None

    async def __aenter__(self) -> "Client":
        async def on_error(error: Exception) -> None:
            found = VIOLATION.search(str(error))
            if found:
                self.refused.append((found.group(1).lower(), found.group(2).lower()))

        self.nc = await nats.connect(self.url, user=self.user, password=self.password, error_cb=on_error,
                                     allow_reconnect=False, connect_timeout=5, inbox_prefix=f"_INBOX_{self.user}")
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.nc.close()

    async def named(self, what: str, subject: str) -> bool:
        """Whether the server has refused *what* (publish, subscription) to *subject*."""
        for _ in range(50):
            if (what, subject.lower()) in self.refused:
                return True
            await asyncio.sleep(0.1)
        return False

    async def refused_request(self, subject: str, payload: bytes = b"") -> bool:
        try:
            await self.nc.request(subject, payload, timeout=0.5)
        except (NatsTimeout, asyncio.TimeoutError):
            return await self.named("publish", subject)
        return False


async def admin_connection(url: str) -> Any:
    return await nats.connect(url, user=ADMIN[0], password=ADMIN[1], allow_reconnect=False, connect_timeout=5)


async def api(nc: Any, subject: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    reply = await nc.request(subject, json.dumps(payload).encode() if payload is not None else b"", timeout=5)
    return json.loads(reply.data)


def progress(info: dict[str, Any]) -> dict[str, Any]:
    return {key: info[key] for key in ("delivered", "ack_floor", "num_ack_pending", "num_redelivered", "num_pending")}


def test_an_extra_consumers_user_reads_and_acks_only_its_consumer(server: StandaloneServer) -> None:
    async def scenario() -> None:
        admin = await admin_connection(server.url)
        js = admin.jetstream()
        # The streams phase made the declared consumer, left the replay one to replay.yml.
        siem = await api(admin, f"$JS.API.CONSUMER.INFO.{STREAM}.siem-export")
        assert siem["config"]["filter_subjects"] == ["tapio.events.k8s.>"], siem
        assert siem["config"]["ack_policy"] == "explicit" and siem["config"]["ack_wait"] == 10 * NS
        assert (await api(admin, f"$JS.API.CONSUMER.INFO.{STREAM}.engine-b"))["error"]["err_code"] == 10014
        for subject in ("tapio.events.k8s.pod", "tapio.events.ebpf.exec", "tapio.events.k8s.node"):
            await js.publish(subject, b"{}")
        stream_before = (await api(admin, f"$JS.API.STREAM.INFO.{STREAM}"))["state"]
        pipeline_before = progress(await api(admin, f"$JS.API.CONSUMER.INFO.{STREAM}.{PIPELINE}"))

        async with Client(server.url, "siem-export", PASSWORDS["siem-export"]) as reader:
            sub = await reader.nc.jetstream().pull_subscribe_bind("siem-export", STREAM)
            messages = await sub.fetch(10, timeout=2)
            assert [m.subject for m in messages] == ["tapio.events.k8s.pod", "tapio.events.k8s.node"]
            for message in messages:
                await message.ack_sync(timeout=5)
            # Another consumer, the stream's management API, publishing events, and every other
            # client's replies: each refused by the server, by name.
            for subject in (f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{PIPELINE}", f"$JS.API.CONSUMER.INFO.{STREAM}.{PIPELINE}",
                            f"$JS.API.STREAM.INFO.{STREAM}", f"$JS.API.STREAM.PURGE.{STREAM}",
                            f"$JS.API.STREAM.DELETE.{STREAM}", f"$JS.API.CONSUMER.DELETE.{STREAM}.siem-export"):
                assert await reader.refused_request(subject), (subject, reader.refused)
            await reader.nc.publish("tapio.events.k8s.pod", b"forged")
            await reader.nc.subscribe("_INBOX.>")
            await reader.nc.flush()
            assert await reader.named("publish", "tapio.events.k8s.pod"), reader.refused
            assert await reader.named("subscription", "_INBOX.>"), reader.refused

        siem = await api(admin, f"$JS.API.CONSUMER.INFO.{STREAM}.siem-export")
        assert siem["ack_floor"]["stream_seq"] == 3 and siem["num_ack_pending"] == 0, siem
        # Nothing stored, purged or deleted; the pipeline's consumer untouched.
        assert (await api(admin, f"$JS.API.STREAM.INFO.{STREAM}"))["state"] == stream_before
        assert progress(await api(admin, f"$JS.API.CONSUMER.INFO.{STREAM}.{PIPELINE}")) == pipeline_before
        await admin.close()

    asyncio.run(scenario())


async def replay(server: StandaloneServer, check: bool = False, **args: Any) -> dict[str, Any]:
    """The module's real code in process (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(run_direct, "nats_replay_window", {
        "servers": [server.url], "user": ADMIN[0], "password": ADMIN[1], "stream": STREAM, **args},
        check=check, auth=False)


async def publish_batch(js: Any, subjects: list[str]) -> list[int]:
    return [(await js.publish(subject, b"{}")).seq for subject in subjects]


async def stored_time(nc: Any, seq: int) -> str:
    return (await api(nc, f"$JS.API.STREAM.MSG.GET.{STREAM}", {"seq": seq}))["message"]["time"]


def micro(stamp: str) -> str:
    """A server time as the module sends it: microseconds (the server writes nanoseconds)."""
    whole, fraction = stamp.rstrip("Z").split(".")
    return f"{whole}.{fraction[:6]}"


def test_a_replay_window_counts_what_the_stream_holds_and_leaves_the_pipeline_alone(server: StandaloneServer) -> None:
    async def scenario() -> None:
        admin = await admin_connection(server.url)
        js = admin.jetstream()
        before = await publish_batch(js, ["tapio.events.k8s.a"] * 3)
        # The pipeline has read and acknowledged part of the stream: its place must not move.
        async with Client(server.url, PIPELINE, PASSWORDS[PIPELINE]) as pipeline:
            sub = await pipeline.nc.jetstream().pull_subscribe_bind(PIPELINE, STREAM)
            for message in await sub.fetch(2, timeout=2):
                await message.ack_sync(timeout=5)
        window = await publish_batch(js, ["tapio.events.k8s.b", "tapio.events.ebpf.b", "tapio.events.k8s.b",
                                          "tapio.events.ebpf.b"])
        after = await publish_batch(js, ["tapio.events.ebpf.c", "tapio.events.k8s.c"])
        start, end = await stored_time(admin, window[0]), await stored_time(admin, after[0])
        # The window's bounds, at the module's microseconds, fall between the batches.
        assert micro(await stored_time(admin, before[-1])) < micro(start)
        assert micro(await stored_time(admin, window[-1])) < micro(end)
        pipeline_before = progress(await api(admin, f"$JS.API.CONSUMER.INFO.{STREAM}.{PIPELINE}"))

        checked = await replay(server, check=True, name="engine-b", start_time=start, end_time=end)
        assert checked["changed"] and checked["operation"] == "create", checked
        assert (await api(admin, f"$JS.API.CONSUMER.INFO.{STREAM}.engine-b"))["error"]["err_code"] == 10014
        made = await replay(server, name="engine-b", start_time=start, end_time=end)
        assert made["changed"] and made["operation"] == "create", made
        assert made["window"]["count"] == len(window) == made["window"]["last_seq"] - made["window"]["first_seq"] + 1
        assert (made["window"]["first_seq"], made["window"]["last_seq"]) == (window[0], window[-1])
        again = await replay(server, name="engine-b", start_time=start, end_time=end)
        assert not again["changed"] and again["operation"] == "none", again

        # The second engine's user reads the replay consumer up to the window's last sequence
        # (its metadata), acknowledging each: exactly the window's events.
        async with Client(server.url, "engine-b", PASSWORDS["engine-b"]) as engine:
            info = await engine.nc.jetstream().consumer_info(STREAM, "engine-b")
            last = int(info.config.metadata["tapio.io/replay-last-seq"])
            sub = await engine.nc.jetstream().pull_subscribe_bind("engine-b", STREAM)
            received = []
            for message in await sub.fetch(20, timeout=2):
                if message.metadata.sequence.stream <= last:
                    received.append(message.metadata.sequence.stream)
                await message.ack_sync(timeout=5)
        assert received == window

        filtered = await replay(server, name="engine-b-ebpf", start_time=start, end_time=end,
                          filter_subjects=["tapio.events.ebpf.>"])
        assert filtered["window"]["count"] == 2 and filtered["window"]["exact"], filtered
        by_seq = await replay(server, name="engine-b-seq", start_seq=before[1], end_seq=window[1])
        assert by_seq["window"]["count"] == 4 and by_seq["consumer"]["num_pending"] > 4, by_seq

        # Another window on the same consumer needs reset; the pipeline's name is refused.
        moved = await replay(server, name="engine-b", start_seq=window[0])
        assert moved["failed"] and "Set reset=true" in moved["msg"], moved
        refused = await replay(server, name=PIPELINE, start_seq=1, reset=True)
        assert refused["failed"] and "never touches it" in refused["msg"], refused
        reset = await replay(server, name="engine-b", start_time=start, end_time=end, reset=True)
        assert reset["changed"] and reset["operation"] == "reset", reset
        assert reset["consumer"]["delivered"]["consumer_seq"] == 0 and reset["consumer"]["num_pending"] > 0
        gone = await replay(server, name="engine-b-seq", state="absent")
        assert gone["changed"] and gone["operation"] == "delete", gone

        assert progress(await api(admin, f"$JS.API.CONSUMER.INFO.{STREAM}.{PIPELINE}")) == pipeline_before
        assert pipeline_before["ack_floor"]["stream_seq"] >= 2 and pipeline_before["num_pending"] > 0
        await admin.close()

    asyncio.run(scenario())


def test_the_replay_role_counts_a_sequence_window_and_shows_the_readers_env(server: StandaloneServer,
                                                                              tmp_path: Path) -> None:
    async def published() -> list[int]:
        admin = await admin_connection(server.url)
        try:
            return await publish_batch(admin.jetstream(), ["tapio.events.k8s.role"] * 3)
        finally:
            await admin.close()

    seqs = asyncio.run(published())
    result_file = tmp_path / "result.json"
    run = playbook(PLAYBOOKS / "replay_role.yml", extra={
        "replay_connection": {"servers": [server.url], "user": ADMIN[0], "password": ADMIN[1]},
        "result_file": str(result_file), "nats_replay_name": "engine-b-role", "nats_replay_stream": STREAM,
        "nats_replay_start_seq": seqs[0], "nats_replay_end_seq": seqs[-1], "nats_replay_ack_wait": "5s"})
    assert run.rc == 0, run.out[-3000:]
    result = json.loads(result_file.read_text())
    assert result["changed"] and result["window"]["count"] == 3, result
    assert result["consumer"]["config"]["metadata"]["tapio.io/replay-last-seq"] == str(seqs[-1])
    assert "engine-b-role: 3 event(s) in the window" in run.out
    assert "NATS_INBOX_PREFIX=_INBOX_engine-b-role" in run.out and "tapio-nats-auth-engine-b-role" in run.out
    # The replay consumers are replay.yml's: the streams phase's drift report does not list them.
    drift = run_direct("nats_jetstream", {
        "servers": [server.url], "user": ADMIN[0], "password": ADMIN[1],
        "streams": [{"name": STREAM, "subjects": ["tapio.events.>"], "storage": "file", "replicas": 1}],
        "consumers": [{"stream": STREAM, "name": PIPELINE}, {"stream": STREAM, "name": "siem-export"},
                      {"stream": STREAM, "name": "stray"}]}, check=True, auth=False)
    assert not drift["failed"] and drift["drift"]["missing"] == [f"consumer {STREAM}/stray"], drift
    assert drift["drift"]["unmanaged_consumers"] == {}, drift["drift_summary"]

