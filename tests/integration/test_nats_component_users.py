"""Per-workload NATS users (``tapio_nats_component_users``) against the lab's real servers.

The lab inventory turns them on, so the lab's nats-servers run the users and permissions that
plugins/filter/tapio_nats_users.py renders (the nats_cluster role's template). Each refusal is
the server's own: a denied publish or subscribe is answered with ``-ERR 'Permissions
Violation ...'``, which nats-py hands to the error callback, and a denied JetStream API call
gets no reply. After the refusals the admin user checks that the stream and the durable
consumer are still there. The allowed paths are checked by a reply from JetStream itself (a
publish that JetStream rejects on purpose, so nothing is stored in the lab's stream, and the
durable consumer's info); the full flow with these users (collectors publishing, the pipeline
fetching and acknowledging, 0 events lost) is what molecule's default scenario runs.
"""
from __future__ import annotations

import asyncio
import re
from typing import Any, Awaitable, Callable

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError

from nats_support import AUTH

pytestmark = pytest.mark.integration

STREAM, CONSUMER = "TAPIO_EVENTS", "tapio-pipeline"
# inventories/lab/group_vars/all/nats.yml
COLLECTOR = ("tapio-k8s-collector", "tapio-lab-k8s-secret", "tapio.events.k8s")
OTHER_PREFIX = "tapio.events.ebpf"
PIPELINE = ("tapio-pipeline", "tapio-lab-pipeline-secret")
VIOLATION = re.compile(r"permissions violation for (publish|subscription) to \"?([^\"\s]+)", re.I)


class Client:
    """A connection as one user that collects the server's permission refusals."""

    def __init__(self) -> None:
        self.nc: Any = None
        self.refused: list[tuple[str, str]] = []

    async def connect(self, user: str, password: str) -> "Client":
        async def on_error(exc: Exception) -> None:
            found = VIOLATION.search(str(exc))
            if found:
                self.refused.append((found.group(1).lower(), found.group(2).lower()))

        # Each workload's client takes replies on its own inbox, as the migration tells its pods to
        # (NATS_INBOX_PREFIX): its user may subscribe nowhere else.
        self.nc = await nats.connect(servers=AUTH["servers"], user=user, password=password, error_cb=on_error,
                                     allow_reconnect=False, connect_timeout=5, inbox_prefix=f"_INBOX_{user}")
        return self

    async def refused_subscription(self, subject: str) -> Any:
        """Subscribe to *subject*; the server must refuse it. Returns the subscription, which
        must then receive nothing."""
        sub = await self.nc.subscribe(subject)
        await self.nc.flush()
        for _ in range(50):
            if ("subscription", subject.lower()) in self.refused:
                return sub
            await asyncio.sleep(0.1)
        raise AssertionError(f"no permissions violation for subscription to {subject}; the server said {self.refused}")

    async def refusal(self, what: str, subject: str, call: Callable[[], Awaitable[Any]]) -> None:
        """*call* must get no answer and the server must name *subject* as refused."""
        with pytest.raises((NatsTimeout, asyncio.TimeoutError)):
            await call()
        for _ in range(50):
            if (what, subject.lower()) in self.refused:  # nats-py hands the -ERR text lowercased
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"no permissions violation for {what} to {subject}; the server said {self.refused}")


async def ensure_stream_and_consumer(js: Any) -> list[str]:
    """The lab's stream and durable consumer, created (and later removed) only when absent."""
    created = []
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(StreamConfig(name=STREAM, subjects=["tapio.events.>"], num_replicas=3))
        created.append("stream")
    try:
        await js.consumer_info(STREAM, CONSUMER)
    except NotFoundError:
        await js.add_consumer(STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy="explicit"))
        created.append("consumer")
    return created


async def scenario() -> None:
    admin = await nats.connect(servers=AUTH["servers"], user=AUTH["user"], password=AUTH["password"])
    js = admin.jetstream()
    created = await ensure_stream_and_consumer(js)
    try:
        collector = await Client().connect(COLLECTOR[0], COLLECTOR[1])
        pipeline = await Client().connect(*PIPELINE)
        try:
            await check_collector(collector)
            await check_pipeline(pipeline)
            await check_no_one_reads_another_inbox(collector, pipeline, admin)
        finally:
            await collector.nc.close()
            await pipeline.nc.close()
        # Nothing the refused calls asked for happened.
        info = await js.consumer_info(STREAM, CONSUMER)
        assert info.name == CONSUMER
        assert [c.name for c in await js.consumers_info(STREAM) if c.name.startswith("perm-test")] == []
    finally:
        if "consumer" in created:
            await js.delete_consumer(STREAM, CONSUMER)
        if "stream" in created:
            await js.delete_stream(STREAM)
        await admin.close()


async def check_collector(client: Client) -> None:
    nc, prefix = client.nc, COLLECTOR[2]
    # Allowed: its own prefix reaches JetStream and the answer reaches its inbox. The header
    # names another stream, so JetStream refuses to store it and the lab's stream is unchanged.
    answer = await nc.request(f"{prefix}.perm-test", b"{}", timeout=5, headers={"Nats-Expected-Stream": "NONE"})
    assert b"expected stream does not match" in answer.data, answer.data
    assert client.refused == []
    api = "$JS.API"
    for subject in (f"{api}.STREAM.DELETE.{STREAM}", f"{api}.STREAM.PURGE.{STREAM}",
                    f"{api}.CONSUMER.CREATE.{STREAM}.perm-test", f"{api}.CONSUMER.DURABLE.CREATE.{STREAM}.perm-test",
                    f"{api}.CONSUMER.DELETE.{STREAM}.{CONSUMER}", f"{api}.STREAM.MSG.GET.{STREAM}"):
        await client.refusal("publish", subject, lambda s=subject: nc.request(s, b"{}", timeout=1))
    # Another collector's subjects are not its own.
    await client.refusal("publish", f"{OTHER_PREFIX}.x",
                         lambda: nc.request(f"{OTHER_PREFIX}.x", b"{}", timeout=1))
    # It cannot read the events either.
    await nc.subscribe("tapio.events.>")
    await nc.flush()
    for _ in range(50):
        if ("subscription", "tapio.events.>") in client.refused:
            break
        await asyncio.sleep(0.1)
    assert ("subscription", "tapio.events.>") in client.refused, client.refused


async def check_pipeline(client: Client) -> None:
    nc = client.nc
    # Allowed: its durable consumer's info.
    info = await nc.jetstream().consumer_info(STREAM, CONSUMER)
    assert info.name == CONSUMER
    assert client.refused == []
    # It cannot publish events, nor change the stream or its consumers.
    await client.refusal("publish", f"{COLLECTOR[2]}.x", lambda: nc.request(f"{COLLECTOR[2]}.x", b"{}", timeout=1))
    for subject in (f"$JS.API.STREAM.DELETE.{STREAM}", f"$JS.API.STREAM.PURGE.{STREAM}",
                    f"$JS.API.CONSUMER.CREATE.{STREAM}.perm-test", f"$JS.API.CONSUMER.DELETE.{STREAM}.{CONSUMER}"):
        await client.refusal("publish", subject, lambda s=subject: nc.request(s, b"{}", timeout=1))
    # Another durable's messages are not its own.
    other = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.perm-test"
    await client.refusal("publish", other, lambda: nc.request(other, b"{}", timeout=1))


async def check_no_one_reads_another_inbox(collector: Client, pipeline: Client, admin: Any) -> None:
    """Replies go to each client's own inbox: a collector cannot listen on the shared _INBOX.>
    or the pipeline's inbox while the pipeline pulls from its durable and the toolkit reads the
    stream, and the others' answers still arrive."""
    wide = await collector.refused_subscription("_INBOX.>")
    theirs = await collector.refused_subscription("_INBOX_tapio-pipeline.>")
    # The pipeline pulls: JetStream delivers to its inbox either an event (handed back at once
    # with a NAK, so the lab's pipeline gets it as usual) or the 404 status of an empty consumer.
    own = await pipeline.nc.subscribe("_INBOX_tapio-pipeline.pull")
    await pipeline.nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{CONSUMER}", b'{"batch": 1, "no_wait": true}',
                              reply="_INBOX_tapio-pipeline.pull")
    pulled = await own.next_msg(timeout=5)
    if pulled.reply:
        await pulled.respond(b"-NAK")
    assert (await admin.jetstream().stream_info(STREAM)).config.name == STREAM
    await asyncio.sleep(0.5)  # let anything misrouted arrive before counting
    assert wide.pending_msgs == 0 and theirs.pending_msgs == 0
    # The collector's own inbox still works: JetStream's answer to a publish arrives there.
    answer = await collector.nc.request(f"{COLLECTOR[2]}.perm-test", b"{}", timeout=5,
                                        headers={"Nats-Expected-Stream": "NONE"})
    assert b"expected stream does not match" in answer.data


def test_each_workload_user_is_refused_what_it_does_not_need() -> None:
    asyncio.run(scenario())


def test_a_wrong_password_is_refused() -> None:
    async def connect() -> None:
        await nats.connect(servers=AUTH["servers"], user=COLLECTOR[0], password="not-the-password",
                           allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3)

    with pytest.raises(Exception, match=re.compile("authorization violation", re.I)):
        asyncio.run(connect())
