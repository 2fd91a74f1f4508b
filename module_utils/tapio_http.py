# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Plain HTTP(S) GETs: NATS monitoring endpoints, the lab's ledger and its timeline.

``ansible.module_utils.urls.open_url`` builds a new SSL context and loads the system CA bundle
on every call, even for an http:// URL: tens of milliseconds of CPU per request, and a NATS
health read makes two requests per server. Here an http:// URL costs no SSL work, and https://
URLs share one verifying context, made on first use.
"""
from __future__ import annotations

import functools
import ssl
import urllib.request
from typing import Any, Optional


@functools.lru_cache(maxsize=1)
def verifying_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def http_get(url: str, timeout: float, headers: Optional[dict[str, str]] = None) -> Any:
    """The response of a GET (``read()``, ``getcode()``); urllib's HTTPError (with ``code`` and
    ``read()``) for an error status, URLError or OSError when nothing answered."""
    context = verifying_context() if url.lower().startswith("https://") else None
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout,
                                  context=context)
