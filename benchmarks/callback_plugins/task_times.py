# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Benchmark aid: the wall time of each task, slowest first, after the recap.

Enabled only by benchmarks/migrate.sh and scale.sh (ANSIBLE_CALLBACK_PLUGINS + ANSIBLE_CALLBACKS_ENABLED).
TAPIO_TASK_TIMES_TOP sets how many tasks are listed (default 25).
"""
from __future__ import annotations

import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: task_times
type: aggregate
short_description: Wall time per task, slowest first
description: Prints each task's wall time (all hosts and loop items together) after the play recap.
requirements: [enable in ANSIBLE_CALLBACKS_ENABLED]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.times: list[tuple[str, float]] = []
        self.current: tuple[str, float] | None = None

    def _close(self) -> None:
        if self.current:
            name, started = self.current
            self.times.append((name, time.monotonic() - started))
            self.current = None

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._close()
        self.current = (task.get_name(), time.monotonic())

    v2_playbook_on_handler_task_start = v2_playbook_on_task_start  # type: ignore[assignment]

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._close()
        total = sum(seconds for _, seconds in self.times)
        self._display.display(f"TASK TIMES: {len(self.times)} tasks, {total:.1f} s in tasks")
        top = int(os.environ.get("TAPIO_TASK_TIMES_TOP") or 25)
        for name, seconds in sorted(self.times, key=lambda t: -t[1])[:top]:
            self._display.display(f"  {seconds:7.2f} s  {name}")
