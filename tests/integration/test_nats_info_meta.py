"""nats_info judges the meta peers from the leader's view, whichever server is asked first.

A follower's /jsz lists the other peers as not current; reading it as the truth made the
preflight fail right after a NATS restart (found by CI on a fresh clone).
"""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from conftest import REPO_ROOT, NatsLab
from nats_support import _load_module_code

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
    for util in ("tapio_nats_config", "tapio_nats"):
        _load_module_code(util, "ansible.module_utils", REPO_ROOT / "module_utils" / f"{util}.py")
    return _load_module_code("nats_info", "tapio_test_library", REPO_ROOT / "library" / "nats_info.py").meta_cluster


def test_a_follower_asked_first_does_not_fail_the_cluster(nats_lab: NatsLab, meta_cluster) -> None:  # noqa: ANN001
    leader = leader_index(nats_lab)
    followers_first = [u for i, u in enumerate(nats_lab.monitor_urls) if i != leader] + [nats_lab.monitor_urls[leader]]
    cluster, problems = meta_cluster(followers_first, 5.0)
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


def test_an_unreachable_server_is_named(nats_lab: NatsLab, meta_cluster) -> None:  # noqa: ANN001
    cluster, problems = meta_cluster([*nats_lab.monitor_urls, "http://127.0.0.1:9"], 2.0)
    assert any(p.startswith("http://127.0.0.1:9/healthz answered nothing") for p in problems), problems
    assert cluster["leader_view"] is True
