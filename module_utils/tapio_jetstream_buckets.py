# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Key-value buckets and object stores as the JetStream streams behind them: the pure logic
of the nats_kv and nats_object_store modules (no I/O; unit-tested in
tests/unit/test_jetstream_buckets.py).

A bucket is a stream with a fixed shape, the one nats-py (``create_key_value``,
``create_object_store``), nats.go and the nats CLI create:

- KV bucket ``B``: stream ``KV_B`` on ``$KV.B.>``, ``max_msgs_per_subject`` = history,
  discard new, roll-up headers allowed, deletes denied, direct get on, ``max_age`` = ttl.
- Object store ``B``: stream ``OBJ_B`` on ``$O.B.C.>`` (chunks) and ``$O.B.M.>`` (metadata),
  discard new, roll-up headers allowed, direct get on, ``max_age`` = ttl.

The functions turn module options into that stream's wire configuration (the fields to
manage, for tapio_jetstream.ensure_stream_present) and the stream's configuration back into
the bucket's options, for the modules' return value and diff. Only what the user set is
compared on an existing bucket: the fields every client sets the same way (its ``shape``)
always, the rest (history 1 and direct get for a new KV bucket) only when creating.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional

from ansible.module_utils.tapio_nats_config import format_duration, parse_duration, parse_size

NS_PER_S = 1_000_000_000
VALID_BUCKET = re.compile(r"^[a-zA-Z0-9_-]+$")  # nats-py's VALID_BUCKET_RE
KV_MAX_HISTORY = 64  # nats-py's KV_MAX_HISTORY; the server refuses more
DEFAULT_DUPLICATE_WINDOW = 120 * NS_PER_S
SERVER_METADATA_PREFIX = "_nats."  # the server's own metadata keys (API level, version)

KV = "kv"
OBJECT_STORE = "object_store"
KINDS = (KV, OBJECT_STORE)
# How messages and errors name a bucket of each kind.
KIND_LABEL = {KV: "kv bucket", OBJECT_STORE: "object store"}
STREAM_PREFIX = {KV: "KV_", OBJECT_STORE: "OBJ_"}

# Stream wire field -> the module option that sets it (several wire fields may share one).
OPTION_OF_FIELD: dict[str, str] = {
    "description": "description",
    "max_msgs_per_subject": "history",
    "max_age": "ttl",
    "duplicate_window": "ttl",
    "max_bytes": "max_bytes",
    "max_msg_size": "max_value_size",
    "storage": "storage",
    "num_replicas": "replicas",
    "compression": "compression",
    "placement": "placement",
    "metadata": "metadata",
    "republish": "republish",
    "allow_direct": "direct",
    "subject_delete_marker_ttl": "limit_marker_ttl",
    "allow_msg_ttl": "limit_marker_ttl",
    "replicas": "replicas",  # the stream modules' name for num_replicas
}

# Stream fields an existing bucket keeps whatever is requested; the stream layer refuses
# the rest of the server's rules (turning deny_delete or allow_msg_ttl off, ...).
IMMUTABLE_FIELDS = ("storage",)


def stream_name(kind: str, bucket: str) -> str:
    """The stream behind a bucket: KV_<bucket> or OBJ_<bucket>."""
    return STREAM_PREFIX[kind] + bucket


def bucket_name(kind: str, stream: str) -> str:
    """The bucket behind a stream name (the inverse of stream_name)."""
    prefix = STREAM_PREFIX[kind]
    return stream[len(prefix):] if stream.startswith(prefix) else stream


def shape(kind: str, bucket: str) -> dict[str, Any]:
    """The stream fields that make a stream this kind of bucket. Every client (nats-py,
    nats.go, the nats CLI) sets them the same way, so they are compared on every run."""
    if kind == KV:
        return {"name": stream_name(kind, bucket), "subjects": [f"$KV.{bucket}.>"], "discard": "new",
                "allow_rollup_hdrs": True, "deny_delete": True}
    return {"name": stream_name(kind, bucket), "subjects": [f"$O.{bucket}.C.>", f"$O.{bucket}.M.>"],
            "discard": "new", "allow_rollup_hdrs": True, "allow_direct": True}


def creation_defaults(kind: str) -> dict[str, Any]:
    """Fields a new bucket gets when the user does not set them: nats-py sends history 1
    (the server's own default would be unlimited) and nats.go / the CLI turn direct get on.
    Not compared on an existing bucket: nats-py leaves direct get off unless asked."""
    if kind == KV:
        return {"max_msgs_per_subject": 1, "allow_direct": True}
    return {}


# --------------------------------------------------------------------------- validation


def validate_bucket_name(bucket: Any) -> str:
    """The bucket name, or ValueError: nats-py accepts letters, digits, ``_`` and ``-``."""
    if not isinstance(bucket, str) or not VALID_BUCKET.match(bucket):
        raise ValueError(f"bucket: {bucket!r} is not a valid bucket name; use letters, digits, '_' and '-' only")
    return bucket


def _int(value: Any, option: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"-?\d+", text):
        raise ValueError(f"{option}: expected a whole number, got {value!r}")
    return int(text)


def _history(value: Any) -> int:
    history = _int(value, "history")
    if not 1 <= history <= KV_MAX_HISTORY:
        raise ValueError(f"history: must be 1 to {KV_MAX_HISTORY} values per key, got {history}")
    return history


def _limit(value: Any, option: str) -> int:
    """A size limit in bytes; 0 and -1 both mean unlimited (the server's -1), as in nats-py."""
    size = parse_size(value, option)
    if size < -1:
        raise ValueError(f"{option}: must be a size in bytes, or -1 (or 0) for unlimited, got {value!r}")
    return -1 if size == 0 else size


def _replicas(value: Any) -> int:
    replicas = _int(value, "replicas")
    if replicas < 1:
        raise ValueError(f"replicas: must be at least 1, got {replicas}")
    return replicas


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError(f"metadata: expected a mapping of strings, got {value!r}")
    reserved = sorted(str(k) for k in value if str(k).startswith(SERVER_METADATA_PREFIX))
    if reserved:
        raise ValueError(f"metadata: keys starting with {SERVER_METADATA_PREFIX!r} belong to the server: {reserved}")
    return {str(k): str(v) for k, v in value.items()}


def _placement(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v not in (None, [])}


def _republish(value: Mapping[str, Any]) -> dict[str, Any]:
    if not value.get("dest"):
        raise ValueError("republish: dest (the subject to republish to) is required")
    return {k: v for k, v in value.items() if v is not None}


def _ttl_fields(ttl: int) -> dict[str, int]:
    """max_age and the duplicate window that goes with it: nats-py and the server use 2m,
    or the ttl when it is shorter (a window longer than max_age is refused)."""
    window = ttl if 0 < ttl < DEFAULT_DUPLICATE_WINDOW else DEFAULT_DUPLICATE_WINDOW
    return {"max_age": ttl, "duplicate_window": window}


# --------------------------------------------------------------------------- options -> stream


def bucket_stream_config(kind: str, options: Mapping[str, Any], exists: bool) -> dict[str, Any]:
    """The stream fields to manage for a bucket, in wire units (ns, bytes), from the module's
    options (None = not set). *exists* is whether the stream is already there: only a new
    bucket gets ``creation_defaults``. ValueError names the option at fault."""
    if kind not in KINDS:
        raise ValueError(f"unknown bucket kind {kind!r}")
    bucket = validate_bucket_name(options.get("bucket"))
    config: dict[str, Any] = {} if exists else creation_defaults(kind)
    config.update(shape(kind, bucket))

    def given(option: str) -> bool:
        return options.get(option) is not None

    if given("description"):
        config["description"] = str(options["description"])
    if given("ttl"):
        config.update(_ttl_fields(parse_duration(options["ttl"], "ttl")))
    if given("max_bytes"):
        config["max_bytes"] = _limit(options["max_bytes"], "max_bytes")
    if given("storage"):
        if options["storage"] not in ("file", "memory"):
            raise ValueError(f"storage: must be file or memory, got {options['storage']!r}")
        config["storage"] = options["storage"]
    if given("replicas"):
        config["num_replicas"] = _replicas(options["replicas"])
    if given("compression"):
        if not isinstance(options["compression"], bool):
            raise ValueError(f"compression: expected true (s2) or false (none), got {options['compression']!r}")
        config["compression"] = "s2" if options["compression"] else "none"
    if given("placement"):
        config["placement"] = _placement(options["placement"])
    if given("metadata"):
        config["metadata"] = _metadata(options["metadata"])
    if kind == KV:
        config.update(_kv_only_fields(options))
    return config


def _kv_only_fields(options: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if options.get("history") is not None:
        fields["max_msgs_per_subject"] = _history(options["history"])
    if options.get("max_value_size") is not None:
        fields["max_msg_size"] = _limit(options["max_value_size"], "max_value_size")
    if options.get("direct") is not None:
        fields["allow_direct"] = bool(options["direct"])
    if options.get("republish") is not None:
        fields["republish"] = _republish(options["republish"])
    if options.get("limit_marker_ttl") is not None:
        marker = parse_duration(options["limit_marker_ttl"], "limit_marker_ttl")
        if 0 < marker < NS_PER_S:
            raise ValueError("limit_marker_ttl: must be at least 1s (or 0 for none), "
                             f"got {options['limit_marker_ttl']!r}")
        fields["subject_delete_marker_ttl"] = marker
        if marker:
            # Markers are messages with a TTL: the stream must allow per-message TTLs (as
            # nats.go does; once on, the server never turns it off, so 0 leaves it).
            fields["allow_msg_ttl"] = True
    return fields


def value_size_problem(config: Mapping[str, Any], max_payload: int) -> str:
    """Why max_value_size cannot work ("" when it can): the server accepts a limit above its
    max_payload, but no client could ever write such a value."""
    size = int(config.get("max_msg_size", -1))
    if max_payload > 0 and size > max_payload:
        return (f"max_value_size ({size} bytes) exceeds the server's max_payload ({max_payload} bytes); "
                f"use at most {max_payload}")
    return ""


def kv_stream_config(options: Mapping[str, Any], exists: bool = False) -> dict[str, Any]:
    """nats_kv's options -> the KV_<bucket> stream fields to manage."""
    return bucket_stream_config(KV, options, exists)


def object_store_stream_config(options: Mapping[str, Any], exists: bool = False) -> dict[str, Any]:
    """nats_object_store's options -> the OBJ_<bucket> stream fields to manage."""
    return bucket_stream_config(OBJECT_STORE, options, exists)


# --------------------------------------------------------------------------- stream -> bucket


def bucket_view(kind: str, config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """A stream configuration as the bucket's options (what nats_kv / nats_object_store
    accept): durations rendered (``0s`` = never expire), sizes in bytes (-1 = unlimited),
    compression as a bool, the server's own metadata keys left out. {} for no stream."""
    if not config:
        return {}
    name = str(config.get("name", ""))
    max_age = int(config.get("max_age") or 0)
    metadata = {k: v for k, v in (config.get("metadata") or {}).items() if not k.startswith(SERVER_METADATA_PREFIX)}
    view: dict[str, Any] = {
        "bucket": bucket_name(kind, name),
        "stream": name,
        "description": config.get("description") or "",
        "ttl": format_duration(max_age),
        "max_bytes": int(config.get("max_bytes", -1)),
        "storage": config.get("storage") or "file",
        "replicas": int(config.get("num_replicas") or 1),
        "compression": config.get("compression") == "s2",
        "placement": dict(config.get("placement") or {}),
        "metadata": metadata,
    }
    if kind == KV:
        marker = int(config.get("subject_delete_marker_ttl") or 0)
        view.update({
            "history": int(config.get("max_msgs_per_subject") or 1),
            "max_value_size": int(config.get("max_msg_size", -1)),
            "direct": bool(config.get("allow_direct")),
            "republish": dict(config.get("republish") or {}),
            "limit_marker_ttl": format_duration(marker),
        })
    else:
        view["sealed"] = bool(config.get("sealed"))
    return dict(sorted(view.items()))


def kv_bucket_view(config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    return bucket_view(KV, config)


def object_store_view(config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    return bucket_view(OBJECT_STORE, config)


def option_names(kind: str, fields: list[str], creating: bool) -> list[str]:
    """Stream fields that changed -> the module options behind them, sorted and unique. A
    field of the bucket's shape (an existing stream not laid out like a bucket) keeps its
    stream name; when creating, the shape is not something the user set and is left out."""
    layout = set(shape(kind, "")) - {"name"}
    names = set()
    for field in fields:
        option = None if field in layout else OPTION_OF_FIELD.get(field)
        if option is not None:
            names.add(option)
        elif not creating and field != "name":
            names.add(field)
    return sorted(names)


def immutable_changes(kind: str, desired: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(option, current, requested) for each requested change an existing bucket cannot
    take, in the bucket's terms (the stream layer still applies every stream rule)."""
    problems = []
    have_view, want_view = bucket_view(kind, current), bucket_view(kind, {**current, **desired})
    for field in IMMUTABLE_FIELDS:
        if field in desired:
            option = OPTION_OF_FIELD[field]
            if have_view[option] != want_view[option]:
                problems.append((option, have_view[option], want_view[option]))
    return problems


def immutable_message(kind: str, bucket: str, problems: list[tuple[str, Any, Any]]) -> str:
    details = "; ".join(f"{option}: current {have!r}, requested {want!r}" for option, have, want in problems)
    lost = "keys and their history" if kind == KV else "objects"
    return (f"{KIND_LABEL[kind]} {bucket}: cannot change {', '.join(p[0] for p in problems)} on an existing "
            f"bucket ({details}). Nothing was changed. Set recreate=true to delete and recreate it "
            f"(its {lost} are lost).")


def contents_message(kind: str, bucket: str, entries: int, messages: int) -> str:
    """Why ``state: absent`` refuses a bucket that holds data without ``force``."""
    if kind == KV:
        what, counted = "key(s)", "values, history and delete markers"
    else:
        what, counted = "object(s)", "chunks and metadata"
    return (f"{KIND_LABEL[kind]} {bucket} holds {entries} {what} ({messages} message(s) of {counted} in stream "
            f"{stream_name(kind, bucket)}). Nothing was changed. Set force=true to delete it with everything "
            "it holds.")


def bucket_info(kind: str, stream: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The bucket's options (bucket_view) plus what it holds, from a stream info answer:
    ``bytes`` and ``values`` (KV: values, history and delete markers) or ``messages`` (object
    store: chunks and metadata). {} for no stream."""
    if not stream or not stream.get("config"):
        return {}
    view = bucket_view(kind, stream["config"])
    state = stream.get("state") or {}
    if state:
        view["bytes"] = int(state.get("bytes") or 0)
        view["values" if kind == KV else "messages"] = int(state.get("messages") or 0)
    return view


def changed_options(kind: str, desired: Mapping[str, Any], before: Optional[Mapping[str, Any]],
                    outcome: Mapping[str, Any]) -> list[str]:
    """The options a change touches. A new bucket: those set by the request (the user's and
    the creation defaults). An existing one: those whose value in the bucket's view differs
    before and after, plus the stream layer's changed fields as options (a field of the
    bucket's shape, which no option sets, keeps its stream name)."""
    if outcome["operation"] == "create":
        return option_names(kind, list(desired), creating=True)
    if not outcome["changed"] or outcome["operation"] == "delete":
        return []
    have = bucket_view(kind, (before or {}).get("config"))
    want = bucket_view(kind, (outcome.get("stream") or {}).get("config"))
    differ = {option for option in want if have.get(option) != want[option]}
    return sorted(differ | set(option_names(kind, list(outcome.get("changed_fields") or []), creating=False)))


def bucket_result(kind: str, desired: Mapping[str, Any], before: Optional[Mapping[str, Any]],
                  outcome: Mapping[str, Any]) -> dict[str, Any]:
    """The module's result from the stream layer's (ensure_stream_present / _absent):
    ``changed_fields`` in option names, ``bucket`` and a diff of the bucket's options.
    *desired* is the stream request ({} for absent), *before* the stream info read before
    the change (None when there was no stream)."""
    stream = outcome.get("stream") or {}
    result: dict[str, Any] = {
        "changed": bool(outcome["changed"]),
        "operation": outcome["operation"],
        "changed_fields": changed_options(kind, desired, before, outcome),
        "bucket": bucket_info(kind, stream),
        "diff": {"before": bucket_view(kind, (before or {}).get("config")),
                 "after": bucket_view(kind, stream.get("config"))},
    }
    if "messages_lost" in outcome:
        result["messages_lost"] = outcome["messages_lost"]
    return result
