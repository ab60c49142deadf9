"""The one check of a backend URL (`http(s)://host:port`), shared by the Comment parser and the YAML writer.

A URL comes from a job's Comment, which the job itself writes: it must be something every
consumer accepts (our prober, Python's IDNA codec, Traefik's Go URL parser and resolver) or it is
refused where it enters. So the rule is strict and ASCII-only: a host name of 1..63-character
labels of letters, digits, '-' and '_' (Slurm node names such as gpu_node01; Go accepts '_'), an
IPv4 address in its one plain spelling, or an IPv6 address in brackets without a zone; a port of
ASCII digits in 1..65535; nothing after the port but an optional '/'.

A backend is a compute node: an address on the link (169.254.0.0/16, fe80::/10, where clouds serve
their instance metadata and credentials) or a cloud metadata address is refused in every spelling
(IPv4-mapped, -compatible and -translated IPv6, NAT64, 6to4, Teredo), here for literals and by the
prober (`forbidden_address`) for names that resolve to one. Loopback stays allowed.

`points_at` tells whether a URL reaches one of our own listeners on this host, however it is
spelled, so that neither the wake proxy nor Traefik is ever sent to itself.
"""

import ipaddress
import re
import socket
from typing import NamedTuple

_URL_RE = re.compile(r"^(http|https)://(\[[^\]/]*\]|[^:/\[\]]*):([0-9]{1,5})/?\Z", re.ASCII)
_LABEL_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z", re.ASCII)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(r"^%s(?:\.%s){3}\Z" % (_OCTET, _OCTET), re.ASCII)
# A last label that inet_aton (and so getaddrinfo, and Go through cgo) reads as a number: the host
# is then an IPv4 address, and only its plain dotted-quad spelling is accepted (not 0xa9fea9fe,
# 2852039166, 0251.0376.0251.0376, 169.254.43518, 010.0.0.1, which reach other addresses than they seem).
_NUMERIC_LABEL_RE = re.compile(r"^(?:[0-9]+|0[xX][0-9A-Fa-f]*)\Z", re.ASCII)

_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "fd00:ec2::254",        # AWS instance metadata over IPv6
    "100.100.100.200",      # Alibaba Cloud instance metadata
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class BackendUrl(NamedTuple):
    scheme: str
    host: str       # as written, brackets included for IPv6
    port: int

    @property
    def text(self):
        return "%s://%s:%d" % (self.scheme, self.host, self.port)


def parse_backend_url(url):
    """BackendUrl of a valid `http(s)://host:port[/]`; ValueError saying what is wrong otherwise."""
    if not isinstance(url, str):
        raise ValueError("not text")
    match = _URL_RE.match(url)
    if not match:
        raise ValueError("not http(s)://host:port")
    scheme, host, port = match.group(1), match.group(2), int(match.group(3))
    if not 1 <= port <= 65535:
        raise ValueError("port %d is outside 1..65535" % port)
    if host.startswith("["):
        try:
            if "%" in host:
                raise ValueError("a zone")
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError("%s is not an IPv6 address (without a zone)" % host)
    elif not valid_hostname(host):
        raise ValueError("%r is not a host name or IPv4 address" % host)
    else:
        address = ipaddress.IPv4Address(host) if _IPV4_RE.match(host) else None
    why = forbidden_address(address) if address is not None else ""
    if why:
        raise ValueError("%s is %s: not a compute node" % (host, why))
    return BackendUrl(scheme, host, port)


def valid_hostname(host):
    """A host name (labels of 1..63 letters, digits, '-' and '_', not starting or ending with '-', 253
    characters at most, not ending in a number) or an IPv4 address written as four plain decimals."""
    if not host or len(host) > 253:
        return False
    labels = host.split(".")
    if _NUMERIC_LABEL_RE.match(labels[-1]):
        return bool(_IPV4_RE.match(host))
    return all(_LABEL_RE.match(label) for label in labels)


def forbidden_address(address):
    """Why a backend may not be at IP `address` (text or ipaddress object), or "" when it may."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    except ValueError:
        return "not an IP address"
    for candidate in (ip,) + _embedded_ipv4(ip):
        if candidate in _METADATA:
            return "a cloud metadata address"
        if any(candidate in network for network in _LINK_LOCAL if network.version == candidate.version):
            return "a link-local address (where clouds serve instance metadata)"
    return ""


def _embedded_ipv4(ip):
    """The IPv4 addresses an IPv6 address reaches in the end (mapped, compatible, translated, NAT64,
    6to4, Teredo client and server)."""
    if ip.version != 6:
        return ()
    packed = ip.packed
    found = []
    if packed[:10] == bytes(10) and packed[10:12] in (b"\xff\xff", b"\0\0") or \
            packed[:8] == bytes(8) and packed[8:12] == b"\xff\xff\0\0" or ip in _NAT64:
        found.append(ipaddress.IPv4Address(packed[12:]))        # ::ffff:a.b.c.d, ::a.b.c.d, ::ffff:0:a.b.c.d
    if ip in _NAT64_LOCAL:                                      # RFC 6052 /48: 16 bits, the u octet, 16 bits
        found.append(ipaddress.IPv4Address(packed[6:8] + packed[9:11]))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return tuple(found)


def valid_backend_url(url):
    """True for what parse_backend_url accepts."""
    try:
        parse_backend_url(url)
        return True
    except ValueError:
        return False


def is_local_address(address):
    """True when a connection to IP `address` stays on this host: a loopback address (all of
    127.0.0.0/8, ::1), an unspecified one (0.0.0.0 and :: connect to the host itself), the
    IPv4-mapped form of either (::ffff:127.0.0.1), or an address of one of its interfaces (which a
    socket can bind to; any other address it cannot)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(ip), 0))
        return True
    except OSError:
        return False


def points_at(url, ports, resolve=socket.getaddrinfo):
    """True when a connection to backend `url` may reach one of `ports` of this host, however its
    host is spelled: 127.0.0.1, localhost, 127.1.2.3, 0.0.0.0, [::1], [::ffff:127.0.0.1], 0x7f.0.0.1,
    this host's names and addresses. The host is resolved as a connection would resolve it (only when
    the port is one of `ports`); a URL that is not valid or does not resolve points nowhere."""
    try:
        parts = parse_backend_url(url)
    except ValueError:
        return False
    if parts.port not in ports:
        return False
    host = parts.host[1:-1] if parts.host.startswith("[") else parts.host
    try:
        found = resolve(host, parts.port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return any(is_local_address(sockaddr[0]) for _, _, _, _, sockaddr in found)
