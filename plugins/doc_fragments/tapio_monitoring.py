# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation of the monitoring options of the modules that read the NATS servers'
monitoring endpoints (nats_info, tapio_health). Modules pull this text in with
``extends_documentation_fragment: [tapio_monitoring]``.
"""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  monitor_urls:
    description:
      - HTTP monitoring URLs (port 8222) of every server.
      - Not used when O(kube_port_forward.all_pods) and O(kube_port_forward.monitor_port) are
        set; the monitoring reads then go through a forward to every NATS pod.
    type: list
    elements: str
    default: []
  monitor_timeout:
    description: Timeout in seconds for each monitoring request.
    type: float
    default: 5
"""
