"""Unit tests for the timeline logic behind tapio_timeline (module_utils/tapio_timeline.py):
rows -> per-source series and totals, since/until filtering, cutover detection for a
migration and a rollback, and the errors for rows that are not per-second counts."""
from __future__ import annotations

import sys
from typing import Any

import pytest

from module_utils_loader import MODULE_UTILS, load_module_utils

tl = load_module_utils("tapio_timeline")
T0 = 1_795_764_000  # 2026-11-27T07:20:00Z


def row(t: int, **sources: tuple[int, int, int]) -> dict[str, Any]:
    """A row with (emitted, received_direct, received_nats) per source."""
    return {"t": t, "sources": {name: {"emitted": e, "received_direct": d, "received_nats": n,
                                       "dropped": 0, "duplicates": 0}
                                for name, (e, d, n) in sources.items()}}


def paths(*spec: str, source: str = "k8s") -> list[dict[str, Any]]:
    """One row per character: d = direct only, n = NATS only, m = both, . = no receipts,
    _ = no row at all."""
    counts = {"d": (10, 10, 0), "n": (10, 0, 10), "m": (10, 6, 4), ".": (10, 0, 0)}
    return [row(T0 + i, **{source: counts[c]}) for i, c in enumerate("".join(spec)) if c != "_"]


def cuts(rows: list[dict[str, Any]], source: str = "k8s") -> list[dict[str, Any]]:
    return tl.cutovers(tl.normalise(rows), source)


# -- rows ------------------------------------------------------------------------------------
def test_rows_of_accepts_the_simulator_answer_and_a_bare_list() -> None:
    rows = paths("dd")
    assert tl.rows_of({"run_id": "x", "bucket_seconds": 1, "buckets": rows}) == rows
    assert tl.rows_of(rows) is rows


@pytest.mark.parametrize("payload, words", [
    ({"error": "no such endpoint /timelin"}, "'buckets'"),
    ({"buckets": {"t": 1}}, "'buckets'"),
    ("<html>", "str"),
    (None, "NoneType"),
])
def test_rows_of_rejects_other_answers(payload: Any, words: str) -> None:
    with pytest.raises(tl.TimelineError, match=words):
        tl.rows_of(payload)


@pytest.mark.parametrize("bad, words", [
    ("not a row", r"row 1 is not an object"),
    ({"sources": {}}, r"row 1: 't' must be a unix second, got None"),
    ({"t": "07:20", "sources": {}}, r"'t' must be a unix second"),
    ({"t": T0 + 0.5, "sources": {}}, r"'t' must be a unix second"),
    ({"t": True, "sources": {}}, r"'t' must be a unix second"),
    ({"t": T0 + 1, "sources": []}, r"row 1 \(t=\d+\): 'sources' must be an object"),
    ({"t": T0 + 1, "sources": {"k8s": 5}}, r"source 'k8s': counts must be an object"),
    ({"t": T0 + 1, "sources": {"k8s": {"emitted": -1}}}, r"k8s.emitted must be a whole number >= 0, got -1"),
    ({"t": T0 + 1, "sources": {"k8s": {"received_nats": "7"}}}, r"k8s.received_nats must be a whole number"),
    ({"t": T0 + 1, "sources": {"k8s": {"dropped": True}}}, r"k8s.dropped must be a whole number"),
    ({"t": T0 + 1, "sources": {"k8s": {"duplicates": 1.5}}}, r"k8s.duplicates must be a whole number"),
])
def test_bad_rows_are_named(bad: Any, words: str) -> None:
    with pytest.raises(tl.TimelineError, match=words):
        tl.normalise([row(T0, k8s=(1, 1, 0)), bad])


def test_bad_rows_outside_the_window_still_fail_their_shape() -> None:
    with pytest.raises(tl.TimelineError, match="'sources' must be an object"):
        tl.normalise([{"t": T0, "sources": None}], since=T0 + 100)


def test_rows_of_one_second_add_up_missing_fields_count_zero_unknown_ignored() -> None:
    rows = [{"t": T0 + 1, "sources": {"k8s": {"emitted": 5, "received_nats": 2, "extra": 99}}},
            {"t": T0, "sources": {"k8s": {"emitted": 1}}},
            {"t": T0 + 1, "sources": {"k8s": {"emitted": 3, "received_nats": 3}, "ebpf": {"dropped": 4}}}]
    timeline = tl.normalise(rows)
    assert list(timeline) == [T0, T0 + 1]  # sorted
    assert timeline[T0 + 1]["k8s"] == {"emitted": 8, "received_direct": 0, "received_nats": 5,
                                       "dropped": 0, "duplicates": 0}
    assert timeline[T0 + 1]["ebpf"]["dropped"] == 4


# -- empty input, filtering, series, totals --------------------------------------------------
def test_empty_input_summarises_to_nothing() -> None:
    summary = tl.summarise(tl.normalise([]))
    assert summary == {"window": {"first": None, "last": None, "first_utc": None, "last_utc": None, "seconds": 0},
                       "rows": 0, "sources": {}, "totals": dict.fromkeys(tl.FIELDS, 0), "cutovers": []}
    assert tl.series({}) == ([], {})


def test_since_and_until_bound_the_window() -> None:
    rows = paths("ddddnnnn")
    timeline = tl.normalise(rows, since=T0 + 2, until=T0 + 6)
    assert list(timeline) == [T0 + 2, T0 + 3, T0 + 4, T0 + 5]
    window = tl.window(timeline)
    assert window == {"first": T0 + 2, "last": T0 + 5, "first_utc": "2026-11-27T07:20:02Z",
                      "last_utc": "2026-11-27T07:20:05Z", "seconds": 4}
    # A fractional since (now().timestamp() - 1800) keeps the second that starts after it.
    assert list(tl.normalise(rows, since=T0 + 6.2)) == [T0 + 7]
    assert tl.normalise(rows, since=T0 + 100) == {}


def test_series_fills_missing_seconds_with_zero_per_source() -> None:
    rows = [row(T0, k8s=(3, 3, 0)), row(T0 + 3, k8s=(4, 0, 4), ebpf=(2, 2, 0))]
    seconds, per_source = tl.series(tl.normalise(rows))
    assert seconds == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert per_source["k8s"]["emitted"] == [3, 0, 0, 4]
    assert per_source["k8s"]["received_nats"] == [0, 0, 0, 4]
    assert per_source["ebpf"]["received_direct"] == [0, 0, 0, 2]
    assert sorted(per_source) == ["ebpf", "k8s"]


def test_totals_per_source_and_overall() -> None:
    rows = [row(T0, k8s=(10, 10, 0), ebpf=(7, 7, 0)),
            row(T0 + 1, k8s=(10, 4, 5), ebpf=(7, 0, 7)),
            {"t": T0 + 2, "sources": {"k8s": {"emitted": 10, "received_nats": 9, "dropped": 1, "duplicates": 2}}}]
    summary = tl.summarise(tl.normalise(rows))
    assert summary["sources"]["k8s"]["totals"] == {"emitted": 30, "received_direct": 14, "received_nats": 14,
                                                   "dropped": 1, "duplicates": 2}
    assert summary["sources"]["ebpf"]["totals"] == {"emitted": 14, "received_direct": 7, "received_nats": 7,
                                                    "dropped": 0, "duplicates": 0}
    assert summary["totals"] == {"emitted": 44, "received_direct": 21, "received_nats": 21, "dropped": 1,
                                 "duplicates": 2}
    assert summary["rows"] == 3


# -- cutovers --------------------------------------------------------------------------------
def test_migration_starts_at_the_first_nats_second_and_completes_when_direct_stops() -> None:
    found = cuts(paths("ddd", "mmm", "nnnn"))
    assert len(found) == 1
    cut = found[0]
    assert (cut["kind"], cut["from"], cut["to"], cut["state"]) == ("migrate", "direct", "nats", "completed")
    assert (cut["t"], cut["completed"], cut["seconds"]) == (T0 + 3, T0 + 6, 3)
    assert (cut["at"], cut["completed_at"]) == ("2026-11-27T07:20:03Z", "2026-11-27T07:20:06Z")
    assert cut["source"] == "k8s" and cut["reverted"] is None


def test_instant_switch_has_zero_seconds() -> None:
    cut, = cuts(paths("dd", "nn"))
    assert (cut["t"], cut["completed"], cut["seconds"]) == (T0 + 2, T0 + 2, 0)


def test_rollback_is_the_reverse_and_named() -> None:
    cut, = cuts(paths("nnn", "m", "mm", "ddd"))
    assert (cut["kind"], cut["from"], cut["to"]) == ("rollback", "nats", "direct")
    assert (cut["t"], cut["completed"]) == (T0 + 3, T0 + 6)


def test_migration_then_rollback_gives_two_cutovers() -> None:
    found = cuts(paths("dd", "mn", "nnn", "md", "dd"))
    assert [(c["kind"], c["t"], c["completed"]) for c in found] == [
        ("migrate", T0 + 2, T0 + 3), ("rollback", T0 + 7, T0 + 8)]


def test_seconds_without_receipts_or_rows_do_not_break_a_settled_path() -> None:
    # The pipeline is down for 3 s (rows with emitted only) and a second has no row at all.
    assert cuts(paths("dd...d_dd")) == []
    cut, = cuts(paths("dd..._nn"))
    assert (cut["kind"], cut["t"], cut["completed"]) == ("migrate", T0 + 6, T0 + 6)


def test_a_stalled_nats_second_inside_the_rollout_does_not_end_the_cutover() -> None:
    # While pods roll, the NATS consumer delivers nothing for one second: "d" inside "m"s.
    cut, = cuts(paths("dd", "mmdm", "nn"))
    assert (cut["t"], cut["completed"], cut["state"]) == (T0 + 2, T0 + 6, "completed")


def test_a_cutover_still_mixed_at_the_end_of_the_window_is_in_progress() -> None:
    cut, = cuts(paths("ddd", "mm"))
    assert (cut["kind"], cut["t"], cut["completed"], cut["state"]) == ("migrate", T0 + 3, None, "in progress")
    assert cut["seconds"] is None and cut["completed_at"] is None


def test_a_cutover_that_went_back_is_reverted_from_the_first_old_path_second() -> None:
    # Canary collector switched, gate failed, put back: the window ends on direct only.
    cut, = cuts(paths("dd", "mmm", "ddd"))
    assert (cut["kind"], cut["t"], cut["state"], cut["reverted"]) == ("migrate", T0 + 2, "reverted", T0 + 5)
    assert cut["reverted_at"] == "2026-11-27T07:20:05Z"


def test_no_cutover_on_one_path_or_when_the_window_starts_mixed() -> None:
    assert cuts(paths("nnnnn")) == []
    assert cuts(paths("ddddd")) == []
    assert cuts(paths("mmmnnn")) == []  # the switch began before the window
    assert cuts(paths("mmmnnnmd"), "k8s")[0]["t"] == T0 + 6  # a later switch is still found
    assert cuts(paths("ddnn"), "other") == []


def test_sources_cut_over_independently_and_the_summary_orders_them_in_time() -> None:
    rows = [row(T0, a=(1, 1, 0), b=(1, 1, 0)), row(T0 + 1, a=(1, 1, 0), b=(1, 0, 1)),
            row(T0 + 2, a=(1, 0, 1), b=(1, 0, 1))]
    summary = tl.summarise(tl.normalise(rows))
    assert [(c["source"], c["t"]) for c in summary["cutovers"]] == [("b", T0 + 1), ("a", T0 + 2)]
    assert summary["sources"]["a"]["cutovers"][0]["t"] == T0 + 2
    assert summary["sources"]["b"]["cutovers"][0]["t"] == T0 + 1


def test_path_of() -> None:
    zero = dict.fromkeys(tl.FIELDS, 0)
    assert tl.path_of(zero | {"emitted": 5}) is None
    assert tl.path_of(zero | {"received_direct": 1}) == "direct"
    assert tl.path_of(zero | {"received_nats": 1}) == "nats"
    assert tl.path_of(zero | {"received_direct": 1, "received_nats": 1}) == "mixed"


# -- the module's own helpers (library/tapio_timeline.py) ------------------------------------
def _module():
    sys.path.insert(0, str(MODULE_UTILS.parent / "library"))
    try:
        import tapio_timeline
    finally:
        sys.path.pop(0)
    return tapio_timeline


def test_timeline_url_sets_since_once() -> None:
    mod = _module()
    assert mod.timeline_url("http://127.0.0.1:8787/timeline", None) == "http://127.0.0.1:8787/timeline"
    assert mod.timeline_url("http://127.0.0.1:8787/timeline", T0 + 0.7) == f"http://127.0.0.1:8787/timeline?since={T0}"
    assert (mod.timeline_url("http://h/timeline?since=1&x=y", T0)
            == f"http://h/timeline?x=y&since={T0}")


def test_render_gives_a_png_and_the_same_bytes_for_the_same_rows() -> None:
    pytest.importorskip("matplotlib")
    mod = _module()
    timeline = tl.normalise(paths("ddd", "mm", "nnnn", "md", "dd"))
    first = mod.render(timeline, "t")
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    assert mod.render(tl.normalise(paths("ddd", "mm", "nnnn", "md", "dd")), "t") == first
    assert b"Software" not in first and b"tIME" not in first
    assert mod.render(timeline, "another title") != first
    assert mod.render({}, "t")[:8] == b"\x89PNG\r\n\x1a\n"  # an empty window still draws
