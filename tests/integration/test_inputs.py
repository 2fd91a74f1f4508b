"""Bad inventory input fails in the boilerplate play, naming the problem, before any change."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from kubernetes import client, config

from conftest import REPO_ROOT, VENV_BIN, KubeLab

pytestmark = pytest.mark.integration


def run_migrate(extra_vars: dict) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "migrate.yml", "-e", json.dumps(extra_vars)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def resource_versions(kube_lab: KubeLab, namespace: str = "tapio") -> dict[str, str]:
    """resourceVersion of everything the migration could change in Tapio's namespace."""
    api = config.new_client_from_config(str(kube_lab.kubeconfig), context=kube_lab.context)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    versions = {"ns": core.read_namespace(namespace).metadata.resource_version}
    for kind, items in (("ds", apps.list_namespaced_daemon_set(namespace).items),
                        ("deploy", apps.list_namespaced_deployment(namespace).items),
                        ("sts", apps.list_namespaced_stateful_set(namespace).items),
                        ("cm", core.list_namespaced_config_map(namespace).items),
                        ("svc", core.list_namespaced_service(namespace).items)):
        for obj in items:
            versions[f"{kind}/{obj.metadata.name}"] = obj.metadata.resource_version
    assert any(key.startswith("ds/") for key in versions), "Tapio's collectors are missing from the lab"
    return versions


GOOD_COLLECTOR = {"name": "tapio-k8s-collector", "container": "k8s-collector", "subject_prefix": "tapio.events.k8s"}

# One case per kind of check, through a real migrate.yml run that must change nothing; every
# rule and message is unit-tested in tests/unit/test_tapio_inputs.py and test_role_inputs.py.
CASES = [
    pytest.param({"tapio_namespace": "Tapio_Prod"}, "namespace=Tapio_Prod", id="namespace-not-dns-label"),
    pytest.param({"tapio_collectors": [{"name": "x", "subject_prefix": "tapio.x"}]},
                 "missing required arguments: container found in tapio_collectors", id="collector-without-container"),
    pytest.param({"tapio_nats_reach": "kubernetes", "tapio_nats_kube_port_forward": {"namespace": "tapio", "pod": "p"}},
                 "tapio_nats_kube_port_forward (one pod, for direct reach) cannot be combined with it",
                 id="nats-reach-with-one-pod-forward"),
    pytest.param({"tapio_nats_component_users": False,
                  "tapio_nats_security_opt_outs": ["plaintext_clients", "plaintext_routes"]},
                 "accept this by adding 'shared_user' to tapio_nats_security_opt_outs",
                 id="shared-user-without-its-opt-out"),
    # A phase's own input, refused with every role's before the run's first change.
    pytest.param({"nats_streams_verify": "perhaps"},
                 "role nats_streams (main): argument 'nats_streams_verify' is of type str", id="role-input-type"),
    pytest.param({"tapio_kubeconfig": "/nonexistent/kubeconfig"},
                 "tapio_kubeconfig /nonexistent/kubeconfig does not exist", id="missing-kubeconfig"),
    pytest.param({"tapio_collectors": [GOOD_COLLECTOR, {**GOOD_COLLECTOR, "name": "tapio-audit-collector",
                                                        "subject_prefix": "tapio.events.k8s.audit"}]},
                 "publish under overlapping subject prefixes (tapio.events.k8s, tapio.events.k8s.audit)",
                 id="overlapping-subject-prefixes"),
    pytest.param({"tapio_nats_password": "tapio-lab-secret\n"},
                 "lab: tapio_nats_password holds a control character", id="password-with-a-newline"),
    # Between two roles: the streams phase would fail only after NATS was installed.
    pytest.param({"nats_cluster_replicas": 1},
                 "stream TAPIO_EVENTS: replicas 3 is more than the 1 NATS servers this run installs",
                 id="stream-replicas-above-the-install"),
]


@pytest.mark.parametrize(("extra_vars", "message"), CASES)
def test_bad_input_fails_before_any_change(kube_lab: KubeLab, extra_vars: dict, message: str) -> None:
    before = resource_versions(kube_lab)
    result = run_migrate(extra_vars)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert message in output, output[-3000:]
    assert "Check versions and inputs" in output
    assert resource_versions(kube_lab) == before
