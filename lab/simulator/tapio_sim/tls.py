"""TLS to NATS as a Tapio pod would do it: trust the CA its env carries (PEM, from a Secret by
secretKeyRef). No CA: no context, so a TLS-only server refuses the pod as it would a real one.
Also the pod's own inbox prefix, the other connect option a pod's env decides."""
from __future__ import annotations

import functools
import ssl
from typing import Optional


@functools.lru_cache(maxsize=16)
def tls_context(ca_pem: Optional[str]) -> Optional[ssl.SSLContext]:
    """A client context trusting *ca_pem* only (hostname checked), or None without one."""
    if not ca_pem:
        return None
    return ssl.create_default_context(cadata=ca_pem)


def inbox_option(prefix: Optional[str]) -> dict[str, str]:
    """nats.connect's keyword for a pod's own inbox prefix (none: nats-py's _INBOX)."""
    return {"inbox_prefix": prefix} if prefix else {}
