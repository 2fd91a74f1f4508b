"""Import module_utils/<name>.py the way Ansible exposes it to modules, for unit tests."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

MODULE_UTILS = Path(__file__).resolve().parents[1] / "module_utils"


def load_module_utils(name: str) -> ModuleType:
    """module_utils/<name>.py as ansible.module_utils.<name> (loaded once per session)."""
    qualified = f"ansible.module_utils.{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, MODULE_UTILS / f"{name}.py")
    assert spec is not None and spec.loader is not None, name
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module



def load_file(name: str, path: Path) -> ModuleType:
    """A Python file (a library/ module, an action plugin) as module *name*."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

