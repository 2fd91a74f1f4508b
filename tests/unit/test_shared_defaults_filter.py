"""The defaults of the settings every phase shares, written once (plugins/filter/tapio_shared_defaults.py),
and every role reading the events stream's name through it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from module_utils_loader import load_file

REPO_ROOT = Path(__file__).resolve().parents[2]
shared = load_file("tapio_shared_defaults_filter", REPO_ROOT / "plugins" / "filter" / "tapio_shared_defaults.py")
ROLE_DEFAULTS = sorted(REPO_ROOT.glob("roles/*/defaults/main.yml"))
STREAM_DEFAULT = "tapio_events_stream | default('tapio_events_stream' | tapio_shared_default)"


def test_the_events_stream_defaults_to_tapio_events() -> None:
    assert shared.FilterModule().filters()["tapio_shared_default"]("tapio_events_stream") == "TAPIO_EVENTS"


def test_an_unknown_name_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(AnsibleFilterError, match="'tapio_event_stream' has no shared default .known: tapio_events_stream"):
        shared.shared_default("tapio_event_stream")


def test_every_role_takes_the_stream_default_from_the_filter() -> None:
    readers = [path for path in ROLE_DEFAULTS if "tapio_events_stream" in path.read_text()]
    assert len(readers) >= 7, readers
    for path in readers:
        text = path.read_text()
        assert not re.search(r"default\(\s*'TAPIO_EVENTS'", text), path
        assert text.count("tapio_events_stream |") == text.count(STREAM_DEFAULT), path


@pytest.mark.parametrize("module", ["tapio_migration", "tapio_health"])
def test_the_modules_document_the_same_default(module: str) -> None:
    """A module's own default, for a call without the roles (an ad-hoc task); a module's
    DOCUMENTATION states it literally, so it stays there and is held equal here."""
    loaded = load_file(f"shared_defaults_test_{module}", REPO_ROOT / "library" / f"{module}.py")
    assert loaded.ARGUMENT_SPEC["stream"]["default"] == shared.SHARED_DEFAULTS["tapio_events_stream"]
