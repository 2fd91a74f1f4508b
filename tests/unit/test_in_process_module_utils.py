"""plugins/action/tapio_migration.py runs the library's modules inside the controller, where
``ansible.module_utils.tapio_*`` resolve only if its PROJECT_MODULE_UTILS preloaded them (no
finder adds the project's module_utils there, and a failed preload is skipped): every
module_utils a module run in process imports, directly or not, must be in that list, in
dependency order. Checked in a fresh interpreter, without tests/conftest.py's finder."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import REPO_ROOT

PLUGINS = REPO_ROOT / "plugins" / "action"
IN_PROCESS = sorted({p.stem for p in PLUGINS.glob("*.py") if p.is_symlink()} | {"tapio_migration"})

LOAD_EACH = textwrap.dedent("""
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("plugin", sys.argv[1])
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    failed = {}
    for name in json.loads(sys.argv[2]):
        try:
            plugin._load_module_utils(plugin.MODULE_UTILS_OF_ONE_MODULE.get(name, ()))
            plugin._load(f"tapio_in_process_library.{name}", plugin.LIBRARY_DIR / f"{name}.py")
        except Exception as error:
            failed[name] = f"{type(error).__name__}: {error}"
    print(json.dumps(failed))
""")


def test_the_plugin_preloads_every_module_utils_its_modules_import() -> None:
    assert len(IN_PROCESS) > 5, IN_PROCESS
    done = subprocess.run([sys.executable, "-c", LOAD_EACH, str(PLUGINS / "tapio_migration.py"), json.dumps(IN_PROCESS)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}
