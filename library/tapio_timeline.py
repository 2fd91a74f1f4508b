#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: tapio_timeline
short_description: Plot events per second per source across the NATS cutover, and summarise them
description:
  - Reads per-second event counts per source, from O(url) (the lab simulator's C(GET /timeline))
    or from O(rows), and returns per source the totals, the cutover second(s) and the window.
  - With O(dest) it renders one small PNG with matplotlib (Agg) showing, per source, events/s received
    directly and received via NATS, emitted in a lighter line, and a named vertical marker at
    each cutover (C(migrate) direct to NATS, C(rollback) NATS to direct), the cutover span
    shaded until the source delivers on the new path only.
  - A cutover starts at the first second with receipts on the other path after a second with
    receipts on one path only, and completes at the first second with receipts on the other
    path only (see RV(cutovers)).
  - The PNG carries no timestamp or software tag, so the same rows give the same bytes;
    RV(changed) is true only when the file's content (or its attributes) changed.
  - In check mode the rows are read and summarised and the PNG is rendered in memory to tell
    whether it would change; nothing is written.
version_added: "1.0.0"
author: Tapio NATS migration toolkit
requirements:
  - python >= 3.9
  - matplotlib >= 3.6 (only with O(dest))
options:
  url:
    description:
      - The timeline endpoint, for example C(http://127.0.0.1:8787/timeline). Its answer is a
        list of rows or an object with a C(buckets) list of rows.
      - With O(since), C(since=<unix seconds>) is added to the query.
    type: str
  rows:
    description:
      - The rows themselves, each C({t, sources}) where C(t) is a unix second and C(sources)
        maps each source to C({emitted, received_direct, received_nats, dropped, duplicates})
        (a missing count is 0). Rows of the same second are added up.
    type: list
    elements: dict
  since:
    description: Only rows with C(t) at or after this unix time.
    type: float
  until:
    description: Only rows with C(t) before this unix time (a fixed window; seconds that are over no longer change).
    type: float
  timeout:
    description: Seconds to wait for O(url).
    type: float
    default: 10
  on_error:
    description:
      - What to do when O(url) cannot be read or does not answer with timeline rows.
      - V(fail) fails naming the URL and the cause; V(warn) returns RV(plotted=false) and RV(error)
        with a warning, writing nothing (for a report that must not fail for want of a plot).
      - Invalid O(rows) and a missing matplotlib always fail.
    type: str
    choices: [fail, warn]
    default: fail
  dest:
    description:
      - Path of the PNG. Its directory must exist. Without it only the summary is returned.
      - Replaced atomically (a temporary file beside it, then a rename), mode 0600 unless
        O(mode) says otherwise.
    type: path
  title:
    description: Title of the figure.
    type: str
    default: Events per second per source
extends_documentation_fragment:
  - files
notes:
  - Check mode is supported (nothing is written; RV(changed) tells whether the PNG would change).
  - Windows of hours plot fine; the simulator keeps six hours of seconds.
"""

EXAMPLES = r"""
- name: Plot the last 30 minutes of the lab simulator's timeline
  ansible.legacy.tapio_timeline:
    url: "http://127.0.0.1:8787/timeline"
    since: "{{ now().timestamp() - 1800 }}"
    dest: "{{ report_dir }}/timeline.png"
    mode: "0600"
  register: timeline
  delegate_to: localhost

- name: Show when each source switched
  ansible.builtin.debug:
    msg: "{{ timeline.cutovers | map(attribute='source') | zip(timeline.cutovers | map(attribute='at')) | list }}"

- name: Summarise counts from another source without plotting
  ansible.legacy.tapio_timeline:
    rows:
      - {t: 1795764334, sources: {k8s-collector: {emitted: 230, received_direct: 230}}}
      - {t: 1795764335, sources: {k8s-collector: {emitted: 230, received_direct: 120, received_nats: 90}}}
  register: summary
"""

RETURN = r"""
plotted:
  description: Whether the rows were read (false only with O(on_error=warn) after an error).
  returned: always
  type: bool
error:
  description: Why the rows could not be read (with O(on_error=warn)).
  returned: when RV(plotted) is false
  type: str
  sample: "cannot read the timeline from http://127.0.0.1:8787/timeline: connection refused"
dest:
  description: The PNG path (null without O(dest)).
  returned: always
  type: str
sha256:
  description: SHA-256 of the PNG bytes (also in check mode, of the PNG that would be written).
  returned: when O(dest) is given and RV(plotted) is true
  type: str
url:
  description: The URL that was read, with the C(since) query.
  returned: when O(url) is given
  type: str
run_id:
  description: The simulator's ledger epoch, when the answer carries one.
  returned: when O(url) is given and RV(plotted) is true
  type: str
rows:
  description: Seconds with data in the window (after O(since)/O(until)).
  returned: when RV(plotted) is true
  type: int
  sample: 1800
window:
  description: First and last second with data, as unix seconds and UTC, and the seconds between them inclusive.
  returned: when RV(plotted) is true
  type: dict
  sample: {first: 1795764334, last: 1795766133, first_utc: "2026-11-27T07:25:34Z", last_utc: "2026-11-27T07:55:33Z", seconds: 1800}
totals:
  description: Counts over the window, all sources together.
  returned: when RV(plotted) is true
  type: dict
  sample: {emitted: 3726000, received_direct: 1900000, received_nats: 1826000, dropped: 0, duplicates: 0}
sources:
  description: Per source, its totals over the window and its cutovers.
  returned: when RV(plotted) is true
  type: dict
  contains:
    totals:
      description: emitted, received_direct, received_nats, dropped, duplicates.
      type: dict
    cutovers:
      description: This source's entries of RV(cutovers).
      type: list
      elements: dict
  sample:
    k8s-collector:
      totals: {emitted: 414000, received_direct: 207000, received_nats: 207000, dropped: 0, duplicates: 0}
      cutovers: []
cutovers:
  description: Every cutover of every source, in time order.
  returned: when RV(plotted) is true
  type: list
  elements: dict
  contains:
    source:
      description: The source.
      type: str
    kind:
      description: C(migrate) (direct to NATS) or C(rollback) (NATS to direct).
      type: str
    from:
      description: The old path, C(direct) or C(nats).
      type: str
    to:
      description: The new path.
      type: str
    t:
      description: First second with receipts on the new path (the marker in the plot).
      type: int
    at:
      description: RV(cutovers[].t) in UTC.
      type: str
    completed:
      description: First second with receipts on the new path only; null if not reached in the window.
      type: int
    completed_at:
      description: RV(cutovers[].completed) in UTC.
      type: str
    seconds:
      description: From RV(cutovers[].t) to RV(cutovers[].completed).
      type: int
    state:
      description: C(completed), C(in progress) (the window ended mixed or on the new path) or C(reverted) (it ended on the old path only).
      type: str
    reverted:
      description: First second of the final run on the old path only, for C(reverted).
      type: int
    reverted_at:
      description: RV(cutovers[].reverted) in UTC.
      type: str
  sample:
    - {source: k8s-collector, kind: migrate, from: direct, to: nats, t: 1795765012, at: "2026-11-27T07:36:52Z",
       completed: 1795765031, completed_at: "2026-11-27T07:37:11Z", seconds: 19, state: completed,
       reverted: null, reverted_at: null}
"""

import hashlib
import io
import json
import os
import traceback
from datetime import datetime, timezone
from typing import Any, NoReturn, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.tapio_timeline import (
    TimelineError,
    Timeline,
    normalise,
    rows_of,
    series,
    summarise,
)
from ansible.module_utils.tapio_http import http_get
from ansible.module_utils.tapio_private import write_atomically

MATPLOTLIB_IMPORT_ERROR: Optional[str] = None
try:
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError:
    MATPLOTLIB_IMPORT_ERROR = traceback.format_exc()

ARGUMENT_SPEC: dict[str, Any] = {
    "url": {"type": "str"},
    "rows": {"type": "list", "elements": "dict"},
    "since": {"type": "float"},
    "until": {"type": "float"},
    "timeout": {"type": "float", "default": 10.0},
    "on_error": {"type": "str", "choices": ["fail", "warn"], "default": "fail"},
    "dest": {"type": "path"},
    "title": {"type": "str", "default": "Events per second per source"},
}

# Colours per path; emitted is the lighter reference line.
STYLE = {
    "emitted": {"color": "#9e9e9e", "linewidth": 0.8, "alpha": 0.6, "label": "emitted"},
    "received_direct": {"color": "#1f77b4", "linewidth": 1.1, "label": "received directly"},
    "received_nats": {"color": "#ff7f0e", "linewidth": 1.1, "label": "received via NATS"},
}
MARKER_COLOR = {"migrate": "#2ca02c", "rollback": "#d62728"}
PATH_NAME = {"direct": "direct", "nats": "NATS"}


class FetchError(Exception):
    """The URL could not be read or did not answer with timeline rows."""


def timeline_url(url: str, since: Optional[float]) -> str:
    if since is None:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "since"] + [("since", str(int(since)))]
    return urlunsplit(parts._replace(query=urlencode(query)))


def fetch(url: str, timeout: float) -> Any:
    """GET the URL and decode its JSON; every failure names the URL and the cause."""
    try:
        response = http_get(url, timeout, headers={"Accept": "application/json"})
        body = response.read()
    except Exception as error:  # HTTPError, URLError, timeouts, refused connections
        code = getattr(error, "code", None)
        reason = getattr(error, "reason", None) or error
        detail = f"HTTP {code}: {reason}" if code else f"{type(error).__name__}: {reason}"
        raise FetchError(f"cannot read the timeline from {url}: {detail}") from error
    try:
        return json.loads(body)
    except ValueError as error:
        raise FetchError(f"{url} did not answer with JSON ({error}): {body[:120]!r}") from error


def render(timeline: Timeline, title: str) -> bytes:
    """One figure, one small axis per source sharing the time axis; deterministic PNG bytes."""
    seconds, per_source = series(timeline)
    summary = summarise(timeline)
    rows = max(1, len(per_source))
    figure = Figure(figsize=(8, 0.6 + 1.5 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    figure.suptitle(title, fontsize=10)
    if not per_source:
        axes[0].text(0.5, 0.5, "no events in the window", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    times = [mdates.date2num(_utc_datetime(second)) for second in seconds]
    for axis, (source, fields) in zip(axes, per_source.items()):
        for name, style in STYLE.items():
            axis.plot(times, fields[name], drawstyle="steps-post", **style)
        for cutover in summary["sources"][source]["cutovers"]:
            _mark(axis, cutover)
        axis.set_ylabel("events/s", fontsize=7)
        axis.set_title(source, fontsize=8, loc="left")
        axis.tick_params(labelsize=7)
        # Headroom above the highest line for the cutover labels.
        axis.set_ylim(0, max(1, *fields["emitted"], *fields["received_direct"], *fields["received_nats"]) * 1.3)
        axis.grid(True, linewidth=0.3, alpha=0.5)
    if per_source:
        locator = mdates.AutoDateLocator(tz=timezone.utc)
        axes[-1].xaxis.set_major_locator(locator)
        axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=timezone.utc))
        axes[-1].set_xlabel("UTC", fontsize=7)
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", fontsize=7, ncols=3, frameon=False)
    buffer = io.BytesIO()
    # No Software/date chunks: the same rows give the same bytes.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _utc_datetime(second: int) -> datetime:
    return datetime.fromtimestamp(second, timezone.utc)


def _mark(axis: Any, cutover: dict[str, Any]) -> None:
    color = MARKER_COLOR[cutover["kind"]]
    start = mdates.date2num(_utc_datetime(cutover["t"]))
    axis.axvline(start, color=color, linewidth=1.0, linestyle="--")
    end = cutover["completed"] if cutover["completed"] is not None else cutover["reverted"]
    if end is not None and end > cutover["t"]:
        axis.axvspan(start, mdates.date2num(_utc_datetime(end)), color=color, alpha=0.12, linewidth=0)
    label = f"{cutover['kind']} → {PATH_NAME[cutover['to']]} {cutover['at'][11:19]}"
    if cutover["state"] != "completed":
        label += f" ({cutover['state']})"
    axis.annotate(label, xy=(start, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                  textcoords="offset points", fontsize=6, color=color, va="top")


def write_if_changed(module: AnsibleModule, dest: str, data: bytes) -> bool:
    """Write atomically, only when the content differs; returns whether it did (or would)."""
    if os.path.exists(dest):
        with open(dest, "rb") as existing:
            if existing.read() == data:
                return False
    if module.check_mode:
        return True
    directory = os.path.dirname(dest) or "."
    if not os.path.isdir(directory):
        module.fail_json(msg=f"the directory of dest {dest} does not exist")
    # 0600 like every artifact; the task's mode and other file options are applied after.
    write_atomically(dest, data)
    return True


def read_rows(module: AnsibleModule, result: dict[str, Any]) -> list[Any]:
    params = module.params
    if params["rows"] is not None:
        return params["rows"]
    url = timeline_url(params["url"], params["since"])
    result["url"] = url
    try:
        payload = fetch(url, params["timeout"])
        rows = rows_of(payload)
    except (FetchError, TimelineError) as error:
        message = str(error) if isinstance(error, FetchError) else f"{url} did not answer with timeline rows: {error}"
        give_up(module, result, message)
    if isinstance(payload, dict) and payload.get("run_id") is not None:
        result["run_id"] = str(payload["run_id"])
    return rows


def give_up(module: AnsibleModule, result: dict[str, Any], message: str) -> NoReturn:
    """The URL gave no timeline: fail, or (on_error=warn) warn and return without a plot."""
    if module.params["on_error"] == "fail":
        module.fail_json(msg=message, **result)
    module.warn(f"no timeline plot: {message}")
    module.exit_json(**result, plotted=False, error=message)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, add_file_common_args=True,
                           mutually_exclusive=[("url", "rows")], required_one_of=[("url", "rows")])
    params = module.params
    if params["dest"] and MATPLOTLIB_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("matplotlib>=3.6"), exception=MATPLOTLIB_IMPORT_ERROR)
    result: dict[str, Any] = {"changed": False, "dest": params["dest"]}
    rows = read_rows(module, result)
    try:
        timeline = normalise(rows, params["since"], params["until"])
    except TimelineError as error:
        if "url" not in result:
            module.fail_json(msg=f"rows: {error}", **result)
        give_up(module, result, f"{result['url']} did not answer with timeline rows: {error}")
    result.update(plotted=True, **summarise(timeline))
    if params["dest"]:
        png = render(timeline, params["title"])
        result["sha256"] = hashlib.sha256(png).hexdigest()
        changed = write_if_changed(module, params["dest"], png)
        if os.path.exists(params["dest"]):
            file_args = module.load_file_common_arguments(params, path=params["dest"])
            changed = module.set_fs_attributes_if_different(file_args, changed)
        result["changed"] = changed
    module.exit_json(**result)


if __name__ == "__main__":
    main()
