"""The collectors' gates, the verify phase and the rollback against a NATS server that accepts
ONLY token authentication (no user/password): the connection given as tapio_nats_token must
reach every NATS call of those phases.

The server is a nats-server of this module's own (token_nats.start_token_server) with the
events stream and the pipeline's durable consumer made up front (the streams phase is not what
this is about). kwok runs no containers, so while the playbooks run, threads play the switched
collectors (a message every 0.2 s on each collector's subjects) and the migrated pipeline
(fetches and acks everything, so the verify phase's canaries get acknowledged). A third thread
records the server's JetStream advisories: every API call names its client, so each phase's
calls can be told apart from the test's own (clients named token-test-*).
"""
from __future__ import annotations

import asyncio
import re
from typing import Any, Iterator

import pytest

from conftest import KubeLab
from migration_lab import COLLECTORS, CONTAINERS, MigrationLab, Run, make_lab
from token_nats import (CONSUMER, STREAM, PipelineStandIn, Publisher, TokenNatsServer, Witness,
                        create_stream_and_consumer, jetstream_state, refuses_without_token, start_token_server)

pytestmark = pytest.mark.integration

MODE_ENV = "TAPIO_OUTPUT_MODE"
GATE_PREFIX = "tapio-migration-gate-"
CANARY_SUFFIX = "verify.canary"
AUTH_ERROR = re.compile(r"authori[sz]ation violation", re.I)
# The lab's collectors with their subject prefixes (inventories/lab: tapio.events.<kind>).
COLLECTOR_VARS = [{"name": name, "container": CONTAINERS[name], "subject_prefix": f"tapio.events.{name.split('-')[1]}"}
                  for name in COLLECTORS]
CANARY = COLLECTORS[0]


@pytest.fixture(scope="module")
def token_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenNatsServer]:
    server = start_token_server(tmp_path_factory.mktemp("token-nats"))
    try:
        refused = asyncio.run(refuses_without_token(server))
        assert AUTH_ERROR.search(refused), f"unexpected answer to a client without the token: {refused}"
        asyncio.run(create_stream_and_consumer(server))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    """One namespace for both tests (creating one takes a while on a loaded machine): the
    negative control runs first (file order), while everything is still pre-migration."""
    yield from make_lab(kube_lab, "token", tmp_path_factory.mktemp("artifacts"))


def token_vars(server: TokenNatsServer, token: str, **extra: Any) -> dict[str, Any]:
    """Extra vars pointing every NATS call at the token-only server. The lab's user and
    password are overridden with empty strings: the token is the only credential."""
    return {"tapio_migration_nats_checks": True,
            "tapio_collectors": COLLECTOR_VARS,
            "tapio_nats_servers": [server.url], "tapio_nats_user": "", "tapio_nats_password": "",
            "tapio_nats_token": token, "tapio_nats_monitor_urls": [],
            "tapio_verify_ledger_url": "", "tapio_timeline_url": "",
            "tapio_verify_replay_subject_suffix": CANARY_SUFFIX,
            # Keep a failing run short (a passing one never waits this long), and poll every
            # second (kwok rolls out at once; the stand-ins publish and ack continuously).
            "tapio_collectors_gate_timeout": 30, "tapio_verify_replay_timeout": 30,
            "tapio_progress_deadline": 60, "tapio_poll_interval": 1,
            **extra}


def modes(lab: MigrationLab) -> dict[str, Any]:
    """Each workload's output mode as the API server has it (None: no switch set)."""
    return {name: lab.env(name).get(MODE_ENV) for name in ("tapio-pipeline", *COLLECTORS)}


def assert_calls_reached_the_server(witness: Witness, mark: int, phase: str, run: Run) -> None:
    """The phase made JetStream API calls on the token-only server (the only server it was
    given), and at least one of them was about the events stream."""
    assert witness.wait_for(lambda: any(STREAM in call for call in witness.api_calls(mark))), \
        f"no JetStream API call on {STREAM} reached the token server during {phase}: " \
        f"{witness.api_calls(mark)}\n{run.explain()}"


def test_without_the_token_the_collectors_phase_fails_and_leaves_them_direct(
        lab: MigrationLab, token_nats: TokenNatsServer) -> None:
    """Negative control: the server really requires the token. The collectors phase without it
    fails on its first NATS call with an authorization error and leaves every collector in
    direct mode (the canary back to its spec). The pipeline is not on NATS yet, so the
    pipeline-first check is switched off to reach the gates."""
    before = {name: lab.daemonset(name) for name in COLLECTORS}
    with Witness(token_nats) as witness:
        mark = witness.mark()
        run = lab.playbook("playbooks/collectors.yml",
                           extra=token_vars(token_nats, "", tapio_collectors_require_pipeline=False))
        assert run.rc != 0, run.explain()
        assert AUTH_ERROR.search(run.stdout + run.stderr), run.explain()
        assert witness.api_calls(mark) == [], "a JetStream API call got through without the token"
    assert witness.error is None, witness.error
    assert all(mode in (None, "direct") for name, mode in modes(lab).items() if name != "tapio-pipeline"), \
        f"{modes(lab)}\n{run.explain()}"
    assert lab.daemonset(CANARY)["spec"] == before[CANARY]["spec"], run.explain()
    for name in COLLECTORS[1:]:
        assert lab.daemonset(name)["spec"] == before[name]["spec"], f"{name} was touched\n{run.explain()}"


def test_gates_verify_and_rollback_use_the_token(lab: MigrationLab, token_nats: TokenNatsServer) -> None:
    extra = token_vars(token_nats, token_nats.token)
    subjects = [f"{c['subject_prefix']}.test" for c in COLLECTOR_VARS]
    with Witness(token_nats) as witness, Publisher(token_nats, subjects) as publisher, \
            PipelineStandIn(token_nats) as pipeline:
        # Pipeline phase: its stream/consumer check reads NATS with the token.
        mark = witness.mark()
        run = lab.playbook("playbooks/pipeline.yml", extra=extra)
        assert run.rc == 0, run.explain()
        assert modes(lab)["tapio-pipeline"] == "nats", run.explain()
        assert_calls_reached_the_server(witness, mark, "the pipeline phase", run)

        # Collectors phase: every gate (gate consumers, subjects, consumer lag, clean-up).
        mark = witness.mark()
        run = lab.playbook("playbooks/collectors.yml", extra=extra)
        assert run.rc == 0, run.explain()
        assert set(modes(lab).values()) == {"nats"}, f"{modes(lab)}\n{run.explain()}"
        assert_calls_reached_the_server(witness, mark, "the collectors phase", run)
        gates = {(action, GATE_PREFIX + name) for name in COLLECTORS for action in ("create", "delete")}
        assert witness.wait_for(lambda: gates <= witness.consumer_actions(mark)), \
            f"gate consumers created/deleted on the token server: {sorted(witness.consumer_actions(mark))}\n" \
            f"{run.explain()}"

        # Verify phase in nats mode: health, consumer lag, canaries acked by the pipeline, replay.
        mark = witness.mark()
        run = lab.playbook("playbooks/verify.yml", extra=extra)
        assert run.rc == 0, run.explain()
        assert_calls_reached_the_server(witness, mark, "the verify phase", run)
        canaries = {f"{c['subject_prefix']}.{CANARY_SUFFIX}" for c in COLLECTOR_VARS}
        assert canaries <= set(pipeline.acked), \
            f"the pipeline stand-in acked no canary on {sorted(canaries - set(pipeline.acked))}\n{run.explain()}"

        # Rollback (switch): collectors back, the drain wait reads NATS, then the pipeline.
        mark = witness.mark()
        run = lab.rollback("switch", extra=extra)
        assert run.rc == 0, run.explain()
        assert set(modes(lab).values()) == {"direct"}, f"{modes(lab)}\n{run.explain()}"
        assert_calls_reached_the_server(witness, mark, "the rollback", run)

        run = lab.playbook("playbooks/verify.yml", extra={**extra, "tapio_verify_mode": "direct"})
        assert run.rc == 0, run.explain()

        state = asyncio.run(jetstream_state(token_nats))
    for stand_in in (witness, publisher, pipeline):
        assert stand_in.error is None, f"{stand_in.name} stand-in failed: {stand_in.error!r}"
        assert stand_in.stopped, f"{stand_in.name} stand-in did not stop"
    assert publisher.published > 0 and sum(pipeline.acked.values()) > 0
    assert [c for c in state["consumers"] if c.startswith(GATE_PREFIX)] == [], state
    assert CONSUMER in state["consumers"], state
    assert state["num_pending"] <= 50, state
