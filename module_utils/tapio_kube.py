# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A small Kubernetes REST client for the migration engine, on the kubernetes library.

It is the same Python client kubernetes.core's modules use, called directly: one process
reads every workload of a phase (k8s_info costs a process and an API discovery per call),
and objects travel as the API server's own JSON (no model classes), so what the engine
compares is exactly what the server stores.

Transient answers are retried, bounded and logged: 429, 500, 502, 503, 504 and connection
errors. A 409 on an update is the caller's to handle (re-read, re-apply).
"""
from __future__ import annotations

import json
import os
import time
import traceback
from typing import Any, Callable, Optional

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.tapio_wait import Retries, retry

KUBERNETES_IMPORT_ERROR: Optional[str] = None
try:
    from kubernetes import client as kube_client
    from kubernetes import config as kube_config
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error
except ImportError:  # pragma: no cover - exercised only without the library
    KUBERNETES_IMPORT_ERROR = traceback.format_exc()
    ApiException = Urllib3Error = Exception  # type: ignore[misc, assignment]

KUBERNETES_REQUIREMENT = "kubernetes>=24.2.0"
# The Kubernetes connection options of the modules that call the API (tapio_migration,
# tapio_apply); documented once in plugins/doc_fragments/tapio_kube.py.
KUBE_CONNECTION_SPEC: dict[str, Any] = {
    "kubeconfig": {"type": "path", "fallback": (env_fallback, ["K8S_AUTH_KUBECONFIG"])},
    "context": {"type": "str", "fallback": (env_fallback, ["K8S_AUTH_CONTEXT"])},
}
TRANSIENT_STATUS = (429, 500, 502, 503, 504)
STRATEGIC_MERGE = "application/strategic-merge-patch+json"

# kind -> (API prefix, plural, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("api/v1", "namespaces", False),
    "Node": ("api/v1", "nodes", False),
    "ConfigMap": ("api/v1", "configmaps", True),
    "Secret": ("api/v1", "secrets", True),
    "Pod": ("api/v1", "pods", True),
    "DaemonSet": ("apis/apps/v1", "daemonsets", True),
    "Deployment": ("apis/apps/v1", "deployments", True),
    "StatefulSet": ("apis/apps/v1", "statefulsets", True),
    "Job": ("apis/batch/v1", "jobs", True),
    "Lease": ("apis/coordination.k8s.io/v1", "leases", True),
    "SelfSubjectAccessReview": ("apis/authorization.k8s.io/v1", "selfsubjectaccessreviews", False),
}


class HttpStatus(Exception):
    """A non-2xx answer (the new ApiClient returns it instead of raising)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.body = status, body.decode(errors="replace") if isinstance(body, bytes) else body


class KubeError(Exception):
    """An API failure worth one sentence: the status, the reason and the object. ``transient``
    when worth another try (TRANSIENT_STATUS, a connection error); ``cause`` as a retry names it."""

    def __init__(self, message: str, status: int = 0, transient: bool = False, cause: str = "") -> None:
        super().__init__(message)
        self.status, self.transient, self.cause = status, transient, cause or message


def api_message(error: BaseException) -> tuple[int, str]:
    """(status, message) of an ApiException, from the server's Status body when it has one."""
    status = int(getattr(error, "status", 0) or 0)
    body = getattr(error, "body", None)
    if body:
        try:
            return status, str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return status, str(body)[:300]
    return status, str(getattr(error, "reason", "") or error) or type(error).__name__


def load_api_client(kubeconfig: Optional[str], context: Optional[str]) -> Any:
    """An ApiClient from the kubeconfig (its current context unless *context*), or from the
    in-cluster service account when there is no kubeconfig and the module runs in a pod."""
    if KUBERNETES_IMPORT_ERROR is not None:
        raise KubeError(f"the kubernetes Python library is missing ({KUBERNETES_REQUIREMENT})")
    configuration = kube_client.Configuration()
    try:
        in_cluster = (not kubeconfig and not os.environ.get("KUBECONFIG") and "KUBERNETES_SERVICE_HOST" in os.environ
                      and not os.path.exists(os.path.expanduser("~/.kube/config")))
        if in_cluster:
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            kube_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except Exception as error:  # ConfigException, a missing or unreadable file, bad YAML
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise KubeError(f"cannot load kubeconfig {where}{' context ' + context if context else ''}: {error}") from None
    return kube_client.ApiClient(configuration)


class Kube:
    """GET/POST/PUT/PATCH/DELETE on the kinds in RESOURCES, raw JSON in and out."""

    def __init__(self, kubeconfig: Optional[str], context: Optional[str], log: Callable[[str], None],
                 retries: int = 4, backoff: float = 1.0, request_timeout: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = load_api_client(kubeconfig, context)
        self.where = f"{kubeconfig or '~/.kube/config'}{', context ' + context if context else ''}"
        self.log, self.retries, self.backoff, self.timeout, self.sleep = log, retries, backoff, request_timeout, sleep

    @staticmethod
    def path(kind: str, namespace: Optional[str] = None, name: Optional[str] = None) -> str:
        try:
            prefix, plural, namespaced = RESOURCES[kind]
        except KeyError:
            raise KubeError(f"kind {kind} is not known to the engine") from None
        path = f"/{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"/{prefix}/{plural}"
        return f"{path}/{name}" if name else path

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                query: Optional[list[tuple[str, str]]] = None, not_found_ok: bool = False) -> Optional[dict[str, Any]]:
        """The server's JSON answer; None for a 404 when *not_found_ok*. Transient answers
        and connection errors are tried again, at most ``retries`` times, each logged."""
        transient = Retries(self.retries, self.backoff)

        def line(error: Exception, retries: Retries, pause: float) -> str:
            cause = error.cause if isinstance(error, KubeError) else str(error)
            return f"retrying {method} {path} in {pause:g}s (attempt {retries.used} of {self.retries}): {cause}"

        return retry(lambda: self._attempt(method, path, body, content_type, query or [], not_found_ok),
                     lambda error: transient if isinstance(error, KubeError) and error.transient else None,
                     line, self.log, self.sleep)

    def _attempt(self, method: str, path: str, body: Any, content_type: str, query: list[tuple[str, str]],
                 not_found_ok: bool) -> Optional[dict[str, Any]]:
        """One request: the answer, None for an accepted 404, else a KubeError."""
        try:
            status, data = self._send(method, path, body, content_type, query)
            if 200 <= status < 300:
                return json.loads(data) if data else {}
            raise HttpStatus(status, data)
        except (ApiException, HttpStatus) as error:
            status, message = api_message(error)
            if status == 404 and not_found_ok:
                return None
            raise KubeError(f"{method} {path}: {status} {message}", status, transient=status in TRANSIENT_STATUS,
                            cause=f"{status} {message}") from None
        except (Urllib3Error, OSError) as error:
            raise KubeError(f"{method} {path}: Kubernetes API not reachable ({self.where}): {error}", transient=True,
                            cause=f"{type(error).__name__}: {error}") from None

    def _send(self, method: str, path: str, body: Any, content_type: str,
              query: list[tuple[str, str]]) -> tuple[int, bytes]:
        """One request; (status, body). The client's generated API classes are not used,
        so objects stay the server's JSON; both generations of ApiClient are handled."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if hasattr(self.api, "param_serialize"):  # kubernetes >= 35 (openapi-generator 7)
            method_, url, headers_, body_, post = self.api.param_serialize(
                method, path, query_params=query, header_params=headers, body=body, auth_settings=["BearerToken"])
            response = self.api.call_api(method_, url, header_params=headers_, body=body_, post_params=post,
                                         _request_timeout=self.timeout)
            return response.status, response.read()
        data = self.api.call_api(path, method, query_params=query, header_params=headers, body=body,
                                 auth_settings=["BearerToken"], _return_http_data_only=False,
                                 _preload_content=False, _request_timeout=self.timeout)
        return data[1], data[0].data

    def get(self, kind: str, namespace: Optional[str], name: str) -> Optional[dict[str, Any]]:
        return self.request("GET", self.path(kind, namespace, name), not_found_ok=True)

    def list(self, kind: str, namespace: Optional[str], selector: str = "") -> list[dict[str, Any]]:
        query = [("labelSelector", selector)] if selector else None
        return (self.request("GET", self.path(kind, namespace), query=query) or {}).get("items") or []

    def create(self, kind: str, namespace: Optional[str], body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", self.path(kind, namespace), body=body) or {}

    def replace(self, kind: str, namespace: Optional[str], name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PUT", self.path(kind, namespace, name), body=body) or {}

    def patch(self, kind: str, namespace: Optional[str], name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", self.path(kind, namespace, name), body=body, content_type=STRATEGIC_MERGE) or {}

    def delete(self, kind: str, namespace: Optional[str], name: str) -> None:
        self.request("DELETE", self.path(kind, namespace, name), body={"propagationPolicy": "Background"},
                     not_found_ok=True)

    def allowed(self, reviews: list[dict[str, Any]]) -> list[bool]:
        """The answer to each SelfSubjectAccessReview (asked, not stored: fine in check mode)."""
        answers = []
        for review in reviews:
            answer = self.create("SelfSubjectAccessReview", None, review)
            answers.append(bool((answer.get("status") or {}).get("allowed")))
        return answers
