# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Reach a pod's port through the Kubernetes API server (a port-forward), for clients that
only know ``host:port``.

``open_pod_forward()`` resolves the pod (by name, or the first ready pod behind a label
selector or a Service's selector), listens on 127.0.0.1 on an ephemeral port, and for every
connection accepted there opens one port-forward to the pod through the API server
(``kubernetes.stream.portforward``) and copies bytes both ways. nats-py then connects to
``nats://127.0.0.1:<local_port>``. Leaving the ``with`` block closes the listener, every
bridged connection and its port-forward.

With a ``statefulset`` the forward goes only to pods that StatefulSet (its name and uid)
controls, and on the client port each new connection's first line, the NATS server's INFO,
must carry the pod's name as its ``server_name`` before any byte of the client (its CONNECT,
with the credentials) is passed on; otherwise the connection is closed and the refusal kept
in ``errors``.

The bridge is plain threads and sockets, so it does not care which event loop the client
runs in. Errors the API server or the kubelet sends on a forward's error channel (no such
port, pod gone) are kept in ``PortForwarder.errors`` so the caller can name the cause.
"""
from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ansible.module_utils.tapio_kube import KubeError, load_api_client

KUBERNETES_IMPORT_ERROR: Optional[str] = None
try:
    from kubernetes import client as kube_client
    from kubernetes.client.rest import ApiException
    from kubernetes.stream.stream import _websocket_request as kube_websocket_request
    from kubernetes.stream import ws_client as kube_ws
except ImportError:  # pragma: no cover - exercised only without the kubernetes library
    KUBERNETES_IMPORT_ERROR = traceback.format_exc()

    class ApiException(Exception):  # type: ignore[no-redef]
        """Stand-in so the except clauses below stay valid without the library."""

KUBERNETES_REQUIREMENT = "kubernetes>=24.2.0"
BUFFER = 256 * 1024


class KubeForwardError(Exception):
    """The port-forward cannot be set up; the message names the pod/namespace and the cause."""


# The option's argument spec is tapio_nats.kube_forward_argument_spec(): keys kubeconfig,
# context, namespace, pod | selector | service, port.


@dataclass(frozen=True)
class ForwardTarget:
    """Where to forward to: exactly one of pod, selector or service, in namespace."""

    namespace: str
    port: int
    pod: Optional[str] = None
    selector: Optional[str] = None
    service: Optional[str] = None
    # When set, only this StatefulSet's pods are forwarded to, and a client port's NATS
    # server must name itself after its pod before the client sends anything.
    statefulset: Optional[str] = None

    def describe(self) -> str:
        if self.pod:
            return f"pod {self.namespace}/{self.pod}"
        if self.service:
            return f"the pods of service {self.namespace}/{self.service}"
        return f"pods matching '{self.selector}' in namespace {self.namespace}"


def target_from_params(params: dict[str, Any]) -> ForwardTarget:
    """A ForwardTarget from the option's values (checked again here for direct callers)."""
    chosen = [key for key in ("pod", "selector", "service") if params.get(key)]
    if len(chosen) != 1:
        raise KubeForwardError("kube_port_forward needs exactly one of pod, selector or service "
                               f"(got {', '.join(chosen) or 'none'})")
    if not params.get("namespace"):
        raise KubeForwardError("kube_port_forward needs a namespace")
    port = int(params.get("port") or 4222)
    if not 0 < port < 65536:
        raise KubeForwardError(f"kube_port_forward port {port} is not a TCP port")
    return ForwardTarget(namespace=str(params["namespace"]), port=port, pod=params.get("pod"),
                         selector=params.get("selector"), service=params.get("service"),
                         statefulset=params.get("statefulset") or None)


def selector_from_labels(labels: Optional[dict[str, str]]) -> str:
    """A label selector string (``a=b,c=d``) from a Service's ``spec.selector``."""
    return ",".join(f"{key}={value}" for key, value in sorted((labels or {}).items()))


def pod_readiness(pod: dict[str, Any]) -> Optional[str]:
    """None when the pod can take a port-forward (Running, Ready, not terminating), else why not."""
    metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
    if metadata.get("deletionTimestamp") or metadata.get("deletion_timestamp"):
        return "terminating"
    phase = status.get("phase") or "Unknown"
    if phase != "Running":
        return f"phase {phase}"
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    if not ready or str(ready[0].get("status")) != "True":
        return "not Ready"
    return None


def owner_problem(pod: dict[str, Any], statefulset: dict[str, Any]) -> Optional[str]:
    """None when *statefulset* (its name and uid) is the pod's controller, else why it is not
    a pod to send NATS credentials to."""
    metadata = statefulset.get("metadata") or {}
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "StatefulSet" and ref.get("name") == metadata.get("name"):
            return None if ref.get("uid") == metadata.get("uid") else (
                f"its controller is an earlier StatefulSet {metadata.get('name')} (uid {ref.get('uid')})")
    return f"not a pod of StatefulSet {metadata.get('namespace')}/{metadata.get('name')}"


def owned_pods(pods: list[dict[str, Any]], statefulset: Optional[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                                           list[tuple[str, str]]]:
    """The pods *statefulset* owns, and (name, why) for each other one (all owned without one)."""
    if statefulset is None:
        return pods, []
    refused = [(p["metadata"]["name"], problem) for p in pods if (problem := owner_problem(p, statefulset))]
    names = {name for name, _ in refused}
    return [p for p in pods if p["metadata"]["name"] not in names], refused


MAX_GREETING = 64 * 1024


def nats_greeting_problem(greeting: bytes, pod: str) -> Optional[str]:
    """None when *greeting* (the first line a client port sent) is a NATS INFO whose
    server_name is *pod*; else why no credentials go to it."""
    verb, _, body = greeting.split(b"\r\n", 1)[0].partition(b" ")
    if verb.upper() != b"INFO":
        return f"pod {pod} did not greet as a NATS server (no INFO): no credentials sent"
    try:
        info = json.loads(body)
    except ValueError:
        return f"pod {pod} sent an INFO that is not JSON: no credentials sent"
    name = info.get("server_name") if isinstance(info, dict) else None
    if name != pod:
        return f"the NATS server behind pod {pod} names itself {name!r}, not {pod}: no credentials sent"
    return None


def read_greeting(remote: Any, timeout: float) -> bytes:
    """The first line *remote* sends (up to CRLF, at most MAX_GREETING bytes)."""
    remote.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data and len(data) < MAX_GREETING:
            chunk = remote.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        remote.settimeout(None)
    return data


def choose_pod(pods: list[dict[str, Any]], target: ForwardTarget) -> str:
    """The first ready pod by name, so repeated runs pick the same one."""
    named = sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name", ""))
    for pod in named:
        if pod_readiness(pod) is None:
            return pod["metadata"]["name"]
    if not named:
        raise KubeForwardError(f"no pod found for {target.describe()}")
    states = ", ".join(f"{p['metadata']['name']} ({pod_readiness(p)})" for p in named)
    raise KubeForwardError(f"no ready pod for {target.describe()}: {states}")


def describe_api_error(error: BaseException) -> str:
    """One line for an API failure: status and reason, or the connection error."""
    if isinstance(error, ApiException) and getattr(error, "status", 0):
        return f"{error.status} {error.reason}"
    text = str(getattr(error, "reason", "") or error) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def load_core_api(kubeconfig: Optional[str], context: Optional[str]) -> Any:
    """A CoreV1Api from the kubeconfig (its current context unless *context*), or from the
    in-cluster service account; the loading is the engine's (tapio_kube.load_api_client)."""
    if KUBERNETES_IMPORT_ERROR is not None:
        raise KubeForwardError(f"the kubernetes Python library is missing ({KUBERNETES_REQUIREMENT})")
    try:
        return kube_client.CoreV1Api(load_api_client(kubeconfig, context))
    except KubeError as error:
        raise KubeForwardError(str(error)) from None


def _api_failure(error: BaseException, target: ForwardTarget, server: str) -> KubeForwardError:
    """The KubeForwardError for an API failure while looking up *target*'s pods."""
    if isinstance(error, ApiException) and getattr(error, "status", 0) == 404:
        what = (f"pod {target.namespace}/{target.pod}" if target.pod else
                f"service {target.namespace}/{target.service}" if target.service else
                f"namespace {target.namespace}")
        return KubeForwardError(f"{what} not found (Kubernetes API {server})")
    if isinstance(error, ApiException) and getattr(error, "status", 0):
        return KubeForwardError(f"Kubernetes API {server} refused to look up {target.describe()}: "
                                f"{describe_api_error(error)}")
    # urllib3 MaxRetryError, connection refused, TLS failures
    return KubeForwardError(f"cannot reach the Kubernetes API {server} to look up {target.describe()}: "
                            f"{describe_api_error(error)}")


def list_pods(api: Any, target: ForwardTarget, timeout: float) -> list[dict[str, Any]]:
    """The pods *target* names (one pod, or every pod behind its selector or Service), as
    plain dicts; a clear KubeForwardError when the API cannot be asked or the object is missing."""
    server = getattr(api.api_client.configuration, "host", "the API server")
    try:
        if target.pod:
            return [api.api_client.sanitize_for_serialization(
                api.read_namespaced_pod(target.pod, target.namespace, _request_timeout=timeout))]
        selector = target.selector
        if target.service:
            service = api.read_namespaced_service(target.service, target.namespace, _request_timeout=timeout)
            selector = selector_from_labels(service.spec.selector)
            if not selector:
                raise KubeForwardError(f"service {target.namespace}/{target.service} has no pod selector")
        pods = api.api_client.sanitize_for_serialization(
            api.list_namespaced_pod(target.namespace, label_selector=selector, _request_timeout=timeout))
        return list(pods.get("items") or [])
    except KubeForwardError:
        raise
    except Exception as error:  # ApiException, urllib3 MaxRetryError, connection refused, TLS
        raise _api_failure(error, target, server) from None


def read_statefulset(api: Any, target: ForwardTarget, timeout: float) -> Optional[dict[str, Any]]:
    """The StatefulSet whose pods alone are forwarded to (None when the target names none)."""
    if not target.statefulset:
        return None
    server = getattr(api.api_client.configuration, "host", "the API server")
    try:
        found = kube_client.AppsV1Api(api.api_client).read_namespaced_stateful_set(
            target.statefulset, target.namespace, _request_timeout=timeout)
    except Exception as error:  # ApiException, urllib3 MaxRetryError, connection refused, TLS
        if isinstance(error, ApiException) and getattr(error, "status", 0) == 404:
            raise KubeForwardError(f"StatefulSet {target.namespace}/{target.statefulset} not found (Kubernetes API "
                                   f"{server}): NATS is reached only through that StatefulSet's pods") from None
        raise _api_failure(error, target, server) from None
    return api.api_client.sanitize_for_serialization(found)


def resolve_pod(api: Any, target: ForwardTarget, timeout: float) -> str:
    """The pod to forward to; a clear KubeForwardError when it does not exist, is not ready, or
    is not one of the target's StatefulSet."""
    pods, refused = owned_pods(list_pods(api, target, timeout), read_statefulset(api, target, timeout))
    if refused and target.pod:
        raise KubeForwardError(f"pod {target.namespace}/{target.pod} is not forwarded to: {refused[0][1]}")
    if target.pod:
        reason = pod_readiness(pods[0])
        if reason:
            raise KubeForwardError(f"pod {target.namespace}/{target.pod} cannot take a port-forward: {reason}")
        return target.pod
    return choose_pod(pods, target)


@dataclass(frozen=True)
class PodSet:
    """Every pod a target names: the ready ones (by name) and why each other one is not."""

    ready: tuple[str, ...]
    not_ready: tuple[tuple[str, str], ...]
    # Pods the selector matches that the target's StatefulSet does not own: never forwarded to.
    refused: tuple[tuple[str, str], ...] = ()

    def problems(self, target: ForwardTarget) -> list[str]:
        """One sentence per pod that cannot take a forward (none ready is one sentence too)."""
        problems = [f"pod {target.namespace}/{name} is not forwarded to: {reason}" for name, reason in self.refused]
        problems += [f"pod {target.namespace}/{name} is not ready for a port-forward ({reason})"
                     for name, reason in self.not_ready]
        if not self.ready and not self.not_ready and not self.refused:
            problems.append(f"no pod found for {target.describe()}")
        return problems


def pod_set(pods: list[dict[str, Any]], statefulset: Optional[dict[str, Any]] = None) -> PodSet:
    """Split *pods* into the ready ones and the others (with the reason), sorted by name; with
    *statefulset*, the pods it does not own are refused whatever their state."""
    owned, refused = owned_pods(sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name", "")), statefulset)
    ready = tuple(p["metadata"]["name"] for p in owned if pod_readiness(p) is None)
    others = tuple((p["metadata"]["name"], str(pod_readiness(p))) for p in owned if pod_readiness(p) is not None)
    return PodSet(ready=ready, not_ready=others, refused=tuple(refused))


# One remote end per accepted connection: a socket to copy bytes to and from, a function
# returning the error the far side reported (None if none), and one closing it.
Remote = tuple[Any, Callable[[], Optional[str]], Callable[[], None]]


class WebSocketPortForward:
    """One port of one pod over the API server's port-forward websocket (v4.channel.k8s.io).

    The kubernetes client's own PortForward relays with select() on the socket while the
    websocket library reads ahead into a buffer of its own: a frame that arrives together with
    the one before it (the kubelet sends its port frames and the server's first bytes in one
    burst) stays in that buffer until the far side sends again. A NATS server's INFO stuck
    there is answered by nothing until the server's auth timeout (measured on the lab's real
    kubelets: 5 connects in 30 failed with 'Authentication Timeout'). Here one thread only
    blocks in the websocket's reader, another only writes, so every frame is handed on as it
    is decoded."""

    DATA, ERROR = 0, 1

    def __init__(self, websocket: Any, port: int) -> None:
        self.websocket = websocket
        self.port = port
        self._local, self._remote = socket.socketpair()
        self._error: list[str] = []
        self._port_frames_seen: set[int] = set()
        for target, name in ((self._read_websocket, "ws-read"), (self._write_websocket, "ws-write")):
            threading.Thread(target=target, name=f"kube-forward-{name}", daemon=True).start()

    def socket(self, _port: int) -> socket.socket:
        """The end the bridge copies to and from."""
        return self._remote

    def error(self, _port: int) -> Optional[str]:
        return "".join(self._error) or None

    def close(self) -> None:
        for step in (lambda: self._local.shutdown(socket.SHUT_RDWR), self._local.close, self.websocket.close):
            try:
                step()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    def _read_websocket(self) -> None:
        try:
            while True:
                opcode, frame = self.websocket.recv_data_frame(True)
                if opcode == kube_ws.ABNF.OPCODE_CLOSE:
                    break
                if opcode != kube_ws.ABNF.OPCODE_BINARY or not frame.data:
                    continue
                channel, payload = frame.data[0], frame.data[1:]
                if channel not in self._port_frames_seen:
                    self._port_frames_seen.add(channel)  # each channel opens with the port number
                    continue
                if channel == self.DATA:
                    self._local.sendall(payload)
                elif channel == self.ERROR:
                    self._error.append(payload.decode(errors="replace"))
        except Exception:  # noqa: BLE001 - the websocket or the bridge ended
            pass
        finally:
            try:
                self._local.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _write_websocket(self) -> None:
        try:
            while True:
                data = self._local.recv(BUFFER)
                if not data:
                    break
                self.websocket.send(bytes([self.DATA]) + data, kube_ws.ABNF.OPCODE_BINARY)
        except Exception:  # noqa: BLE001 - the websocket or the bridge ended
            pass
        finally:
            try:
                self.websocket.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def _websocket_port_forward(configuration: Any, _method: str, url: str, **kwargs: Any) -> WebSocketPortForward:
    """Stands in for kubernetes.stream.ws_client.portforward_call: same URL and headers, the
    relay above. One port per forward (the openers below ask for one)."""
    ports = [int(value) for key, value in kube_ws.parse_qsl(kube_ws.urlparse(url).query) if key == "ports"]
    headers = dict(kwargs.get("headers") or {})
    headers["sec-websocket-protocol"] = kube_ws.V4_CHANNEL_PROTOCOL
    try:
        websocket = kube_ws.create_websocket(configuration, kube_ws.get_websocket_url(url), headers)
    except Exception as error:  # noqa: BLE001 - refused upgrade (403, 404), connection errors
        raise ApiException(status=0, reason=str(error)) from error
    return WebSocketPortForward(websocket, ports[0])


def api_remote_opener(api: Any, namespace: str, pod: str, port: int) -> Callable[[], Remote]:
    """Opens a new port-forward to namespace/pod:port through the API server per call."""
    lock = threading.Lock()
    open_forward = functools.partial(kube_websocket_request, _websocket_port_forward,
                                     {"_preload_content": False})

    def open_remote() -> Remote:
        # The stream helper swaps the ApiClient's call_api while it connects, so two forwards
        # on one client must not open at the same time.
        with lock:
            forward = open_forward(api.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
        return forward.socket(port), lambda: forward.error(port), forward.close

    return open_remote


class PortForwarder:
    """A local listener on 127.0.0.1 whose connections are bridged to a remote opened per
    connection. Use as a context manager; ``local_port`` is set on entry."""

    # How long a NATS server may take to send its INFO through a new forward.
    GREETING_TIMEOUT = 10.0

    def __init__(self, open_remote: Callable[[], Remote], description: str,
                 greeting_check: Optional[Callable[[bytes], Optional[str]]] = None) -> None:
        self.open_remote = open_remote
        self.description = description
        # With a check, the far side's first line is judged before any byte of the client
        # (its CONNECT, with the credentials) goes to it.
        self.greeting_check = greeting_check
        self.errors: list[str] = []
        self.connections = 0
        self.local_port = 0
        self._listener: Optional[socket.socket] = None
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: set[Any] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> "PortForwarder":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self._listener = listener
        self.local_port = listener.getsockname()[1]
        self._start(self._accept_loop, "accept")
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def _start(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"kube-forward-{name}", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # listener closed
            if self._closed.is_set():
                conn.close()
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            self._start(self._bridge, f"conn-{number}", conn)

    def _record(self, error: str) -> None:
        with self._lock:
            self.errors.append(f"port-forward to {self.description}: {error.strip()}")

    def _bridge(self, conn: socket.socket) -> None:
        try:
            remote, error_of, close_remote = self.open_remote()
        except Exception as error:  # ApiException (403, 404, upgrade refused), connection errors
            self._record(describe_api_error(error))
            conn.close()
            return
        with self._lock:
            self._sockets.update((conn, remote))
        if self._closed.is_set():  # close() ran while this forward was opening
            self._shut(conn)
            self._shut(remote)
        if self._greeted(conn, remote):
            self._relay(conn, remote)
        else:
            self._shut(conn)
            self._shut(remote)
        try:
            close_remote()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
        error = error_of()
        if error:
            self._record(error)
        with self._lock:
            self._sockets.discard(conn)
            self._sockets.discard(remote)

    def _greeted(self, conn: socket.socket, remote: Any) -> bool:
        """True when there is no greeting check, or the far side's first line passes it (that
        line is then handed to the client); a refused one is recorded."""
        if self.greeting_check is None:
            return True
        try:
            greeting = read_greeting(remote, self.GREETING_TIMEOUT)
        except OSError:
            greeting = b""
        problem = self.greeting_check(greeting)
        if problem:
            self._record(problem)
            return False
        try:
            conn.sendall(greeting)
        except OSError:
            return False
        return True

    def _relay(self, conn: socket.socket, remote: Any) -> None:
        # One thread per direction, so a side that is slow to read never blocks the other.
        upstream = threading.Thread(target=self._copy, args=(conn, remote), daemon=True,
                                    name=f"{threading.current_thread().name}-up")
        upstream.start()
        self._copy(remote, conn)
        upstream.join()

    @staticmethod
    def _shut(sock: Any) -> None:
        """Wake any thread blocked on *sock* and close it (close alone wakes nobody)."""
        for step in (lambda: sock.shutdown(socket.SHUT_RDWR), sock.close):
            try:
                step()
            except OSError:
                pass

    def _copy(self, source: Any, sink: Any) -> None:
        """Copy bytes from source to sink until either ends; then end both."""
        try:
            while True:
                data = source.recv(BUFFER)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._shut(source)
            self._shut(sink)

    def settle(self, timeout: float = 2.0) -> None:
        """Wait (up to *timeout*) for bridged connections that are ending, so errors their
        far side reported are in ``errors`` before a caller builds its message."""
        with self._lock:
            bridges = [t for t in self._threads if t.name != "kube-forward-accept"]
        for thread in bridges:
            thread.join(timeout)

    def close(self) -> None:
        """Stop accepting, close every bridged connection and its port-forward."""
        self._closed.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            self._shut(sock)
        for thread in threads:
            thread.join(2.0)


def open_pod_forward(params: dict[str, Any], timeout: float) -> PortForwarder:
    """Resolve the pod from the ``kube_port_forward`` option and return a PortForwarder
    (not yet entered) that forwards to it through the API server."""
    target = target_from_params(params)
    api = load_core_api(params.get("kubeconfig"), params.get("context"))
    pod = resolve_pod(api, target, timeout)
    return PortForwarder(api_remote_opener(api, target.namespace, pod, target.port),
                         f"pod {target.namespace}/{pod} port {target.port}", greeting_check(target, pod, target.port))


def greeting_check(target: ForwardTarget, pod: str, port: int) -> Optional[Callable[[bytes], Optional[str]]]:
    """The check of a forward's first line: on the client port of a StatefulSet's pod, the NATS
    server must name itself after the pod (its server_name); none elsewhere (the monitoring
    port is sent no credentials)."""
    if not target.statefulset or port != target.port:
        return None
    return functools.partial(nats_greeting_problem, pod=pod)


@dataclass(frozen=True)
class PodPort:
    """One forwarded port of one pod and the local listener that reaches it."""

    pod: str
    port: int
    local_port: int

    def url(self, scheme: str) -> str:
        return f"{scheme}://127.0.0.1:{self.local_port}"


class PodForwards:
    """A PortForwarder per ready pod and per port (``all_pods``): every pod of a StatefulSet
    reachable at once, so the client has the whole cluster as its server list and the meta
    leader's monitoring endpoint is always among the URLs. Pods that are not ready are not
    forwarded; ``pods.problems()`` names them. Use as a context manager."""

    def __init__(self, api: Any, target: ForwardTarget, pods: PodSet, ports: tuple[int, ...]) -> None:
        self.target, self.pods, self.ports = target, pods, ports
        self.forwarders: dict[tuple[str, int], PortForwarder] = {
            (name, port): PortForwarder(api_remote_opener(api, target.namespace, name, port),
                                        f"pod {target.namespace}/{name} port {port}", greeting_check(target, name, port))
            for name in pods.ready for port in ports}
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> "PodForwards":
        with contextlib.ExitStack() as stack:
            for forwarder in self.forwarders.values():
                stack.enter_context(forwarder)
            self.stack = stack.pop_all()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stack.close()

    def bound(self, port: int) -> list[PodPort]:
        """The local listeners of *port*, one per ready pod, in pod name order."""
        return [PodPort(name, port, self.forwarders[(name, port)].local_port) for name in self.pods.ready]

    def urls(self, port: int, scheme: str) -> list[str]:
        return [bound.url(scheme) for bound in self.bound(port)]

    def labels(self, port: int, scheme: str) -> dict[str, str]:
        """Local URL -> what it reaches (``tapio/tapio-nats-0:8222``), for messages."""
        return {bound.url(scheme): f"{self.target.namespace}/{bound.pod}:{port}" for bound in self.bound(port)}

    @property
    def errors(self) -> list[str]:
        return [error for forwarder in self.forwarders.values() for error in forwarder.errors]

    def settle(self, timeout: float = 2.0) -> None:
        for forwarder in self.forwarders.values():
            forwarder.settle(timeout)

    @property
    def description(self) -> str:
        return f"{len(self.pods.ready)} pod(s) of {self.target.describe()} ({', '.join(self.pods.ready)})"


def open_pod_forwards(params: dict[str, Any], ports: tuple[int, ...], timeout: float) -> PodForwards:
    """Resolve every pod the ``kube_port_forward`` option names and return PodForwards (not
    yet entered) for *ports* on each ready one; KubeForwardError when none is ready."""
    target = target_from_params(params)
    api = load_core_api(params.get("kubeconfig"), params.get("context"))
    pods = pod_set(list_pods(api, target, timeout), read_statefulset(api, target, timeout))
    if not pods.ready:
        raise KubeForwardError("; ".join(pods.problems(target)))
    return PodForwards(api, target, pods, ports)
