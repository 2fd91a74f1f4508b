# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The SHA-256 of every record, kept where the state ConfigMap's writers cannot change it.

A restore writes its records back into the workloads, and whoever may edit ConfigMaps in the
namespace may edit the state ConfigMap. So each key the toolkit writes there (a record, its
provenance, its written record) has its SHA-256 in Secret <state configmap>-digests, under the
same key, written with it. A restore refuses a record whose digest is missing or differs
(tapio_records.Records.refusals); records of an earlier version, written before the Secret
existed, are applied with a warning.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any, Optional

from ansible.module_utils.tapio_engine_run import EnginePart


def digest_of(text: str) -> str:
    """The SHA-256 of a ConfigMap value, as hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def secret_value(text: str) -> str:
    return base64.b64encode(text.encode("ascii")).decode("ascii")


def digest_problems(texts: dict[str, str], digests: dict[str, str]) -> list[str]:
    """How the texts a restore would use (by ConfigMap key; '' when absent) disagree with the
    kept digests: a key without one, a changed key, a key gone although its digest is kept."""
    problems = []
    for key, text in sorted(texts.items()):
        if text and key not in digests:
            problems.append(f"key {key} has no SHA-256 in the digests Secret")
        elif text and digests[key] != digest_of(text):
            problems.append(f"key {key} no longer matches its SHA-256 in the digests Secret")
        elif not text and key in digests:
            problems.append(f"key {key} is gone although the digests Secret holds its SHA-256")
    return problems


class RecordDigests(EnginePart):
    """The digests Secret of one namespace's state ConfigMap."""

    def secret_name(self) -> str:
        return f"{self.inputs.state.configmap}-digests"

    def where(self) -> str:
        return f"Secret {self.run.namespace}/{self.secret_name()}"

    def read(self) -> Optional[dict[str, str]]:
        """The digests by ConfigMap key; None when the Secret does not exist (records of an
        earlier version, written before digests were kept)."""
        secret = self.run.kube.get("Secret", self.run.namespace, self.secret_name())
        if secret is None:
            return None
        return {key: base64.b64decode(value).decode("ascii") for key, value in (secret.get("data") or {}).items()}

    def write(self, texts: dict[str, str], earlier: dict[str, str]) -> None:
        """The digests of *texts*, written as the ConfigMap keys were. The Secret's first write
        also takes the digests of *earlier* (keys an earlier version wrote without them), as they
        are now: from then on every record key has its digest. Not in check mode (the caller's)."""
        namespace, name = self.run.namespace, self.secret_name()
        data = {key: secret_value(digest_of(text)) for key, text in texts.items()}
        if self.run.kube.get("Secret", namespace, name) is not None:
            self.run.kube.patch("Secret", namespace, name, {"data": data})
            return
        adopted = {key: secret_value(digest_of(text)) for key, text in earlier.items() if key not in texts}
        self.run.kube.create("Secret", namespace, {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": self.inputs.state.labels},
            "data": {**adopted, **data}})
        self.run.log(f"created {self.where()}: the SHA-256 of each record key, so a restore can tell a record "
                     "changed outside the toolkit" + (f"; {len(adopted)} key(s) written before digests were kept "
                                                      f"taken as they are now ({', '.join(sorted(adopted))})"
                                                      if adopted else ""))

    def move(self, moves: dict[str, str]) -> None:
        """Each digest from its key to a new one (a retired record keeps its digest beside it)."""
        secret = self.run.kube.get("Secret", self.run.namespace, self.secret_name())
        data = (secret or {}).get("data") or {}
        patch: dict[str, Any] = {}
        for old, new in moves.items():
            if old in data:
                patch[old], patch[new] = None, data[old]
        if patch:
            self.run.kube.patch("Secret", self.run.namespace, self.secret_name(), {"data": patch})
