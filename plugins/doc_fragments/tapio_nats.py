# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation of the connection options every nats_* module shares.

The options themselves come from module_utils/tapio_nats.py
(nats_connection_argument_spec); modules pull this text in with
``extends_documentation_fragment: [tapio_nats]``.
"""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  servers:
    description: NATS server URLs; each is tried (twice) before the module fails naming them and the cause.
    type: list
    elements: str
    default: [nats://127.0.0.1:4222]
    env:
      - name: NATS_URL
  user:
    description: User name; requires O(password).
    type: str
    env:
      - name: NATS_USER
  password:
    description: Password for O(user); never shown in output.
    type: str
    env:
      - name: NATS_PASSWORD
  token:
    description: Authentication token (not with O(user) or O(creds_file)); never shown in output.
    type: str
    env:
      - name: NATS_TOKEN
  creds_file:
    description: Path of a NATS credentials file on the control node; a missing file fails before connecting.
    type: path
    env:
      - name: NATS_CREDS
  nkey_seed:
    description: NKey seed (the seed itself, not a path); never shown in output.
    type: str
  tls_ca_cert:
    description: CA bundle to verify the servers; TLS is used when any tls option is set or a URL is C(tls://).
    type: path
  tls_client_cert:
    description: Client certificate for mutual TLS; requires O(tls_client_key).
    type: path
  tls_client_key:
    description: Key of O(tls_client_cert).
    type: path
  tls_verify:
    description: Verify the servers' certificates and host names.
    type: bool
    default: true
  connect_timeout:
    description: Seconds per connection attempt.
    type: float
    default: 5
  api_timeout:
    description: Seconds per JetStream API request.
    type: float
    default: 5
"""
