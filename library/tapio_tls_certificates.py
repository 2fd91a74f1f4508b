#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: tapio_tls_certificates
short_description: Keep a lab CA and the TLS certificates of NATS servers, routes and clients in one directory
description:
  - Writes C(ca.crt) and C(ca.key) (a self-signed EC P-256 CA) and, for each entry of
    O(certificates), C(<name>.crt) and C(<name>.key) signed by that CA, into O(dest).
  - A file is only written when it must be. The CA is generated again when its files are
    missing or unreadable, its key does not match its certificate, it is not a CA, its
    common name differs from O(ca_common_name), or it expires within O(renew_before_days).
    A new CA reissues every certificate.
  - A certificate is issued again (with a new key) when its files are missing or unreadable,
    its key does not match, it was not issued by the CA, its common name differs, its SANs
    do not cover every asked DNS name and IP address, its usage differs, or it expires within
    O(renew_before_days). A certificate with more SANs than asked is kept.
  - Keys are unencrypted PKCS#8 PEM, mode 0600; certificates PEM, mode 0644. Each file is
    replaced atomically (a temporary file in O(dest), then a rename). A kept file with another
    mode gets its mode back.
  - Uses the C(cryptography) package (module_utils/tapio_tls.py); no openssl command.
version_added: "1.3.0"
author: Tapio NATS migration toolkit
requirements:
  - python >= 3.10
  - cryptography >= 42
options:
  dest:
    description: The directory of the files; created with mode 0700 when missing.
    type: path
    required: true
  ca_common_name:
    description: Common name of the CA.
    type: str
    default: tapio-lab-ca
  certificates:
    description: The certificates to keep, each signed by the CA.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: File stem; C(<name>.crt) and C(<name>.key). Not C(ca), and no C(/).
        type: str
        required: true
      common_name:
        description: Subject common name.
        type: str
        required: true
      dns_names:
        description: DNS subject alternative names (ASCII; wildcards allowed).
        type: list
        elements: str
        default: []
      ip_addresses:
        description: IP address subject alternative names (IPv4 or IPv6).
        type: list
        elements: str
        default: []
      usage:
        description:
          - Extended key usage. V(server) for a server (clients and routes connect to it),
            V(client) for a client, V(both) for a route (a server that also dials its peers).
        type: str
        choices: [server, client, both]
        default: both
  valid_days:
    description: Validity of a new CA or certificate, in days. A certificate never outlives its CA.
    type: int
    default: 365
  renew_before_days:
    description: Renew a CA or certificate that expires within this many days; less than O(valid_days).
    type: int
    default: 30
notes:
  - Supports check mode (nothing is written; the result says what would be) and diff mode
    (which files would be created or renewed and why; never key material).
  - Bad input (an empty, duplicate or reserved name, a name with C(/), an invalid IP address)
    fails before anything is written.
"""

EXAMPLES = r"""
- name: A lab CA and certificates for a 3-node NATS cluster and its clients
  ansible.legacy.tapio_tls_certificates:
    dest: .lab/tls
    certificates:
      - name: nats-server
        common_name: nats
        dns_names: [localhost, "nats.tapio.svc", "*.nats.tapio.svc"]
        ip_addresses: [127.0.0.1]
        usage: server
      - name: nats-route
        common_name: nats-route
        dns_names: ["*.nats.tapio.svc"]
        usage: both
      - name: tapio-client
        common_name: tapio
        usage: client
  register: nats_tls

- name: Show what was renewed and why
  ansible.builtin.debug:
    var: nats_tls.renewed
"""

RETURN = r"""
ca_cert:
  description: Path of the CA certificate.
  returned: always
  type: str
  sample: .lab/tls/ca.crt
certificates:
  description: For each name of O(certificates), the paths of its certificate and key.
  returned: always
  type: dict
  sample: {"nats-server": {"cert": ".lab/tls/nats-server.crt", "key": ".lab/tls/nats-server.key"}}
renewed:
  description:
    - Every file written (or, in check mode, that would be), and every kept file whose mode
      was set back, with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{"file": ".lab/tls/nats-server.crt", "reason": "its SANs do not cover DNS:nats-2.nats"}]
"""

import ipaddress
import os
import traceback
from dataclasses import dataclass
from typing import Any, Optional

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.tapio_private import write_atomically

TLS_IMPORT_ERROR: Optional[str] = None
try:
    from ansible.module_utils.tapio_tls import (
        KeyPair,
        LeafRequest,
        cert_pem,
        decide_ca,
        decide_leaf,
        generate_ca,
        issue_leaf,
        key_pem,
    )
except ImportError:
    TLS_IMPORT_ERROR = traceback.format_exc()

ARGUMENT_SPEC: dict[str, Any] = {
    "dest": {"type": "path", "required": True},
    "ca_common_name": {"type": "str", "default": "tapio-lab-ca"},
    "certificates": {"type": "list", "elements": "dict", "default": [], "options": {
        "name": {"type": "str", "required": True},
        "common_name": {"type": "str", "required": True},
        "dns_names": {"type": "list", "elements": "str", "default": []},
        "ip_addresses": {"type": "list", "elements": "str", "default": []},
        "usage": {"type": "str", "choices": ["server", "client", "both"], "default": "both"},
    }},
    "valid_days": {"type": "int", "default": 365},
    "renew_before_days": {"type": "int", "default": 30},
}
CERT_MODE = 0o644
KEY_MODE = 0o600


@dataclass(frozen=True)
class Write:
    """One file to write (``data``) or, with ``data`` None, only to give its mode back."""

    path: str
    data: Optional[bytes]
    mode: int
    reason: str
    existed: bool


def problems_of(params: dict[str, Any]) -> list[str]:
    problems = []
    if not params["ca_common_name"]:
        problems.append("ca_common_name must not be empty")
    if params["valid_days"] < 1:
        problems.append(f"valid_days must be at least 1, got {params['valid_days']}")
    if not 0 <= params["renew_before_days"] < params["valid_days"]:
        problems.append(f"renew_before_days must be at least 0 and less than valid_days ({params['valid_days']}), "
                        f"got {params['renew_before_days']}: otherwise every run would renew")
    seen: set[str] = set()
    for index, entry in enumerate(params["certificates"]):
        name = entry["name"]
        where = f"certificates[{index}]"
        if not name or "/" in name or name in (".", ".."):
            problems.append(f"{where}.name must be a file stem without '/', got {name!r}")
        elif name == "ca":
            problems.append(f"{where}.name 'ca' is the CA's own files")
        elif name in seen:
            problems.append(f"{where}.name {name!r} is used twice")
        seen.add(name)
        if not entry["common_name"]:
            problems.append(f"{where}.common_name must not be empty")
        for dns_name in entry["dns_names"]:
            if not dns_name or not dns_name.isascii() or any(char.isspace() for char in dns_name):
                problems.append(f"{where}.dns_names: {dns_name!r} is not an ASCII DNS name")
        for address in entry["ip_addresses"]:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                problems.append(f"{where}.ip_addresses: {address!r} is not an IP address")
    return problems


def read_optional(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def pair_writes(cert_path: str, key_path: str, pair: KeyPair, reason: str) -> list[Write]:
    # The key first: if the run stops in between, the old certificate no longer matches and is reissued.
    return [Write(key_path, key_pem(pair.key), KEY_MODE, reason, os.path.exists(key_path)),
            Write(cert_path, cert_pem(pair.cert), CERT_MODE, reason, os.path.exists(cert_path))]


def mode_writes(files: dict[str, int], written: set[str]) -> list[Write]:
    """Kept files whose mode is not the one this module gives them."""
    fixes = []
    for path, mode in files.items():
        if path not in written and os.path.exists(path):
            actual = os.stat(path).st_mode & 0o7777
            if actual != mode:
                fixes.append(Write(path, None, mode, f"its mode was {actual:04o}, set to {mode:04o}", True))
    return fixes


def plan(params: dict[str, Any], paths: dict[str, tuple[str, str]]) -> list[Write]:
    """Every write this run needs; ``paths`` maps a stem (``ca`` first) to its (cert, key) paths."""
    valid_days, renew_before_days = params["valid_days"], params["renew_before_days"]
    ca_cert_path, ca_key_path = paths["ca"]
    ca_decision = decide_ca(read_optional(ca_cert_path), read_optional(ca_key_path), params["ca_common_name"],
                            renew_before_days)
    writes: list[Write] = []
    ca = ca_decision.existing
    if ca_decision.reason is not None or ca is None:
        ca = generate_ca(params["ca_common_name"], valid_days)
        writes += pair_writes(ca_cert_path, ca_key_path, ca, str(ca_decision.reason))
    for entry in params["certificates"]:
        cert_path, key_path = paths[entry["name"]]
        request = LeafRequest(entry["common_name"], tuple(entry["dns_names"]), tuple(entry["ip_addresses"]),
                              entry["usage"])
        decision = decide_leaf(read_optional(cert_path), read_optional(key_path), ca.cert, request,
                               renew_before_days, ca_is_new=ca_decision.regenerate)
        if decision.regenerate:
            writes += pair_writes(cert_path, key_path, issue_leaf(ca, request, valid_days), str(decision.reason))
    modes = {path: mode for cert_path, key_path in paths.values()
             for path, mode in ((cert_path, CERT_MODE), (key_path, KEY_MODE))}
    return writes + mode_writes(modes, {write.path for write in writes})


def diff_of(dest: str, writes: list[Write]) -> dict[str, str]:
    """Which files change and why; names and reasons only, never a key."""
    before = [f"{os.path.basename(w.path)}: {'present' if w.existed else 'absent'}\n" for w in writes]
    after = [f"{os.path.basename(w.path)}: "
             f"{'mode set' if w.data is None else 'renewed' if w.existed else 'created'} ({w.reason})\n"
             for w in writes]
    return {"before_header": dest, "after_header": dest, "before": "".join(before), "after": "".join(after)}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if TLS_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=TLS_IMPORT_ERROR)
    params, dest = module.params, module.params["dest"]
    problems = problems_of(params)
    if problems:
        module.fail_json(msg="Nothing was written: " + "; ".join(problems) + ".")
    paths = {stem: (os.path.join(dest, f"{stem}.crt"), os.path.join(dest, f"{stem}.key"))
             for stem in ["ca"] + [entry["name"] for entry in params["certificates"]]}
    try:
        writes = plan(params, paths)
        if writes and not module.check_mode:
            os.makedirs(dest, mode=0o700, exist_ok=True)
            for write in writes:
                if write.data is None:
                    os.chmod(write.path, write.mode)
                else:
                    write_atomically(write.path, write.data, write.mode)
    except OSError as exc:
        module.fail_json(msg=f"cannot read or write the TLS files in {dest}: {exc}")
    result: dict[str, Any] = {
        "changed": bool(writes),
        "ca_cert": paths["ca"][0],
        "certificates": {stem: {"cert": cert, "key": key} for stem, (cert, key) in paths.items() if stem != "ca"},
        "renewed": [{"file": write.path, "reason": write.reason} for write in writes],
    }
    if module._diff and writes:
        result["diff"] = diff_of(dest, writes)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
