"""A small DNS client (A records over UDP) and a pod's search path, so that the simulator
resolves a NATS_URL's host through the lab's cluster DNS as a pod in a namespace would.

Standard library only: the simulator adds no dependency for a few dozen lines of RFC 1035.
"""
from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
import time

TYPE_A, TYPE_CNAME, CLASS_IN = 1, 5, 1
RCODES = {1: "FORMERR", 2: "SERVFAIL", 4: "NOTIMP", 5: "REFUSED"}
EDNS_PAYLOAD = 1232  # advertised UDP size: a headless Service's pod IPs fit without TCP
MAX_CNAME_HOPS = 8


class DnsError(Exception):
    """A query that got no usable answer (timeout, refused, malformed reply, error rcode)."""

    def __init__(self, server: str, port: int, name: str, reason: str) -> None:
        super().__init__(f"DNS {server}:{port}: A {name}: {reason}")
        self.server, self.port, self.name, self.reason = server, port, name, reason


class DnsNoReply(DnsError):
    """The server did not answer at all: trying further search names is pointless."""


def build_query(name: str, qid: int) -> bytes:
    """An A/IN query for *name* with recursion desired and an EDNS0 OPT record."""
    qname = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if label else b""
        if not 0 < len(raw) < 64:
            raise ValueError(f"invalid DNS name {name!r}")
        qname += bytes([len(raw)]) + raw
    header = struct.pack("!6H", qid, 0x0100, 1, 0, 0, 1)
    opt = b"\x00" + struct.pack("!HHIH", 41, EDNS_PAYLOAD, 0, 0)
    return header + qname + b"\x00" + struct.pack("!HH", TYPE_A, CLASS_IN) + opt


def _read_name(data: bytes, off: int) -> tuple[str, int]:
    """(name, offset after it); follows compression pointers, refusing loops."""
    labels: list[str] = []
    end = -1
    for _ in range(128):
        length = data[off]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = off + 2
            off = ((length & 0x3F) << 8) | data[off + 1]
            continue
        if length & 0xC0:
            raise ValueError(f"malformed reply (label type 0x{length:02x})")
        if length == 0:
            return ".".join(labels), end if end >= 0 else off + 1
        if off + 1 + length > len(data):
            raise ValueError("malformed reply (label past the end)")
        labels.append(data[off + 1:off + 1 + length].decode("ascii", "replace"))
        off += 1 + length
    raise ValueError("malformed reply (name compression loop)")


def parse_reply(data: bytes, qid: int, name: str) -> list[str]:
    """The IPv4 addresses a reply gives for *name*, following CNAMEs inside the answer.
    NXDOMAIN or no A record: []. An error rcode or a malformed reply: ValueError."""
    try:
        return _parse(data, qid, name)
    except (IndexError, struct.error) as exc:
        raise ValueError(f"malformed reply ({exc})") from exc


def _parse(data: bytes, qid: int, name: str) -> list[str]:
    if len(data) < 12:
        raise ValueError("malformed reply (shorter than a header)")
    rid, flags, qdcount, ancount, _, _ = struct.unpack("!6H", data[:12])
    if rid != qid or not flags & 0x8000:
        raise ValueError("malformed reply (not a reply to this query)")
    rcode = flags & 0x000F
    if rcode == 3:  # NXDOMAIN
        return []
    if rcode:
        raise ValueError(f"server answered rcode {RCODES.get(rcode, rcode)}")
    if flags & 0x0200:
        raise ValueError("reply truncated (TC set)")
    off = 12
    for _ in range(qdcount):
        off = _read_name(data, off)[1] + 4
    a_records: dict[str, list[str]] = {}
    cnames: dict[str, str] = {}
    for _ in range(ancount):
        owner, off = _read_name(data, off)
        rtype, rclass, _ttl, rdlen = struct.unpack("!HHIH", data[off:off + 10])
        off += 10
        if off + rdlen > len(data):
            raise ValueError("malformed reply (record data past the end)")
        if rclass == CLASS_IN and rtype == TYPE_A and rdlen == 4:
            a_records.setdefault(owner.lower(), []).append(socket.inet_ntoa(data[off:off + 4]))
        elif rclass == CLASS_IN and rtype == TYPE_CNAME:
            cnames[owner.lower()] = _read_name(data, off)[0].lower()
        off += rdlen
    target = name.rstrip(".").lower()
    for _ in range(MAX_CNAME_HOPS):
        if target in a_records:
            return a_records[target]
        if target not in cnames:
            break
        target = cnames[target]
    return []


def query_a(name: str, server: str, port: int = 53, timeout: float = 1.0) -> list[str]:
    """Ask *server* for *name*'s A records over UDP. [] for NXDOMAIN or no address."""
    qid = secrets.randbits(16)
    try:
        query = build_query(name, qid)
        family, _, _, _, addr = socket.getaddrinfo(server, port, type=socket.SOCK_DGRAM)[0]
    except (ValueError, OSError) as exc:  # a bad name (UnicodeError too) or server address
        raise DnsError(server, port, name, str(exc)) from exc
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(addr)  # only the server's datagrams are received
            sock.send(query)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout
                sock.settimeout(remaining)
                data = sock.recv(65535)
                if len(data) >= 2 and data[:2] != query[:2]:
                    continue  # a late reply to an earlier query: not ours
                return parse_reply(data, qid, name)
        except socket.timeout as exc:
            raise DnsNoReply(server, port, name, f"no reply within {timeout:g}s") from exc
        except OSError as exc:  # ICMP port unreachable: nothing listens there
            raise DnsNoReply(server, port, name, str(exc)) from exc
        except ValueError as exc:
            raise DnsError(server, port, name, str(exc)) from exc


def pod_search_names(host: str, namespace: str | None, domain: str = "cluster.local",
                     ndots: int = 5) -> list[str]:
    """The names a pod in *namespace* asks for, in order (its resolv.conf search path and
    ndots). A trailing dot means the name is absolute: no search."""
    if host.endswith("."):
        return [host.rstrip(".")]
    domain = domain.strip(".")
    search = [f"{namespace}.svc.{domain}"] if namespace else []
    search += [f"svc.{domain}", domain]
    names = [f"{host}.{suffix}" for suffix in search]
    return [host, *names] if host.count(".") >= ndots else [*names, host]


def resolve_for_pod(host: str, namespace: str | None, server: str, port: int = 53,
                    domain: str = "cluster.local", timeout: float = 1.0) -> list[str]:
    """*host*'s IPv4 addresses as a pod in *namespace* resolves it: the first search name
    that has addresses wins. An IP literal is returned as it is. Like glibc, a server that
    does not answer ends the search; an error rcode only skips that name (and is raised
    when no later name resolves)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    failed: DnsError | None = None
    for name in pod_search_names(host, namespace, domain):
        try:
            addrs = query_a(name, server, port, timeout)
        except DnsNoReply:
            raise
        except DnsError as exc:
            failed = failed or exc
            continue
        if addrs:
            return addrs
    if failed is not None:
        raise failed
    return []
