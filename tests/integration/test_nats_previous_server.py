"""The modules against an older nats-server (the last 2.10 release, lab/versions.env
NATS_SERVER_PREVIOUS_VERSION, fetched by lab/bin/build-binaries): an option the server is too
old to know is refused by name before any change. This matters because servers before 2.12
drop an unknown field silently: the same request sent straight to this server is accepted and
the field is gone, which the test shows too.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional

import nats
import pytest

from conftest import REPO_ROOT
from nats_support import run_module
from standalone_nats import start_nats

pytestmark = pytest.mark.integration


def previous_binary() -> Path:
    version = re.search(r"^NATS_SERVER_PREVIOUS_VERSION=(\S+)", (REPO_ROOT / "lab" / "versions.env").read_text(),
                        re.M).group(1)
    cache = Path(os.environ.get("TAPIO_LAB_CACHE", Path.home() / ".cache" / "tapio-nats-migration"))
    path = cache / "bin" / f"nats-server-{version}" / "nats-server"
    if not path.exists():
        raise RuntimeError(f"nats-server {version} is not at {path}; run: lab/bin/build-binaries nats-server-previous")
    return path


@pytest.fixture(scope="module")
def old_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    def config(client_port: int, monitor_port: int, store: Path) -> str:
        return (f'listen: 127.0.0.1:{client_port}\nhttp: 127.0.0.1:{monitor_port}\n'
                f'jetstream {{ store_dir: "{store}", max_file_store: 64M, max_memory_store: 16M }}\n')

    server = start_nats(tmp_path_factory.mktemp("nats-previous"), config, "(previous release)", previous_binary())
    try:
        yield server.url
    finally:
        server.stop()


def raw(url: str, subject: str, payload: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    async def ask() -> dict[str, Any]:
        nc = await nats.connect(servers=[url], name="previous-test", allow_reconnect=False)
        try:
            reply = await nc.request(subject, json.dumps(payload).encode() if payload is not None else b"", timeout=5)
            return json.loads(reply.data)
        finally:
            await nc.close()
    return asyncio.run(ask())


def test_fields_newer_than_the_server_are_refused_by_name_before_any_change(old_server):
    assert "level" not in raw(old_server, "$JS.API.INFO")["api"]  # before 2.11 (API levels came in 2.11)
    spec = {"servers": [old_server], "name": "OLD", "subjects": ["old.>"], "allow_msg_ttl": True,
            "subject_delete_marker_ttl": "1h", "metadata": {"team": "a"}}
    refused = run_module("nats_stream", spec, auth=False)
    assert refused["failed"]
    assert "allow_msg_ttl needs nats-server 2.11.0 or later (the server is 2.10.26)" in refused["msg"]
    assert "subject_delete_marker_ttl needs nats-server 2.11.0 or later" in refused["msg"]
    assert "Nothing was changed" in refused["msg"]
    assert raw(old_server, "$JS.API.STREAM.NAMES").get("streams") in (None, [])

    # What the module saves the user from: the server itself takes the request and drops the field.
    direct = raw(old_server, "$JS.API.STREAM.CREATE.RAW", {"name": "RAW", "subjects": ["raw.>"], "allow_msg_ttl": True})
    assert "error" not in direct and "allow_msg_ttl" not in direct["config"]

    consumer = run_module("nats_consumer", {"servers": [old_server], "stream": "RAW", "name": "c",
                                            "priority_groups": ["a"], "priority_policy": "overflow"}, auth=False)
    assert consumer["failed"] and "priority_groups needs nats-server 2.11.0 or later" in consumer["msg"]


def test_what_the_server_knows_works_and_a_mirror_cannot_be_promoted_before_2_12(old_server):
    made = run_module("nats_stream", {"servers": [old_server], "name": "ORIGIN", "subjects": ["origin.>"],
                                      "compression": "s2", "metadata": {"team": "a"}}, auth=False)
    assert not made["failed"], made["msg"]
    again = run_module("nats_stream", {"servers": [old_server], "name": "ORIGIN", "compression": "s2",
                                       "metadata": {"team": "a"}}, auth=False)
    assert again["changed"] is False
    assert not run_module("nats_stream", {"servers": [old_server], "name": "COPY", "mirror": {"name": "ORIGIN"}},
                          auth=False)["failed"]
    promote = run_module("nats_stream", {"servers": [old_server], "name": "COPY", "mirror": {}}, auth=False)
    assert promote["failed"] and "cannot change mirror" in promote["msg"]
    assert raw(old_server, "$JS.API.STREAM.INFO.COPY")["config"]["mirror"]["name"] == "ORIGIN"
