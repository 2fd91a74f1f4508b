"""The simulator's DNS client against a real UDP server on 127.0.0.1 answering crafted bytes,
and a pod's search path."""
from __future__ import annotations

import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "lab" / "simulator"))

from tapio_sim.dns import (  # noqa: E402
    DnsError, DnsNoReply, build_query, parse_reply, pod_search_names, query_a, resolve_for_pod)

Responder = Callable[[bytes], list[bytes]]
SVC = "tapio-nats.tapio.svc.cluster.local"


class Server:
    def __init__(self) -> None:
        self.respond: Responder = lambda _query: []
        self.queries: list[bytes] = []
        self.port = 0

    def names(self) -> list[str]:
        return [qname(q) for q in self.queries]


@pytest.fixture()
def dns() -> Iterator[Server]:
    state = Server()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            state.queries.append(data)
            for out in state.respond(data):
                sock.sendto(out, self.client_address)

    server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def encode(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"


def qname(query: bytes) -> str:
    labels, off = [], 12
    while query[off]:
        labels.append(query[off + 1:off + 1 + query[off]].decode())
        off += 1 + query[off]
    return ".".join(labels)


def question_end(query: bytes) -> int:
    return 12 + len(encode(qname(query))) + 4


def reply(query: bytes, answers: list[bytes], rcode: int = 0) -> bytes:
    """A reply echoing the query's id and question, with *answers* as the answer section."""
    header = struct.pack("!6H", struct.unpack("!H", query[:2])[0], 0x8180 | rcode, 1, len(answers), 0, 0)
    return header + query[12:question_end(query)] + b"".join(answers)


def rr(owner: bytes, rtype: int, rdata: bytes) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, 30, len(rdata)) + rdata


def a(owner: bytes, ip: str) -> bytes:
    return rr(owner, 1, socket.inet_aton(ip))


def ptr(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


QUESTION = ptr(12)  # the question's name always starts right after the header


def test_query_is_an_a_query_with_recursion_desired(dns: Server) -> None:
    dns.respond = lambda q: [reply(q, [a(QUESTION, "10.96.0.10")])]
    assert query_a(SVC, "127.0.0.1", dns.port, 1.0) == ["10.96.0.10"]
    query = dns.queries[0]
    _qid, flags, qd, an, ns, _ar = struct.unpack("!6H", query[:12])
    assert flags & 0x0100 and not flags & 0x8000 and (qd, an, ns) == (1, 0, 0)
    assert qname(query) == SVC
    assert struct.unpack("!HH", query[question_end(query) - 4:question_end(query)]) == (1, 1)  # A, IN


def test_several_a_records_with_compressed_owners(dns: Server) -> None:
    """A headless Service: one A record per pod, owners compressed to the question."""
    dns.respond = lambda q: [reply(q, [a(QUESTION, "10.244.0.5"), a(QUESTION, "10.244.1.6"),
                                       a(QUESTION, "10.244.2.7")])]
    assert query_a(SVC, "127.0.0.1", dns.port, 1.0) == ["10.244.0.5", "10.244.1.6", "10.244.2.7"]


def test_cname_is_followed_within_the_answer(dns: Server) -> None:
    def respond(q: bytes) -> list[bytes]:
        # CNAME target "nats-0" + a pointer into the question ("tapio.svc.cluster.local"),
        # then the target's A record with its owner a pointer to the CNAME's rdata.
        suffix = 12 + 1 + len("tapio-nats")
        target = b"\x06nats-0" + ptr(suffix)
        cname = rr(QUESTION, 5, target)
        target_at = question_end(q) + len(cname) - len(target)
        other = a(encode("unrelated.example"), "192.0.2.1")
        return [reply(q, [cname, other, a(ptr(target_at), "10.244.0.5")])]

    dns.respond = respond
    assert query_a(SVC, "127.0.0.1", dns.port, 1.0) == ["10.244.0.5"]


def test_a_cname_without_its_address_gives_nothing(dns: Server) -> None:
    dns.respond = lambda q: [reply(q, [rr(QUESTION, 5, encode("elsewhere.example"))])]
    assert query_a(SVC, "127.0.0.1", dns.port, 1.0) == []


def test_nxdomain_and_empty_answers_give_nothing(dns: Server) -> None:
    dns.respond = lambda q: [reply(q, [], rcode=3)]
    assert query_a("nope.tapio.svc.cluster.local", "127.0.0.1", dns.port, 1.0) == []
    dns.respond = lambda q: [reply(q, [])]
    assert query_a(SVC, "127.0.0.1", dns.port, 1.0) == []


def test_error_rcode_is_a_dns_error(dns: Server) -> None:
    dns.respond = lambda q: [reply(q, [], rcode=2)]
    with pytest.raises(DnsError, match="SERVFAIL") as info:
        query_a(SVC, "127.0.0.1", dns.port, 1.0)
    assert not isinstance(info.value, DnsNoReply)


@pytest.mark.parametrize("mangle", [
    lambda r: r[:-3],            # cut inside the A record's address
    lambda r: r[:7],             # shorter than a header
    lambda r: r[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\xff\xff",  # bad label type
], ids=["truncated", "short", "garbage"])
def test_malformed_reply_names_server_and_name(dns: Server, mangle: Callable[[bytes], bytes]) -> None:
    dns.respond = lambda q: [mangle(reply(q, [a(QUESTION, "10.96.0.10")]))]
    with pytest.raises(DnsError, match="malformed") as info:
        query_a(SVC, "127.0.0.1", dns.port, 1.0)
    assert f"127.0.0.1:{dns.port}" in str(info.value) and SVC in str(info.value)


def test_compression_loop_is_malformed() -> None:
    query = build_query(SVC, 7)
    looped = reply(query, [a(ptr(question_end(query)), "10.0.0.1")])  # owner points at itself
    with pytest.raises(ValueError, match="loop"):
        parse_reply(looped, 7, SVC)


def test_no_reply_times_out(dns: Server) -> None:
    start = time.monotonic()
    with pytest.raises(DnsNoReply, match="no reply within 0.2s") as info:
        query_a(SVC, "127.0.0.1", dns.port, 0.2)
    assert 0.15 < time.monotonic() - start < 1.5
    assert info.value.name == SVC and info.value.server == "127.0.0.1"


def test_a_reply_to_another_query_is_ignored(dns: Server) -> None:
    def respond(q: bytes) -> list[bytes]:
        stale = bytes([q[0] ^ 0xFF, q[1]]) + reply(q, [a(QUESTION, "192.0.2.9")])[2:]
        return [stale, reply(q, [a(QUESTION, "10.96.0.10")])]

    dns.respond = respond
    assert query_a(SVC, "127.0.0.1", dns.port, 1.0) == ["10.96.0.10"]


def test_pod_search_names() -> None:
    assert pod_search_names("tapio-nats", "tapio") == [
        "tapio-nats.tapio.svc.cluster.local", "tapio-nats.svc.cluster.local", "tapio-nats.cluster.local",
        "tapio-nats"]
    assert pod_search_names("tapio-nats.tapio.svc", "tapio", "lab.local")[:3] == [
        "tapio-nats.tapio.svc.tapio.svc.lab.local", "tapio-nats.tapio.svc.svc.lab.local",
        "tapio-nats.tapio.svc.lab.local"]
    # ndots:5 -- five dots or more: tried as it is first; a trailing dot: only as it is.
    assert pod_search_names("nats-0.nats.tapio.svc.cluster.local", "x")[0] == "nats-0.nats.tapio.svc.cluster.local"
    assert pod_search_names(SVC, "x")[-1] == SVC
    assert pod_search_names(SVC + ".", "x") == [SVC]
    assert pod_search_names("a", None) == ["a.svc.cluster.local", "a.cluster.local", "a"]
    assert pod_search_names("a.b", "ns", "cluster.local.", ndots=1) == [
        "a.b", "a.b.ns.svc.cluster.local", "a.b.svc.cluster.local", "a.b.cluster.local"]


def zone(records: dict[str, list[str]], servfail: frozenset[str] = frozenset()) -> Responder:
    def respond(q: bytes) -> list[bytes]:
        name = qname(q)
        if name in servfail:
            return [reply(q, [], rcode=2)]
        if name not in records:
            return [reply(q, [], rcode=3)]
        return [reply(q, [a(QUESTION, ip) for ip in records[name]])]
    return respond


def test_resolve_for_pod_uses_the_namespace_search_path(dns: Server) -> None:
    dns.respond = zone({SVC: ["10.96.0.10"], "nats.other.svc.cluster.local": ["10.96.1.1"]})
    assert resolve_for_pod("tapio-nats", "tapio", "127.0.0.1", dns.port, timeout=1.0) == ["10.96.0.10"]
    assert dns.names() == [SVC]
    dns.queries.clear()
    assert resolve_for_pod("nats.other", "tapio", "127.0.0.1", dns.port, timeout=1.0) == ["10.96.1.1"]
    assert dns.names() == ["nats.other.tapio.svc.cluster.local", "nats.other.svc.cluster.local"]
    # Another namespace's pod does not find tapio's short name.
    assert resolve_for_pod("tapio-nats", "elsewhere", "127.0.0.1", dns.port, timeout=1.0) == []


def test_resolve_for_pod_ip_literal_asks_nothing(dns: Server) -> None:
    assert resolve_for_pod("10.96.0.10", "tapio", "127.0.0.1", dns.port) == ["10.96.0.10"]
    assert dns.queries == []


def test_resolve_for_pod_error_rcode_skips_a_name_no_reply_ends_the_search(dns: Server) -> None:
    dns.respond = zone({"tapio-nats.svc.cluster.local": ["10.96.0.11"]}, frozenset({SVC}))
    assert resolve_for_pod("tapio-nats", "tapio", "127.0.0.1", dns.port, timeout=1.0) == ["10.96.0.11"]
    dns.respond = zone({}, frozenset({SVC}))
    with pytest.raises(DnsError, match="SERVFAIL"):
        resolve_for_pod("tapio-nats", "tapio", "127.0.0.1", dns.port, timeout=1.0)
    dns.queries.clear()
    dns.respond = lambda _q: []
    with pytest.raises(DnsNoReply):
        resolve_for_pod("tapio-nats", "tapio", "127.0.0.1", dns.port, timeout=0.2)
    assert len(dns.queries) == 1
