# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The engine's JetStream side: the events stream, the pipeline's durable consumer, the
temporary gate consumers of a collector batch, and the waits on them.

A gate follows progress like a rollout: new messages on a collector's subjects, the
pipeline's consumer keeping up and a drain each fail when their marker has not moved for
their deadline; the stream filling up to ``stream_fill_limit`` fails at once.
"""
from __future__ import annotations

import datetime
from typing import Any, Optional

from ansible.module_utils.tapio_engine_inputs import Target
from ansible.module_utils.tapio_engine_run import EngineError, EnginePart
from ansible.module_utils.tapio_nats import JetStreamApi, JetStreamApiError
from ansible.module_utils.tapio_stream_health import (
    Sample, backlog_of, fullness, fullness_problem, keeps_up, parse_time, sample_of)

StreamRead = tuple[Optional[dict[str, Any]], Optional[dict[str, Any]], Optional[float]]


class Gates(EnginePart):
    """JetStream reads and writes of one phase's run, through its NATS session."""

    # -- reads ----------------------------------------------------------------------------
    def consumer(self, name: str) -> Optional[dict[str, Any]]:
        stream = self.inputs.stream

        async def info(api: JetStreamApi) -> Optional[dict[str, Any]]:
            return await api.consumer_info(stream, name)

        return self.run.nats.call(info, f"consumer {stream}/{name}")

    def stream_info(self) -> Optional[dict[str, Any]]:
        stream = self.inputs.stream

        async def info(api: JetStreamApi) -> Optional[dict[str, Any]]:
            return await api.stream_info(stream)

        return self.run.nats.call(info, f"stream {stream}")

    def stream_exists(self) -> bool:
        return self.stream_info() is not None

    def stream_and_consumer(self) -> StreamRead:
        """The stream, the pipeline's consumer and the age in seconds of the oldest message it
        has not acknowledged (None when it has none, or it cannot be read), in one session call."""
        stream, name = self.inputs.stream, self.inputs.consumer

        async def read(api: JetStreamApi) -> StreamRead:
            info = await api.stream_info(stream)
            consumer = await api.consumer_info(stream, name) if info is not None else None
            if consumer is None or backlog_of(consumer) == 0:
                return info, consumer, None
            first = int((consumer.get("ack_floor") or {}).get("stream_seq") or 0) + 1
            subject = (consumer.get("config") or {}).get("filter_subject") or ">"
            try:
                answer = await api.request(f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": first, "next_by_subj": subject})
            except JetStreamApiError:  # no such message any more: the age is unknown, not an error
                return info, consumer, None
            stored = parse_time(str((answer.get("message") or {}).get("time") or ""))
            age = (datetime.datetime.now(datetime.timezone.utc) - stored).total_seconds() if stored else None
            return info, consumer, age

        return self.run.nats.call(read, f"stream {stream} and consumer {name}")

    def check_fill(self, where: str) -> Optional[dict[str, Any]]:
        """The stream's fullness for the pipeline's backlog; fails at or above the limit, naming
        the stream and its fill level, before the stream discards (or refuses) events."""
        info, consumer, age = self.stream_and_consumer()
        if info is None:
            return None
        fill = fullness(info, consumer, age)
        problem = fullness_problem(fill, self.inputs.stream_fill_limit)
        if problem:
            raise EngineError(f"{where}: {problem}")
        self.run.log(fill["summary"])
        return fill

    def verify_consumer(self) -> dict[str, Any]:
        """Verify's NATS part: the pipeline's consumer exists and keeps up, the stream is not
        filling up; the stream's fullness and the consumer's counters."""
        stream, info, _ = self.stream_and_consumer()
        if stream is None or info is None:
            raise EngineError(f"consumer {self.inputs.consumer} of stream {self.inputs.stream} does not exist")
        if backlog_of(info) > self.inputs.gate.max_pending:
            self.wait_consumer_keeps_up()
        result: dict[str, Any] = {"stream_fill": self.check_fill("verify")}
        info = self.consumer(self.inputs.consumer) or {}
        result["consumer"] = {k: info.get(k) for k in ("num_pending", "num_ack_pending", "num_redelivered")}
        self.run.log(f"consumer {self.inputs.consumer}: {info.get('num_pending')} pending, "
                     f"{info.get('num_ack_pending')} awaiting ack")
        return result

    def snapshot(self) -> dict[str, Any]:
        """The report's NATS counters and the stream's fullness ({} when the stream does not exist)."""
        info, found, age = self.stream_and_consumer()
        if info is None:
            return {}
        consumer = found or {}
        fill = fullness(info, found, age)
        self.run.log(fill["summary"])
        return {"stream": self.inputs.stream, "messages": (info.get("state") or {}).get("messages", 0),
                "consumer": self.inputs.consumer, "num_pending": consumer.get("num_pending"),
                "num_ack_pending": consumer.get("num_ack_pending"), "fill_percent": fill["percent"],
                "fill_limit": fill["limit"], "fill": fill["summary"]}

    # -- the gate consumers ---------------------------------------------------------------
    def create_gate_consumer(self, name: str, subject_prefix: str) -> None:
        stream = self.inputs.stream
        if self.run.check:  # its callers gate only real runs; a consumer is a change all the same
            self.run.log(f"check mode: gate consumer {stream}/{name} not created")
            return
        config = {"durable_name": name, "description": "Temporary gate of the NATS migration; counts the "
                  "collector's new messages", "filter_subject": f"{subject_prefix}.>", "deliver_policy": "new",
                  "ack_policy": "none", "replay_policy": "instant"}

        async def create(api: JetStreamApi) -> None:
            if await api.consumer_info(stream, name) is not None:
                await api.request(f"$JS.API.CONSUMER.DELETE.{stream}.{name}")
            await api.request(f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
                              {"stream_name": stream, "config": config, "action": "create"})

        self.run.nats.call(create, f"gate consumer {name}")

    def delete_consumer(self, name: str) -> None:
        stream = self.inputs.stream
        if self.run.check:
            self.run.log(f"check mode: consumer {stream}/{name} not deleted")
            return

        async def delete(api: JetStreamApi) -> None:
            if await api.consumer_info(stream, name) is not None:
                await api.request(f"$JS.API.CONSUMER.DELETE.{stream}.{name}")

        self.run.nats.call(delete, f"delete consumer {name}")

    def gate_consumer(self, target: Target) -> str:
        return self.inputs.gate.consumer_prefix + target.name

    def gate_pending(self, target: Target) -> bool:
        """A collector already switched whose gate consumer still exists: a run stopped
        (killed, interrupted) between its switch and the end of its gates, or during the
        restore of a failed gate. Its gates must run before it counts as migrated."""
        if not self.inputs.nats_checks:
            return False
        return self.consumer(self.gate_consumer(target)) is not None

    # -- waits ----------------------------------------------------------------------------
    def wait_new_messages(self, gate_consumer: str, target: Target) -> None:
        def poll() -> tuple[bool, Any, str]:
            info = self.consumer(gate_consumer) or {}
            pending = int(info.get("num_pending") or 0)
            return pending > 0, pending, f"{pending} new message(s) on {target.subject_prefix}.>"

        summary = self.run.wait(poll, f"new messages from {target.name}", self.inputs.gate.timeout)
        self.run.log(f"{target.name}: {summary}")

    def wait_new_messages_of(self, targets: list[Target]) -> None:
        """The subjects gate: each collector's gate consumer counts a new message."""
        for target in targets:
            self.wait_new_messages(self.gate_consumer(target), target)

    def wait_keeps_up_then_remove(self, targets: list[Target]) -> None:
        """The consumer lag gate; the collectors' gate consumers go once it has passed."""
        self.wait_consumer_keeps_up()
        for target in targets:
            self.delete_consumer(self.gate_consumer(target))

    def wait_consumer_keeps_up(self) -> None:
        """The pipeline's consumer keeps up (see tapio_stream_health.keeps_up): a small backlog,
        or over gate.window its ack floor moving at the stream's rate with the backlog bounded.
        Progress is the backlog reaching a new low, so one that only grows fails after
        gate.timeout; the stream filling up to stream_fill_limit fails at once."""
        max_pending, window = self.inputs.gate.max_pending, self.inputs.gate.window
        name = self.inputs.consumer
        samples: list[Sample] = []
        lowest: list[int] = []

        def poll() -> tuple[bool, Any, str]:
            info, consumer, age = self.stream_and_consumer()
            if info is None:
                raise EngineError(f"stream {self.inputs.stream} does not exist")
            if consumer is None:
                return False, "missing", f"consumer {name} does not exist"
            problem = fullness_problem(fullness(info, consumer, age), self.inputs.stream_fill_limit)
            if problem:
                raise EngineError(problem)
            samples.append(sample_of(info, consumer, self.run.clock()))
            del samples[:-max(2, int(2 * window / max(self.inputs.poll_interval, 0.1)) + 2)]
            lowest[:] = [min([*lowest, samples[-1].backlog])]
            verdict, why = keeps_up(samples, max_pending, window)
            return bool(verdict), lowest[0], why

        summary = self.run.wait(poll, f"consumer {name} keeping up", self.inputs.gate.timeout)
        self.run.log(f"consumer {name}: {summary}")

    def wait_drained(self) -> None:
        stream, name = self.inputs.stream, self.inputs.consumer
        stream_info = self.stream_info()
        if stream_info is None:
            self.run.log(f"stream {stream} does not exist: nothing to drain")
            return
        problem = missing_consumer_problem(stream, name, stream_info)
        if self.consumer(name) is None:
            if problem:
                raise EngineError(problem)
            self.run.log(f"consumer {name} does not exist and stream {stream} holds no message: nothing to drain")
            return

        def poll() -> tuple[bool, Any, str]:
            info = self.consumer(name)
            if info is None:
                # Deleted while draining: what it had not delivered has no reader now.
                raise EngineError(missing_consumer_problem(stream, name, self.stream_info() or stream_info)
                                  or f"consumer {stream}/{name} was deleted during the drain")
            pending, unacked = int(info.get("num_pending") or 0), int(info.get("num_ack_pending") or 0)
            floor = int((info.get("ack_floor") or {}).get("stream_seq") or 0)
            return (pending == 0 and unacked == 0, (pending, unacked, floor),
                    f"{pending} pending, {unacked} awaiting ack, ack floor {floor}")

        summary = self.run.wait(poll, f"drain of consumer {stream}/{name}", self.inputs.progress_deadline)
        self.run.log(f"consumer {name} drained: {summary}")


def missing_consumer_problem(stream: str, consumer: str, stream_info: dict[str, Any]) -> str:
    """Why the rollback cannot drain through a missing durable consumer ('' when the stream
    holds nothing): nothing would deliver the stream's events to the pipeline any more."""
    state = stream_info.get("state") or {}
    messages = int(state.get("messages") or 0)
    if messages == 0:
        return ""
    return (f"The pipeline's durable consumer {stream}/{consumer} does not exist, so nothing can deliver the "
            f"{messages} message(s) in stream {stream} (sequences {state.get('first_seq', '?')}-"
            f"{state.get('last_seq', '?')}) to the pipeline; the pipeline was not switched back. Recreate the "
            f"consumer (ansible-playbook migrate.yml --tags streams) and run the rollback again, or set "
            f"tapio_rollback_drain=false to switch back without delivering what the stream holds.")
