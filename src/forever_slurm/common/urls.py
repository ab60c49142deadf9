"""The one check of a backend URL (`http(s)://host:port`), shared by the Comment parser and the YAML writer.

A URL comes from a job's Comment, which the job itself writes: it must be something every
consumer accepts (our prober's http.client and its IDNA codec, Traefik's URL parser) or it is
refused where it enters. So the rule is strict and ASCII-only: a DNS name of 1..63-character
labels, an IPv4 address, or an IPv6 address in brackets; a port of ASCII digits in 1..65535;
nothing after the port but an optional '/'.
"""

import ipaddress
import re
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
