#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: tapio_files
short_description: Write a set of text files into one directory, each only when its content differs
description:
  - Writes every file of O(files) into O(dest) in one call (the report's JSON and Markdown
    files), creating O(dest) when needed. A file whose content is already there is not
    touched; a new content replaces the old one atomically (a temporary file in the same
    directory, created 0600, then a rename).
  - Files are written 0600 and directories created 0700 by default, since a report may
    describe workloads that hold secrets.
  - A file marked C(observation) (counters read at report time) is written like the others
    but never counts as a change, so a re-run of an unchanged migration reports changed=0.
  - Runs on the control node (the project's action plugin runs it in Ansible's worker process).
version_added: "1.2.0"
author: Tapio NATS migration toolkit
options:
  dest:
    description:
      - The directory; created (each missing parent too) with mode 0700 when missing. An
        existing directory keeps its mode.
    type: path
    required: true
  files:
    description:
      - The files; every bad entry is named, and nothing written, before the first write.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: A file name inside O(dest) (no directories).
        type: str
      content:
        description: Its text; needed unless O(files[].state=absent).
        type: raw
      observation:
        description: True when writing it never counts as a change.
        type: bool
        default: false
      state:
        description: C(present) writes the file, C(absent) removes it.
        type: str
        default: present
  mode:
    description: Mode of every file written.
    type: str
    default: "0600"
notes:
  - Supports check mode (nothing is written; the result says what would be) and diff mode
    (the before and after of every file that counts as a change).
"""

EXAMPLES = r"""
- name: Write the report
  ansible.legacy.tapio_files:
    dest: .artifacts/lab/report/tapio
    files:
      - name: report.json
        content: "{{ report | to_nice_json }}"
      - name: report.md
        content: "{{ lookup('ansible.builtin.template', 'report.md.j2') }}"
      - name: nats-snapshot.json
        content: "{{ snapshot | to_nice_json }}"
        observation: true
      - name: timeline.png
        state: absent
        observation: true
"""

RETURN = r"""
files:
  description: Per file - name, path, state, written (its content or presence changed) and observation.
  returned: always
  type: list
  elements: dict
"""

import os
from typing import Any, Optional

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tapio_private import make_private_dirs, write_atomically


def current_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def problems_of(files: list[dict[str, Any]]) -> list[str]:
    problems = []
    for index, entry in enumerate(files):
        name = entry.get("name")
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            problems.append(f"files[{index}].name must be a plain file name, got {name!r}")
        state = entry.get("state", "present")
        if state not in ("present", "absent"):
            problems.append(f"files[{index}].state must be present or absent, got {state!r}")
        if state == "present" and not isinstance(entry.get("content"), str):
            problems.append(f"files[{index}] ({name}) needs a text content")
    return problems


# Each entry's keys, so Ansible refuses a misspelt one; their values are checked by problems_of,
# which names every bad entry at once. content is raw: a non-text content is refused, not stringified.
FILE_ENTRY_SPEC: dict[str, Any] = {
    "name": {"type": "str"},
    "content": {"type": "raw"},
    "observation": {"type": "bool", "default": False},
    "state": {"type": "str", "default": "present"},
}


def main() -> None:
    module = AnsibleModule(argument_spec={"dest": {"type": "path", "required": True},
                                          "files": {"type": "list", "elements": "dict", "required": True,
                                                    "options": FILE_ENTRY_SPEC},
                                          "mode": {"type": "str", "default": "0600"}},
                           supports_check_mode=True)
    dest, files = module.params["dest"], module.params["files"]
    problems = problems_of(files)
    try:
        mode = int(module.params["mode"], 8)
    except ValueError:
        problems.append(f"mode must be octal, got {module.params['mode']!r}")
    if problems:
        module.fail_json(msg="Nothing was written: " + "; ".join(problems) + ".")
    results, diffs = [], []
    if not os.path.isdir(dest) and not module.check_mode:
        make_private_dirs(dest)
    for entry in files:
        path = os.path.join(dest, entry["name"])
        state, observation = entry.get("state", "present"), bool(entry.get("observation", False))
        before = current_text(path) if state == "present" else None
        if state == "absent":
            written = os.path.exists(path)
            if written and not module.check_mode:
                os.unlink(path)
        else:
            written = before != entry["content"] or (os.stat(path).st_mode & 0o7777) != mode
            if written and not module.check_mode:
                write_atomically(path, entry["content"], mode)
        if written and not observation and state == "present":
            diffs.append({"before_header": path, "after_header": path, "before": before or "",
                          "after": entry["content"]})
        results.append({"name": entry["name"], "path": path, "state": state, "written": written,
                        "observation": observation})
    changed = any(item["written"] and not item["observation"] for item in results)
    result: dict[str, Any] = {"changed": changed, "files": results}
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
