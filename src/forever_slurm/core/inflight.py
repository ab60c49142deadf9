"""Requests in flight on each backend, seen from this host: Traefik's open TCP connections to it.

Why connections, and why from here: Traefik runs on this (login) node and opens its own TCP connection
to a backend for every request it forwards, so while a stream flows, /proc/net/tcp here holds an
ESTABLISHED socket whose remote end is the backend's host:port. Traefik 3.7 publishes nothing finer
(its Prometheus metrics count a service's requests when they end and have no per-server in-flight
gauge; its access log writes a request when it ends), and llama-cpp-python's server publishes no
metrics at all, so this works for every server without its help. Traefik keeps no idle keep-alive
connection to a backend (static serversTransport.maxIdleConnsPerHost: -1, traefik.render_static), so
an open connection is a request in flight; a client that talks to the backend directly is counted
too, which only makes a drain wait longer or a min-max service a little bigger. None (unknown) when /proc/net is unreadable (not Linux) or
the host does not resolve: the plan then falls back to the fixed FS_DRAIN_SECONDS.
"""

import binascii
import ipaddress
import struct
from urllib.parse import urlsplit

from ..systems import httpget

PROC_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
# A connection being set up carries a request as much as an established one.
BUSY_STATES = frozenset(["01", "02"])      # ESTABLISHED, SYN_SENT


def parse_table(text):
    """[(remote ip_address, remote port, state)] of a /proc/net/tcp or tcp6 table; bad lines skipped."""
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or ":" not in fields[2]:
            continue
        address, _, port = fields[2].partition(":")
        try:
            rows.append((_address(address), int(port, 16), fields[3]))
        except ValueError:
            continue
    return rows


def _address(hex_text):
    """The kernel prints each 32-bit word of the address in host (little-endian) byte order."""
    raw = binascii.unhexlify(hex_text)
    if len(raw) not in (4, 16):
        raise ValueError("address of %d bytes" % len(raw))
    words = struct.unpack("<%dI" % (len(raw) // 4), raw)
    address = ipaddress.ip_address(struct.pack(">%dI" % len(words), *words))
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def busy_connections(rows, addresses, port):
    """How many rows are busy connections to port on one of addresses."""
    return sum(1 for ip, remote_port, state in rows
               if remote_port == port and state in BUSY_STATES and ip in addresses)


RESOLVE_SECONDS = 1.0    # a backend's name must resolve within this, or its count is unknown this pass


def resolve(host):
    """The addresses a host name stands for (as Traefik would connect to them); raises OSError, also
    when its DNS does not answer within RESOLVE_SECONDS (the lookup goes on on the resolver's threads)."""
    found = set()
    for _, sockaddr in httpget.resolve(host, RESOLVE_SECONDS):
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        found.add(address.ipv4_mapped if address.version == 6 and address.ipv4_mapped else address)
    return found


def read_tables(paths=PROC_TABLES):
    """Rows of every readable table; None when none could be read."""
    rows, read_any = [], False
    for path in paths:
        try:
            with open(path) as handle:
                rows.extend(parse_table(handle.read()))
            read_any = True
        except OSError:
            continue
    return rows if read_any else None


def counts(urls, tables=read_tables, resolver=resolve):
    """{key: connections in flight or None (unknown)} for {key: backend URL}."""
    if not urls:
        return {}
    rows = tables()
    result = {}
    for key, url in urls.items():
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            addresses = resolver(parts.hostname or "")
        except (OSError, ValueError):
            addresses = None
        result[key] = None if rows is None or not addresses else busy_connections(rows, addresses, port)
    return result
