"""Readiness probes: an HTTP GET from the login node to each backend's health path, in parallel."""

import concurrent.futures
import http.client
import logging
import socket

from ..common import urls
from .model import ProbeResult

log = logging.getLogger(__name__)


def probe(url, path="/", timeout=2.0, expect_status=None):
    """One GET of url+path. Healthy: expect_status if given, else any 2xx/3xx. Never raises:
    a URL or answer that breaks the HTTP client is an unhealthy backend, not a stopped loop."""
    try:
        parts = urls.parse_backend_url(url)
    except ValueError as exc:
        return ProbeResult(False, "bad URL: %s" % exc)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    host = parts.host[1:-1] if parts.host.startswith("[") else parts.host
    try:
        conn = conn_cls(host, parts.port, timeout=timeout)
        try:
            conn.request("GET", path if path.startswith("/") else "/" + path,
                         headers={"User-Agent": "forever-slurm-probe"})
            status = conn.getresponse().status
        finally:
            conn.close()
    except ConnectionRefusedError:
        return ProbeResult(False, "connection refused", refused=True)
    except socket.timeout:
        return ProbeResult(False, "no answer within %ss" % timeout)
    except (OSError, http.client.HTTPException, UnicodeError, ValueError) as exc:
        return ProbeResult(False, "%s: %s" % (type(exc).__name__, exc))
    ok = status == expect_status if expect_status else 200 <= status < 400
    # 503 is the server saying it is going away (draining before a stop): believe it at once.
    return ProbeResult(ok, "" if ok else "HTTP %d" % status, refused=(status == 503 and not ok))


def probe_all(targets, timeout=2.0, workers=16, probe_fn=probe):
    """targets: {job_id: (url, path, expect_status)} -> {job_id: ProbeResult}."""
    if not targets:
        return {}
    results = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(targets))) as pool:
        futures = {pool.submit(probe_fn, url, path, timeout, status): job_id
                   for job_id, (url, path, status) in targets.items()}
        for future in concurrent.futures.as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except Exception as exc:    # a bug in one probe must not stop the others or the loop
                log.exception("probe of job %s failed", futures[future])
                results[futures[future]] = ProbeResult(False, "probe error: %s" % type(exc).__name__)
    return results
