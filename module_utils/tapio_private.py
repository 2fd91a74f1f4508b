# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What keeps the values of Tapio's workloads private: redacted where they are shown, and
the files the toolkit writes readable by their owner only.

Tapio's pods may carry a secret as a literal env value (an API key as a plain ``value:``).
Diffs, the report and every printed object show such an entry as its name and a short hash
(``<redacted sha256:1a2b3c4d>``): a changed value still shows as a changed hash, the value
itself never. Redaction is for display only: records and what is applied to the cluster
keep every value, so a restore stays byte-identical.

Files under the artifacts directory (records, the report) are written 0600 and the
directories made for them 0700. Every file the toolkit keeps is written by
``write_atomically``: a reader (or the next run, after a crash) finds the old content or the
new, never part of one.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import tempfile
from typing import Any, Union

ARTIFACT_FILE_MODE = 0o600
ARTIFACT_DIR_MODE = 0o700
# kubectl's client-side apply copies the whole object, env values included, into this
# annotation; shown, it would give away what the env redaction hides.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def redacted_value(value: Any) -> str:
    """A value shown as the first 8 hex digits of its sha256: stable, so a diff or a
    report shows whether it changed, without the value."""
    return f"<redacted sha256:{hashlib.sha256(str(value).encode('utf-8')).hexdigest()[:8]}>"


def redacted_env(env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An env list for display: each entry with a literal value as its name and the value's
    hash; valueFrom entries (a secretKeyRef, configMapKeyRef or fieldRef names where the
    value is, not the value) and entries without a value as they are. Order kept; a new
    list, the input is not changed."""
    shown = []
    for entry in env:
        shown_entry = copy.deepcopy(entry)
        if isinstance(entry, dict) and entry.get("value") is not None:
            shown_entry["value"] = redacted_value(entry["value"])
        shown.append(shown_entry)
    return shown


def redacted_object(obj: Any) -> Any:
    """A copy of a Kubernetes object, a record or a patch for display: every container's
    literal env values (wherever an ``env`` list is: containers, init containers, any pod
    template) and a last-applied-configuration annotation redacted; the input is not changed."""
    if isinstance(obj, list):
        return [redacted_object(item) for item in obj]
    if not isinstance(obj, dict):
        return copy.deepcopy(obj)
    shown: dict[str, Any] = {}
    for key, value in obj.items():
        if key == "env" and isinstance(value, list):
            shown[key] = redacted_env(value)
        elif key == "annotations" and isinstance(value, dict) and isinstance(value.get(LAST_APPLIED), str):
            shown[key] = {**copy.deepcopy(value), LAST_APPLIED: redacted_value(value[LAST_APPLIED])}
        else:
            shown[key] = redacted_object(value)
    return shown


def make_private_dirs(path: str) -> list[str]:
    """Create *path* and each missing parent with mode 0700, whatever the umask
    (os.makedirs gives only the last directory its mode, and that through the umask).
    Directories that exist are left as they are. Returns the directories created."""
    missing: list[str] = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    created = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory, ARTIFACT_DIR_MODE)
        except FileExistsError:  # another fork (forks=10, one per cluster) made it meanwhile
            continue
        os.chmod(directory, ARTIFACT_DIR_MODE)
        created.append(directory)
    return created


def make_private_dir(path: str) -> bool:
    """The toolkit's own directory (its records of a namespace): created 0700 with its
    missing parents, or made 0700 when an earlier version left it open (0755). True when it
    was created or its mode changed."""
    if make_private_dirs(path):
        return True
    if os.stat(path).st_mode & 0o777 == ARTIFACT_DIR_MODE:
        return False
    os.chmod(path, ARTIFACT_DIR_MODE)
    return True


def write_atomically(path: str, data: Union[str, bytes], mode: int = ARTIFACT_FILE_MODE,
                     replace: bool = True) -> None:
    """Write *data* (text as UTF-8) to *path* with *mode*, whatever the umask: into a temporary
    file beside it, which mkstemp creates 0600 (nobody else can read it before its chmod), then
    renamed over *path* in one step. With ``replace=False`` an existing *path* is kept and
    FileExistsError raised: the file appears whole or not at all (a hard link), and what is
    there is never overwritten."""
    handle, temporary = tempfile.mkstemp(prefix=".tapio-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(handle, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data.encode("utf-8") if isinstance(data, str) else data)
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def write_private_file(path: str, text: str) -> None:
    """Create *path* (it must not exist) with mode 0600 and write *text*, atomically: a record
    is never overwritten, and an interrupted run leaves no half-written one."""
    write_atomically(path, text, ARTIFACT_FILE_MODE, replace=False)
