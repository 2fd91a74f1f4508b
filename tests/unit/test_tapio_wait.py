"""The toolkit's one wait/retry module (module_utils/tapio_wait.py): progress-based waits, time
budgets and bounded retries. Clocks and sleeps are fakes, so nothing here really waits."""
from __future__ import annotations

import asyncio
import itertools
from typing import Any, Callable, Optional

import pytest

from module_utils_loader import load_module_utils
from fake_clock import Clock

wait = load_module_utils("tapio_wait")




# -- progress-based waits -------------------------------------------------------------------
def test_a_wait_that_keeps_progressing_never_times_out() -> None:
    """1,000 pods rolling one every 3 s take 3,000 s: far past any fixed total, never stalled."""
    clock = Clock()
    state = {"updated": 0}

    def poll() -> tuple[bool, int, str]:
        if clock.now >= 3 * (state["updated"] + 1):
            state["updated"] += 1
        return state["updated"] == 1000, state["updated"], f"{state['updated']}/1000"

    waited = wait.wait_for_progress(poll, "rollout", deadline=10, interval=1, clock=clock, sleep=clock.sleep)
    assert waited.summary == "1000/1000" and clock.now >= 3000
    assert waited.seconds == clock.now and len(waited.progress) == 1001  # the first answer and each pod


def test_no_progress_fails_after_the_deadline_naming_the_state_with_what_it_saw() -> None:
    clock = Clock()
    with pytest.raises(wait.Stalled, match=r"^rollout of DaemonSet/x: no progress for 30s \(1/3 updated\)$") as stalled:
        wait.wait_for_progress(lambda: (False, 1, "1/3 updated"), "rollout of DaemonSet/x", deadline=30,
                               interval=2, clock=clock, sleep=clock.sleep)
    assert clock.now == 30 and clock.sleeps == [2] * 15
    assert stalled.value.progress == [{"after_seconds": 0.0, "summary": "1/3 updated"}]


def test_progress_resets_the_deadline_and_each_change_is_recorded_with_its_seconds() -> None:
    clock = Clock()
    answers = iter([(1, "a"), (1, "b"), (1, "c"), (2, "d"), *[(2, "e")] * 10])

    def poll() -> tuple[bool, int, str]:
        marker, summary = next(answers)
        return False, marker, summary

    with pytest.raises(wait.Stalled, match=r"no progress for 10s \(e\)") as stalled:
        wait.wait_for_progress(poll, "w", deadline=10, interval=2, clock=clock, sleep=clock.sleep)
    assert clock.now == 16, "the marker moved at t=6, so the wait failed at t=16, not t=10"
    # A summary that changes while the marker stays put is not progress.
    assert stalled.value.progress == [{"after_seconds": 0.0, "summary": "a"}, {"after_seconds": 6.0, "summary": "d"}]


def test_a_finished_wait_returns_its_summary_seconds_and_progress() -> None:
    clock = Clock(now=100.0)
    answers = iter([(False, 0, "0/2"), (False, 1, "1/2"), (True, 2, "2/2")])
    waited = wait.wait_for_progress(lambda: next(answers), "w", deadline=10, interval=1.5, clock=clock,
                                    sleep=clock.sleep)
    assert waited == wait.Waited("2/2", 3.0, [{"after_seconds": 0.0, "summary": "0/2"},
                                              {"after_seconds": 1.5, "summary": "1/2"},
                                              {"after_seconds": 3.0, "summary": "2/2"}])
    assert clock.sleeps == [1.5, 1.5]


def test_a_first_answer_that_is_done_does_not_sleep() -> None:
    clock = Clock()
    assert wait.wait_for_progress(lambda: (True, None, "ok"), "w", 10, 1, clock, clock.sleep).summary == "ok"
    assert clock.sleeps == []


def test_a_zero_deadline_still_lets_each_change_through() -> None:
    """Only a poll that saw no change can fail the wait, whatever the deadline."""
    clock = Clock()
    answers = iter([(False, 1, "a"), (False, 2, "b"), (False, 2, "b")])
    with pytest.raises(wait.Stalled):
        wait.wait_for_progress(lambda: next(answers), "w", deadline=0, interval=1, clock=clock, sleep=clock.sleep)
    assert clock.now == 2


# -- time budgets ---------------------------------------------------------------------------
def checks(*problem_lists: list[str]) -> Callable[[], Any]:
    answers = iter(problem_lists)

    async def check() -> dict[str, Any]:
        problems = next(answers)
        return {"healthy": not problems, "problems": problems}
    return check


def test_wait_until_healthy_follows_progress_until_healthy() -> None:
    clock = Clock(now=100.0)
    lagging, offline = ["meta peer nats-2 is not current (lag 9)"], ["meta peer nats-2 is offline"]
    result = asyncio.run(wait.wait_until_healthy(checks(offline, offline, lagging, []), 60, 2, clock, clock.pause))
    assert result["healthy"] is True
    assert result["wait"] == {"attempts": 4, "seconds": 6.0, "timed_out": False, "progress": [
        {"after_seconds": 0.0, "problems": offline}, {"after_seconds": 4.0, "problems": lagging},
        {"after_seconds": 6.0, "problems": []}]}
    assert list(result["wait"]) == ["attempts", "seconds", "timed_out", "progress"]  # as playbooks print it


def test_wait_until_healthy_never_sleeps_past_its_budget_and_keeps_the_last_result() -> None:
    clock = Clock(now=100.0)
    down = ["1 of 3 servers are not healthy: ..."]
    result = asyncio.run(wait.wait_until_healthy(checks(*[down] * 10), 5, 2, clock, clock.pause))
    assert result["healthy"] is False and result["problems"] == down
    assert result["wait"]["timed_out"] is True and result["wait"]["attempts"] == 3
    assert result["wait"]["progress"] == [{"after_seconds": 0.0, "problems": down}]
    assert clock.sleeps == [2, 2], "a third pause would have ended at 6 s, past the 5 s budget"


def test_look_past_keeps_looking_until_a_look_at_or_after_the_budget() -> None:
    """The probe Job's and the canaries' rule: the last look may come one pause late."""
    clock = Clock()
    looks: list[float] = []

    def look() -> None:
        looks.append(clock.now)

    last, report = wait.wait_within(look, lambda _: False, wait.Budget(5, look_past=True), itertools.repeat(2.0),
                                    clock, clock.sleep)
    assert looks == [0, 2, 4, 6] and report == {"attempts": 4, "seconds": 6.0, "timed_out": True, "progress": []}
    looks.clear()
    clock.now = 0
    wait.wait_within(look, lambda _: False, wait.Budget(5), itertools.repeat(2.0), clock, clock.sleep)
    assert looks == [0, 2, 4]


def test_a_budget_wait_ends_at_the_first_look_that_is_done() -> None:
    clock = Clock()
    answers = iter([None, None, {"done": True}])
    last, report = wait.wait_within(lambda: next(answers), lambda found: found is not None, wait.Budget(60),
                                    wait.doubling(0.05, 0.5), clock, clock.sleep,
                                    describe=lambda found: {"found": found is not None})
    assert last == {"done": True} and clock.sleeps == [0.05, 0.1]
    assert report == {"attempts": 3, "seconds": 0.2, "timed_out": False,  # 0.15 s, shown to a tenth
                      "progress": [{"after_seconds": 0.0, "found": False}, {"after_seconds": 0.2, "found": True}]}


def test_an_async_budget_wait_pauses_on_its_own_schedule() -> None:
    clock = Clock()

    async def look() -> int:
        return 0

    last, report = asyncio.run(wait.wait_within_async(look, lambda _: False, wait.Budget(1.5, look_past=True),
                                                      wait.doubling(0.05, 0.5), clock, clock.pause))
    assert clock.sleeps == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5] and report["timed_out"] is True
    assert report["attempts"] == 7


def test_doubling_pauses_stop_growing_at_their_ceiling() -> None:
    assert list(itertools.islice(wait.doubling(0.05, 0.5), 7)) == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    assert list(itertools.islice(wait.doubling(0.0, 0.0), 2)) == [0.0, 0.0]


# -- bounded retries ------------------------------------------------------------------------
class Flaky(Exception):
    """A transient failure in these tests."""


class Lost(Exception):
    """Another cause, counted apart."""


def failing(*outcomes: Any) -> tuple[Callable[[], Any], list[Any]]:
    """A call that raises or returns each outcome in turn; the second item lists the calls."""
    script, calls = list(outcomes), []

    def call() -> Any:
        outcome = script.pop(0)
        calls.append(outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
    return call, calls


def say(error: Exception, retries: Any, pause: float) -> str:
    return f"{error}; again in {pause:g}s ({retries.used} of {retries.limit})"


def test_retries_stop_at_their_bound_and_the_last_error_is_raised() -> None:
    clock, log = Clock(), []
    errors = [Flaky(f"busy {n}") for n in range(1, 6)]
    call, calls = failing(*errors)
    flaky = wait.Retries(3, backoff=0.5)
    with pytest.raises(Flaky) as raised:
        wait.retry(call, lambda error: flaky if isinstance(error, Flaky) else None, say, log.append, clock.sleep)
    assert raised.value is errors[3] and len(calls) == 4
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert log == ["busy 1; again in 0.5s (1 of 3)", "busy 2; again in 1s (2 of 3)", "busy 3; again in 2s (3 of 3)"]


def test_a_success_within_the_bound_ends_the_retries() -> None:
    clock, log = Clock(), []
    call, calls = failing(Flaky("busy"), "answer", Flaky("never reached"))
    flaky = wait.Retries(3, backoff=1.0)
    assert wait.retry(call, lambda error: flaky, say, log.append, clock.sleep) == "answer"
    assert len(calls) == 2 and clock.sleeps == [1.0] and log == ["busy; again in 1s (1 of 3)"]


def test_an_error_no_cause_claims_is_raised_at_once_unchanged() -> None:
    clock, log = Clock(), []
    bug = ValueError("a bug")
    call, calls = failing(bug, "answer")
    flaky = wait.Retries(3, backoff=1.0)
    with pytest.raises(ValueError) as raised:
        wait.retry(call, lambda error: flaky if isinstance(error, Flaky) else None, say, log.append, clock.sleep)
    assert raised.value is bug and len(calls) == 1 and clock.sleeps == [] and log == []
    assert flaky.used == 0


def test_no_retries_means_one_attempt() -> None:
    clock, log = Clock(), []
    call, calls = failing(Flaky("busy"), "answer")
    with pytest.raises(Flaky):
        wait.retry(call, lambda error: wait.Retries(0, 1.0), say, log.append, clock.sleep)
    assert len(calls) == 1 and clock.sleeps == [] and log == []


def test_each_cause_has_its_own_bound_and_a_zero_backoff_does_not_sleep() -> None:
    """The NATS session's two faults: a lost connection is opened again at once (3 times), a
    transient answer is retried after a pause (5 times); neither spends the other's budget."""
    clock, log = Clock(), []
    call, _ = failing(Flaky("timed out"), Lost("lost"), Flaky("timed out"), Lost("lost"), Lost("lost"), "answer")
    flaky, lost = wait.Retries(5, backoff=1.0), wait.Retries(3)

    def retries_for(error: Exception) -> Optional[Any]:
        return lost if isinstance(error, Lost) else flaky if isinstance(error, Flaky) else None

    assert wait.retry(call, retries_for, say, log.append, clock.sleep) == "answer"
    assert (flaky.used, lost.used) == (2, 3) and clock.sleeps == [1.0, 2.0]
    assert log == ["timed out; again in 1s (1 of 5)", "lost; again in 0s (1 of 3)", "timed out; again in 2s (2 of 5)",
                   "lost; again in 0s (2 of 3)", "lost; again in 0s (3 of 3)"]
    lost = wait.Retries(3)
    call, calls = failing(*[Lost("lost")] * 5)
    with pytest.raises(Lost):
        wait.retry(call, lambda error: lost if isinstance(error, Lost) else None, say, log.append, clock.sleep)
    assert len(calls) == 4


def test_retries_count_and_double_their_pause() -> None:
    retries = wait.Retries(4, backoff=0.2)
    assert [retries.next_pause() for _ in range(5)] == [0.2, 0.4, 0.8, 1.6, None]
    assert retries.used == 4
