"""Tapio simulator for the lab.

kwok runs no containers, so this process plays the part of Tapio's collector pods and of
the pipeline: it watches the lab's pods through the Kubernetes API, emits sequence-numbered
UnifiedEvents per Ready collector pod (direct or NATS output, chosen from that pod's own
env), emulates the pipeline (the direct channel while a pipeline pod is Ready, the
JetStream durable pull consumer while the pipeline pod's env says NATS), and keeps a ledger
of emitted and received event IDs per source so lost and duplicated events can be counted.
See docs/simulator.md.
"""
__version__ = "1.0.0"
