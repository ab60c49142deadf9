"""Issue 21: every outside call has an overall deadline, not a per-read timeout: Traefik's ping, the
tunnel's probe and reachability test (the prober, proc.run and the Traefik download have theirs in
test_probe, test_proc and test_traefik_bin)."""

import ipaddress
import socket
import time

import pytest

from forever_slurm.observe import traefik_health
from forever_slurm.systems import httpget
from forever_slurm.tunnel import sshtunnel

from fakes import ScriptedServer, free_port


def trickle(conn):
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for byte in b"X-Slow: " + b"y" * 100 + b"\r\n\r\n":
        time.sleep(0.1)
        conn.sendall(bytes([byte]))


@pytest.fixture
def trickling():
    server = ScriptedServer(trickle)
    yield server.port
    server.close()


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_traefik_ping_that_trickles_is_cut_at_its_timeout(trickling):
    problem, took = timed(lambda: traefik_health.ping(trickling, timeout=0.5))
    assert problem == "its ping on 127.0.0.1:%d did not answer within 0.5s" % trickling and took < 1.0


def test_a_ping_answer_with_its_message_in_a_later_packet_is_read():
    def later(conn):
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 7\r\n\r\n")
        time.sleep(0.1)
        conn.sendall(b"not yet")
    server = ScriptedServer(later)
    try:
        assert traefik_health.ping(server.port) == "its ping answered HTTP 503 not yet"
    finally:
        server.close()


def test_the_tunnel_probe_that_trickles_is_cut_at_its_timeout(trickling):
    result, took = timed(lambda: sshtunnel.http_probe(trickling, "/", timeout=0.5))
    assert result == sshtunnel.PROBE_NO_ANSWER and took < 1.0


def test_the_tunnel_probe_tells_refused_from_no_answer():
    port = free_port()
    assert sshtunnel.http_probe(port, timeout=0.5) == sshtunnel.PROBE_REFUSED
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        assert sshtunnel.http_probe(listener.getsockname()[1], timeout=0.3) == sshtunnel.PROBE_NO_ANSWER
        assert sshtunnel.tcp_reachable("127.0.0.1", listener.getsockname()[1], timeout=0.3)
    finally:
        listener.close()
    assert not sshtunnel.tcp_reachable("127.0.0.1", port, timeout=0.3)


def test_reachability_of_a_login_node_whose_dns_hangs_ends_in_time(monkeypatch):
    def lookup(name):
        time.sleep(5)
        return [(socket.AF_INET, ("127.0.0.1", 0))]
    monkeypatch.setattr(httpget, "RESOLVER", httpget.Resolver(lookup=lookup))
    result, took = timed(lambda: sshtunnel.tcp_reachable("login1.example", 22, timeout=0.3))
    assert result is False and took < 1.0


def test_counting_a_draining_backends_connections_never_waits_on_a_hanging_dns(monkeypatch):
    """The loop counts connections in flight to a draining backend by its addresses: a name whose DNS
    never answers makes the count unknown for that pass, within a second, instead of stalling the loop."""
    from forever_slurm.core import inflight

    def lookup(name):
        time.sleep(5 if name == "slow.example" else 0)
        return [(socket.AF_INET, ("127.0.0.1", 0))]
    monkeypatch.setattr(httpget, "RESOLVER", httpget.Resolver(lookup=lookup))
    counted, took = timed(lambda: inflight.counts({"a": "http://slow.example:80", "b": "http://fast.example:80"},
                                                   tables=lambda: []))
    assert counted["a"] is None and took < inflight.RESOLVE_SECONDS + 1.5
    assert counted["b"] == 0
    assert inflight.resolve("fast.example") == {ipaddress.ip_address("127.0.0.1")}
