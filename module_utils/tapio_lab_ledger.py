# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The lab's event ledger judged: the tapio_migration module's ledger phase reads the lab
simulator's ledger (every event its sources emitted, and what reached the pipeline) and
passes only when no event was lost or delivered twice. Lab-only: no production phase uses it."""
from __future__ import annotations

from typing import Any

from ansible.module_utils.tapio_engine_run import EngineError
from ansible.module_utils.tapio_workload import ledger_problems


def ledger_verdict(ledger: dict[str, Any], url: str, settle: int) -> str:
    """The success line for the lab's ledger, or EngineError naming what it shows."""
    problems = ledger_problems(ledger)
    if problems:
        raise EngineError(f"The event ledger at {url} " + (
            "did not settle within " + str(settle) + "s" if problems == ["did not settle"] else "shows: "
            + "; ".join(problems)))
    sources = ledger.get("sources") or {}
    emitted = sum(int(row.get("emitted") or 0) for row in sources.values())
    return (f"0 events lost and 0 delivered twice across {len(sources)} sources ({emitted} emitted), "
            f"per the ledger at {url}")
