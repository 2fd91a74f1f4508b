"""A Kubernetes API holding one Lease, for unit tests of the run's lock: it keeps a
resourceVersion that every write moves, answers a PUT whose resourceVersion is not the
current one with 409 and a PUT of a missing Lease with 404, as the API server does, and
lets a test script what other runs do (``before_each_get``, ``before_each_write``)."""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional

from module_utils_loader import load_module_utils

kube_utils = load_module_utils("tapio_kube")

Lease = dict[str, Any]


def lease_of(holder: str, renew_time: str = "2026-12-02T12:00:00.000000Z", duration: int = 900,
             version: int = 5) -> Lease:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "tapio-nats-migration", "namespace": "tapio", "resourceVersion": str(version)},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": "2026-12-02T11:00:00.000000Z", "renewTime": renew_time}}


class LeaseKube:
    def __init__(self, lease: Optional[Lease] = None, clock: Optional[Callable[[], float]] = None) -> None:
        self.lease = copy.deepcopy(lease)
        self.clock = clock or (lambda: 0.0)
        self.version = int((lease or {}).get("metadata", {}).get("resourceVersion") or 0)
        self.writes: list[tuple[str, float]] = []  # (verb, the clock when written)
        self.gets = 0
        self.before_each_get: Callable[["LeaseKube"], None] = lambda _kube: None
        self.before_each_write: Callable[["LeaseKube"], None] = lambda _kube: None
        self.fail_writes: list[Exception] = []  # raised, first first, by the next writes

    # -- what another run (or a person with kubectl) does ----------------------------------------
    def store(self, lease: Optional[Lease]) -> None:
        """The Lease as another writer leaves it (a new resourceVersion), or deleted (None)."""
        if lease is None:
            self.lease = None
            return
        self.version += 1
        self.lease = copy.deepcopy(lease)
        self.lease["metadata"]["resourceVersion"] = str(self.version)

    def renewed_by_other(self, holder: str, stamp: str) -> None:
        current = copy.deepcopy(self.lease) or lease_of(holder)
        current["spec"].update(holderIdentity=holder, renewTime=stamp)
        self.store(current)

    # -- the API -----------------------------------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str) -> Optional[Lease]:
        self.before_each_get(self)
        self.gets += 1
        return copy.deepcopy(self.lease)

    def _write(self, verb: str) -> None:
        self.before_each_write(self)
        if self.fail_writes:
            raise self.fail_writes.pop(0)
        self.writes.append((verb, self.clock()))

    def create(self, kind: str, namespace: str, body: Lease) -> Lease:
        self._write("create")
        if self.lease is not None:
            raise kube_utils.KubeError("POST leases: 409 AlreadyExists", 409)
        self.store({**copy.deepcopy(body), "metadata": {**body["metadata"], "resourceVersion": ""}})
        return copy.deepcopy(self.lease)

    def replace(self, kind: str, namespace: str, name: str, body: Lease) -> Lease:
        self._write("replace")
        if self.lease is None:
            raise kube_utils.KubeError("PUT lease: 404 NotFound", 404)
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise kube_utils.KubeError("PUT lease: 409 Conflict (the object has been modified)", 409)
        self.store(body)
        return copy.deepcopy(self.lease)

    def path(self, kind: str, namespace: str, name: str) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> None:
        self._write(method)
        assert body["preconditions"]["resourceVersion"] == self.lease["metadata"]["resourceVersion"]
        self.lease = None
