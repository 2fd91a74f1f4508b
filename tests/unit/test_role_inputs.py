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
