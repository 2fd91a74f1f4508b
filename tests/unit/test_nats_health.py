"""The JetStream health algorithm (module_utils/tapio_nats_health.py) that nats_info and so
every gate uses: servers, the meta cluster from the leader's view only, stream replicas
(replication lag under load is not a failure, offline is), and nats_info's judging (the wait
until healthy is tests/unit/test_tapio_wait.py's).

Answers are the shapes nats-server 2.15 returns on /healthz and /jsz (the lab's cluster is
tests/integration/test_nats_info_meta.py)."""
from __future__ import annotations

import asyncio
import importlib.util
from types import ModuleType
from typing import Any, Optional
from urllib.parse import urlsplit

import pytest

from conftest import REPO_ROOT
from module_utils_loader import load_module_utils

health: ModuleType = load_module_utils("tapio_nats_health")

URLS = ["http://127.0.0.1:8222", "http://127.0.0.1:8223", "http://127.0.0.1:8224"]
NAMES = {URLS[0]: "nats-0", URLS[1]: "nats-1", URLS[2]: "nats-2"}


def peer(name: str, current: bool = True, lag: int = 0, offline: Optional[bool] = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "current": current, "active": 120_000_000, "lag": lag, "peer": name[-1]}
    if offline is not None:
        entry["offline"] = offline
    return entry


def meta(leader: str, peers: list[dict[str, Any]], size: int = 3) -> dict[str, Any]:
    return {"name": "tapio-lab", "leader": leader, "peer": "x", "replicas": peers, "cluster_size": size,
            "pending": 0}


class Cluster:
    """Monitoring answers of a 3-node cluster whose leader is nats-1, recording each GET."""

    def __init__(self, leader_peers: Optional[list[dict[str, Any]]] = None, down: tuple[str, ...] = (),
                 leader: str = "nats-1") -> None:
        self.leader = leader
        others = [n for n in NAMES.values() if n != leader]
        self.leader_peers = leader_peers if leader_peers is not None else [peer(n) for n in others]
        self.down = down
        self.asked: list[str] = []

    def fetch(self, url: str, timeout: float) -> tuple[int, Any]:
        self.asked.append(url)
        parts = urlsplit(url)
        base, path = f"{parts.scheme}://{parts.netloc}", parts.path + (f"?{parts.query}" if parts.query else "")
        if base in self.down:
            return 0, {"error": "<urlopen error [Errno 111] Connection refused>"}
        name = NAMES[base]
        if path.startswith("/healthz"):
            return 200, {"status": "ok"}
        if path == "/jsz?leader-only=true":
            if name != self.leader:
                return 400, {"error": "not leader"}
            return 200, {"server_name": name, "meta_cluster": meta(self.leader, self.leader_peers)}
        # A follower lists every other peer as not current: the reason only the leader is judged.
        others = [n for n in NAMES.values() if n != name]
        return 200, {"server_name": name, "meta_cluster": meta(self.leader, [peer(n, current=False) for n in others])}


# ------------------------------------------------------------------------------ the meta cluster
def test_a_follower_asked_first_does_not_fail_the_cluster() -> None:
    cluster = Cluster()
    result, problems = health.meta_cluster(URLS, 5.0, expected_peers=3, fetch=cluster.fetch)
    assert problems == []
    assert result["leader_view"] is True and result["leader"] == "nats-1" and result["cluster_size"] == 3
    assert {p["name"] for p in result["peers"]} == {"nats-0", "nats-2"}
    assert result["servers_healthy"] == 3
    # One follower's /jsz is enough; nobody is asked again once the leader answered.
    assert cluster.asked.count(f"{URLS[2]}/jsz?leader-only=true") == 0
    assert [u for u in cluster.asked if u.endswith("/jsz")] == [f"{URLS[0]}/jsz"]


def test_without_the_leader_peers_are_not_judged() -> None:
    result, problems = health.meta_cluster([URLS[0], URLS[2]], 5.0, fetch=Cluster().fetch)
    assert problems == []
    assert result["leader_view"] is False
    assert result["note"] == "meta leader nats-1 is not among monitor_urls; peers not judged"


def test_with_expected_peers_the_leaders_view_is_required() -> None:
    _, problems = health.meta_cluster([URLS[0], URLS[2]], 5.0, expected_peers=3, fetch=Cluster().fetch)
    assert problems == ["meta leader nats-1 is not among monitor_urls, so nobody can tell whether its 2 peers "
                        "are current"]


def test_an_unreachable_server_is_named_with_the_reason() -> None:
    result, problems = health.meta_cluster(URLS, 5.0, fetch=Cluster(down=(URLS[2],)).fetch)
    assert problems == [f"1 of 3 servers are not healthy: {URLS[2]}/healthz answered nothing "
                        "(<urlopen error [Errno 111] Connection refused>)"]
    assert result["servers_healthy"] == 2 and result["health"][URLS[2]]["http_status"] == 0


@pytest.mark.parametrize(("peers", "expected", "problems"), [
    ([peer("nats-0"), peer("nats-2", current=False, lag=7)], None, ["meta peer nats-2 is not current (lag 7)"]),
    ([peer("nats-0"), peer("nats-2", offline=True)], None, ["meta peer nats-2 is offline"]),
    ([peer("nats-0")], 3, ["meta leader nats-1 sees cluster_size 3 and 1 other peer(s); expected 3 peers"]),
    ([peer("nats-0"), peer("nats-2")], 5, ["meta leader nats-1 sees cluster_size 3 and 2 other peer(s); expected 5 peers"]),
    ([peer("nats-0"), peer("nats-2", offline=False)], 3, []),
], ids=["lagging", "offline", "peer-missing", "cluster-smaller", "healthy"])
def test_the_leaders_view_judges_every_peer(peers: list, expected: Optional[int], problems: list[str]) -> None:
    assert health.meta_cluster(URLS, 5.0, expected_peers=expected, fetch=Cluster(peers).fetch)[1] == problems


def test_no_leader_and_no_meta_cluster_are_problems() -> None:
    assert health.judge_meta(None, meta("", []))[1] == ["the JetStream meta cluster has no leader"]
    assert health.judge_meta(None, None) == ({}, ["no monitoring endpoint reported a JetStream meta cluster"])


def test_without_jetstream_only_plain_healthz_is_asked() -> None:
    cluster = Cluster()
    result, problems = health.meta_cluster(URLS, 5.0, jetstream=False, fetch=cluster.fetch)
    assert problems == [] and "leader" not in result
    assert cluster.asked == [f"{u}/healthz" for u in URLS]


def test_a_503_healthz_is_an_unhealthy_answer_with_its_error() -> None:
    answer = {"status": "unavailable", "error": "JetStream has not established contact with a meta leader"}
    problem = health.servers_problem({URLS[0]: {"http_status": 503, **answer},
                                      URLS[1]: {"http_status": 200, "status": "ok"}})
    assert problem == (f"1 of 2 servers are not healthy: {URLS[0]}/healthz answered 503 "
                       "(JetStream has not established contact with a meta leader)")


# ------------------------------------------------------------------------------ streams and consumers
def info(*replicas: dict, leader: Optional[str] = "nats-0", num_replicas: int = 3) -> dict:
    return {"config": {"name": "TAPIO_EVENTS", "num_replicas": num_replicas}, "state": {"messages": 3},
            "cluster": {"leader": leader, "replicas": list(replicas)}}


@pytest.mark.parametrize(("replica", "max_lag", "problem"), [
    ({"name": "nats-1", "current": True, "lag": 0}, 0, None),
    ({"name": "nats-1", "current": False, "lag": 1}, 1000, None),
    ({"name": "nats-1", "current": False, "lag": 1}, 0, "replica nats-1 is not current (lag 1 > 0)"),
    ({"name": "nats-1", "current": False, "lag": 5000}, 1000, "replica nats-1 is not current (lag 5000 > 1000)"),
    ({"name": "nats-2", "current": True, "lag": 0, "offline": True}, 1000, "replica nats-2 is offline"),
])
def test_replica_problems(replica: dict, max_lag: int, problem: Optional[str]) -> None:
    report, problems = health.stream_report(info(replica), max_lag)
    if problem is None:
        assert problems == [] and report["replicas_current"] is True
    else:
        assert problems == [f"stream TAPIO_EVENTS: {problem}"] and report["replicas_current"] is False


def test_a_replicated_stream_without_a_leader_is_a_problem() -> None:
    assert health.stream_report(info(leader=None))[1] == ["stream TAPIO_EVENTS has no leader"]
    assert health.stream_report(info(leader=None, num_replicas=1))[1] == []


def test_consumer_report_keeps_what_the_gates_read() -> None:
    report = health.consumer_report({"name": "tapio-pipeline", "num_pending": 4, "num_ack_pending": 1,
                                     "ack_floor": {"stream_seq": 9}, "cluster": {"leader": "nats-2"}, "created": "x"})
    assert report["num_pending"] == 4 and report["ack_floor"] == {"stream_seq": 9}
    assert report["cluster"] == {"leader": "nats-2"} and "created" not in report


# ------------------------------------------------------------------------------ checks
def checks(*problem_lists: list[str]):  # noqa: ANN201 - an async callable
    answers = iter(problem_lists)

    async def check() -> dict[str, Any]:
        problems = next(answers)
        return {"healthy": not problems, "problems": problems}
    return check


# ------------------------------------------------------------------------------ the nats_info module
@pytest.fixture(scope="module")
def nats_info() -> ModuleType:
    """library/nats_info.py with its module_utils, as Ansible ships them together."""
    for util in ("tapio_nats_config", "tapio_nats", "tapio_nats_health"):
        load_module_utils(util)
    spec = importlib.util.spec_from_file_location("tapio_unit_library.nats_info", REPO_ROOT / "library" / "nats_info.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def params(**overrides: Any) -> dict[str, Any]:
    return {"monitor_only": False, "monitor_urls": [], "expected_peers": None, "jetstream": True,
            "wait_timeout": 60.0, "wait_sleep": 2.0, **overrides}


@pytest.mark.parametrize(("overrides", "problem"), [
    ({"monitor_only": True}, "monitor_only needs monitor_urls"),
    ({"expected_peers": 3}, "expected_peers is judged from the meta leader's /jsz"),
    ({"expected_peers": 3, "monitor_urls": URLS, "jetstream": False}, "expected_peers is judged from the meta leader's /jsz"),
    ({"expected_peers": 3, "monitor_urls": URLS, "monitor_only": True}, ""),
    ({}, ""),
])
def test_arguments_that_cannot_be_judged_are_refused(nats_info: ModuleType, overrides: dict, problem: str) -> None:
    assert nats_info.argument_problem(params(**overrides)).startswith(problem)
    assert bool(nats_info.argument_problem(params(**overrides))) is bool(problem)


def test_the_module_uses_the_shared_algorithm(nats_info: ModuleType) -> None:
    assert nats_info.meta_cluster is health.meta_cluster and nats_info.stream_report is health.stream_report


def test_judged_adds_healthy_and_waits_only_when_asked(nats_info: ModuleType) -> None:
    lagging = ["meta peer nats-2 is not current (lag 3)"]
    once = asyncio.run(nats_info.judged(checks(lagging, []), params(), wait=False))
    assert once == {"problems": lagging, "changed": False, "healthy": False}
    waited = asyncio.run(nats_info.judged(checks(lagging, []), params(wait_sleep=0.01), wait=True))
    assert waited["healthy"] is True and waited["wait"]["attempts"] == 2


def test_http_get_reads_a_body_and_an_error_status_without_ssl_work() -> None:
    """The monitoring reads' GET (module_utils/tapio_http.py) against a real local HTTP server:
    200 with its body, 503 as HTTPError carrying its JSON body (what /healthz answers)."""
    import http.server
    import threading
    import urllib.error

    http_get = load_module_utils("tapio_http").http_get

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            status = 503 if self.path.startswith("/healthz") else 200
            body = b'{"status": "unavailable"}' if status == 503 else b'{"server_name": "nats-0"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        response = http_get(f"{base}/varz", 5)
        assert response.getcode() == 200 and response.read() == b'{"server_name": "nats-0"}'
        with pytest.raises(urllib.error.HTTPError) as refused:
            http_get(f"{base}/healthz", 5)
        assert refused.value.code == 503 and refused.value.read() == b'{"status": "unavailable"}'
        assert health.http_json(f"{base}/healthz", 5) == (503, {"status": "unavailable"})
    finally:
        server.shutdown()
