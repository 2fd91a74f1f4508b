# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation of the wait options of the modules that wait for rollouts (tapio_apply,
tapio_credentials_rollout, tapio_migration): every wait follows progress
(module_utils/tapio_wait.py). Modules pull this text in with
``extends_documentation_fragment: [tapio_wait]``.
"""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  progress_deadline:
    description: Seconds a wait (a rollout, a drain) may go without progress before it fails.
    type: float
    default: 120
  poll_interval:
    description: Seconds between two reads while waiting.
    type: float
    default: 2
"""
