"""Values of Tapio's workloads stay private (module_utils/tapio_private.py): a literal env value
is shown as its name and a short hash in diffs, the report and results, never as itself, while
records and what is applied keep it; the files the toolkit writes are 0600 in 0700 directories.

The engine cases run the real builders (Engine.pipeline_phase, Workloads.restore, Records.record,
Engine.report and the report's Markdown template) on the in-memory API server of
test_tapio_engine_restore."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from module_utils_loader import load_module_utils
from report_markdown import render_report_markdown
from fake_clock import Clock as FakeClock
from test_tapio_engine_restore import FakeApi, collector, make_engine, pipeline, state_configmap

private = load_module_utils("tapio_private")
tw = load_module_utils("tapio_workload")
apply = load_module_utils("tapio_apply")

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-live-7f3a9c1e5b2d4f60"  # Tapio's API key, set as a plain value
SECRET_ENV = [{"name": "TAPIO_SERVER_ADDRESS", "value": "tapio-pipeline:9090"},
              {"name": "TAPIO_API_KEY", "value": API_KEY}]
REFERENCES = [
    {"name": "NATS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "tapio-nats-auth", "key": "NATS_PASSWORD"}}},
    {"name": "LOG_LEVEL", "valueFrom": {"configMapKeyRef": {"name": "tapio", "key": "log_level"}}},
    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
]
NATS_ENV = [{"name": "TAPIO_OUTPUT_MODE", "value": "nats"}, {"name": "NATS_URL", "value": "nats://tapio-nats:4222"}]
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


# -- the redaction itself ----------------------------------------------------------------------
def test_a_literal_value_becomes_its_name_and_a_short_hash() -> None:
    shown = private.redacted_env([{"name": "TAPIO_API_KEY", "value": API_KEY}])
    assert shown == [{"name": "TAPIO_API_KEY", "value": private.redacted_value(API_KEY)}]
    assert API_KEY not in json.dumps(shown)
    token = shown[0]["value"]
    assert token.startswith("<redacted sha256:") and token.endswith(">") and len(token) == len("<redacted sha256:>") + 8


def test_the_hash_is_stable_and_changes_with_the_value() -> None:
    assert private.redacted_value(API_KEY) == private.redacted_value(API_KEY)
    assert private.redacted_value(API_KEY) != private.redacted_value(API_KEY + "x")
    # The first 8 hex digits of the value's sha256, so a person can check a value they know:
    # printf nats | sha256sum
    assert private.redacted_value("nats") == "<redacted sha256:8aba625a>"


def test_references_are_kept_the_order_too_and_the_input_is_not_changed() -> None:
    env = [SECRET_ENV[1], *REFERENCES, {"name": "EMPTY"}, {"name": "BLANK", "value": ""}]
    before = copy.deepcopy(env)
    shown = private.redacted_env(env)
    assert env == before, "the input must not change: it is what is recorded and applied"
    assert [e["name"] for e in shown] == [e["name"] for e in env]
    assert shown[1:4] == REFERENCES
    assert shown[4] == {"name": "EMPTY"}
    assert shown[5] == {"name": "BLANK", "value": private.redacted_value("")}
    shown[1]["valueFrom"]["secretKeyRef"]["name"] = "changed"
    assert env == before, "the result shares nothing with the input"


def test_every_container_of_an_object_and_its_last_applied_annotation_are_redacted() -> None:
    obj = collector(SECRET_ENV)
    obj["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(collector(SECRET_ENV)), "team": "tapio"}
    spec = obj["spec"]["template"]["spec"]
    spec["initContainers"] = [{"name": "init", "env": [{"name": "INIT_TOKEN", "value": API_KEY + "-init"}]}]
    spec["containers"].append({"name": "sidecar", "env": [*REFERENCES, {"name": "SIDECAR_KEY", "value": API_KEY}]})
    before = copy.deepcopy(obj)
    shown = private.redacted_object(obj)
    assert obj == before
    assert API_KEY not in json.dumps(shown)
    assert shown["metadata"]["annotations"] == {LAST_APPLIED: private.redacted_value(obj["metadata"]["annotations"]
                                                                                     [LAST_APPLIED]), "team": "tapio"}
    assert shown["spec"]["template"]["spec"]["containers"][1]["env"][:3] == REFERENCES
    assert shown["spec"]["template"]["spec"]["containers"][0]["image"] == "tapio/k8s:1"


# -- the real builders: diffs, results and the report never carry the value ----------------------
ENGINE_OPTIONS = {"env": NATS_ENV, "workload_secrets": {}, "nats_checks": False, "nats_value": "nats"}


def test_the_switch_diff_shows_no_literal_value(tmp_path: Path) -> None:
    api = FakeApi(pipeline(SECRET_ENV, rolled_out=True), state_configmap())
    run = make_engine(api, tmp_path, [], FakeClock(), check=True, **ENGINE_OPTIONS)
    run.pipeline_phase()
    text = json.dumps(run.diff)
    assert run.diff and API_KEY not in text and "nats://tapio-nats:4222" not in text
    env_diff = next(d for d in run.diff if d["before_header"].endswith("container pipeline env"))
    assert f'"value": "{private.redacted_value(API_KEY)}"' in env_diff["before"]
    assert f'"value": "{private.redacted_value("nats")}"' in env_diff["after"]


def test_a_restore_applies_the_value_and_its_diff_and_steps_show_only_its_hash(tmp_path: Path) -> None:
    """Drift (an image upgraded while migrated) keeps the live object, with its
    last-applied-configuration annotation, in the replace: that annotation holds the env too."""
    record = tw.record_of(collector(SECRET_ENV))
    live = collector(SECRET_ENV + NATS_ENV)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "tapio/k8s:2"
    live["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(collector(SECRET_ENV + NATS_ENV))}
    api = FakeApi(live, state_configmap(("daemonset.tapio-k8s-collector.json", record)))
    run = make_engine(api, tmp_path, ["tapio-k8s-collector"], FakeClock())
    assert run.workloads.restore(run.collectors[0], record) is True
    applied = api.objects[("DaemonSet", "tapio-k8s-collector")]
    assert applied["spec"]["template"]["spec"]["containers"][0]["env"] == SECRET_ENV, "restored exactly"
    assert len(run.diff) == 1 and API_KEY not in json.dumps(run.diff) + json.dumps(run.steps)
    assert private.redacted_value(API_KEY) in run.diff[0]["after"]


def test_the_report_and_its_markdown_show_no_literal_value(tmp_path: Path) -> None:
    record = tw.record_of(collector(SECRET_ENV))
    live = collector([{"name": "TAPIO_SERVER_ADDRESS", "value": "tapio-pipeline:9090"},
                      {"name": "TAPIO_API_KEY", "value": API_KEY + "-rotated"}, *NATS_ENV])
    pipe = pipeline(SECRET_ENV, rolled_out=True)
    api = FakeApi(live, pipe, state_configmap(("daemonset.tapio-k8s-collector.json", record),
                                              ("deployment.tapio-pipeline.json", tw.record_of(pipe))))
    run = make_engine(api, tmp_path, ["tapio-k8s-collector"], FakeClock(), **ENGINE_OPTIONS)
    result = run.report()
    report = result["report"]
    text = json.dumps(result)
    assert API_KEY not in text, "neither the recorded nor the rotated key"
    entry = next(w for w in report["workloads"] if w["name"] == "tapio-k8s-collector")
    assert entry["env_changed"] == [{"name": "TAPIO_API_KEY", "value": private.redacted_value(API_KEY + "-rotated")}]
    assert entry["changed_from_record"] and entry["output_mode"] == "nats"
    # Display only: the stored record still holds the value a restore writes back.
    assert API_KEY in api.objects[("ConfigMap", "tapio-migration-state")]["data"]["daemonset.tapio-k8s-collector.json"]

    markdown = render_report_markdown(report)
    assert "`TAPIO_API_KEY`" in markdown and private.redacted_value(API_KEY) in markdown
    assert API_KEY not in markdown


def test_tapio_apply_shows_no_literal_value_of_a_workload() -> None:
    live = collector(SECRET_ENV)
    after = collector([*SECRET_ENV, {"name": "LOG_LEVEL", "value": "debug"}])
    entry = {"operation": "update", "label": "DaemonSet tapio/tapio-k8s-collector", "desired": after,
             "live": live, "after": after}
    text = json.dumps(apply.entry_diff(entry)) + json.dumps(apply.entry_result(entry))
    assert API_KEY not in text and private.redacted_value(API_KEY) in text


# -- files: 0600 in 0700 directories ------------------------------------------------------------
def mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


def test_records_are_written_0600_in_0700_directories(tmp_path: Path) -> None:
    state = tmp_path / "artifacts" / "state"
    api = FakeApi(collector(SECRET_ENV), state_configmap())
    run = make_engine(api, state, ["tapio-k8s-collector"], FakeClock())
    run.records.record(run.collectors, {"tapio-k8s-collector": collector(SECRET_ENV)})
    written = sorted((state / "tapio").iterdir())
    assert [path.name for path in written] == ["daemonset-tapio-k8s-collector.json",
                                               "daemonset-tapio-k8s-collector.provenance.json",
                                               "daemonset-tapio-k8s-collector.written.json"]
    assert [mode(path) for path in written] == ["0o600", "0o600", "0o600"]
    assert [mode(path) for path in (tmp_path / "artifacts", state, state / "tapio")] == ["0o700"] * 3
    assert API_KEY in written[0].read_text(), "the record keeps the value: a restore needs it"


def test_an_open_state_directory_of_an_earlier_version_is_closed_when_recording(tmp_path: Path) -> None:
    (tmp_path / "tapio").mkdir(mode=0o755)
    os.chmod(tmp_path / "tapio", 0o755)
    api = FakeApi(collector(SECRET_ENV), state_configmap())
    run = make_engine(api, tmp_path, ["tapio-k8s-collector"], FakeClock())
    run.records.record(run.collectors, {"tapio-k8s-collector": collector(SECRET_ENV)})
    assert mode(tmp_path / "tapio") == "0o700"
    assert any("private (mode 0700)" in step for step in run.steps), run.steps


def test_private_files_and_directories_ignore_the_umask(tmp_path: Path) -> None:
    parent_mode = mode(tmp_path)
    old = os.umask(0o000)
    try:
        created = private.make_private_dirs(str(tmp_path / "a" / "b"))
        private.write_private_file(str(tmp_path / "a" / "b" / "record.json"), "{}\n")
    finally:
        os.umask(old)
    assert created == [str(tmp_path / "a"), str(tmp_path / "a" / "b")]
    assert [mode(tmp_path / "a"), mode(tmp_path / "a" / "b")] == ["0o700", "0o700"]
    assert mode(tmp_path / "a" / "b" / "record.json") == "0o600"
    assert private.make_private_dirs(str(tmp_path / "a" / "b")) == [], "existing directories are left as they are"
    assert mode(tmp_path) == parent_mode, "a directory that existed keeps its mode"


# -- the one atomic write every kept file goes through -------------------------------------------
def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith(".tapio-"))


def test_an_atomic_write_gives_text_or_bytes_its_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        private.write_atomically(str(tmp_path / "report.md"), "é\n")
        private.write_atomically(str(tmp_path / "server.crt"), b"\x00PEM", 0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "report.md").read_bytes() == "é\n".encode("utf-8")
    assert (tmp_path / "server.crt").read_bytes() == b"\x00PEM"
    assert [mode(tmp_path / "report.md"), mode(tmp_path / "server.crt")] == ["0o600", "0o644"]
    assert leftovers(tmp_path) == []


def test_an_atomic_write_replaces_the_file_and_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "health.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    private.write_atomically(str(target), "new")
    assert (target.read_text(), mode(target)) == ("new", "0o600")
    assert leftovers(tmp_path) == []


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "timeline.png"
    target.write_bytes(b"old")

    def interrupted(source: str, destination: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(private.os, "replace", interrupted)
    with pytest.raises(OSError, match="disk full"):
        private.write_atomically(str(target), b"new")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_a_record_is_never_overwritten(tmp_path: Path) -> None:
    record = tmp_path / "daemonset-tapio-k8s-collector.json"
    private.write_private_file(str(record), "{}\n")
    with pytest.raises(FileExistsError):
        private.write_private_file(str(record), '{"changed": true}\n')
    assert (record.read_text(), mode(record)) == ("{}\n", "0o600")
    assert leftovers(tmp_path) == []


def test_the_modules_that_keep_files_write_through_the_one_helper() -> None:
    for name in ("tapio_files", "tapio_tls_certificates", "tapio_timeline"):
        source = (REPO_ROOT / "library" / f"{name}.py").read_text()
        assert "write_atomically" in source, name
        assert not any(word in source for word in ("tempfile", "os.replace", "atomic_move", '"w"', '"wb"')), name
