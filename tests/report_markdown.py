"""report.md as roles/migration_report renders it, from the engine's report result, for unit
tests that check what the Markdown shows (and never shows)."""
from __future__ import annotations

import json
from typing import Any

import jinja2

from conftest import REPO_ROOT


def render_report_markdown(report: dict[str, Any]) -> str:
    template = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO_ROOT / "roles/migration_report/templates"),
                                  trim_blocks=True, undefined=jinja2.StrictUndefined)
    template.filters["to_json"] = json.dumps
    return template.get_template("report.md.j2").render(
        migration_report_data={"host": "lab", **report}, migration_report_timeline_url="",
        migration_report_timeline_minutes=30)
