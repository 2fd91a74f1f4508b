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
    description:
      - NATS server URLs (C(nats://) or C(tls://), the client port); each is tried (twice) before the module
        fails naming them and the cause.
      - WebSocket URLs (C(ws://), C(wss://)) are refused with a message.
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
  domain:
    description:
      - JetStream domain whose API to use (C($JS.<domain>.API)), for a hub or leaf node's JetStream;
        the connected server's own JetStream when unset.
      - Defaults to E(NATS_JS_DOMAIN).
    type: str
  kube_port_forward:
    description:
      - Reach NATS through the Kubernetes API server instead of O(servers) directly, so a
        control node outside the cluster can manage streams without NATS being exposed.
      - The module resolves one pod (O(kube_port_forward.pod), or the first Running and
        Ready pod by name behind O(kube_port_forward.selector) or
        O(kube_port_forward.service)), listens on 127.0.0.1 on an ephemeral port, and opens
        one port-forward to that pod per connection (C(kubernetes.stream.portforward), the
        API server's C(pods/portforward) subresource). Everything is closed when the module ends.
      - The connection goes to the forwarded port only. O(servers) is not dialled; its first
        entry's host name is used to verify the server certificate when TLS is on (use
        C(tls://) URLs with the certificate's name, for example C(tls://tapio-nats.tapio.svc:4222)).
        Servers the cluster announces in INFO are never used, because management connections
        do not reconnect.
      - With O(kube_port_forward.all_pods) every Running and Ready pod behind the selector or
        Service is forwarded (one local listener per pod), and the client gets all of them as
        its server list, so the engine's session can connect again to another pod when one is
        lost. Pods are resolved again on every module call.
      - Needs the C(kubernetes) Python library and permission to C(get)/C(list) pods (and
        C(get) services with O(kube_port_forward.service)) and C(get) on C(pods/portforward)
        in the namespace (the client's WebSocket forward is authorized as C(get); a SPDY one,
        as kubectl's, as C(create)).
    type: dict
    suboptions:
      kubeconfig:
        description:
          - Kubeconfig file on the control node. Without it C($KUBECONFIG) or C(~/.kube/config)
            is used, or the pod's service account when the module runs inside the cluster.
        type: path
        env:
          - name: K8S_AUTH_KUBECONFIG
      context:
        description: Kubeconfig context; its current context by default.
        type: str
        env:
          - name: K8S_AUTH_CONTEXT
      namespace:
        description: Namespace of the NATS pods.
        type: str
        required: true
      pod:
        description: Name of the pod to forward to (it must be Running and Ready).
        type: str
      selector:
        description: Label selector (C(app.kubernetes.io/name=nats)); the first ready pod by name is used.
        type: str
      service:
        description: Service whose pod selector chooses the pod; the first ready pod by name is used.
        type: str
      port:
        description: The pod's NATS client port.
        type: int
        default: 4222
      all_pods:
        description:
          - Forward to every Running and Ready pod instead of the first one (with
            O(kube_port_forward.selector) or O(kube_port_forward.service)). The playbooks set
            it when C(tapio_nats_reach=kubernetes).
        type: bool
        default: false
      monitor_port:
        description:
          - The pods' HTTP monitoring port (8222). With O(kube_port_forward.all_pods), the
            monitoring reads of M(nats_info) (C(/healthz), C(/jsz), C(/jsz?leader-only=true)) go
            through a forward to this port of every pod, opened again for each read (a wait
            sees replaced pods), and O(monitor_urls) is not used; pods that are not ready are
            reported as problems. Needs O(kube_port_forward.all_pods).
        type: int
      statefulset:
        description:
          - The StatefulSet whose pods alone are forwarded to. A pod the selector or Service
            matches is forwarded to only when this StatefulSet (its name and uid) is its
            controller; the others are named and left out. On the client port, the NATS server's
            INFO must carry the pod's name as its C(server_name) before any byte of the client
            (its C(CONNECT), with the credentials) goes through; otherwise the connection is closed
            and the refusal is named. The playbooks set it to C(nats_cluster_name) when
            C(tapio_nats_reach=kubernetes) with the statefulset method (the operator method's pods
            belong to its NatsCluster). Needs C(get) on that StatefulSet.
        type: str
"""
