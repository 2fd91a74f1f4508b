# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Connection options and a JetStream API client shared by every nats_* module.

Every module composes its argument spec from ``nats_connection_argument_spec()`` and runs
its work through ``run_with_connection()``, which connects once (no reconnect loop), hands
the connection to an async function, and always closes it.

The JetStream API is used through nats-py's request/reply with the server's own JSON, so
configurations stay in wire units (nanoseconds, bytes) from server to comparison; see
tapio_nats_config for the units and comparison rules.

With ``kube_port_forward`` the modules reach NATS through the Kubernetes API server instead
of ``servers``: tapio_kube_forward bridges a local port on 127.0.0.1 to a NATS pod, and the
connection goes to that port only (see ``forwarded_params``).
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import ssl
import sys
import traceback
from contextlib import contextmanager
from typing import Any, Awaitable, Callable, Iterator, Optional
from urllib.parse import urlparse

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

NATS_IMPORT_ERROR: Optional[str] = None
# nats-py imports aiohttp for its WebSocket transport alone (ws:// and wss:// servers), which
# the toolkit does not use (servers are nats:// or tls://, checked in connect_options): hidden
# while nats-py is imported, it is not loaded, 0.1-0.25 s of every run. Other code can still
# import it afterwards.
_HIDE_AIOHTTP = "aiohttp" not in sys.modules
if _HIDE_AIOHTTP:
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` raises ImportError
try:
    import nats
    import nats.errors
except ImportError:  # pragma: no cover - exercised only without nats-py
    NATS_IMPORT_ERROR = traceback.format_exc()
finally:
    if _HIDE_AIOHTTP and "aiohttp" in sys.modules and sys.modules["aiohttp"] is None:
        del sys.modules["aiohttp"]

NATS_REQUIREMENT = "nats-py>=2.7.2"
STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014
NO_SUITABLE_PEERS = 10005


class NatsModuleError(Exception):
    """A failure to report with ``fail_json``; ``result`` holds any partial result."""

    def __init__(self, message: str, result: Optional[dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.result = result or {}


class JetStreamApiError(NatsModuleError):
    """An error answer from the JetStream API."""

    def __init__(self, subject: str, error: dict[str, Any]) -> None:
        self.code = int(error.get("code", 0))
        self.err_code = int(error.get("err_code", 0))
        self.description = str(error.get("description", "unknown error"))
        api = subject.split(".")[3] if subject.count(".") >= 3 else subject
        super().__init__(f"JetStream API {api} failed: {self.description} (code {self.code}, err_code {self.err_code})")


def nats_connection_argument_spec() -> dict[str, Any]:
    """The connection options every nats_* module accepts."""
    return {
        "servers": {"type": "list", "elements": "str", "fallback": (env_fallback, ["NATS_URL"]),
                    "default": ["nats://127.0.0.1:4222"]},
        "user": {"type": "str", "fallback": (env_fallback, ["NATS_USER"])},
        "password": {"type": "str", "no_log": True, "fallback": (env_fallback, ["NATS_PASSWORD"])},
        "token": {"type": "str", "no_log": True, "fallback": (env_fallback, ["NATS_TOKEN"])},
        "creds_file": {"type": "path", "fallback": (env_fallback, ["NATS_CREDS"])},
        "nkey_seed": {"type": "str", "no_log": True},
        "tls_ca_cert": {"type": "path"},
        "tls_client_cert": {"type": "path"},
        "tls_client_key": {"type": "path", "no_log": False},
        "tls_verify": {"type": "bool", "default": True},
        "connect_timeout": {"type": "float", "default": 5.0},
        "api_timeout": {"type": "float", "default": 5.0},
        "domain": {"type": "str", "fallback": (env_fallback, ["NATS_JS_DOMAIN"])},
        "kube_port_forward": kube_forward_argument_spec(),
    }


def kube_forward_argument_spec() -> dict[str, Any]:
    """The ``kube_port_forward`` option; its code lives in tapio_kube_forward, imported
    only when the option is used (so modules without it never need the kubernetes library)."""
    return {
        "type": "dict",
        "options": {
            "kubeconfig": {"type": "path", "fallback": (env_fallback, ["K8S_AUTH_KUBECONFIG"])},
            "context": {"type": "str", "fallback": (env_fallback, ["K8S_AUTH_CONTEXT"])},
            "namespace": {"type": "str", "required": True},
            "pod": {"type": "str"},
            "selector": {"type": "str"},
            "service": {"type": "str"},
            "port": {"type": "int", "default": 4222},
            "all_pods": {"type": "bool", "default": False},
            "monitor_port": {"type": "int"},
            # Only this StatefulSet's pods are forwarded to, and each client port's server
            # must name itself after its pod before credentials go to it.
            "statefulset": {"type": "str"},
        },
        "mutually_exclusive": [["pod", "selector", "service"]],
        "required_one_of": [["pod", "selector", "service"]],
    }


NATS_MUTUALLY_EXCLUSIVE = [["token", "user"], ["token", "creds_file"], ["creds_file", "nkey_seed"]]
NATS_REQUIRED_TOGETHER = [["user", "password"], ["tls_client_cert", "tls_client_key"]]


def nats_module(argument_spec: dict[str, Any], **kwargs: Any) -> AnsibleModule:
    """An AnsibleModule with the connection options added, failing early without nats-py."""
    spec = nats_connection_argument_spec()
    spec.update(argument_spec)
    module = AnsibleModule(
        argument_spec=spec,
        mutually_exclusive=NATS_MUTUALLY_EXCLUSIVE + kwargs.pop("mutually_exclusive", []),
        required_together=NATS_REQUIRED_TOGETHER + kwargs.pop("required_together", []),
        **kwargs,
    )
    if NATS_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib(NATS_REQUIREMENT), exception=NATS_IMPORT_ERROR)
    if module.params.get("kube_port_forward"):
        forward = _kube_forward()
        if forward.KUBERNETES_IMPORT_ERROR is not None:
            module.fail_json(msg=missing_required_lib(forward.KUBERNETES_REQUIREMENT) + " (for kube_port_forward)",
                             exception=forward.KUBERNETES_IMPORT_ERROR)
        problem = kube_forward_problem(module.params["kube_port_forward"])
        if problem:
            module.fail_json(msg=problem)
    return module


def kube_forward_problem(spec: dict[str, Any]) -> str:
    """Why a ``kube_port_forward`` value cannot work ("" when it can)."""
    if spec.get("monitor_port") and not spec.get("all_pods"):
        return ("kube_port_forward.monitor_port needs all_pods: the meta leader's /jsz is only "
                "reachable when every NATS pod is forwarded")
    if spec.get("all_pods") and spec.get("pod"):
        return "kube_port_forward.all_pods forwards every pod behind a selector or service, not one pod"
    for key in ("port", "monitor_port"):
        if spec.get(key) is not None and not 0 < int(spec[key]) < 65536:
            return f"kube_port_forward.{key} {spec[key]} is not a TCP port"
    return ""


def _kube_forward() -> Any:
    """tapio_kube_forward, imported on first use (Ansible still ships it with every module:
    its dependency scan sees imports inside functions)."""
    from ansible.module_utils import tapio_kube_forward

    return tapio_kube_forward


def redact_url(url: str) -> str:
    """A server URL without any user:password part, safe to print."""
    return re.sub(r"//[^@/]*@", "//", url)


def _tls_context(params: dict[str, Any]) -> Optional[ssl.SSLContext]:
    wants_tls = params.get("tls_ca_cert") or params.get("tls_client_cert") or any(
        str(s).startswith("tls://") for s in params["servers"])
    if not wants_tls:
        return None
    context = ssl.create_default_context(cafile=params.get("tls_ca_cert"))
    if params.get("tls_client_cert"):
        context.load_cert_chain(params["tls_client_cert"], params["tls_client_key"])
    if not params.get("tls_verify", True):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connect_options(params: dict[str, Any]) -> dict[str, Any]:
    """nats.connect() keyword arguments for the module's connection parameters.

    Management connections never reconnect (open_connection tries each server once, then
    the module fails with the reasons instead of looping).
    """
    websocket = [redact_url(str(s)) for s in params["servers"] if str(s).lower().startswith(("ws://", "wss://"))]
    if websocket:
        raise NatsModuleError(f"servers {', '.join(websocket)}: WebSocket URLs are not supported, "
                              "use the NATS client port (nats:// or tls://)")
    for option in ("creds_file", "tls_ca_cert", "tls_client_cert", "tls_client_key"):
        path = params.get(option)
        if path and not os.path.isfile(path):
            raise NatsModuleError(f"{option} {path} does not exist or is not a file")
    options: dict[str, Any] = {
        "servers": list(params["servers"]),
        "connect_timeout": params["connect_timeout"],
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.1,
        "name": "tapio-ansible",
    }
    if params.get("user"):
        options["user"], options["password"] = params["user"], params.get("password")
        # The toolkit's replies (JetStream API answers, pulled messages) on an inbox of its own,
        # as each workload has (plugins/filter/tapio_nats_users.py): no other user may read it.
        options["inbox_prefix"] = "_INBOX_" + re.sub(r"[^A-Za-z0-9_-]", "_", str(params["user"]))
    if params.get("token"):
        options["token"] = params["token"]
    if params.get("creds_file"):
        options["user_credentials"] = params["creds_file"]
    if params.get("nkey_seed"):
        options["nkeys_seed_str"] = params["nkey_seed"]
    context = _tls_context(params)
    if context is not None:
        options["tls"] = context
        if params.get("tls_hostname"):
            options["tls_hostname"] = params["tls_hostname"]
    return options


def forwarded_params(params: dict[str, Any], local_port: int | list[int]) -> dict[str, Any]:
    """The connection parameters for port-forwards listening on 127.0.0.1:*local_port* (one
    port, or one per pod with ``all_pods``).

    ``servers`` becomes those URLs (``tls://`` when the configured servers use TLS, and
    the certificate is then checked against the first configured server's host name).
    nats-py adds the servers a cluster announces in INFO (``connect_urls``) to its pool and
    has no option to stop that; they are only ever dialled on a reconnect, and management
    connections never reconnect (``allow_reconnect`` off), so the forwarded connection
    cannot move to another address. ``open_connection`` also checks the connected URL.
    """
    ports = [local_port] if isinstance(local_port, int) else list(local_port)
    servers = [str(s) for s in params["servers"] or []]
    scheme = "tls" if any(s.startswith("tls://") for s in servers) else "nats"
    forwarded = dict(params, servers=[f"{scheme}://127.0.0.1:{port}" for port in ports], forward_local_ports=ports)
    if servers:
        hostname = urlparse(servers[0] if "://" in servers[0] else f"nats://{servers[0]}").hostname
        if hostname:
            forwarded["tls_hostname"] = hostname
    return forwarded


def describe_connect_error(servers: list[str], error: BaseException, seen: list[BaseException]) -> str:
    """One sentence naming the servers tried and why connecting failed."""
    tried = ", ".join(redact_url(s) for s in servers)
    causes = [error] + [e for e in seen if e is not error]
    text = " ".join(str(c) or type(c).__name__ for c in causes)
    if "authorization violation" in text.lower():
        return (f"cannot connect to NATS ({tried}): authorization violation - the server rejected the "
                "credentials (check user/password, token, creds_file or nkey_seed)")
    reasons = sorted({f"{type(c).__name__}: {c}" if str(c) else type(c).__name__ for c in causes
                      if not isinstance(c, nats.errors.NoServersError)})
    return f"cannot connect to NATS servers tried ({tried}): {'; '.join(reasons) or 'no servers available'}"


async def open_connection(params: dict[str, Any], on_closed: Optional[Callable[[], Awaitable[None]]] = None) -> Any:
    """Connect or raise NatsModuleError with a clear reason (never loops). *on_closed* is
    awaited when the connection closes (nats-py's closed_cb), a lost server included."""
    options = connect_options(params)
    seen: list[BaseException] = []

    async def record(error: BaseException) -> None:
        seen.append(error)

    async def ignore() -> None:
        return None

    # nats-py gives up after its first server when reconnecting is off: one server down (a
    # lost node, a port-forward to a pod whose kubelet is gone) would fail the whole call. So
    # each server is tried on its own, in random order (the load spread nats-py's own shuffle
    # gives), until one answers.
    servers = list(options["servers"])
    random.shuffle(servers)
    nc, last_error = None, None
    for server in servers:
        try:
            nc = await asyncio.wait_for(
                nats.connect(error_cb=record, disconnected_cb=ignore, closed_cb=on_closed or ignore,
                             **dict(options, servers=[server])),
                timeout=params["connect_timeout"] * 2 + 1,
            )
            break
        except (nats.errors.Error, OSError, asyncio.TimeoutError, ssl.SSLError) as error:
            last_error = error
            if not isinstance(error, asyncio.TimeoutError):
                seen.append(error)
        except Exception as error:  # nkeys/creds parsing and other client-side failures
            tried = ", ".join(redact_url(s) for s in options["servers"])
            raise NatsModuleError(f"cannot connect to NATS ({tried}): {type(error).__name__}: {error} "
                                  "(check creds_file / nkey_seed)") from None
    if nc is None:
        assert last_error is not None
        raise NatsModuleError(describe_connect_error(options["servers"], last_error, seen))
    forwarded = params.get("forward_local_ports") or []
    connected = getattr(nc, "connected_url", None)
    if forwarded and (connected is None or connected.hostname != "127.0.0.1" or connected.port not in forwarded):
        await nc.close()
        listeners = ", ".join(f"127.0.0.1:{port}" for port in forwarded)
        raise NatsModuleError(f"connected to {redact_url(connected.geturl()) if connected else 'nothing'} "
                              f"instead of the port-forward on {listeners}")
    return nc


class JetStreamApi:
    """The JetStream API calls the modules need, returning the server's JSON. With a
    *domain* every call goes to ``$JS.<domain>.API`` (a hub or leaf node's JetStream)."""

    def __init__(self, nc: Any, timeout: float, domain: Optional[str] = None) -> None:
        self.nc = nc
        self.timeout = timeout
        self.domain = domain or None

    def subject(self, subject: str) -> str:
        """*subject* (written as ``$JS.API.<...>``) in the connection's domain."""
        if self.domain and subject.startswith("$JS.API."):
            return f"$JS.{self.domain}.API.{subject[len('$JS.API.'):]}"
        return subject

    async def request(self, subject: str, payload: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        subject = self.subject(subject)
        data = json.dumps(payload).encode() if payload is not None else b""
        try:
            reply = await self.nc.request(subject, data, timeout=self.timeout)
        except nats.errors.NoRespondersError:
            where = f"JetStream domain {self.domain!r}" if self.domain else "JetStream"
            raise NatsModuleError(f"no responders for {subject}: {where} is not enabled for this account/server"
                                  + (" (check the domain name)" if self.domain else "")) from None
        except nats.errors.TimeoutError:
            raise NatsModuleError(f"JetStream API {subject} timed out after {self.timeout}s") from None
        answer = json.loads(reply.data or b"{}")
        if "error" in answer:
            error = JetStreamApiError(subject, answer["error"])
            if error.err_code == NO_SUITABLE_PEERS:
                raise NatsModuleError(f"{error}: the cluster has fewer JetStream peers than the requested replicas "
                                      "(or none with the requested placement)") from None
            raise error
        return answer

    def server_version(self) -> str:
        """The connected server's version as its INFO announces it ("" when unknown)."""
        info = getattr(self.nc, "_server_info", {}) or {}
        return str(info.get("version") or "")

    async def account_info(self) -> dict[str, Any]:
        return await self.request("$JS.API.INFO")

    async def request_or_none(self, subject: str, not_found: int) -> Optional[dict[str, Any]]:
        """The answer, or None when the server says the object does not exist."""
        try:
            return await self.request(subject)
        except JetStreamApiError as error:
            if error.err_code == not_found:
                return None
            raise

    async def stream_info(self, name: str) -> Optional[dict[str, Any]]:
        _check_name("stream", name)
        return await self.request_or_none(f"$JS.API.STREAM.INFO.{name}", STREAM_NOT_FOUND)

    async def paged(self, subject: str, key: str) -> list[dict[str, Any]]:
        """All items of a listing API, which pages by offset."""
        found: list[dict[str, Any]] = []
        while True:
            page = await self.request(subject, {"offset": len(found)})
            batch = page.get(key) or []
            found.extend(batch)
            if not batch or len(found) >= int(page.get("total", 0)):
                return found

    async def streams(self) -> list[dict[str, Any]]:
        """Every stream's info in the account."""
        return await self.paged("$JS.API.STREAM.LIST", "streams")

    async def consumer_info(self, stream: str, name: str) -> Optional[dict[str, Any]]:
        _check_name("stream", stream)
        _check_name("consumer", name)
        return await self.request_or_none(f"$JS.API.CONSUMER.INFO.{stream}.{name}", CONSUMER_NOT_FOUND)

    async def consumers(self, stream: str) -> list[dict[str, Any]]:
        """Every consumer's info on *stream*."""
        return await self.paged(f"$JS.API.CONSUMER.LIST.{stream}", "consumers")


def _check_name(kind: str, name: str) -> None:
    """A name that cannot be one goes nowhere near an API subject: the request would miss the
    server's subscription and read as "JetStream is not enabled"."""
    if not name or any(c in name for c in " \t\r\n\f.*>") or (kind == "consumer" and any(c in name for c in "\\/")):
        raise NatsModuleError(f"{kind} name {name!r} is not valid: a name cannot be empty or contain "
                              "whitespace, '.', '*' or '>'" + (", '\\' or '/'" if kind == "consumer" else "")
                              + ". Nothing was changed.")


def exit_with_result(module: AnsibleModule, result: dict[str, Any]) -> None:
    """exit_json with ``diff`` kept only in diff mode (house rule)."""
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


Handler = Callable[[Any, JetStreamApi], Awaitable[dict[str, Any]]]


def open_forwards(spec: dict[str, Any], timeout: float) -> Any:
    """The forwarder(s) the ``kube_port_forward`` option asks for, not yet entered: one pod's
    client port, or with ``all_pods`` the client port of every ready pod (tapio_kube_forward);
    KubeForwardError when they cannot be set up."""
    utils = _kube_forward()
    if spec.get("all_pods"):
        return utils.open_pod_forwards(spec, ports=(int(spec.get("port") or 4222),), timeout=timeout)
    return utils.open_pod_forward(spec, timeout=timeout)


def local_ports(forwarder: Any, spec: dict[str, Any]) -> list[int]:
    """The local listener port(s) of what ``open_forwards`` returned, once entered."""
    if spec.get("all_pods"):
        return [bound.local_port for bound in forwarder.bound(int(spec.get("port") or 4222))]
    return [forwarder.local_port]


def forward_causes(forwarder: Any) -> str:
    """What the forwards' far ends reported (or a refused server), once they have settled."""
    forwarder.settle()
    return "; ".join(forwarder.errors)


@contextmanager
def nats_endpoint(params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The connection parameters to use: *params* itself, or with ``kube_port_forward`` the
    parameters of the port-forward(s) opened through the Kubernetes API server for the block
    (with ``all_pods`` one per ready NATS pod, all of them the client's server list).

    A connection failure through the forward names the pod and adds what the API server or
    kubelet reported on the forward's error channel (for example kwok's ``no forward found
    for port 4222 in pod "tapio/tapio-nats-0"``)."""
    spec = params.get("kube_port_forward")
    if not spec:
        yield params
        return
    utils = _kube_forward()
    try:
        forwarder = open_forwards(spec, timeout=params["connect_timeout"])
    except utils.KubeForwardError as error:
        raise NatsModuleError(f"kube_port_forward: {error}") from None
    with forwarder:
        try:
            # A caller that connects after the block is entered (the engine's session) reads
            # what the forwards reported (a refused pod or server) through forward_causes.
            yield {**forwarded_params(params, local_ports(forwarder, spec)),
                   "forward_causes": lambda: forward_causes(forwarder)}
        except (NatsModuleError, nats.errors.Error) as error:
            # Not connecting, or the connection dropping mid-run (allow_reconnect is off, so
            # nats-py raises ConnectionClosedError): say which forward and what it reported.
            if isinstance(error, NatsModuleError) and not str(error).startswith("cannot connect"):
                raise
            causes = forward_causes(forwarder)
            text = str(error) if isinstance(error, NatsModuleError) else f"NATS connection failed: {error!r}"
            result = error.result if isinstance(error, NatsModuleError) else {}
            raise NatsModuleError(f"{text} (through a port-forward to {forwarder.description}"
                                  f"{'; ' + causes if causes else ''})", result) from None


def run_with_connection(module: AnsibleModule, handler: Handler) -> dict[str, Any]:
    """Connect, run ``handler(nc, api)``, always close, and turn failures into fail_json."""

    async def runner(params: dict[str, Any]) -> dict[str, Any]:
        nc = await open_connection(params)
        try:
            return await handler(nc, JetStreamApi(nc, params["api_timeout"], params.get("domain")))
        finally:
            try:
                await asyncio.wait_for(nc.close(), timeout=5)
            except (asyncio.TimeoutError, nats.errors.Error, OSError):
                pass

    try:
        with nats_endpoint(module.params) as params:
            return asyncio.run(runner(params))
    except NatsModuleError as error:
        module.fail_json(msg=str(error), **error.result)
    except ValueError as error:  # tapio_nats_config.ConfigError and bad values
        module.fail_json(msg=str(error))
    raise AssertionError("unreachable")  # pragma: no cover
