"""The one check of a backend URL (`http(s)://host:port`), shared by the Comment parser and the YAML writer.

A URL comes from a job's Comment, which the job itself writes: it must be something every
consumer accepts (our prober's http.client and its IDNA codec, Traefik's URL parser) or it is
refused where it enters. So the rule is strict and ASCII-only: a DNS name of 1..63-character
labels, an IPv4 address, or an IPv6 address in brackets; a port of ASCII digits in 1..65535;
nothing after the port but an optional '/'.

`points_at` tells whether a URL reaches one of our own listeners on this host, however it is
spelled, so that neither the wake proxy nor Traefik is ever sent to itself.
"""

import ipaddress
import re
import socket
from typing import NamedTuple

_URL_RE = re.compile(r"^(http|https)://(\[[^\]/]*\]|[^:/\[\]]*):([0-9]{1,5})/?\Z", re.ASCII)
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z", re.ASCII)


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
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError("%s is not an IPv6 address" % host)
    elif not valid_hostname(host):
        raise ValueError("%r is not a host name or IPv4 address" % host)
    return BackendUrl(scheme, host, port)


def valid_hostname(host):
    """A DNS name (labels of 1..63 letters, digits, '-', 253 characters at most) or an IPv4 address."""
    if not host or len(host) > 253:
        return False
    if re.match(r"^[0-9.]+\Z", host):
        try:
            ipaddress.IPv4Address(host)
            return True
        except ValueError:
            return False
    return all(_LABEL_RE.match(label) for label in host.split("."))


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
