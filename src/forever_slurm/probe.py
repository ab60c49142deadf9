"""Readiness probes: an HTTP GET from the login node to each backend's health path, in parallel."""

import concurrent.futures
import http.client
import socket
from urllib.parse import urlsplit

from .reconcile import ProbeResult


def probe(url, path="/", timeout=2.0, expect_status=None):
    """One GET of url+path. Healthy: expect_status if given, else any 2xx/3xx."""
    parts = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = conn_cls(parts.hostname, parts.port, timeout=timeout)
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
    except (OSError, http.client.HTTPException) as exc:
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
            results[futures[future]] = future.result()
    return results
