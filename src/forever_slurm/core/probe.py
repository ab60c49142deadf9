"""Readiness probes: a GET of each backend's health path from the login node, all at once, each
within an overall deadline, and a whole pass within PASS_TIMEOUTS probe timeouts.

A backend that answers slowly, trickles its answer or never answers costs its own probe (one socket
for at most the timeout), never another service's probes and never the loop: a pass always ends in
time to look at Slurm again and to honour SIGTERM. A backend whose host is (or resolves to) a
link-local or cloud metadata address is refused, never connected to.
"""

import logging
import re
import time

from ..common import urls
from ..systems import httpget
from .model import ProbeResult

log = logging.getLogger(__name__)

PASS_TIMEOUTS = 3       # a pass ends within this many probe timeouts, whatever the backends do
_PATH_RE = re.compile(r"^[\x21-\x7e]*\Z", re.ASCII)     # printable ASCII, no space: one request line


class Prober:
    """probe_all, remembering which targets a pass's deadline left out: they go first in the next."""

    def __init__(self, fetch_all=httpget.fetch_all, clock=time.monotonic):
        self._fetch_all = fetch_all
        self._clock = clock
        self._behind = set()
        self.own_ports = frozenset()    # this host's listeners (wake proxy, Traefik): never a backend

    def probe_all(self, targets, timeout=2.0):
        """targets: {job_id: (url, path, expect_status[, group])} -> {job_id: ProbeResult}.

        group (the service, by default the backend's host) shares the sockets fairly. A target the
        pass's deadline left no time for gets no result (its job keeps its state) and goes first next
        time; with fewer than httpget.MAX_OPEN slow backends every target is probed every pass."""
        results, gets, expects = {}, {}, {}
        first = [k for k in targets if k in self._behind]
        for job_id in first + [k for k in targets if k not in self._behind]:
            url, path, expect = targets[job_id][:3]
            group = targets[job_id][3] if len(targets[job_id]) > 3 else None
            try:
                parts = urls.parse_backend_url(url)
            except ValueError as exc:
                results[job_id] = ProbeResult(False, "bad URL: %s" % exc)
                continue
            path = path if path.startswith("/") else "/" + path
            if not _PATH_RE.match(path):
                results[job_id] = ProbeResult(False, "bad health path %r: printable ASCII without spaces" % path)
                continue
            host = parts.host[1:-1] if parts.host.startswith("[") else parts.host
            gets[job_id] = httpget.Get(host, parts.port, path, parts.scheme == "https", group)
            expects[job_id] = expect
        started = self._clock()
        own = self.own_ports
        answers = self._fetch_all(gets, timeout, started + PASS_TIMEOUTS * timeout,
                                  admit=lambda addresses, port: refused_addresses(addresses, port, own))
        for job_id, answer in answers.items():
            results[job_id] = _result(answer, expects[job_id])
        self._behind = set(gets) - set(answers)
        if self._behind:
            log.warning("probe pass: %d of %d backends not probed within %.1fs (too many slow ones); "
                        "they go first next time", len(self._behind), len(targets), PASS_TIMEOUTS * timeout)
        return results


def _result(answer, expect_status):
    if answer.status is None:
        return ProbeResult(False, answer.detail, refused=answer.refused)
    status = answer.status
    ok = status == expect_status if expect_status else 200 <= status < 400
    # 503 is the server saying it is going away (draining before a stop): believe it at once.
    return ProbeResult(ok, "" if ok else "HTTP %d" % status, refused=(status == 503 and not ok))


def refused_addresses(addresses, port=None, own_ports=frozenset()):
    """Why a backend at these addresses (what its name resolves to) is not probed, or "": a link-local
    or metadata address, or one of this host's own listeners (a job publishing the wake proxy's own
    address would make it forward to itself)."""
    for address in addresses:
        why = urls.forbidden_address(address)
        if why:
            return "its host resolves to %s, %s: refused" % (address, why)
        if port in own_ports and urls.is_local_address(address):
            return "it is %s:%d, one of forever-slurm's own listeners on this host: refused" % (address, port)
    return ""


_DEFAULT = Prober()


def probe_all(targets, timeout=2.0, own_ports=frozenset()):
    """targets: {job_id: (url, path, expect_status[, group])} -> {job_id: ProbeResult}; see Prober.
    own_ports: this host's listeners, never probed (nor routed) as a backend."""
    _DEFAULT.own_ports = frozenset(own_ports)
    return _DEFAULT.probe_all(targets, timeout)


def probe(url, path="/", timeout=2.0, expect_status=None):
    """One GET of url+path. Healthy: expect_status if given, else any 2xx/3xx. Never raises."""
    return Prober().probe_all({"": (url, path, expect_status)}, timeout).get(
        "", ProbeResult(False, "not probed within %ss" % (PASS_TIMEOUTS * timeout)))
