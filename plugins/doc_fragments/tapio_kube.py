# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation of the Kubernetes connection options of tapio_migration and tapio_apply.

The options themselves come from module_utils/tapio_kube.py (KUBE_CONNECTION_SPEC); modules
pull this text in with ``extends_documentation_fragment: [tapio_kube]``.
"""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description: Kubeconfig file; the in-cluster service account when unset and running in a pod.
    type: path
    env:
      - name: K8S_AUTH_KUBECONFIG
  context:
    description: Context of O(kubeconfig).
    type: str
    env:
      - name: K8S_AUTH_CONTEXT
"""
