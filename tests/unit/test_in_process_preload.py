"""plugins/action/tapio_migration.py's preload in the controller: under Ansible (a plugin
loader with its collection finder) it warms the plugins every worker would load again and
freezes the controller's objects in the garbage collector before each fork, and shares a copy
of its stderr with its workers (for the lock's renewer), once per process however many plugin
names import the file. Each case runs in a fresh interpreter."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import REPO_ROOT

PLUGIN = REPO_ROOT / "plugins" / "action" / "tapio_migration.py"

IMPORT_TWICE = textwrap.dedent("""
    import gc, importlib.util, json, os, sys
    from ansible.plugins.loader import init_plugin_loader
    if sys.argv[2] == "ansible":
        init_plugin_loader()
        import ansible_collections  # what ansible-playbook has imported by the time it loads actions
    shared = []
    for name in ("plugin_a", "plugin_b"):  # two symbolic links to the same file
        spec = importlib.util.spec_from_file_location(name, sys.argv[1])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        shared.append(os.environ.get(module.CONTROLLER_STDERR_ENV, ""))
    owner, _, fd = shared[0].partition(":")
    frozen_at_import = gc.get_freeze_count()
    objects = [[index] for index in range(1000)]  # allocated after the import
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: the objects above were frozen before the fork
        os.write(write, str(gc.get_freeze_count()).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    frozen_in_child = int(os.read(read, 64))
    print(json.dumps({"marked": module.FORK_HOOK_MARK in sys.modules,
                      "frozen_at_import": frozen_at_import > 0,
                      "frozen_before_fork": frozen_in_child >= frozen_at_import + len(objects),
                      "test_plugins_loaded": any(m.startswith("ansible.plugins.test.core") for m in sys.modules),
                      # one copy of stderr for the lock's renewer, tagged with this process
                      "stderr_shared": owner == str(os.getpid()) and fd.isdigit() and shared[0] == shared[1]
                      and os.path.samestat(os.fstat(int(fd or 2)), os.fstat(2))}))
""")


def preload(mode: str) -> dict[str, bool]:
    out = subprocess.run([sys.executable, "-c", IMPORT_TWICE, str(PLUGIN), mode],
                         check=True, capture_output=True, text=True)
    assert "WARNING" not in out.stderr, out.stderr
    return json.loads(out.stdout)


def test_under_ansible_the_controller_is_frozen_before_each_fork_and_plugins_warmed() -> None:
    assert preload("ansible") == {"marked": True, "frozen_at_import": True, "frozen_before_fork": True,
                                  "test_plugins_loaded": True, "stderr_shared": True}


def test_outside_ansible_nothing_is_frozen_or_warmed() -> None:
    assert preload("plain") == {"marked": False, "frozen_at_import": False, "frozen_before_fork": False,
                                "test_plugins_loaded": False, "stderr_shared": False}
