"""The health algorithm (module_utils/tapio_nats_health.py, used by nats_info and so by every
gate) judges the meta peers from the leader's view, whichever server is asked first, against
the lab's real cluster.

A follower's /jsz lists the other peers as not current; reading it as the truth made the
preflight fail right after a NATS restart (found by CI on a fresh clone). The same answers
as fixtures: tests/unit/test_nats_health.py.
"""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from conftest import NatsLab
from module_utils_loader import load_module_utils
from nats_support import run_direct

pytestmark = pytest.mark.integration


def leader_index(lab: NatsLab) -> int:
    for i, url in enumerate(lab.monitor_urls):
        try:
            with urllib.request.urlopen(f"{url}/jsz?leader-only=true", timeout=5):  # noqa: S310
                return i
        except urllib.error.HTTPError:
            continue
    pytest.fail("no server answers as the JetStream meta leader")


@pytest.fixture(scope="module")
def meta_cluster():  # noqa: ANN201 - the function under test
    return load_module_utils("tapio_nats_health").meta_cluster


def test_a_follower_asked_first_does_not_fail_the_cluster(nats_lab: NatsLab, meta_cluster) -> None:  # noqa: ANN001
    leader = leader_index(nats_lab)
    followers_first = [u for i, u in enumerate(nats_lab.monitor_urls) if i != leader] + [nats_lab.monitor_urls[leader]]
    cluster, problems = meta_cluster(followers_first, 5.0, expected_peers=3)
    assert problems == []
    assert cluster["leader_view"] is True
    assert cluster["cluster_size"] == 3
    assert {p["name"] for p in cluster["peers"]} | {cluster["leader"]} == {"nats-0", "nats-1", "nats-2"}


def test_without_the_leader_peers_are_not_judged(nats_lab: NatsLab, meta_cluster) -> None:  # noqa: ANN001
    leader = leader_index(nats_lab)
    followers = [u for i, u in enumerate(nats_lab.monitor_urls) if i != leader]
    cluster, problems = meta_cluster(followers, 5.0)
    assert problems == []
    assert cluster["leader_view"] is False
    assert "peers not judged" in cluster["note"]
    # The nats_cluster gate (expected_peers) needs the leader's view: without it, it fails.
    _, problems = meta_cluster(followers, 5.0, expected_peers=3)
    assert problems == [f"meta leader {cluster['leader']} is not among monitor_urls, so nobody can tell "
                        "whether its 2 peers are current"]


def test_a_cluster_smaller_than_expected_is_named(nats_lab: NatsLab, meta_cluster) -> None:  # noqa: ANN001
    _, problems = meta_cluster(nats_lab.monitor_urls, 5.0, expected_peers=5)
    assert len(problems) == 1 and problems[0].endswith("sees cluster_size 3 and 2 other peer(s); expected 5 peers")


def test_an_unreachable_server_is_named(nats_lab: NatsLab, meta_cluster) -> None:  # noqa: ANN001
    cluster, problems = meta_cluster([*nats_lab.monitor_urls, "http://127.0.0.1:9"], 2.0)
    assert problems == [f"1 of {len(nats_lab.monitor_urls) + 1} servers are not healthy: http://127.0.0.1:9/healthz "
                        "answered nothing (<urlopen error [Errno 111] Connection refused>)"], problems
    assert cluster["leader_view"] is True


def test_monitor_only_waits_without_a_client_connection(nats_lab: NatsLab) -> None:
    # servers points nowhere: with monitor_only nothing dials it.
    info = run_direct("nats_info", {"monitor_only": True, "monitor_urls": nats_lab.monitor_urls, "expected_peers": 3,
                                    "wait": True, "wait_timeout": 30, "servers": ["nats://127.0.0.1:1"]}, auth=False)
    assert info["failed"] is False and info["healthy"] is True, info
    assert "server" not in info and "streams" not in info
    assert info["cluster"]["servers_healthy"] == 3 and info["cluster"]["cluster_size"] == 3
    assert info["wait"]["timed_out"] is False and info["wait"]["progress"][-1]["problems"] == []


def test_wait_fails_at_its_timeout_with_the_progress_it_followed(nats_lab: NatsLab) -> None:
    urls = [*nats_lab.monitor_urls, "http://127.0.0.1:9"]
    info = run_direct("nats_info", {"monitor_only": True, "monitor_urls": urls, "expected_peers": 3,
                                    "wait": True, "wait_timeout": 2, "wait_sleep": 1, "monitor_timeout": 2})
    assert info["failed"] is True and info["healthy"] is False
    assert info["msg"].startswith("NATS not healthy after "), info["msg"]
    assert "http://127.0.0.1:9/healthz answered nothing" in info["msg"]
    assert info["wait"]["timed_out"] is True and info["wait"]["attempts"] >= 2
    assert info["wait"]["progress"][0]["problems"] == info["problems"]


def test_monitor_only_without_urls_is_refused() -> None:
    info = run_direct("nats_info", {"monitor_only": True})
    assert info["failed"] is True and info["msg"].startswith("monitor_only needs monitor_urls")
