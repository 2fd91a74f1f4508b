"""What the simulator reads from the Kubernetes API: workloads, their pods, pod env.

Lists are read raw (`_preload_content=False`) and parsed as JSON: the client's model
deserialisation costs more CPU than the simulator's event loop can spare at 2,000 events/s.
Pods are listed once and then watched (PodCache, kept by a thread of KubeReader): with 500
nodes the namespace holds 1,500 pods, an 8.9 MB list whose parse held the GIL for about 2 s
of every 0.5 s poll and starved the event loop. The helpers below work on those plain dicts
and are unit-tested.
"""
from __future__ import annotations

import base64
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("tapio_sim.kube")


@dataclass(frozen=True)
class PodView:
    uid: str
    name: str
    node: str
    ready: bool
    env: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


def pod_ready(pod: dict[str, Any]) -> bool:
    """Running, Ready=True, not being deleted (a terminating pod gets no new work)."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str] | None) -> bool:
    """A label selector (matchLabels and matchExpressions) against a pod's labels."""
    if not selector:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def container_env(pod: dict[str, Any], container: str,
                  configmaps: dict[str, dict[str, str]] | None = None,
                  secrets: dict[str, dict[str, str]] | None = None) -> dict[str, str] | None:
    """The named container's environment as the kubelet would build it (literal values,
    envFrom ConfigMaps, valueFrom configMapKeyRef, secretKeyRef (*secrets* holds decoded
    values) and fieldRef spec.nodeName/metadata.name). A reference that does not resolve
    gives "" (a real pod would not start; here its NATS connect is refused, which shows).
    None when the pod has no such container."""
    configmaps = configmaps or {}
    secrets = secrets or {}
    spec = pod.get("spec") or {}
    for cont in spec.get("containers") or []:
        if cont.get("name") != container:
            continue
        env: dict[str, str] = {}
        for source in cont.get("envFrom") or []:
            ref = source.get("configMapRef")
            if ref and ref.get("name") in configmaps:
                prefix = source.get("prefix") or ""
                for key, value in configmaps[ref["name"]].items():
                    env[prefix + key] = value
        for var in cont.get("env") or []:
            name = var.get("name")
            if not name:
                continue
            if "value" in var:
                env[name] = "" if var["value"] is None else str(var["value"])
                continue
            value_from = var.get("valueFrom") or {}
            cm_ref = value_from.get("configMapKeyRef")
            field_ref = value_from.get("fieldRef")
            secret_ref = value_from.get("secretKeyRef")
            if cm_ref and cm_ref.get("key") in configmaps.get(cm_ref.get("name"), {}):
                env[name] = configmaps[cm_ref["name"]][cm_ref["key"]]
            elif secret_ref and secret_ref.get("key") in secrets.get(secret_ref.get("name"), {}):
                env[name] = secrets[secret_ref["name"]][secret_ref["key"]]
            elif field_ref and field_ref.get("fieldPath") == "spec.nodeName":
                env[name] = spec.get("nodeName", "")
            elif field_ref and field_ref.get("fieldPath") == "metadata.name":
                env[name] = pod.get("metadata", {}).get("name", "")
            else:
                env.setdefault(name, "")
        return env
    return None


def referenced_configmaps(pod: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for cont in (pod.get("spec") or {}).get("containers") or []:
        for source in cont.get("envFrom") or []:
            if (source.get("configMapRef") or {}).get("name"):
                names.add(source["configMapRef"]["name"])
        for var in cont.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("configMapKeyRef") or {}
            if ref.get("name"):
                names.add(ref["name"])
    return names


def referenced_secrets(pod: dict[str, Any]) -> set[str]:
    return {ref["name"] for cont in (pod.get("spec") or {}).get("containers") or []
            for var in cont.get("env") or []
            for ref in [((var.get("valueFrom") or {}).get("secretKeyRef") or {})] if ref.get("name")}


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode("utf-8", "replace") for key, value in (secret.get("data") or {}).items()}


def pods_of(selector: dict[str, Any] | None, pods: list[dict[str, Any]], container: str,
            configmaps: dict[str, dict[str, str]],
            secrets: dict[str, dict[str, str]] | None = None) -> list[PodView]:
    views = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if not selector_matches(selector, meta.get("labels")):
            continue
        env = container_env(pod, container, configmaps, secrets)
        if env is None:
            continue
        views.append(PodView(uid=meta.get("uid", meta.get("name", "")), name=meta.get("name", ""),
                             node=(pod.get("spec") or {}).get("nodeName") or "", ready=pod_ready(pod), env=env))
    return views


class PodCache:
    """The pods of one namespace as a list and then a watch left them (plain dicts by uid).

    ``replace`` takes a list's items and resourceVersion; ``apply`` one watch event and
    returns False when the watch must start again from a new list (an ERROR event, such
    as 410 Gone when the resourceVersion is too old)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pods: dict[str, dict[str, Any]] = {}
        self.resource_version = ""
        self.synced = threading.Event()
        self.lists = 0
        self.events = 0
        self.last_error = ""

    @staticmethod
    def _uid(pod: dict[str, Any]) -> str:
        meta = pod.get("metadata") or {}
        return str(meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}")

    def replace(self, items: list[dict[str, Any]], resource_version: str) -> None:
        with self.lock:
            self.pods = {self._uid(p): p for p in items}
            self.resource_version = resource_version
            self.lists += 1
        self.synced.set()

    def apply(self, event: dict[str, Any]) -> bool:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            self.last_error = f"watch error {obj.get('code')}: {obj.get('message') or obj.get('reason')}"
            return False
        version = (obj.get("metadata") or {}).get("resourceVersion")
        with self.lock:
            if kind in ("ADDED", "MODIFIED"):
                self.pods[self._uid(obj)] = obj
            elif kind == "DELETED":
                self.pods.pop(self._uid(obj), None)
            if version:
                self.resource_version = str(version)
            self.events += 1
        return True

    def items(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.pods.values())


_LISTERS = {
    "DaemonSet": "list_namespaced_daemon_set",
    "Deployment": "list_namespaced_deployment",
    "StatefulSet": "list_namespaced_stateful_set",
}


class KubeReader:
    """Synchronous reads (called from a worker thread)."""

    WATCH_SECONDS = 60      # each watch request ends after this; the next resumes from its resourceVersion
    SYNC_TIMEOUT = 30.0     # the first snapshot waits this long for the first pod list

    def __init__(self, kubeconfig: str, context: str | None) -> None:
        from kubernetes import client, config as kconfig  # imported here: unit tests need no client

        # Two clients: the watch holds one connection open, the snapshots use the other.
        api = kconfig.new_client_from_config(kubeconfig, context=context)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.watch_core = client.CoreV1Api(kconfig.new_client_from_config(kubeconfig, context=context))
        self.caches: dict[str, PodCache] = {}
        self._stop = threading.Event()

    def close(self) -> None:
        self._stop.set()

    def pod_cache(self, namespace: str) -> PodCache:
        """The namespace's pod cache; its list-then-watch thread starts on first use."""
        cache = self.caches.get(namespace)
        if cache is None:
            cache = self.caches[namespace] = PodCache()
            threading.Thread(target=self._watch_pods, args=(namespace, cache), daemon=True,
                             name=f"watch-pods-{namespace}").start()
        return cache

    def _watch_pods(self, namespace: str, cache: PodCache) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        while not self._stop.is_set():
            try:
                listed = self._raw(self.watch_core.list_namespaced_pod, namespace)
                cache.replace(listed.get("items") or [], str((listed.get("metadata") or {}).get("resourceVersion") or ""))
                relist = False
                while not relist and not self._stop.is_set():
                    resp = self.watch_core.list_namespaced_pod(
                        namespace, watch=True, resource_version=cache.resource_version, allow_watch_bookmarks=True,
                        timeout_seconds=self.WATCH_SECONDS, _preload_content=False,
                        _request_timeout=(10, self.WATCH_SECONDS + 30))
                    try:
                        for line in iter_resp_lines(resp):
                            if line.strip() and not cache.apply(json.loads(line)):
                                log.info("pod watch in %s: %s; listing again", namespace, cache.last_error)
                                relist = True
                                break
                    finally:
                        resp.close()
                        resp.release_conn()
            except Exception as exc:  # noqa: BLE001 - API hiccup: list again after a pause
                cache.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("pod watch in %s failed (%s); listing again in 1 s", namespace, cache.last_error)
                self._stop.wait(1.0)

    def _referenced(self, lister: Any, namespace: str, pods: list[dict[str, Any]],
                    referenced: Any) -> dict[str, dict[str, Any]]:
        """The objects *lister* lists that some pod references (by *referenced*), by name; one
        list call, none when no pod references any."""
        names: set[str] = set()
        for pod in pods:
            names |= referenced(pod)
        if not names:
            return {}
        return {obj["metadata"]["name"]: obj for obj in self._raw(lister, namespace).get("items", [])
                if obj["metadata"]["name"] in names}

    @staticmethod
    def _raw(method: Any, namespace: str) -> dict[str, Any]:
        resp = method(namespace, _preload_content=False, _request_timeout=10)
        return json.loads(resp.data)

    def snapshot(self, namespace: str, workloads: list[tuple[str, str, str, str]]) -> dict[str, Any]:
        """workloads: (key, kind, name, container). Returns {"pods": {key: [PodView]}, "missing": [...]}"""
        kinds = {kind for _, kind, _, _ in workloads}
        items: dict[tuple[str, str], dict[str, Any]] = {}
        for kind in kinds:
            for obj in self._raw(getattr(self.apps, _LISTERS[kind]), namespace).get("items", []):
                items[(kind, obj["metadata"]["name"])] = obj
        cache = self.pod_cache(namespace)
        if not cache.synced.wait(self.SYNC_TIMEOUT):
            raise TimeoutError(f"no pod list of namespace {namespace} yet ({cache.last_error or 'waiting'})")
        pods = cache.items()
        configmaps = {name: cm.get("data") or {} for name, cm in self._referenced(
            self.core.list_namespaced_config_map, namespace, pods, referenced_configmaps).items()}
        secrets = {name: decoded(secret) for name, secret in self._referenced(
            self.core.list_namespaced_secret, namespace, pods, referenced_secrets).items()}
        result: dict[str, list[PodView]] = {}
        missing = []
        for key, kind, name, container in workloads:
            obj = items.get((kind, name))
            if obj is None:
                missing.append(f"{kind}/{name}")
                result[key] = []
                continue
            result[key] = pods_of((obj.get("spec") or {}).get("selector"), pods, container, configmaps, secrets)
        return {"pods": result, "missing": missing}
