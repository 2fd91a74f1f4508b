"""nats_stream and nats_consumer with a JetStream ``domain`` and with placement tags, against a
nats-server of this module's own: the lab's cluster has no JetStream domain and no server tags.

The server is the lab's binary, one process, no auth, JetStream in domain ``hub``, server tags
``ssd`` and ``az:a``, on loopback ports found free at start (standalone_nats.start_nats). Everything
the test checks it reads back itself with raw JetStream API requests through
``$JS.hub.API.*`` (nats-py, clients named ``domain-test-*``).

Where the module's requests went: the server maps ``$JS.<domain>.API.>`` onto ``$JS.API.>``
before delivering, so a subscriber on ``$JS.hub.API.>`` sees nothing (and one on ``$JS.API.>``
cannot tell the two apart). The server's own protocol trace (``trace: true``) logs every PUB
with the subject the client sent, before any mapping, and the client's name; the module
connects as ``tapio-ansible``, so its requests are the trace's PUB lines from that name, and
the ``MAPPING <sent> -> $JS.API.<...>`` line after each shows the server took it as the domain's
API.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import nats
import pytest

from nats_support import changed_keys, run_module
from standalone_nats import StandaloneServer, start_nats

pytestmark = pytest.mark.integration

DOMAIN = "hub"
TAGS = ["ssd", "az:a"]
MODULE_CLIENT = "tapio-ansible"          # connect_options' name for every module connection
TEST_CLIENT_PREFIX = "domain-test-"
NS = 1_000_000_000
# A traced PUB: `... - cid:5 - "v2.16.0:python3:tapio-ansible" - <<- [PUB <subject> <reply> <size>]`
TRACED_PUB = re.compile(r' - "(?P<client>[^"]*)" - <<- \[H?PUB (?P<subject>\S+)')
# The server's subject mapping of that PUB, logged right after it: `<<- [MAPPING <from> -> <to>]`
TRACED_MAPPING = re.compile(r' - "(?P<client>[^"]*)" - <<- \[MAPPING (?P<source>\S+) -> (?P<target>\S+)\]')
NO_RESPONDERS = ("no responders for $JS.nowhere.API.STREAM.INFO.{name}: JetStream domain 'nowhere' is not "
                 "enabled for this account/server (check the domain name)")


@dataclass
class DomainServer(StandaloneServer):
    """The test's server: what its trace logged and raw reads in the domain."""

    # ---------------------------------------------------------------- what the server logged

    def mark(self) -> int:
        """Where the log ends now; `module_pubs(mark)` reads what came after."""
        return self.log.stat().st_size

    def _logged_since(self, mark: int) -> str:
        with open(self.log, "rb") as log:
            log.seek(mark)
            return log.read().decode(errors="replace")

    def module_pubs(self, mark: int, expect: str = "", count: int = 1, timeout: float = 5.0) -> list[str]:
        """Subjects the module's connections published to since *mark*, as the server's trace
        logged them. The server logs a PUB before it answers it, so once the module has its
        answers the lines are there; waits (bounded) for *count* of them starting with *expect*."""
        deadline = time.monotonic() + timeout
        while True:
            text = self._logged_since(mark)
            subjects = [m["subject"] for m in TRACED_PUB.finditer(text) if m["client"].endswith(":" + MODULE_CLIENT)]
            if sum(s.startswith(expect) for s in subjects) >= count or time.monotonic() > deadline:
                return subjects
            time.sleep(0.05)

    def module_mappings(self, mark: int) -> list[tuple[str, str]]:
        """(sent, delivered as) for each subject the server mapped for the module since *mark*
        (read after module_pubs has seen the PUBs)."""
        return [(m["source"], m["target"]) for m in TRACED_MAPPING.finditer(self._logged_since(mark))
                if m["client"].endswith(":" + MODULE_CLIENT)]

    # ---------------------------------------------------------------- the test's own reads

    async def _request(self, subject: str, payload: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        nc = await nats.connect(servers=[self.url], name=TEST_CLIENT_PREFIX + "reader", allow_reconnect=False,
                                max_reconnect_attempts=1, connect_timeout=5)
        try:
            reply = await nc.request(subject, json.dumps(payload).encode() if payload is not None else b"",
                                     timeout=5)
            return json.loads(reply.data)
        finally:
            await nc.close()

    def api(self, what: str, payload: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """A raw JetStream API request in the domain: ``$JS.hub.API.<what>``."""
        return asyncio.run(self._request(f"$JS.{DOMAIN}.API.{what}", payload))

    def stream(self, name: str) -> Optional[dict[str, Any]]:
        """The stream's info, or None when the server says it does not exist."""
        info = self.api(f"STREAM.INFO.{name}")
        if info.get("error", {}).get("err_code") == 10059:
            return None
        assert "error" not in info, info
        return info

    def consumer(self, stream: str, name: str) -> Optional[dict[str, Any]]:
        info = self.api(f"CONSUMER.INFO.{stream}.{name}")
        if info.get("error", {}).get("err_code") == 10014:
            return None
        assert "error" not in info, info
        return info

    def stream_names(self) -> list[str]:
        return self.api("STREAM.NAMES", {"offset": 0}).get("streams") or []


def _config(client_port: int, monitor_port: int, store: Path) -> str:
    return (f'server_name: "domain-test"\n'
            f'listen: "127.0.0.1:{client_port}"\n'
            f'http: "127.0.0.1:{monitor_port}"\n'
            f'server_tags: {json.dumps(TAGS)}\n'
            f'jetstream {{\n  store_dir: "{store}"\n  domain: "{DOMAIN}"\n'
            f'  max_file_store: 64M\n  max_memory_store: 16M\n}}\n'
            # Every protocol line with its client's name: where the module's requests went.
            'trace: true\n')


def start_domain_server(directory: Path) -> DomainServer:
    """The server, once JetStream answers."""
    server = start_nats(directory, _config, "with a JetStream domain")
    return DomainServer(server.url, server.monitor_url, server.process, server.log)


@pytest.fixture(scope="module")
def domain_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DomainServer]:
    server = start_domain_server(tmp_path_factory.mktemp("domain-nats"))
    try:
        account = server.api("INFO")
        assert account.get("domain") == DOMAIN, f"the server's JetStream is not in domain {DOMAIN}: {account}"
        yield server
    finally:
        server.stop()


def module(server: DomainServer, name: str, args: dict[str, Any], check: bool = False,
           domain: Optional[str] = DOMAIN) -> dict[str, Any]:
    """Run nats_stream/nats_consumer's real code against the test's server (no credentials)."""
    connection = {"servers": [server.url], **({"domain": domain} if domain else {})}
    return run_module(name, {**connection, **args}, check=check, auth=False)


def tags_of(info: dict[str, Any]) -> list[str]:
    return sorted((info["config"].get("placement") or {}).get("tags") or [])


# --------------------------------------------------------------------------- the domain


def test_domain_creates_and_reads_in_the_domain(domain_nats: DomainServer) -> None:
    stream, consumer = "DOMAIN_EVENTS", "domain-pipeline"
    spec = {"name": stream, "subjects": ["domain.events.>"], "storage": "file", "replicas": 1,
            "max_age": "1h", "description": "stream in domain hub"}
    consumer_spec = {"stream": stream, "name": consumer, "ack_policy": "explicit", "ack_wait": "30s",
                     "max_deliver": 5, "filter_subject": "domain.events.k8s"}

    mark = domain_nats.mark()
    created = module(domain_nats, "nats_stream", spec)
    assert not created["failed"] and created["changed"] and created["operation"] == "create", created["_output"]
    made = module(domain_nats, "nats_consumer", consumer_spec)
    assert not made["failed"] and made["changed"] and made["operation"] == "create", made["_output"]

    # Every request the module sent went to the domain's API, none to the plain $JS.API.
    sent = domain_nats.module_pubs(mark, expect=f"$JS.{DOMAIN}.API.CONSUMER.")
    assert f"$JS.{DOMAIN}.API.STREAM.INFO.{stream}" in sent, sent
    assert f"$JS.{DOMAIN}.API.STREAM.CREATE.{stream}" in sent, sent
    assert any(s.startswith(f"$JS.{DOMAIN}.API.CONSUMER.CREATE.{stream}.{consumer}") for s in sent), sent
    assert sent and all(s.startswith(f"$JS.{DOMAIN}.API.") for s in sent), sent
    # ... and the server took each one as the domain's JetStream API: it mapped it onto $JS.API.
    assert domain_nats.module_mappings(mark) == [(s, "$JS.API." + s[len(f"$JS.{DOMAIN}.API."):]) for s in sent]

    info = domain_nats.stream(stream)
    assert info is not None and info.get("domain") == DOMAIN, info
    config = info["config"]
    assert config["subjects"] == ["domain.events.>"] and config["num_replicas"] == 1
    assert config["storage"] == "file" and config["max_age"] == 3600 * NS
    assert config["description"] == "stream in domain hub"
    seen = domain_nats.consumer(stream, consumer)
    assert seen is not None, "the consumer is not in domain hub"
    assert seen["config"]["durable_name"] == consumer and seen["config"]["ack_policy"] == "explicit"
    assert seen["config"]["ack_wait"] == 30 * NS and seen["config"]["max_deliver"] == 5
    assert seen["config"]["filter_subject"] == "domain.events.k8s"

    mark = domain_nats.mark()
    again = module(domain_nats, "nats_stream", {**spec, "max_age": 3600})
    assert not again["failed"] and again["changed"] is False and again["operation"] == "none", again["_output"]
    still = module(domain_nats, "nats_consumer", {**consumer_spec, "ack_wait": 30})
    assert not still["failed"] and still["changed"] is False and still["operation"] == "none", still["_output"]
    sent = domain_nats.module_pubs(mark, expect=f"$JS.{DOMAIN}.API.CONSUMER.INFO.")
    # Reads only (nats_consumer also reads its stream), all in the domain.
    assert sorted(set(sent)) == [f"$JS.{DOMAIN}.API.CONSUMER.INFO.{stream}.{consumer}",
                                 f"$JS.{DOMAIN}.API.STREAM.INFO.{stream}"], sent
    assert domain_nats.stream(stream)["created"] == info["created"]
    assert domain_nats.consumer(stream, consumer)["created"] == seen["created"]


def test_unknown_domain_fails_and_creates_nothing(domain_nats: DomainServer) -> None:
    stream = "NOWHERE_EVENTS"
    mark = domain_nats.mark()
    failed = module(domain_nats, "nats_stream", {"name": stream, "subjects": ["nowhere.>"], "replicas": 1},
                    domain="nowhere")
    assert failed["failed"] and not failed.get("changed"), failed["_output"]
    assert failed["msg"] == NO_RESPONDERS.format(name=stream)
    consumer = module(domain_nats, "nats_consumer", {"stream": stream, "name": "c", "ack_policy": "explicit"},
                      domain="nowhere")
    assert consumer["failed"] and not consumer.get("changed"), consumer["_output"]
    assert consumer["msg"] == NO_RESPONDERS.format(name=stream)

    # Each module asked once (nats_consumer reads its stream first) and stopped there.
    sent = domain_nats.module_pubs(mark, expect="$JS.nowhere.API.", count=2)
    assert sent == [f"$JS.nowhere.API.STREAM.INFO.{stream}"] * 2, sent
    assert stream not in domain_nats.stream_names()
    assert domain_nats.stream(stream) is None


# --------------------------------------------------------------------------- placement tags


def test_placement_tags_set_cleared_and_set_again(domain_nats: DomainServer) -> None:
    stream = "TAGGED_EVENTS"
    spec = {"name": stream, "subjects": ["tagged.>"], "replicas": 1}

    created = module(domain_nats, "nats_stream", {**spec, "placement": {"tags": ["ssd"]}})
    assert not created["failed"] and created["operation"] == "create", created["_output"]
    first = domain_nats.stream(stream)
    assert tags_of(first) == ["ssd"]
    again = module(domain_nats, "nats_stream", {**spec, "placement": {"tags": ["ssd"]}})
    assert not again["failed"] and again["changed"] is False and again["operation"] == "none", again["_output"]

    cleared = module(domain_nats, "nats_stream", {**spec, "placement": {"tags": []}})
    assert not cleared["failed"], cleared["_output"]
    assert cleared["changed"] and cleared["operation"] == "update" and cleared["changed_fields"] == ["placement"]
    assert changed_keys(cleared["diff"]["before"], cleared["diff"]["after"]) == ["placement"]
    now = domain_nats.stream(stream)
    assert tags_of(now) == [], now["config"].get("placement")
    assert now["created"] == first["created"], "clearing the tags must update the stream, not recreate it"
    twice = module(domain_nats, "nats_stream", {**spec, "placement": {"tags": []}})
    assert not twice["failed"] and twice["changed"] is False and twice["operation"] == "none", twice["_output"]
    assert tags_of(domain_nats.stream(stream)) == []

    moved = module(domain_nats, "nats_stream", {**spec, "placement": {"tags": ["az:a"]}})
    assert not moved["failed"], moved["_output"]
    assert moved["changed"] and moved["operation"] == "update" and moved["changed_fields"] == ["placement"]
    assert tags_of(domain_nats.stream(stream)) == ["az:a"]
    both = module(domain_nats, "nats_stream", {**spec, "placement": {"tags": TAGS}})
    assert not both["failed"] and both["changed_fields"] == ["placement"], both["_output"]
    assert tags_of(domain_nats.stream(stream)) == sorted(TAGS)
    # Tags compare as a set.
    same = module(domain_nats, "nats_stream", {**spec, "placement": {"tags": TAGS[::-1]}})
    assert not same["failed"] and same["changed"] is False, same["_output"]
    assert domain_nats.stream(stream)["created"] == first["created"]


def test_check_mode_tag_change_changes_nothing(domain_nats: DomainServer) -> None:
    stream = "CHECKED_EVENTS"
    spec = {"name": stream, "subjects": ["checked.>"], "replicas": 1}
    created = module(domain_nats, "nats_stream", {**spec, "placement": {"tags": ["ssd"]}})
    assert not created["failed"] and created["operation"] == "create", created["_output"]
    before = domain_nats.stream(stream)

    for tags in (["az:a"], []):
        mark = domain_nats.mark()
        would = module(domain_nats, "nats_stream", {**spec, "placement": {"tags": tags}}, check=True)
        assert not would["failed"], would["_output"]
        assert would["changed"] and would["operation"] == "update" and would["changed_fields"] == ["placement"]
        assert sorted((would["stream"]["config"].get("placement") or {}).get("tags") or []) == tags, would["stream"]
        sent = domain_nats.module_pubs(mark, expect=f"$JS.{DOMAIN}.API.STREAM.INFO.")
        assert sent and not any(".UPDATE." in s or ".CREATE." in s or ".DELETE." in s for s in sent), sent
        after = domain_nats.stream(stream)
        assert after["config"] == before["config"] and after["created"] == before["created"]
        assert tags_of(after) == ["ssd"]
