"""Unit tests for tapio_files (library/tapio_files.py), run the way the project's action
plugin runs every module: ``main()`` inside the calling process
(plugins/action/tapio_migration.py, run_module_in_process), so the runner is tested too."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from module_utils_loader import load_file as load

REPO_ROOT = Path(__file__).resolve().parents[2]




action = load("tapio_test_action_plugin", REPO_ROOT / "plugins" / "action" / "tapio_migration.py")
files_module = load("tapio_test_library_files", REPO_ROOT / "library" / "tapio_files.py")


def run(args: dict[str, Any], check: bool = False, diff: bool = True) -> dict[str, Any]:
    payload = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check, "_ansible_diff": diff,
                                       "_ansible_verbosity": 0}}
    out = action.run_module_in_process(files_module, json.dumps(payload).encode())
    return json.loads(out)


def test_writes_creates_the_directory_and_reports_a_change(tmp_path: Path) -> None:
    dest = tmp_path / "report" / "tapio"
    result = run({"dest": str(dest), "files": [{"name": "report.json", "content": "{}\n"}]})
    assert result["changed"] is True and (dest / "report.json").read_text() == "{}\n"
    # A report may describe workloads holding secrets: the owner's only, every directory made for it too.
    assert oct((dest / "report.json").stat().st_mode & 0o777) == "0o600"
    assert [oct(path.stat().st_mode & 0o777) for path in (tmp_path / "report", dest)] == ["0o700", "0o700"]
    assert result["diff"][0]["after"] == "{}\n"


def test_same_content_is_no_change_and_not_rewritten(tmp_path: Path) -> None:
    run({"dest": str(tmp_path), "files": [{"name": "a.md", "content": "x"}]})
    before = os.stat(tmp_path / "a.md").st_mtime_ns
    again = run({"dest": str(tmp_path), "files": [{"name": "a.md", "content": "x"}]})
    assert again["changed"] is False and "diff" not in again
    assert os.stat(tmp_path / "a.md").st_mtime_ns == before


def test_observations_are_written_but_never_a_change(tmp_path: Path) -> None:
    result = run({"dest": str(tmp_path), "files": [{"name": "snap.json", "content": "1", "observation": True}]})
    assert result["changed"] is False and (tmp_path / "snap.json").read_text() == "1"
    assert result["files"][0]["written"] is True


def test_absent_removes_a_file(tmp_path: Path) -> None:
    (tmp_path / "timeline.png").write_bytes(b"png")
    result = run({"dest": str(tmp_path), "files": [{"name": "timeline.png", "state": "absent", "observation": True}]})
    assert not (tmp_path / "timeline.png").exists() and result["files"][0]["written"] is True


def test_check_mode_writes_nothing_but_says_what_would_change(tmp_path: Path) -> None:
    dest = tmp_path / "new"
    result = run({"dest": str(dest), "files": [{"name": "report.md", "content": "# r\n"}]}, check=True)
    assert result["changed"] is True and not dest.exists()


@pytest.mark.parametrize("entry, problem", [
    ({"name": "../escape", "content": "x"}, "plain file name"),
    ({"name": "a", "state": "gone"}, "present or absent"),
    ({"name": "a"}, "needs a text content"),
])
def test_bad_entries_fail_before_anything_is_written(tmp_path: Path, entry: dict[str, Any], problem: str) -> None:
    result = run({"dest": str(tmp_path), "files": [{"name": "ok", "content": "x"}, entry]})
    assert result.get("failed") and problem in result["msg"] and "Nothing was written" in result["msg"]
    assert not (tmp_path / "ok").exists()


def test_a_misspelt_key_of_an_entry_is_refused(tmp_path: Path) -> None:
    result = run({"dest": str(tmp_path), "files": [{"name": "snap.json", "content": "1", "observaton": True}]})
    assert result.get("failed") and "observaton" in result["msg"] and "Unsupported parameters" in result["msg"]
    assert not (tmp_path / "snap.json").exists()


def test_a_warning_comes_back_in_the_result_not_on_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """A module warning must travel in the result even though this process imported controller code."""
    warn_module = ModuleType("warns")

    def main() -> None:
        from ansible.module_utils.basic import AnsibleModule

        module = AnsibleModule(argument_spec={})
        module.warn("careful")
        module.exit_json(changed=False)

    warn_module.main = main  # type: ignore[attr-defined]
    payload = json.dumps({"ANSIBLE_MODULE_ARGS": {}}).encode()
    result = json.loads(action.run_module_in_process(warn_module, payload))
    # The raw output is the module profile's (the action plugin decodes it): one WarningSummary.
    assert [warning["event"]["msg"] for warning in result["warnings"]] == ["careful"]
    assert "careful" not in capsys.readouterr().err


def test_tapio_apply_keeps_a_secrets_values_out_of_its_result_and_invocation(tmp_path: Path) -> None:
    """The NATS Secret travels in tapio_apply's objects: even a failed call (here: no
    kubeconfig) echoes its arguments without the password, plain or base64."""
    apply_module = load("tapio_test_library_apply", REPO_ROOT / "library" / "tapio_apply.py")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "auth", "namespace": "tapio"},
              "stringData": {"NATS_PASSWORD": "s3cret-plain"}, "data": {"TOKEN": "dG9rZW4tdmFsdWU="}}
    payload = {"ANSIBLE_MODULE_ARGS": {"objects": [{"definition": secret}], "kubeconfig": str(tmp_path / "none"),
                                       "_ansible_check_mode": False, "_ansible_diff": True,
                                       "_ansible_verbosity": 3}}
    out = action.run_module_in_process(apply_module, json.dumps(payload).encode())
    result = json.loads(out)
    assert result.get("failed") and "kubeconfig" in result["msg"]
    assert "invocation" in out, "the arguments are echoed: the check below must look at them"
    for secret_text in ("s3cret-plain", "dG9rZW4tdmFsdWU=", "token-value"):
        assert secret_text not in out
