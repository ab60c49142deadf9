"""MIN-MAX services: how many jobs their load asks for (scale.py decides, this keeps the record), and
the wake proxy that holds their requests while no backend takes them (wake.py).

State shared with the wake proxy's thread: one wake.Board per service (its routed backends, or why
its held requests should be answered now), published at every pass; replace, never mutate (wake.Board).
"""

import logging
import math

from ..systems import traefik_logs
from ..systems.traefik import Server
from . import scale
from .hosts import Load
from .routes import wake_url
from .service_files import health_of

log = logging.getLogger(__name__)


class DemandKeeper:
    def __init__(self, access_log, saved_scale, wake=None):
        self.demand = {name: scale.Demand(target=int(info.get("target", 0)),
                                          last_request_at=info.get("last_request_at"))
                       for name, info in saved_scale.items()}
        self.saved_ports = {name: info.get("wake_port") for name, info in saved_scale.items()}
        self.access = traefik_logs.Follower(access_log)
        self.wake = wake            # wake.WakeProxy, or None (run --once: a service at 0 has no route)
        self.waking_ports = {}      # {service: port of its wake proxy listener}
        self.seen_counts = {}       # {service: requests seen here so far} (hosts.Load.seen)
        self._last_seen = {}        # {(service, mine|them): the seen count at the last pass}

    # -- demand ----------------------------------------------------------------------------------
    def desired(self, desired):
        """desired with each MIN-MAX service's count as its demand set it."""
        desired = dict(desired)
        desired.update({name: demand.target for name, demand in self.demand.items() if name in desired})
        return desired

    def sample(self, scaling, memory, counted):
        """{service: hosts.Load} this host sees of each MIN-MAX service now: requests in flight through
        its Traefik (counted: {job_id: requests in flight} of the scaled backends) and held by its wake
        proxy, and its count of requests seen (raised when the access log shows a new one)."""
        if not scaling:
            return {}
        held = self.wake.held() if self.wake else {}
        seen = self._services_with_new_requests(memory)
        in_flight = {}
        for job_id, count in counted.items():
            if count and job_id in memory.jobs and memory.jobs[job_id].service in scaling:
                service = memory.jobs[job_id].service
                in_flight[service] = in_flight.get(service, 0) + count
        loads = {}
        for name in scaling:
            waiting = held[name].count if name in held else 0
            self.seen_counts[name] = self.seen_counts.get(name, 0) + (1 if name in seen else 0)
            loads[name] = Load(in_flight.get(name, 0) + waiting, waiting, self.seen_counts[name])
        return loads

    def follow(self, scaling, desired, memory, loads, now, policy, others=None):
        """desired with each MIN-MAX service's count set from its demand (scale.step), on the loads of
        this host (sample) and of the other login nodes (others: {service: Load} summed)."""
        self.demand = {name: self.demand.get(name) or initial_demand(name, memory, now) for name in scaling}
        if not scaling:
            return desired
        others = others or {}
        desired = dict(desired)
        for name, count in scaling.items():
            mine, theirs = loads.get(name, Load()), others.get(name, Load())
            waiting = mine.held + theirs.held
            # A count that changed since the last pass: a request came (the first pass only takes note).
            came = mine.seen != self._last_seen.get((name, "mine"), mine.seen) or \
                theirs.seen > self._last_seen.get((name, "them"), theirs.seen)
            self._last_seen[(name, "mine")], self._last_seen[(name, "them")] = mine.seen, theirs.seen
            old = self.demand[name]
            new = scale.step(old, now, mine.in_flight + theirs.in_flight, came or waiting > 0,
                             count.low, count.high, policy)
            if new.target != old.target:
                log.info("%s: %d instance%s wanted (was %d): %.1f requests in flight on average%s", name,
                         new.target, "" if new.target == 1 else "s", old.target, new.load,
                         ", %d held until a backend is ready" % waiting if waiting else "")
            self.demand[name] = new
            desired[name] = new.target
        return desired

    def _services_with_new_requests(self, memory):
        """Services with a request in Traefik's access log since the last pass (by backend URL)."""
        entries = self.access.new_entries()
        if not entries:
            return set()
        by_url = {m.url: m.service for m in memory.jobs.values() if m.url}
        seen = set()
        for entry in entries:
            url = entry.get("ServiceURL")
            seen.add(by_url[url] if isinstance(url, str) and url in by_url else traefik_logs.service_of(entry))
        return seen

    def holding(self):
        """True while the wake proxy holds a request (the loop then looks and probes more often)."""
        return self.wake is not None and any(h.count for h in self.wake.held().values())

    # -- the wake proxy ----------------------------------------------------------------------------
    def with_wake_routes(self, scaling, routes, loaded, faults, memory, now):
        """Routes where a MIN-MAX service with no backend taking requests points at the wake proxy,
        which holds its requests until a job is ready. Publishes each service's Board: the routed
        backends the proxy forwards to, or why held requests should be answered now."""
        if self.wake is None:
            return routes
        from .wake import Board     # only a running loop has a proxy: run --once does not import it
        for name in sorted(self.waking_ports.keys() - scaling.keys()):
            self.wake.close(name)
            del self.waking_ports[name]
        routes = dict(routes)
        for name in sorted(scaling):
            ready = tuple(s.url for s in routes.get(name) or () if s.weight > 0)
            self.wake.publish(name, Board(ready, *refusal(name, memory, now)))
            if ready:
                continue
            try:
                path, status = health_of(loaded.get(name))
                port = self.wake.listen(name, path, status, port=self._saved_port(name))
            except OSError as exc:
                faults.report("wake:" + name, "%s: cannot start its wake proxy on 127.0.0.1: %s; requests get "
                              "503 until a job is ready" % (name, exc))
                continue
            faults.clear("wake:" + name)
            self.waking_ports[name] = port
            routes[name] = [Server(wake_url(port), 1)] + list(routes.get(name) or ())
        return routes

    def _saved_port(self, name):
        """The port Traefik's file may still name from before a restart, to take it back."""
        port = self.saved_ports.get(name)
        return port if isinstance(port, int) and not isinstance(port, bool) and 1024 <= port <= 65535 else 0

    def report(self, scaling, routes):
        """{service: what `status` shows of a MIN-MAX service}, also what a restart resumes from."""
        held = self.wake.held() if self.wake else {}
        found = {}
        for name, count in sorted(scaling.items()):
            demand = self.demand.get(name, scale.Demand())
            ready = sum(1 for s in routes.get(name) or () if s.weight > 0)
            waiting = held.get(name)
            found[name] = {
                "low": count.low, "high": count.high, "target": demand.target, "load": round(demand.load, 2),
                "per_backend": round(demand.load / ready, 2) if ready else None,
                "last_request_at": demand.last_request_at,
                "held": waiting.count if waiting else 0,
                "held_seconds": round(waiting.longest_wait_seconds, 1) if waiting else 0.0,
                "phase": scale.phase(demand, ready, waiting.count if waiting else 0),
                "wake_port": self.waking_ports.get(name) or self._saved_port(name) or None}
        return found


def initial_demand(name, memory, now):
    """A service that becomes MIN-MAX while jobs of it run (an edited SERVICE_LIST, a lost state.json)
    keeps them as if it had just been asked for them: down by the usual delay, idle from now."""
    running = sum(1 for m in memory.jobs.values() if m.service == name and not m.stopping and m.drain_since is None)
    if not running:
        return scale.Demand()
    return scale.Demand(target=running, last_request_at=now, asks=((now, running),))


def refusal(name, memory, now):
    """(why, Retry-After seconds) for the wake proxy to answer name's held requests now: it is in
    submission backoff (sbatch or staging failed, or its jobs crashed) with no job on its way, so
    nothing can answer them before the next try; ("", 0) otherwise."""
    svc = memory.services.get(name)
    if svc is None or not svc.failures or svc.next_try <= now:
        return "", 0
    if any(m.service == name and not m.stopping for m in memory.jobs.values()):
        return "", 0
    wait = int(math.ceil(svc.next_try - now))
    return "%s; next try in %d s" % (svc.last_error or "submission failed", wait), wait


def scaled_backends(memory, scaling):
    """{job_id: URL} of the ready backends of MIN-MAX services: where their load is counted."""
    if not scaling:
        return {}
    return {job_id: m.url for job_id, m in memory.jobs.items()
            if m.service in scaling and m.url and m.ready_since is not None and m.cancelled_at is None}
