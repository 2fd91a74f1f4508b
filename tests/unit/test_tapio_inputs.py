"""The boilerplate play's checks (module_utils/tapio_inputs.py, library/tapio_inputs.py): every
rule passes good input and names bad input with the boilerplate's message; several problems
come back together; a wrong type stops the checks after it. The module itself runs the way the
action plugin runs it, to show what it hides."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from module_utils_loader import load_file, load_module_utils

for _name in ("tapio_nats_config", "tapio_nats", "tapio_kube"):
    load_module_utils(_name)
ti = load_module_utils("tapio_inputs")
rules = load_module_utils("tapio_nats_install_rules")

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "lab"
COLLECTORS = [
    {"name": "tapio-k8s-collector", "container": "k8s-collector", "subject_prefix": "tapio.events.k8s"},
    {"name": "tapio-systemd-collector", "container": "systemd-collector", "subject_prefix": "tapio.events.systemd"},
]
GOOD: dict[str, Any] = {
    "tapio_namespace": "tapio",
    "tapio_kube_context": "kwok-tapio-lab",
    "tapio_pipeline": {"name": "tapio-pipeline", "container": "pipeline"},
    "tapio_collectors": COLLECTORS,
    "tapio_nats_servers": ["nats://127.0.0.1:4222", "tls://nats-1:4222"],
    "tapio_nats_url": "nats://tapio-nats:4222",
}


def problems(running: str = "2.19.4", **changes: Any) -> list[str]:
    inputs = {**GOOD, **changes}
    for name in [name for name, value in changes.items() if value is None]:
        del inputs[name]
    return ti.problems_of(inputs, HOST, running, [])


def only(found: list[str]) -> str:
    assert len(found) == 1, found
    return found[0]


def test_good_input_passes(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    assert problems(tapio_kubeconfig=str(kubeconfig)) == []
    assert problems(tapio_nats_reach="kubernetes", tapio_nats_servers=None) == []


# -- versions and libraries ----------------------------------------------------------------
@pytest.mark.parametrize(("running", "ok"), [("2.19.0", True), ("2.19.14", True), ("2.20.0.dev0", True),
                                             ("2.18.7", False), ("2.9.27", False)])
def test_ansible_core_2_19_or_later(running: str, ok: bool) -> None:
    found = ti.ansible_version_problems(running)
    assert found == ([] if ok else [f"ansible-core >= 2.19 is required (running {running}); run scripts/bootstrap"])


def test_missing_libraries_are_named_with_their_minimum_versions() -> None:
    assert ti.missing_libraries() == []  # this interpreter has both, as the modules need
    found = ti.library_problems([("nats-py>=2.7.2", "Traceback ..."), ("kubernetes>=24.2.0", "Traceback ...")])
    assert len(found) == 2
    assert "Failed to import the required Python library (nats-py>=2.7.2)" in found[0]
    assert "(kubernetes>=24.2.0)" in found[1]
    combined = ti.problems_of(GOOD, HOST, "2.18.1", [("kubernetes>=24.2.0", "Traceback ...")])
    assert combined[0].startswith("ansible-core >= 2.19 is required") and "kubernetes>=24.2.0" in combined[1]


# -- types, worded as validate_argument_spec words them ------------------------------------
@pytest.mark.parametrize(("changes", "message"), [
    ({"tapio_collectors": [{"name": "x", "subject_prefix": "tapio.x"}]},
     "missing required arguments: container found in tapio_collectors"),
    ({"tapio_collectors": "tapio-k8s-collector"}, "Elements value for option 'tapio_collectors' is of type str"),
    ({"tapio_nats_reach": "apiserver"}, "value of tapio_nats_reach must be one of: direct, kubernetes, got: apiserver"),
    ({"tapio_namespace": None}, "missing required arguments: tapio_namespace"),
    ({"tapio_pipeline": {"name": "tapio-pipeline"}}, "missing required arguments: container found in tapio_pipeline"),
    ({"tapio_nats_servers": None}, "missing required arguments: tapio_nats_servers"),
])
def test_wrong_types(changes: dict[str, Any], message: str) -> None:
    found = only(problems(**changes))
    assert found.startswith("Validation of arguments failed:\n") and message in found


def test_a_wrong_type_stops_the_checks_after_it() -> None:
    """A namespace that is no DNS label and a missing kubeconfig are not judged on top of a
    collectors list that is no list."""
    found = problems(tapio_collectors="x", tapio_namespace="Bad_NS", tapio_kubeconfig="/nonexistent/kubeconfig")
    assert len(found) == 1 and "tapio_collectors" in found[0]


def test_types_are_checked_and_reported_together() -> None:
    found = only(problems(tapio_nats_reach="apiserver", tapio_pipeline=None))
    assert "missing required arguments: tapio_pipeline" in found
    assert "value of tapio_nats_reach must be one of: direct, kubernetes" in found


# -- NATS reach ------------------------------------------------------------------------------
# The operator method and NATS from outside run without TLS: opted out, so only reach is judged.
ALL_OPTED_OUT = {"tapio_nats_security_opt_outs": ["shared_user", "plaintext_clients", "plaintext_routes"]}
KUBE = {"tapio_nats_reach": "kubernetes", **ALL_OPTED_OUT}
REACH = "tapio_nats_kube_port_forward (one pod, for direct reach) cannot be combined with it"


@pytest.mark.parametrize("changes", [
    {"tapio_nats_kube_port_forward": {"namespace": "tapio", "pod": "p"}},
    {"tapio_nats_kube_selector": "app=nats", "tapio_nats_kube_service": "nats"},
    {"nats_cluster_method": "operator"},
    {"nats_cluster_method": "operator", "tapio_nats_install": "yes"},
    {"tapio_nats_kube_client_port": 0},
    {"tapio_nats_kube_client_port": "not a port"},
    {"tapio_nats_kube_monitor_port": 65536},
])
def test_bad_kubernetes_reach(changes: dict[str, Any]) -> None:
    found = only(problems(**KUBE, **changes))
    assert found.startswith(f"Invalid NATS reach for {HOST} (tapio_nats_reach=kubernetes): ") and REACH in found


@pytest.mark.parametrize("changes", [
    {},
    {"tapio_nats_kube_selector": "app=nats"},
    {"nats_cluster_method": "operator", "tapio_nats_kube_service": "nats"},
    {"nats_cluster_method": "operator", "tapio_nats_install": False},
    {"tapio_nats_kube_client_port": "4222", "tapio_nats_kube_monitor_port": 65535},
    {"tapio_nats_kube_port_forward": {}},
])
def test_good_kubernetes_reach(changes: dict[str, Any]) -> None:
    assert problems(**KUBE, **changes) == []


def test_reach_rules_apply_only_to_kubernetes_reach() -> None:
    assert problems(tapio_nats_kube_port_forward={"namespace": "tapio", "pod": "p"}, nats_cluster_method="operator",
                    **ALL_OPTED_OUT) == []


# -- credentials in URLs ---------------------------------------------------------------------
@pytest.mark.parametrize(("changes", "count"), [
    ({"tapio_nats_servers": ["nats://user:secret@127.0.0.1:4222", "nats://token@127.0.0.1:4223"]}, 2),
    ({"tapio_nats_url": "nats://user:secret@tapio-nats:4222"}, 1),
])
def test_credentials_in_urls_are_refused(changes: dict[str, Any], count: int) -> None:
    found = only(problems(**changes))
    assert found.startswith(f"{count} NATS URL(s) in {HOST}'s tapio_nats_servers / tapio_nats_url carry credentials")


def test_url_credentials_are_found_for_hiding() -> None:
    inputs = {"tapio_nats_servers": ["nats://u:pw@a:4222", "nats://b:4222"], "tapio_nats_url": "tls://tok@c:4222"}
    assert ti.url_credentials(inputs) == ["u:pw", "tok"]
    assert ti.url_credentials({"tapio_nats_servers": "nats://a:4222,nats://u:pw@b:4222"}) == ["u:pw"]
    assert ti.url_credentials({"tapio_nats_servers": None}) == []


# -- names, subjects and URLs ----------------------------------------------------------------
@pytest.mark.parametrize(("changes", "message"), [
    ({"tapio_namespace": "Tapio_Prod"}, "namespace=Tapio_Prod"),
    ({"tapio_pipeline": {"name": "Pipeline", "container": "pipeline"}}, "pipeline=Pipeline"),
    ({"tapio_collectors": [{**COLLECTORS[0], "name": "Bad_Name"}]}, "not DNS-1123 labels=['Bad_Name']"),
    ({"tapio_collectors": [{**COLLECTORS[0], "subject_prefix": "tapio.events.*"}]}, "no wildcards)=['tapio.events.*']"),
    ({"tapio_collectors": [{**COLLECTORS[0], "subject_prefix": "tapio..k8s"}]}, "no wildcards)=['tapio..k8s']"),
    ({"tapio_collectors": [COLLECTORS[0], COLLECTORS[0]]}, "collector names must be unique"),
    ({"tapio_collectors": []}, "collector names must be unique"),
    ({"tapio_nats_servers": ["http://127.0.0.1:4222"]}, "NATS servers not nats:// or tls:// URLs=['http://127.0.0.1:4222']"),
    ({"tapio_nats_servers": ["nats://127.0.0.1:4222/x"]}, "tls:// URLs=['nats://127.0.0.1:4222/x']"),
    ({"tapio_nats_servers": []}, "NATS servers not nats:// or tls:// URLs=[]"),
])
def test_bad_names_subjects_and_urls(changes: dict[str, Any], message: str) -> None:
    found = only(problems(**changes))
    assert found.startswith(f"Invalid inventory for {HOST}: namespace=") and message in found


def test_the_names_message_lists_every_bad_name() -> None:
    found = only(problems(tapio_collectors=[{**COLLECTORS[0], "name": "A"}, {**COLLECTORS[1], "name": "B"}]))
    assert ("collector names that are not DNS-1123 labels=['A', 'B'], subject prefixes that are not NATS subject "
            "tokens (a.b.c, no wildcards)=[], collector names must be unique, NATS servers not nats:// or tls:// "
            "URLs=[]") in found


# -- NATS users --------------------------------------------------------------------------------
USERS = {"tapio_nats_component_users": True}


def test_workload_passwords_are_not_needed_the_nats_phase_keeps_or_makes_them() -> None:
    assert problems(**USERS) == []
    assert problems(tapio_nats_component_users="false", tapio_nats_security_opt_outs=["shared_user"]) == []


@pytest.mark.parametrize(("password", "ok"), [("p@ss/word", False), ("two words", False), ("Abc.1_~-z", True),
                                              ("", True), (None, True)])
def test_route_password_characters(password: str | None, ok: bool) -> None:
    found = problems(tapio_nats_route_password=password) if password is not None else problems()
    if ok:
        assert found == []
    else:
        assert only(found) == (f"Invalid NATS users for {HOST}: tapio_nats_route_password may hold only letters, "
                               "digits and . _ ~ - (it is part of the route URLs).")


# -- production protections and their opt-outs -------------------------------------------------
@pytest.mark.parametrize(("changes", "weakened"), [
    ({}, []),
    ({"tapio_nats_component_users": False}, ["shared_user"]),
    ({"nats_cluster_tls_enabled": "false"}, ["plaintext_clients"]),
    ({"nats_cluster_tls_allow_non_tls": True}, ["plaintext_clients"]),
    ({"nats_cluster_route_tls_enabled": False}, ["plaintext_routes"]),
    ({"nats_cluster_method": "operator"}, ["plaintext_clients", "plaintext_routes"]),
    ({"tapio_nats_install": False}, ["plaintext_clients"]),
    ({"tapio_nats_install": False, "tapio_nats_url": "tls://a:4222,tls://b:4222"}, []),
    ({"tapio_nats_install": False, "tapio_nats_url": "tls://a:4222,nats://b:4222", "nats_cluster_tls_enabled": False,
      "nats_cluster_route_tls_enabled": False}, ["plaintext_clients"]),
    ({"tapio_nats_component_users": "no", "nats_cluster_tls_enabled": False, "nats_cluster_route_tls_enabled": False},
     ["shared_user", "plaintext_clients", "plaintext_routes"]),
], ids=["defaults", "shared-user", "no-client-tls", "allow-non-tls", "no-route-tls", "operator", "outside-nats-plain",
        "outside-nats-tls", "outside-nats-mixed", "all-off"])
def test_each_weaker_setting_is_refused_unless_opted_out_by_name(changes: dict[str, Any], weakened: list[str]) -> None:
    assert rules.weakened_protections({**GOOD, **changes}) == weakened
    found = problems(**changes)
    assert len(found) == len(weakened), found
    for name, problem in zip(weakened, found):
        assert problem.startswith(f"{HOST}: {rules.OPT_OUTS[name]}. Turn the protection on, or accept this by adding "
                                  f"'{name}' to tapio_nats_security_opt_outs"), problem
    assert problems(tapio_nats_security_opt_outs=weakened, **changes) == []
    accepted = rules.security_opt_outs({**GOOD, **changes, "tapio_nats_security_opt_outs": weakened})
    assert accepted == [{"name": name, "why": rules.OPT_OUTS[name]} for name in weakened]


def test_an_opt_out_not_in_effect_is_not_named_and_an_unknown_one_is_refused() -> None:
    assert rules.security_opt_outs({**GOOD, "tapio_nats_security_opt_outs": ["shared_user"]}) == []
    assert rules.security_opt_outs({**GOOD, "tapio_nats_component_users": False,
                                    "tapio_nats_security_opt_outs": "shared_user"})[0]["name"] == "shared_user"
    assert only(problems(tapio_nats_security_opt_outs=["shared_user", "no_tls"])) == (
        f"{HOST}: tapio_nats_security_opt_outs holds 'no_tls', which is not an opt-out (known: shared_user, "
        "plaintext_clients, plaintext_routes)")


# -- kubeconfig --------------------------------------------------------------------------------
def test_kubeconfig_must_exist_when_set(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert only(problems(tapio_kubeconfig=str(missing))) == (
        f"tapio_kubeconfig {missing} does not exist (for the lab: scripts/lab up)")
    assert problems(tapio_kubeconfig=None) == []


def test_kubeconfig_path_is_expanded_but_named_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert only(problems(tapio_kubeconfig="~/.kube/config")).startswith("tapio_kubeconfig ~/.kube/config does not")
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("")
    assert problems(tapio_kubeconfig="~/.kube/config") == []


# -- several problems at once --------------------------------------------------------------------
def test_every_problem_is_reported_in_order() -> None:
    found = problems(running="2.18.0", tapio_namespace="Tapio_Prod", tapio_nats_reach="kubernetes",
                     tapio_nats_kube_selector="a=b", tapio_nats_kube_service="nats",
                     tapio_nats_url="nats://u:p@tapio-nats:4222", tapio_nats_route_password="a/b",
                     tapio_kubeconfig="/nonexistent/kubeconfig", **USERS)
    assert [problem.split(" ")[0] for problem in found] == [
        "ansible-core", "Invalid", "1", "Invalid", "Invalid", "tapio_kubeconfig"]
    assert "Invalid NATS reach" in found[1] and "namespace=Tapio_Prod" in found[3]
    assert "tapio_nats_route_password may hold only" in found[4]


# -- the module, run as the action plugin runs it ----------------------------------------------
action = load_file("tapio_test_action_plugin_inputs", REPO_ROOT / "plugins" / "action" / "tapio_migration.py")
inputs_module = load_file("tapio_test_library_inputs", REPO_ROOT / "library" / "tapio_inputs.py")
MODULE_ARGS = {"host": HOST, "namespace": "tapio", "kube_context": "kwok-tapio-lab", "pipeline": GOOD["tapio_pipeline"],
               "collectors": COLLECTORS,
               "nats_servers": GOOD["tapio_nats_servers"]}


def run(args: dict[str, Any], check: bool = False) -> dict[str, Any]:
    payload = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check, "_ansible_verbosity": 3}}
    return json.loads(action.run_module_in_process(inputs_module, json.dumps(payload).encode()))


def test_module_passes_good_input_in_check_mode_too() -> None:
    for check in (False, True):
        result = run(MODULE_ARGS, check=check)
        assert not result.get("failed") and result["changed"] is False and result["ansible_version"], result
        assert result["security_opt_outs"] == []


def test_module_reports_every_problem_one_a_line() -> None:
    result = run({**MODULE_ARGS, "namespace": "Tapio_Prod", "kubeconfig": "/nonexistent/kubeconfig",
                  "nats_component_users": "no"})
    assert result["failed"] is True
    lines = result["msg"].split("\n")
    assert len(lines) == 3 and "namespace=Tapio_Prod" in lines[0]
    assert "accept this by adding 'shared_user'" in lines[1]
    assert lines[2] == "tapio_kubeconfig /nonexistent/kubeconfig does not exist (for the lab: scripts/lab up)"


def test_module_hides_url_credentials_and_the_route_password() -> None:
    result = run({**MODULE_ARGS, "nats_servers": ["http://user:s3cret@127.0.0.1:4222"], "nats_route_password": "r/oute",
                  "nats_passwords_with_control_characters": ["tapio_nats_password"]})
    text = json.dumps(result)
    assert "s3cret" not in text and "r/oute" not in text
    assert "tapio_nats_password holds a control character" in result["msg"]
    assert "NATS servers not nats:// or tls:// URLs=['http://********@127.0.0.1:4222']" in result["msg"]
    assert "1 NATS URL(s) in lab's tapio_nats_servers / tapio_nats_url carry credentials" in result["msg"]



# -- subjects, passwords, URL, context, rollout order (issue: every bad input refused first) --
@pytest.mark.parametrize(("changes", "message"), [
    ({"tapio_collectors": [COLLECTORS[0], {**COLLECTORS[1], "subject_prefix": "tapio.events.k8s.audit"}]},
     "lab: collectors tapio-k8s-collector and tapio-systemd-collector publish under overlapping subject prefixes "
     "(tapio.events.k8s, tapio.events.k8s.audit)"),
    ({"tapio_collectors": [COLLECTORS[0], {**COLLECTORS[1], "subject_prefix": "tapio.events.k8s"}]},
     "overlapping subject prefixes (tapio.events.k8s, tapio.events.k8s)"),
    ({"tapio_collectors": [COLLECTORS[0], {**COLLECTORS[1], "subject_prefix": "other.events.systemd"}]},
     "lab: collector tapio-systemd-collector's subjects other.events.systemd.> are outside the events stream's "
     "subjects tapio.events.> (tapio_consume_subjects)"),
    ({"tapio_consume_subjects": "tapio.events.k8s.>"}, "tapio-systemd-collector's subjects tapio.events.systemd.> "
     "are outside the events stream's subjects tapio.events.k8s.>"),
    ({"tapio_consume_subjects": ">", "tapio_collectors": [{**COLLECTORS[0], "subject_prefix": "_INBOX.k8s"}]},
     "lab: collector tapio-k8s-collector's subject_prefix _INBOX.k8s is a subject NATS reserves"),
    ({"tapio_nats_passwords_with_control_characters": ["tapio_nats_password"]},
     "lab: tapio_nats_password holds a control character"),
    ({"tapio_nats_passwords_with_control_characters": ["tapio_nats_component_passwords[tapio-pipeline]"]},
     "lab: tapio_nats_component_passwords[tapio-pipeline] holds a control character"),
    ({"tapio_nats_url": "nats://tapio-nats:4222; rm -rf /"}, "lab: tapio_nats_url 'nats://tapio-nats:4222; rm -rf /' "
     "is not a nats:// or tls:// URL of a host and port"),
    ({"tapio_nats_url": "http://tapio-nats:4222"}, "is not a nats:// or tls:// URL"),
    ({"tapio_kube_context": None}, "lab: tapio_kube_context is not set, so the kubeconfig's current context would "
     "be migrated"),
    ({"tapio_collectors_order": ["tapio-k8s-collector", "tapio-ebpf-collector"]},
     "lab: tapio_collectors_order ['tapio-k8s-collector', 'tapio-ebpf-collector'] must list collectors of "
     "tapio_collectors (tapio-k8s-collector, tapio-systemd-collector), each at most once; unknown: "
     "tapio-ebpf-collector; repeated: none"),
    ({"tapio_collectors_order": ["tapio-k8s-collector", "tapio-k8s-collector"]}, "repeated: tapio-k8s-collector"),
    ({"tapio_collectors_order": []}, "must list collectors of tapio_collectors"),
    ({"tapio_collectors_batch_size": 0}, "lab: tapio_collectors_batch_size 0 must be a whole number of at least 1"),
    ({"tapio_collectors_batch_size": "two"}, "tapio_collectors_batch_size 'two' must be a whole number"),
    ({"tapio_lock_duration": 2}, "lab: tapio_lock_duration 2 must be a whole number of seconds, at least 30"),
    ({"tapio_lock_duration": 29}, "lab: tapio_lock_duration 29 must be a whole number of seconds, at least 30"),
    ({"tapio_lock_duration": "15m"}, "tapio_lock_duration '15m' must be a whole number of seconds"),
])
def test_inputs_that_used_to_fail_late_are_refused_first(changes: dict[str, Any], message: str) -> None:
    assert message in only(problems(**changes))


@pytest.mark.parametrize("changes", [
    {"tapio_nats_url": "nats://a:4222,tls://b.example.com:4223"}, {"tapio_nats_url": "nats://10.0.0.1"},
    {"tapio_consume_subjects": "tapio.>"}, {"tapio_collectors_order": ["tapio-systemd-collector"]},
    {"tapio_collectors_batch_size": "2"}, {"tapio_nats_passwords_with_control_characters": []},
    {"tapio_lock_duration": 30}, {"tapio_lock_duration": "900"},
])
def test_good_values_of_the_new_rules_pass(changes: dict[str, Any]) -> None:
    assert problems(**changes) == []


def test_only_the_names_of_passwords_with_control_characters_leave_the_template() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("users_filter_for_inputs",
                                                  REPO_ROOT / "plugins" / "filter" / "tapio_nats_users.py")
    users = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(users)
    found = users.passwords_with_control_characters("s3cret\n", {"a": "fine", "b": "p\x7f", "c": 'a "quoted" secret'})
    assert found == ["tapio_nats_password", "tapio_nats_component_passwords[b]"]
    assert users.passwords_with_control_characters("", {}) == []
    # The boilerplate's form: every inventory password by its name.
    named = {"tapio_nats_password": "ok", "tapio_nats_route_password": "", "tapio_nats_system_password": "a\tb"}
    assert users.passwords_with_control_characters(named, {"w": 123456}) == ["tapio_nats_system_password"]


def test_module_returns_the_opt_outs_in_effect() -> None:
    result = run({**MODULE_ARGS, "nats_cluster_route_tls_enabled": "no",
                  "nats_security_opt_outs": ["plaintext_routes", "shared_user"]})
    assert not result.get("failed"), result
    assert result["security_opt_outs"] == [{"name": "plaintext_routes", "why": rules.OPT_OUTS["plaintext_routes"]}]
