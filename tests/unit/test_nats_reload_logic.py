"""The reload decisions (module_utils/tapio_nats_reload.py): which servers still run an old
revision, what keeps a reload from being complete, and a server's refusal. Replies have the
shapes nats-server 2.15 sends on $SYS.REQ.SERVER.PING.VARZ and .RELOAD (the real servers are
tests/integration/test_nats_reload.py)."""
from __future__ import annotations

from types import ModuleType
from typing import Any

from module_utils_loader import load_module_utils

reload: ModuleType = load_module_utils("tapio_nats_reload")


def varz_reply(name: str, revision: str = "", server_id: str = "") -> dict[str, Any]:
    data: dict[str, Any] = {"server_name": name, "config_load_time": "2026-12-06T11:00:00Z"}
    if revision:
        data["metadata"] = {"tapio.io/config-revision": revision}
    return {"server": {"name": name, "id": server_id or f"ID-{name}"}, "data": data}


def states(*replies: dict[str, Any]) -> dict[str, Any]:
    parsed = [reload.server_state(r) for r in replies]
    return {s.server_id: s for s in parsed if s}


def test_a_varz_reply_gives_the_servers_revision_and_anything_else_is_ignored() -> None:
    state = reload.server_state(varz_reply("nats-0", "r2"))
    assert (state.server_id, state.name, state.revision) == ("ID-nats-0", "nats-0", "r2")
    assert reload.server_state(varz_reply("nats-1")).revision == ""  # no metadata: never revised
    assert reload.server_state({"data": {}}) is None
    assert reload.server_state({"server": {"name": "x"}}) is None
    other_key = reload.server_state(varz_reply("nats-0", "r2"), key="example.com/rev")
    assert other_key.revision == ""


def test_stale_servers_are_those_not_at_the_revision_by_name() -> None:
    seen = states(varz_reply("nats-2", "r1"), varz_reply("nats-0", "r2"), varz_reply("nats-1"))
    assert [s.name for s in reload.stale(seen, "r2")] == ["nats-1", "nats-2"]
    assert reload.stale(seen, "r1")[0].name == "nats-0"


def test_complete_only_when_every_expected_server_reports_the_revision() -> None:
    whole = states(*(varz_reply(f"nats-{i}", "r2") for i in range(3)))
    assert reload.reload_problems(whole, "r2", 3, []) == []
    partial = states(varz_reply("nats-0", "r2"), varz_reply("nats-1", "r1"))
    problems = reload.reload_problems(partial, "r2", 3, ["nats://127.0.0.1:4224: connection refused"])
    assert problems == ["nats-1 runs configuration revision r1, not r2",
                        "2 of 3 servers answered over the system account (nats://127.0.0.1:4224: connection refused)"]
    never = states(varz_reply("nats-0"))
    assert reload.reload_problems(never, "r2", 1, []) == ["nats-0 runs configuration revision (none), not r2"]


def test_a_reload_reply_with_an_error_is_the_servers_reason() -> None:
    assert reload.reload_error({"server": {"name": "nats-0"}, "data": {}}) == ""
    refused = {"error": {"code": 500, "description": "config reload not supported for cluster port: old=6222, new=6223"}}
    assert reload.reload_error(refused) == "config reload not supported for cluster port: old=6222, new=6223"
    assert reload.reload_error({"error": "bad"}) == "bad"
