"""Unit tests for Kube.request's retries (module_utils/tapio_kube.py): which answers and
errors are retried, how often, after which waits, what each retry logs, and what is raised
once they run out. The transport is a scripted stand-in for the kubernetes ApiClient, so
the real request and _send run without a server; the sleep is recorded, never slept."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import pytest
from kubernetes.client.rest import ApiException
from urllib3.exceptions import ProtocolError

from module_utils_loader import load_module_utils

tapio_kube = load_module_utils("tapio_kube")

PATH = "/api/v1/namespaces/tapio/configmaps/tapio-migration-state"
WHERE = "cfg, context ctx"
Outcome = Union[tuple[int, bytes], BaseException]


def status_body(message: str) -> bytes:
    """A non-2xx answer as the API server words it (a Status object)."""
    return json.dumps({"kind": "Status", "status": "Failure", "message": message}).encode()


@dataclass
class Answer:
    status: int
    data: bytes

    def read(self) -> bytes:
        return self.data


@dataclass
class ScriptedApi:
    """The ApiClient's two calls (kubernetes >= 35); each call_api takes the next outcome."""

    outcomes: list[Outcome]
    calls: list[tuple[str, str]] = field(default_factory=list)

    def param_serialize(self, method: str, path: str, query_params: list[tuple[str, str]],
                        header_params: dict[str, str], body: Any, auth_settings: list[str]) -> tuple[Any, ...]:
        return method, f"https://kube.example{path}", header_params, body, []

    def call_api(self, method: str, url: str, header_params: dict[str, str], body: Any, post_params: list[Any],
                 _request_timeout: float) -> Answer:
        self.calls.append((method, url))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return Answer(*outcome)


@dataclass
class Run:
    kube: Any
    api: ScriptedApi
    sleeps: list[float]
    log: list[str]

    @property
    def attempts(self) -> int:
        return len(self.api.calls)


def kube_with(monkeypatch: pytest.MonkeyPatch, outcomes: list[Outcome], retries: int = 4,
              backoff: float = 1.0) -> Run:
    api = ScriptedApi(list(outcomes))
    sleeps: list[float] = []
    log: list[str] = []
    monkeypatch.setattr(tapio_kube, "load_api_client", lambda kubeconfig, context: api)
    kube = tapio_kube.Kube("cfg", "ctx", log=log.append, retries=retries, backoff=backoff, sleep=sleeps.append)
    return Run(kube, api, sleeps, log)


def get(run: Run, not_found_ok: bool = False) -> Optional[dict[str, Any]]:
    return run.kube.request("GET", PATH, not_found_ok=not_found_ok)


def test_a_2xx_answer_is_returned_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    run = kube_with(monkeypatch, [(200, b'{"kind": "ConfigMap"}')])
    assert get(run) == {"kind": "ConfigMap"}
    assert (run.attempts, run.sleeps, run.log) == (1, [], [])


def test_an_empty_2xx_answer_is_an_empty_object(monkeypatch: pytest.MonkeyPatch) -> None:
    run = kube_with(monkeypatch, [(204, b"")])
    assert get(run) == {}


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_each_transient_status_is_retried_once_after_the_first_backoff(
        monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    run = kube_with(monkeypatch, [(status, status_body("try later")), (200, b"{}")], backoff=0.25)
    assert get(run) == {}
    assert run.attempts == 2 and run.sleeps == [0.25]
    assert run.log == [f"retrying GET {PATH} in 0.25s (attempt 1 of 4): {status} try later"]


def test_every_retry_resends_the_same_request(monkeypatch: pytest.MonkeyPatch) -> None:
    run = kube_with(monkeypatch, [(503, b""), (503, b""), (200, b"{}")])
    get(run)
    assert run.api.calls == [("GET", f"https://kube.example{PATH}")] * 3


def test_the_wait_doubles_and_the_last_transient_answer_is_raised_after_the_retries(
        monkeypatch: pytest.MonkeyPatch) -> None:
    run = kube_with(monkeypatch, [(503, status_body("etcdserver: leader changed"))] * 5, retries=4, backoff=0.5)
    with pytest.raises(tapio_kube.KubeError) as raised:
        get(run)
    assert run.attempts == 5 and run.sleeps == [0.5, 1.0, 2.0, 4.0]
    assert str(raised.value) == f"GET {PATH}: 503 etcdserver: leader changed"
    assert raised.value.status == 503
    assert run.log == [f"retrying GET {PATH} in {wait:g}s (attempt {n} of 4): 503 etcdserver: leader changed"
                       for n, wait in ((1, 0.5), (2, 1), (3, 2), (4, 4))]


def test_a_success_within_the_retries_ends_them(monkeypatch: pytest.MonkeyPatch) -> None:
    run = kube_with(monkeypatch, [(429, b""), (500, b""), (502, b""), (504, b""), (200, b'{"ok": true}')])
    assert get(run) == {"ok": True}
    assert run.attempts == 5 and run.sleeps == [1.0, 2.0, 4.0, 8.0]


@pytest.mark.parametrize("error, cause", [
    (ConnectionRefusedError(111, "Connection refused"), "ConnectionRefusedError: [Errno 111] Connection refused"),
    (TimeoutError("timed out"), "TimeoutError: timed out"),
    (ProtocolError("Connection aborted."), "ProtocolError: Connection aborted."),
])
def test_connection_errors_are_retried(monkeypatch: pytest.MonkeyPatch, error: BaseException, cause: str) -> None:
    run = kube_with(monkeypatch, [error, (200, b"{}")])
    assert get(run) == {}
    assert run.attempts == 2 and run.sleeps == [1.0]
    assert run.log == [f"retrying GET {PATH} in 1s (attempt 1 of 4): {cause}"]


def test_an_unreachable_api_is_named_with_its_kubeconfig_once_the_retries_run_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    run = kube_with(monkeypatch, [ConnectionRefusedError(111, "Connection refused")] * 3, retries=2)
    with pytest.raises(tapio_kube.KubeError) as raised:
        get(run)
    assert run.attempts == 3 and run.sleeps == [1.0, 2.0] and len(run.log) == 2
    assert str(raised.value) == (f"GET {PATH}: Kubernetes API not reachable ({WHERE}): "
                                 "[Errno 111] Connection refused")
    assert raised.value.status == 0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_other_statuses_are_never_retried(monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    run = kube_with(monkeypatch, [(status, status_body("refused")), (200, b"{}")])
    with pytest.raises(tapio_kube.KubeError) as raised:
        get(run)
    assert (run.attempts, run.sleeps, run.log) == (1, [], [])
    assert str(raised.value) == f"GET {PATH}: {status} refused" and raised.value.status == status


def test_a_404_is_none_when_not_found_is_ok_without_a_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    run = kube_with(monkeypatch, [(404, status_body("not found")), (200, b"{}")])
    assert get(run, not_found_ok=True) is None
    assert (run.attempts, run.sleeps, run.log) == (1, [], [])


def test_a_404_after_a_transient_answer_is_none_when_not_found_is_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    run = kube_with(monkeypatch, [(503, b""), (404, b"")])
    assert get(run, not_found_ok=True) is None
    assert run.attempts == 2 and run.sleeps == [1.0]


def test_an_api_exception_from_the_client_is_judged_like_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients before kubernetes 35 raise ApiException for a non-2xx answer."""
    transient = ApiException(status=503, reason="Service Unavailable")
    conflict = ApiException(status=409, reason="Conflict")
    conflict.body = status_body("the object has been modified")
    run = kube_with(monkeypatch, [transient, conflict])
    with pytest.raises(tapio_kube.KubeError) as raised:
        get(run)
    assert run.attempts == 2 and run.sleeps == [1.0]
    assert run.log == [f"retrying GET {PATH} in 1s (attempt 1 of 4): 503 Service Unavailable"]
    assert str(raised.value) == f"GET {PATH}: 409 the object has been modified" and raised.value.status == 409


def test_no_retries_means_one_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    run = kube_with(monkeypatch, [(503, b""), (200, b"{}")], retries=0)
    with pytest.raises(tapio_kube.KubeError):
        get(run)
    assert (run.attempts, run.sleeps, run.log) == (1, [], [])


def test_an_unexpected_error_is_not_retried_and_not_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only API answers and connection errors are the server's; anything else is a bug here."""
    run = kube_with(monkeypatch, [ValueError("bad serialisation"), (200, b"{}")])
    with pytest.raises(ValueError, match="bad serialisation"):
        get(run)
    assert (run.attempts, run.sleeps, run.log) == (1, [], [])
