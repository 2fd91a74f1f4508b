"""Pure helpers: pod readiness, env resolution, selectors, NATS URL mapping, config."""
from __future__ import annotations

import base64
import sys

import pytest

from conftest import REPO_ROOT
from module_utils_loader import load_module_utils

sys.path.insert(0, str(REPO_ROOT / "lab" / "simulator"))

from tapio_sim import config  # noqa: E402
from tapio_sim.cli import build_overrides, check, parser  # noqa: E402
from tapio_sim.kube import (  # noqa: E402
    container_env, decoded, pod_ready, pods_of, referenced_secrets, selector_matches)
from tapio_sim.dns import DnsError  # noqa: E402
from tapio_sim.sim import (  # noqa: E402
    cluster_dns_resolver, map_nats_url, nats_ca, nats_credentials, pipeline_wants_nats)
from tapio_sim.tls import tls_context  # noqa: E402

SERVERS = ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]


def pod(name: str = "c-1", ready: bool = True, deleting: bool = False, env: list | None = None) -> dict:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": {"app.kubernetes.io/name": "c"},
                     **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})},
        "spec": {"nodeName": "node-1", "containers": [
            {"name": "sidecar", "env": [{"name": "TAPIO_OUTPUT_MODE", "value": "nats"}]},
            {"name": "collector", "env": env or [],
             "envFrom": [{"configMapRef": {"name": "cm"}}]}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_pod_ready() -> None:
    assert pod_ready(pod())
    assert not pod_ready(pod(ready=False))
    assert not pod_ready(pod(deleting=True))
    pending = pod()
    pending["status"]["phase"] = "Pending"
    assert not pod_ready(pending)


def test_container_env_reads_only_the_named_container() -> None:
    env = container_env(pod(env=[
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]), "collector", {"cm": {"k": "v", "EXTRA": "1"}})
    assert env == {"LOG_LEVEL": "info", "NODE": "node-1", "FROM_CM": "v", "SECRET": "", "k": "v", "EXTRA": "1"}
    assert "TAPIO_OUTPUT_MODE" not in env  # the sidecar's env is not the collector's
    assert container_env(pod(), "missing") is None


def test_selector_matches() -> None:
    labels = {"app": "x", "tier": "a"}
    assert selector_matches({"matchLabels": {"app": "x"}}, labels)
    assert not selector_matches({"matchLabels": {"app": "y"}}, labels)
    assert selector_matches({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, labels)
    assert not selector_matches(None, labels)


def test_pods_of() -> None:
    views = pods_of({"matchLabels": {"app.kubernetes.io/name": "c"}}, [pod("a"), pod("b", ready=False)],
                    "collector", {})
    assert [(v.name, v.ready, v.node) for v in views] == [("a", True, "node-1"), ("b", False, "node-1")]


def test_map_nats_url() -> None:
    assert map_nats_url("nats://tapio-nats:4222", {}, SERVERS) == SERVERS
    assert map_nats_url("nats://tapio-nats.tapio.svc:4222,nats://x:4222", {}, SERVERS) == SERVERS
    assert map_nats_url("", {}, SERVERS) == SERVERS
    assert map_nats_url("nats://127.0.0.1:4224", {}, SERVERS) == ["nats://127.0.0.1:4224"]
    assert map_nats_url("nats://a:1", {"nats://a:1": "nats://127.0.0.1:9"}, SERVERS) == ["nats://127.0.0.1:9"]


CLUSTER = {("tapio-nats", "tapio"): ["10.96.0.10"], ("nats", "tapio"): ["10.244.0.5", "10.244.1.6"],
           ("tapio-nats.tapio.svc", "tapio"): ["10.96.0.10"]}


def cluster_dns(host: str, namespace: str | None) -> list[str]:
    return CLUSTER.get((host, namespace or ""), [])


def no_dns(host: str, namespace: str | None) -> list[str]:
    raise AssertionError(f"{host} should not have been resolved")


def test_map_nats_url_resolves_as_a_pod_in_its_namespace() -> None:
    assert map_nats_url("nats://tapio-nats:4222", {}, SERVERS, cluster_dns, "tapio") == ["nats://10.96.0.10:4222"]
    # A headless Service: every pod IP; port and scheme kept, port defaults to 4222.
    assert map_nats_url("tls://nats:4443", {}, SERVERS, cluster_dns, "tapio") == [
        "tls://10.244.0.5:4443", "tls://10.244.1.6:4443"]
    assert map_nats_url("nats://tapio-nats", {}, SERVERS, cluster_dns, "tapio") == ["nats://10.96.0.10:4222"]
    assert map_nats_url("tapio-nats:4225", {}, SERVERS, cluster_dns, "tapio") == ["nats://10.96.0.10:4225"]
    # Each part resolved; two names of one Service dial it once; unresolved parts dropped.
    assert map_nats_url("nats://tapio-nats:4222, nats://tapio-nats.tapio.svc:4222,nats://gone:4222", {}, SERVERS,
                        cluster_dns, "tapio") == ["nats://10.96.0.10:4222"]
    assert map_nats_url("nats://10.96.0.99:4222", {}, SERVERS, lambda h, _n: [h], "tapio") == [
        "nats://10.96.0.99:4222"]


def test_map_nats_url_falls_back_to_servers_when_nothing_resolves() -> None:
    # A namespace without the Service (tests' own namespaces): the lab's loopback servers.
    assert map_nats_url("nats://tapio-nats:4222", {}, SERVERS, cluster_dns, "other") == SERVERS
    assert map_nats_url("", {}, SERVERS, cluster_dns, "tapio") == SERVERS
    assert map_nats_url("nats://tapio-nats:port", {}, SERVERS, cluster_dns, "tapio") == SERVERS


def test_map_nats_url_rules_before_dns() -> None:
    url_map = {"nats://tapio-nats:4222": ["nats://127.0.0.1:9", "nats://127.0.0.1:10"]}
    assert map_nats_url("nats://tapio-nats:4222", url_map, SERVERS, no_dns, "tapio") == url_map[
        "nats://tapio-nats:4222"]
    assert map_nats_url("nats://127.0.0.1:4224,nats://localhost:4225", {}, SERVERS, no_dns, "tapio") == [
        "nats://127.0.0.1:4224", "nats://localhost:4225"]


def test_map_nats_url_dns_error_falls_back_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    def failing(host: str, namespace: str | None) -> list[str]:
        raise DnsError("10.99.0.53", 53, f"{host}.{namespace}.svc.cluster.local", "no reply within 1s")

    for _ in range(3):
        assert map_nats_url("nats://broken:4222", {}, SERVERS, failing, "tapio") == SERVERS
    warnings = [r for r in caplog.records if "cluster DNS failed" in r.getMessage()]
    assert len(warnings) == 1 and "broken.tapio.svc.cluster.local" in warnings[0].getMessage()
    # A part that fails does not hide one that resolves.
    assert map_nats_url("nats://broken:4222,nats://tapio-nats:4222", {}, SERVERS,
                        lambda h, n: failing(h, n) if h == "broken" else cluster_dns(h, n), "tapio") == [
        "nats://10.96.0.10:4222"]


def test_cluster_dns_config_flag_and_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    from tapio_sim import sim as sim_mod

    cfg = config.load(None)
    assert cfg["nats"]["cluster_dns"] == {"server": None, "port": 53, "domain": "cluster.local", "timeout": 1.0}
    assert cluster_dns_resolver(cfg["nats"]["cluster_dns"]) is None and cluster_dns_resolver(None) is None
    assert sim_mod.Simulator(cfg).map_nats_url("nats://tapio-nats:4222", "tapio") == cfg["nats"]["servers"]

    for flag, want in (("10.99.0.53", {"server": "10.99.0.53", "port": 53}),
                       ("127.0.0.1:5353", {"server": "127.0.0.1", "port": 5353}),
                       ("[::1]:5353", {"server": "::1", "port": 5353})):
        got = config.load(None, build_overrides(parser().parse_args(["run", "--cluster-dns", flag])))
        assert {k: got["nats"]["cluster_dns"][k] for k in want} == want
        assert got["nats"]["cluster_dns"]["domain"] == "cluster.local"
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--cluster-dns", "10.99.0.53:dns"])
    with pytest.raises(ValueError, match="cluster_dns"):
        config.load(None, {"nats": {"cluster_dns": {"timeout": 0}}})

    asked = []

    def fake_resolve(host: str, namespace: str | None, server: str, port: int, domain: str,
                     timeout: float) -> list[str]:
        asked.append((host, namespace, server, port, domain, timeout))
        return ["10.96.0.10"]

    monkeypatch.setattr(sim_mod, "resolve_for_pod", fake_resolve)
    cfg = config.load(None, {"nats": {"cluster_dns": {"server": "127.0.0.1", "port": 5353, "domain": "lab.local."}}})
    simulator = sim_mod.Simulator(cfg)
    assert simulator.map_nats_url("tls://tapio-nats:4222") == ["tls://10.96.0.10:4222"]
    assert simulator.map_nats_url("tls://tapio-nats:4222", "other") == ["tls://10.96.0.10:4222"]
    # Asked at each call (each connect): a NATS pod with a new IP is found.
    assert asked == [("tapio-nats", "tapio", "127.0.0.1", 5353, "lab.local", 1.0),
                     ("tapio-nats", "other", "127.0.0.1", 5353, "lab.local", 1.0)]


def test_pipeline_mode() -> None:
    pcfg = config.DEFAULTS["pipeline"]
    names = config.DEFAULTS["env"]
    assert pipeline_wants_nats({"TAPIO_OUTPUT_MODE": "nats"}, pcfg, names)
    assert not pipeline_wants_nats({"TAPIO_OUTPUT_MODE": "direct", "NATS_URL": "nats://x:4222"}, pcfg, names)
    assert pipeline_wants_nats({"NATS_URL": "nats://x:4222", "CONSUME_SUBJECTS": "tapio.events.>"}, pcfg, names)
    assert not pipeline_wants_nats({"LOG_LEVEL": "info"}, pcfg, names)
    assert not pipeline_wants_nats({"NATS_URL": "nats://x"}, {**pcfg, "nats_url_means_nats": False}, names)


def test_config_defaults_and_overrides(tmp_path) -> None:  # noqa: ANN001
    cfg = config.load(None)
    assert [c["source"] for c in cfg["collectors"]] == ["k8s-collector", "systemd-collector", "ebpf-collector"]
    assert cfg["rate_per_pod"] * 9 >= 2000
    assert cfg["nats"]["stream"] == "TAPIO_EVENTS" and cfg["nats"]["consumer"] == "tapio-pipeline"
    assert cfg["env"]["mode"] == "TAPIO_OUTPUT_MODE" and cfg["http"] == {"host": "127.0.0.1", "port": 8787}
    path = tmp_path / "sim.yml"
    path.write_text("namespace: other\nnats: {stream: S}\ncollectors:\n  - {name: my-ds, container: my-ebpf}\n")
    args = parser().parse_args(["run", "--port", "9999", "--mode-env", "OUT", "--consumer", "C"])
    cfg = config.load(str(path), build_overrides(args))
    assert cfg["namespace"] == "other" and cfg["http"]["port"] == 9999
    assert cfg["nats"]["stream"] == "S" and cfg["nats"]["consumer"] == "C"
    assert cfg["nats"]["servers"] == config.DEFAULTS["nats"]["servers"]  # deep merge keeps the rest
    assert cfg["env"]["mode"] == "OUT" and cfg["env"]["nats_url"] == "NATS_URL"
    assert cfg["collectors"] == [{"name": "my-ds", "container": "my-ebpf", "kind": "ebpf",
                                  "source": "ebpf-collector", "subject_prefix": None}]
    with pytest.raises(ValueError, match="loopback"):
        config.load(None, {"http": {"host": "0.0.0.0"}})  # noqa: S104 - the point of the test


def test_collector_flag() -> None:
    args = parser().parse_args(["run", "--collector", "ds:cont:systemd:x.y"])
    assert build_overrides(args)["collectors"] == [{"name": "ds", "container": "cont", "kind": "systemd",
                                                    "subject_prefix": "x.y"}]


def test_check_assertions() -> None:
    report = {"sources": {"a": {"lost": 2, "lost_ids_sample": ["x"], "duplicates": 0},
                          "b": {"lost": 0, "lost_ids_sample": [], "duplicates": 3}}}
    assert len(check(report, True, True)) == 2
    assert check(report, False, False) == []
    assert check({"sources": {}}, True, False) == ["no source emitted anything"]


def test_example_config_lists_the_defaults() -> None:
    import yaml

    example = yaml.safe_load((REPO_ROOT / "lab" / "simulator" / "config.example.yml").read_text())
    defaults = {k: v for k, v in config.DEFAULTS.items() if k not in ("kubeconfig", "state_dir")}
    assert example == defaults
    assert config.load(str(REPO_ROOT / "lab" / "simulator" / "config.example.yml")) == config.load(None)


def test_pod_cache_follows_list_then_watch_events() -> None:
    from tapio_sim.kube import PodCache

    cache = PodCache()
    assert not cache.synced.is_set()
    cache.replace([pod("a"), pod("b")], "100")
    assert cache.synced.is_set() and cache.resource_version == "100"
    assert sorted(p["metadata"]["name"] for p in cache.items()) == ["a", "b"]
    modified = pod("a", ready=False)
    modified["metadata"]["resourceVersion"] = "101"
    assert cache.apply({"type": "MODIFIED", "object": modified})
    added = pod("c")
    added["metadata"]["resourceVersion"] = "102"
    assert cache.apply({"type": "ADDED", "object": added})
    assert cache.apply({"type": "DELETED", "object": {**pod("b"), "metadata": {**pod("b")["metadata"],
                                                                                "resourceVersion": "103"}}})
    assert cache.apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "110"}}})
    assert cache.resource_version == "110"
    views = {v.name: v.ready for v in pods_of({"matchLabels": {"app.kubernetes.io/name": "c"}}, cache.items(),
                                             "collector", {})}
    assert views == {"a": False, "c": True}
    # 410 Gone (resourceVersion too old): the watch must list again; nothing changes meanwhile.
    assert not cache.apply({"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}})
    assert "410" in cache.last_error and len(cache.items()) == 2


def test_emit_tick_wakes_less_for_slow_pods() -> None:
    from tapio_sim.collector import TICK, emit_tick

    assert emit_tick(230) == TICK            # the default rate: unchanged
    assert emit_tick(10) == TICK
    assert emit_tick(1.38) == pytest.approx(0.5 / 1.38)  # 500 nodes at ~2,070 events/s in all
    assert emit_tick(0.1) == 1.0
    assert emit_tick(0) == 1.0


def test_reconcile_starts_new_pods_concurrently_and_retries_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from tapio_sim import sim as sim_mod
    from tapio_sim.kube import PodView

    running = {"now": 0, "peak": 0}

    class FakeInstance:
        def __init__(self, _sim: object, col: dict, pod: PodView) -> None:
            self.pod, self.source = pod, col["name"]

        async def start(self) -> None:
            running["now"] += 1
            running["peak"] = max(running["peak"], running["now"])
            await asyncio.sleep(0.01)
            running["now"] -= 1
            if self.pod.name == "bad":
                raise OSError("connection refused")

    monkeypatch.setattr(sim_mod, "CollectorInstance", FakeInstance)
    cfg = config.load(None, {})
    simulator = sim_mod.Simulator(cfg)
    col = cfg["collectors"][0]["name"]
    pods = [PodView(uid=f"u{i}", name=f"p{i}", node="n", ready=True) for i in range(100)]
    pods.append(PodView(uid="ubad", name="bad", node="n", ready=True))
    asyncio.run(simulator.reconcile({col: pods}))
    assert len(simulator.collectors) == 100 and "ubad" not in simulator.collectors
    assert 1 < running["peak"] <= sim_mod.START_CONCURRENCY


def test_container_env_resolves_secret_key_refs_from_decoded_secrets() -> None:
    spec = pod(env=[{"name": "NATS_USER", "valueFrom": {"secretKeyRef": {"name": "own", "key": "NATS_USER"}}},
                    {"name": "NATS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "own", "key": "NATS_PASSWORD"}}},
                    {"name": "OTHER", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "x"}}}])
    secret = {"data": {"NATS_USER": base64.b64encode(b"tapio-k8s-collector").decode(),
                       "NATS_PASSWORD": base64.b64encode(b"pw").decode()}}
    assert referenced_secrets(spec) == {"own", "gone"}
    env = container_env(spec, "collector", {}, {"own": decoded(secret)})
    assert (env["NATS_USER"], env["NATS_PASSWORD"], env["OTHER"]) == ("tapio-k8s-collector", "pw", "")


def test_a_pod_connects_as_the_user_its_env_names_else_as_the_configured_one() -> None:
    names = {"user": "NATS_USER", "password": "NATS_PASSWORD"}
    configured = {"user": "tapio", "password": "admin"}
    assert nats_credentials({"NATS_USER": "tapio-pipeline", "NATS_PASSWORD": "p"}, names, configured) == (
        "tapio-pipeline", "p")
    # A pod whose Secret did not resolve keeps its empty user: the server refuses it, as a
    # real pod would fail to start, rather than it silently getting the admin user.
    assert nats_credentials({"NATS_USER": ""}, names, configured) == ("", "")
    assert nats_credentials({"LOG_LEVEL": "info"}, names, configured) == ("tapio", "admin")


def test_a_pod_trusts_the_ca_its_env_carries_and_nothing_without_it() -> None:
    tapio_tls = load_module_utils("tapio_tls")  # the toolkit's own CA generator
    names = {"ca": "NATS_CA"}
    pem = tapio_tls.cert_pem(tapio_tls.generate_ca("sim-test-ca", 1).cert).decode()
    assert nats_ca({"NATS_CA": pem}, names) == pem
    assert nats_ca({"NATS_CA": ""}, names) is None and nats_ca({}, names) is None and nats_ca({"NATS_CA": pem}, {}) is None
    context = tls_context(pem)
    assert context is not None and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "sim-test-ca"),),)]
    assert tls_context(None) is None
