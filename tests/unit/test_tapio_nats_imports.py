"""module_utils/tapio_nats: nats-py is imported without its WebSocket transport's aiohttp, and
WebSocket server URLs are refused with a message instead of failing inside nats-py."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import REPO_ROOT
from test_kube_forward import tn

IMPORT_CHECK = textwrap.dedent("""
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("ansible.module_utils.tapio_nats", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    loaded_by_import = "aiohttp" in sys.modules
    import aiohttp  # still importable by anyone else afterwards
    print(json.dumps({"error": module.NATS_IMPORT_ERROR, "aiohttp_loaded": loaded_by_import,
                      "aiohttp_usable": hasattr(aiohttp, "ClientSession")}))
""")


def test_nats_is_imported_without_loading_aiohttp() -> None:
    out = subprocess.run([sys.executable, "-c", IMPORT_CHECK, str(REPO_ROOT / "module_utils" / "tapio_nats.py")],
                         check=True, capture_output=True, text=True).stdout
    assert out.strip() == '{"error": null, "aiohttp_loaded": false, "aiohttp_usable": true}'


@pytest.mark.parametrize("url", ["ws://user:secret@nats.example:8080", "WSS://nats.example:443"])
def test_websocket_servers_are_refused_by_name(url: str) -> None:
    params = {"servers": ["nats://a:4222", url], "connect_timeout": 2}
    with pytest.raises(tn.NatsModuleError) as raised:
        tn.connect_options(params)
    message = str(raised.value)
    assert "WebSocket URLs are not supported" in message
    assert "nats.example" in message and "secret" not in message


def test_nats_and_tls_servers_are_accepted() -> None:
    options = tn.connect_options({"servers": ["nats://a:4222", "tls://b:4222"], "connect_timeout": 2})
    assert options["servers"] == ["nats://a:4222", "tls://b:4222"]
