"""The reconcile loop: observe (one squeue), probe, plan (pure), act (sbatch/scancel), write Traefik config."""

import logging
import math
import os
import shutil
import threading
import time
import traceback
from typing import NamedTuple

from ..observe import accesslog, joblog
from ..common import backoff, fsutil, services
from . import inflight, probe, reconcile, scale, state
from ..systems import traefik, traefik_files
from ..setup import traefik_bin
from ..common import settings as settings_mod
from ..systems import slurm as slurm_mod
from ..common.errors import CommandError, ConfigError, ForeverError
from .reconcile import Cancel, ClearExclude, Server, Submit

log = logging.getLogger("forever_slurm")

FOLLOW_UP_DELAY = 2.0       # seconds between looks at Slurm while a fresh submission starts
FOLLOW_UP_WINDOW = 30.0     # ... for this long after the submission; then every half its age
MIN_LOOK_GAP = 1.0          # never two looks at Slurm closer than this
WAKING_LOOK_SHARE = 0.1     # while requests are held: a look every tenth of the job's wait so far
WAKING_PROBE_DELAY = 0.5    # between probe passes while requests are held: they wait for the first ready


def policy_from(settings):
    return reconcile.Policy(
        surge=settings.surge,
        drain_seconds=settings.drain_seconds,
        drain_max_seconds=settings.drain_max_seconds,
        renew_lead=settings.renew_lead,
        renew_margin=settings.renew_margin,
        spread=settings.spread,
    )


class Loaded(NamedTuple):
    """A service's files, read this cycle: what to submit and how to route it."""
    definition: object      # services.ServiceDef or None when its .sub is unusable
    template: object        # traefik template, or None when its .yml is unusable
    error: str


class RenderCache:
    """The last rendered Traefik file of each service: a steady cycle renders nothing (at 10,000 jobs
    rendering would be a third of the cycle), while any change of template or servers renders afresh."""

    def __init__(self):
        self._last = {}

    def render(self, service, template, servers, version=None, neighbours=(), passive=True):
        key = (tuple(servers), template.balancer, version, tuple(neighbours), passive)
        hit = self._last.get(service)
        if hit is not None and hit[0] == key and hit[1] == template.data:
            return hit[2]
        text = traefik.render_dynamic(service, template, servers, version, neighbours, passive)
        self._last[service] = (key, template.data, text)
        return text


class Controller:
    """One root's loop. Clocks, sleep, Slurm and the prober are passed in so tests can fake them.

    `clock` is wall time, stored in state.json (it must mean the same after a restart);
    `monotonic` schedules the next look at Slurm, so a clock jumping back cannot stall it."""

    def __init__(self, layout, settings, slurm, clock=time.time, sleep=None,
                 probe_all=probe.probe_all, pyz=None, monotonic=None, count_inflight=inflight.counts,
                 wake=None):
        self.layout = layout
        self.settings = settings
        self.slurm = slurm
        self.clock = clock
        self.monotonic = monotonic or (time.monotonic if clock is time.time else clock)
        # Between passes the loop waits on `wakeup`: a request for a sleeping service ends the wait.
        self.wakeup = threading.Event()
        self.sleep = sleep or self.wakeup.wait
        self.probe_all = probe_all
        self.count_inflight = count_inflight
        self.pyz = pyz
        self.policy = policy_from(settings)
        self.workdirs = {os.path.normpath(layout.slurm_output),
                         os.path.normpath(os.path.realpath(layout.slurm_output))}
        self.faults = {}
        self.reserve = fsutil.Reserve(os.path.join(layout.work, "disk-reserve"))
        self.rendered = RenderCache()
        self.snapshot = self._load_state()
        self.observe_failures = 0
        self._logged_errors = dict(self.snapshot.service_errors)
        self._logged_bugs = set()
        self._foreign_seen = set()
        self._next_log_check = 0.0
        self._env_stamp = None
        self.look_now = False       # set when something happened that only Slurm can explain
        # MIN-MAX services: their demand, the requests seen in Traefik's access log, and the wake
        # proxy (wake.WakeProxy; None: a service at 0 instances has no route, as with run --once).
        self.scale_policy = scale.policy_from(settings)
        self.demand = {name: scale.Demand(target=int(info.get("target", 0)),
                                          last_request_at=info.get("last_request_at"))
                       for name, info in self.snapshot.scale.items()}
        self.access = accesslog.Follower(os.path.join(layout.log, "traefik-access.log"))
        self.wake = wake
        self.waking_ports = {}      # {service: port of its wake proxy listener}
        self.warnings = {}          # {service: seconds of its --signal warning}, from the last pass

    def _load_state(self):
        snapshot, problem = state.read(self.layout.state_file)
        if problem:
            aside = state.set_aside(self.layout.state_file, self.clock())
            log.error("%s; %s. Starting with an empty memory: our jobs are found again in squeue by their "
                      "working directory", problem, "kept it as %s" % aside if aside else "could not move it aside")
        return snapshot._replace(faults={})

    # -- one cycle -------------------------------------------------------------------------------
    def reload_settings_if_changed(self):
        """Pick up an edited .env (or `config` run again) without a restart, which cron cannot do.
        A broken .env is reported once and the settings in force are kept."""
        stamp = _stamp(self.layout.env_file), _stamp(self.layout.env_default)
        if self._env_stamp is None:
            self._env_stamp = stamp
            return False
        if stamp == self._env_stamp:
            return False
        self._env_stamp = stamp
        try:
            fresh = settings_mod.load(self.layout)
        except (ConfigError, OSError) as exc:
            log.error("%s; keeping the settings in force until it is fixed", exc)
            return False
        if fresh != self.settings:
            log.info(".env changed: services now %s", settings_mod.format_service_list(fresh.service_list) or "none")
            self.settings = fresh
            self.policy = policy_from(fresh)
            self.scale_policy = scale.policy_from(fresh)
        return True

    def cycle(self):
        """Observe, plan, act, route. Returns True when Slurm answered."""
        self.reload_settings_if_changed()
        now = self.clock()
        desired = self.settings.desired
        loaded = self._load_services(desired)
        try:
            jobs = self.slurm.observe()
        except CommandError as exc:
            self._slurm_state(False, str(exc), now)
            self.observe_failures += 1
            self._probe_and_route(desired, loaded, fresh=False)
            return False
        self.observe_failures = 0
        self._slurm_state(True, "", now)
        self.reserve.ensure()
        old = self.snapshot.memory
        tracked = set(desired) | {m.service for m in old.jobs.values()}
        ours, foreign = [], []
        for job in jobs:
            if slurm_mod.submitted_from(job, self.workdirs):
                ours.append(job)
            elif job.active and job.name in tracked:
                foreign.append(job)
        self._log_foreign(foreign)
        memory, events = reconcile.absorb(old, ours, now, self.policy)
        self._log_events(events)
        self._log_crash_output(old, memory)
        self.snapshot = self.snapshot._replace(memory=memory, jobs=ours, foreign=foreign, observed_at=now)
        self._probe_and_route(desired, loaded, fresh=True)
        return True

    def tick(self):
        """Probe-only pass between squeue calls: routes follow readiness within seconds."""
        if self.reload_settings_if_changed():
            self.look_now = True
        desired = self.settings.desired
        self._probe_and_route(desired, self._load_services(desired), fresh=False)

    def _probe_and_route(self, desired, loaded, fresh):
        now = self.clock()
        snap = self.snapshot
        targets, health = {}, {}    # health: per service, not per job (10,000 template look-ups a pass)
        for job_id, url in reconcile.probe_targets(snap.memory, snap.jobs).items():
            service = snap.memory.jobs[job_id].service
            if service not in health:
                health[service] = _health_of(loaded.get(service))
            targets[job_id] = (url,) + health[service]
        results = self.probe_all(targets, timeout=self.settings.probe_timeout)
        memory, events = reconcile.apply_probes(snap.memory, results, now, self.policy)
        self._log_events(events)
        if not fresh and any(old.ready_since is not None and memory.jobs[k].ready_since is None
                             for k, old in snap.memory.jobs.items() if k in memory.jobs):
            self.look_now = True    # a backend went away: find out from Slurm whether its job did
        warnings = {name: item.definition.warning_seconds for name, item in loaded.items() if item.definition}
        self.warnings = warnings    # the scheduling of the next look renews by the same lead
        draining = {job_id: m.url for job_id, m in memory.jobs.items()
                    if m.drain_since is not None and m.cancelled_at is None and m.url}
        scaled = scaled_backends(memory, self.settings.scaling)
        counted = self.count_inflight(_merged(draining, scaled)) if draining or scaled else {}
        inflight = {job_id: counted.get(job_id) for job_id in draining}
        if not fresh and self._drain_done(memory, snap, inflight, now):
            self.look_now = True    # nothing in flight on a drained backend: cancel it at once
        desired = self._follow_demand(desired, memory, scaled, counted, now)
        result = reconcile.plan(desired, snap.jobs, memory, now, self.policy,
                                observed_at=snap.observed_at or now, fresh=fresh, warnings=warnings,
                                inflight=inflight)
        self._log_events(result.events)
        for service, trace in sorted(result.failed.items()):
            self._log_bug("planning %s failed; its jobs and routes stay as they were, the other services "
                          "go on" % service, trace)
        memory = self._act(result.actions, result.memory, loaded, now)
        routes = dict(result.routes)
        routes.update({name: snap.routes[name] for name in result.failed if name in snap.routes})
        written = self._with_wake_routes(result.routes, loaded, memory, now)
        self.snapshot = self.snapshot._replace(memory=memory, routes=routes,
                                               desired=dict(desired), updated_at=now, pid=os.getpid(),
                                               service_errors={k: v.error for k, v in loaded.items() if v.error},
                                               scale=self._scale_report(routes))
        self._write_routes(written, loaded, set(result.failed))
        self._save_state(self.snapshot)
        if fresh and now >= self._next_log_check:
            self._next_log_check = now + 60
            self._rotate_traefik_access_log()

    # -- min-max services: demand, and the wake proxy for those with no backend -------------------
    def desired_now(self):
        """{service: jobs wanted}: SERVICE_LIST's counts, with the MIN-MAX ones as demand set them."""
        desired = dict(self.settings.desired)
        desired.update({name: demand.target for name, demand in self.demand.items() if name in desired})
        return desired

    def _follow_demand(self, desired, memory, scaled, counted, now):
        """desired with each MIN-MAX service's count set from its demand (core/scale.py). A rise makes
        the loop look at Slurm at once, so the job is submitted now, not at the next cycle."""
        scaling = self.settings.scaling
        self.demand = {name: self.demand.get(name) or _initial_demand(name, memory, now) for name in scaling}
        if not scaling:
            return desired
        held = self.wake.held() if self.wake else {}
        seen = self._services_with_new_requests(memory)
        in_flight = {}
        for job_id, count in counted.items():
            if job_id in scaled and count:
                service = memory.jobs[job_id].service
                in_flight[service] = in_flight.get(service, 0) + count
        desired = dict(desired)
        for name, count in scaling.items():
            waiting = held[name].count if name in held else 0
            old = self.demand[name]
            new = scale.step(old, now, in_flight.get(name, 0) + waiting, name in seen or waiting > 0,
                             count.low, count.high, self.scale_policy)
            if new.target != old.target:
                log.info("%s: %d instance%s wanted (was %d): %.1f requests in flight on average%s", name,
                         new.target, "" if new.target == 1 else "s", old.target, new.load,
                         ", %d held until a backend is ready" % waiting if waiting else "")
                # Up: submit now. Down: drain now (both are planned on a fresh look at Slurm).
                self.look_now = True
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
            seen.add(by_url[url] if isinstance(url, str) and url in by_url else accesslog.service_of(entry))
        return seen

    def _with_wake_routes(self, routes, loaded, memory, now):
        """Routes where a MIN-MAX service with no backend taking requests points at the wake proxy,
        which holds its requests until a job is ready (core/wake.py). Publishes each service's Board:
        the routed backends the proxy forwards to, or why held requests should be answered now."""
        scaling = self.settings.scaling
        if self.wake is None:
            return routes
        from .wake import Board
        self.wake.timeout = self.settings.wake_timeout
        self.wake.also_ours = frozenset([self.settings.traefik_port, self.settings.traefik_ping_port])
        for name in sorted(self.waking_ports.keys() - scaling.keys()):
            self.wake.close(name)
            del self.waking_ports[name]
        routes = dict(routes)
        for name in sorted(scaling):
            ready = tuple(s.url for s in routes.get(name) or () if s.weight > 0)
            self.wake.publish(name, Board(ready, *_refusing(name, memory, now)))
            if ready:
                continue
            try:
                path, status = _health_of(loaded.get(name))
                port = self.wake.listen(name, path, status, port=self._saved_wake_port(name))
            except OSError as exc:
                self._fault("wake:" + name, "%s: cannot start its wake proxy on 127.0.0.1: %s; requests get "
                            "503 until a job is ready" % (name, exc))
                continue
            self._clear_fault("wake:" + name)
            self.waking_ports[name] = port
            routes[name] = [Server(wake_url(port), 1)] + list(routes.get(name) or ())
        return routes

    def start_wake_proxy(self):
        """The 127.0.0.1 proxy that holds requests for MIN-MAX services with no backend (run, not --once:
        a proxy must outlive the pass that routes to it). A request it holds ends the loop's wait."""
        from . import wake
        self.wake = wake.WakeProxy(on_wake=lambda service: self.wakeup.set(),
                                   timeout=self.settings.wake_timeout,
                                   spool_dir=os.path.join(self.layout.work, "wake-spool"),
                                   also_ours=(self.settings.traefik_port, self.settings.traefik_ping_port),
                                   log=lambda message: log.info("wake proxy: %s", message))
        return self.wake

    def _saved_wake_port(self, name):
        port = self.snapshot.scale.get(name, {}).get("wake_port")
        return port if isinstance(port, int) and not isinstance(port, bool) and 1024 <= port <= 65535 else 0

    def _scale_report(self, routes):
        """{service: what `status` shows of a MIN-MAX service}, also what a restart resumes from."""
        held = self.wake.held() if self.wake else {}
        report = {}
        for name, count in sorted(self.settings.scaling.items()):
            demand = self.demand.get(name, scale.Demand())
            ready = sum(1 for s in routes.get(name) or () if s.weight > 0)
            waiting = held.get(name)
            report[name] = {
                "low": count.low, "high": count.high, "target": demand.target, "load": round(demand.load, 2),
                "per_backend": round(demand.load / ready, 2) if ready else None,
                "last_request_at": demand.last_request_at,
                "held": waiting.count if waiting else 0,
                "held_seconds": round(waiting.longest_wait_seconds, 1) if waiting else 0.0,
                "phase": scale.phase(demand, ready, waiting.count if waiting else 0),
                "wake_port": self.waking_ports.get(name) or self._saved_wake_port(name) or None}
        return report

    def _drain_done(self, memory, snap, inflight, now):
        if not inflight:
            return False
        age = now - (snap.observed_at or now)
        left = {job.job_id: None if job.time_left is None else job.time_left - age for job in snap.jobs}
        return any(reconcile.drain_finished(memory.jobs[job_id], count, now, self.policy, left.get(job_id))
                   for job_id, count in inflight.items()
                   if job_id in memory.jobs and not memory.jobs[job_id].stopping)

    def _rotate_traefik_access_log(self):
        try:
            for path in accesslog.rotate_if_large([os.path.join(self.layout.log, "traefik-access.log")],
                                                  os.path.join(self.layout.work, "traefik.pid")):
                log.info("rotated %s (Traefik reopens it on USR1)", path)
        except OSError as exc:
            log.warning("could not rotate Traefik's access log: %s", exc)

    # -- acting: each outcome is recorded where it happens ---------------------------------------
    def _act(self, actions, memory, loaded, now):
        cancels = [a for a in actions if isinstance(a, Cancel)]
        if cancels:
            memory = self._cancel(cancels, memory, now)
        submits = [a for a in actions if isinstance(a, Submit)]
        if submits:
            memory = self._submit_all(submits, memory, loaded, now)
        for action in actions:
            if isinstance(action, ClearExclude):
                try:
                    self.slurm.clear_exclude(action.job_id)
                    memory = reconcile.record_exclude_cleared(memory, action.job_id)
                    log.info("job %s of %s: still pending, may now run on any node", action.job_id, action.service)
                except CommandError as exc:
                    log.warning("job %s: could not clear its node exclusion (retried next cycle): %s",
                                action.job_id, exc)
        return memory

    def _submit_all(self, submits, memory, loaded, now):
        """Record the intent of every submission on disk first: a crash between sbatch and the next
        save then neither loses the job (it is adopted from squeue) nor submits it twice."""
        with_intents, keys = reconcile.record_intents(memory, submits, now)
        if not self._save_state(self.snapshot._replace(memory=with_intents)):
            log.error("not submitting %d job(s) while the state file cannot be written",
                      len(submits))
            return memory
        memory = with_intents
        failed_services = set()
        for action, key in zip(submits, keys):
            item = loaded.get(action.service)
            if action.service in failed_services or item is None or item.definition is None:
                memory = memory._replace(jobs={k: v for k, v in memory.jobs.items() if k != key})
                continue
            memory, ok = self._submit(action, key, memory, item.definition, now)
            if not ok:
                failed_services.add(action.service)
        return memory

    def _submit(self, action, intent, memory, definition, now):
        try:
            script = services.stage(self.layout, definition)
        except (OSError, ConfigError) as exc:
            log.error("%s: cannot stage %s into %s: %s", action.service, definition.folder, self.layout.work, exc)
            return reconcile.record_submit_failed(memory, action.service, "cannot stage: %s" % exc, now,
                                                  self.policy, intent), False
        output = None if definition.script_sets_output else "%x-%j.out"
        env = {"FOREVER_ROOT": self.layout.root}
        if self.pyz:
            env["FOREVER_PYZ"] = self.pyz
        exclude = action.exclude
        try:
            try:
                job_id = self.slurm.submit(script, self.layout.slurm_output, exclude, output, env, action.service)
            except CommandError as exc:
                if not exclude:
                    raise
                # Excluding busy nodes can make a job unschedulable on a small cluster: spread
                # is a preference, so try once more without it.
                log.info("%s: sbatch with --exclude=%s failed (%s); submitting without it",
                         action.service, ",".join(exclude), exc)
                exclude = ()
                job_id = self.slurm.submit(script, self.layout.slurm_output, exclude, output, env, action.service)
        except CommandError as exc:
            memory = reconcile.record_submit_failed(memory, action.service, "sbatch failed: %s" % exc,
                                                    now, self.policy, intent)
            delay = memory.services[action.service].next_try - now
            log.error("%s: sbatch failed: %s; next try in %ds", action.service,
                      exc.stderr or exc, delay)
            return memory, False
        log.info("submitted job %s of %s (%s%s)", job_id, action.service, action.reason,
                 ", avoiding %s" % ",".join(exclude) if exclude else "")
        return reconcile.record_submitted(memory, action.service, job_id, now, exclude, intent), True

    def _cancel(self, cancels, memory, now):
        ids = [a.job_id for a in cancels]
        try:
            self.slurm.cancel(ids)
        except CommandError as exc:
            memory = reconcile.record_cancel_failed(memory, ids, now, self.policy)
            retry = min(memory.jobs[i].cancel_retry_at for i in ids if i in memory.jobs) \
                if any(i in memory.jobs for i in ids) else now
            log.error("scancel %s failed: %s; the job(s) stay out of Traefik, retry in %ds",
                      " ".join(ids), exc, max(0, retry - now))
            return memory
        for action in cancels:
            log.info("cancelled job %s of %s (%s)", action.job_id, action.service, action.reason)
        return reconcile.record_cancelled(memory, ids, now)

    # -- inputs and outputs ----------------------------------------------------------------------
    def _load_services(self, desired):
        """Each active service's .sub and .yml, read afresh each cycle; problems reported once."""
        loaded = {}
        names = set(desired) | {m.service for m in self.snapshot.memory.jobs.values()}
        for name in sorted(names):
            definition, template, errors = None, None, []
            try:
                definition = services.load(self.layout, name)
            except ConfigError as exc:
                errors.append(str(exc))
            except Exception as exc:   # noqa: one service's files must not stop the others
                errors.append("%s: cannot load the service folder: %s" % (name, exc))
            try:
                if definition is not None and definition.template:
                    template = traefik_files.load_template(definition.template, name)
                elif definition is not None or name not in desired:
                    template = traefik.default_template(name)
            except ConfigError as exc:
                errors.append(str(exc) + " (Traefik keeps its last good config for %s)" % name)
            except Exception as exc:   # noqa
                errors.append("%s: cannot load the Traefik template: %s" % (name, exc))
            error = "; ".join(errors)
            if error != self._logged_errors.get(name, ""):
                if error:
                    log.error("%s", error)
                else:
                    log.info("%s: service files are fine again", name)
                self._logged_errors[name] = error
            loaded[name] = Loaded(definition, template, error)
        return loaded

    def _write_routes(self, routes, loaded, failed=()):
        """One file per routed service. A service whose template is broken, whose planning failed or
        whose file cannot be written keeps its last good file; the others are written anyway."""
        keep = set(traefik.dynamic_name(name) for name in failed)
        keep |= set(traefik.dynamic_name(name) for name, item in loaded.items() if item.template is None)
        # Which Traefik features to render (the passive health check): asked from `traefik version`, cached.
        try:
            version = traefik_bin.version_in_use(self.settings.traefik_bin, self.layout, os.environ)
        except Exception as exc:   # noqa: without a version we render what every Traefik 3 accepts
            self._fault("traefik-version", "cannot tell the Traefik version: %s" % exc)
            version = None
        neighbours = sorted(loaded)
        for service, servers in sorted(routes.items()):
            name = traefik.dynamic_name(service)
            keep.add(name)
            item = loaded.get(service)
            if item is None or item.template is None:
                continue
            path = os.path.join(self.layout.watch, name)
            try:
                # The wake proxy answers 503 when a request waited too long: Traefik's passive health
                # check would then take the proxy out and answer the next requests itself, unheld.
                passive = not any(s.url == wake_url(self.waking_ports.get(service, 0)) for s in servers)
                text = self.rendered.render(service, item.template, servers, version, neighbours, passive)
            except ConfigError as exc:
                self._fault("render:" + service, "%s: %s (Traefik keeps its last good file)" % (service, exc))
                continue
            self._clear_fault("render:" + service)
            try:
                _set_aside_foreign(path, self.layout)
                written = self.reserve.write(lambda: traefik_files.write_if_changed(path, text, self.layout.staging_tmp))
            except OSError as exc:
                self._fault("traefik:" + service, "cannot write %s: %s; Traefik keeps the last good file, "
                            "retrying" % (path, exc.strerror or exc))
                continue
            self._clear_fault("traefik:" + service)
            if written:
                log.info("traefik: %s -> %s", service, ", ".join(
                    s.url + (" (draining)" if s.weight == 0 else " (wake proxy)" if not passive else "")
                    for s in servers) or "no backends (503)")
        try:
            for removed in traefik_files.remove_stale(self.layout.watch, sorted(keep)):
                log.info("traefik: removed %s (service no longer active)", removed)
        except OSError as exc:
            self._fault("traefik-clean", "cannot tidy %s: %s" % (self.layout.watch, exc.strerror or exc))

    def _save_state(self, snapshot):
        """True when state.json now holds `snapshot`; a failure is logged once and retried next pass."""
        try:
            self.reserve.write(lambda: state.save(self.layout.state_file, snapshot._replace(faults=dict(self.faults))))
        except OSError as exc:
            self._fault("state", "cannot save %s: %s; retrying every pass, nothing submitted is forgotten "
                        "while the loop runs" % (self.layout.state_file, exc.strerror or exc))
            return False
        self._clear_fault("state")
        return True

    def _fault(self, key, message):
        if self.faults.get(key) != message:
            log.error("%s", message)
            self.faults[key] = message

    def _clear_fault(self, key):
        if self.faults.pop(key, None) is not None:
            log.info("fixed: %s works again", key)

    def _slurm_state(self, ok, error, now):
        snap = self.snapshot
        if snap.slurm_ok != ok:
            if ok:
                log.info("Slurm answers%s", "" if snap.slurm_ok is None else " again")
            else:
                log.error("Slurm does not answer (%s): no submissions, no cancellations, "
                          "Traefik keeps its routes; retrying with backoff", error)
            self.snapshot = snap._replace(slurm_ok=ok, slurm_error=error, slurm_since=now)
        elif not ok:
            self.snapshot = snap._replace(slurm_error=error)

    def _log_foreign(self, foreign):
        for job in foreign:
            if job.job_id not in self._foreign_seen:
                self._foreign_seen.add(job.job_id)
                log.warning("job %s is named %s but was not submitted from this root (working directory %s, "
                            "not %s): never counted, routed or cancelled", job.job_id, job.name,
                            job.workdir or "unknown", self.layout.slurm_output)

    def _log_crash_output(self, old, new):
        """For each job that just counted as a crash, the last lines of its Slurm output."""
        for job_id, gone in sorted(old.jobs.items()):
            if job_id in new.jobs or gone.cancelled_at is not None or reconcile.is_intent(job_id):
                continue
            before = old.services.get(gone.service)
            after = new.services.get(gone.service)
            if after is None or (before is not None and after.failures <= before.failures):
                continue
            try:
                lines = failure_context(self.layout, job_id, gone.service)
            except OSError:
                lines = []
            if lines:
                log.info("last output of job %s:\n  %s", job_id, "\n  ".join(lines))

    def _log_events(self, events):
        for event in events:
            log.info("%s", event)

    def _log_bug(self, message, trace):
        """A bug is logged with its traceback once; after that one line per occurrence."""
        key = trace.strip().splitlines()[-1] if trace.strip() else message
        if key in self._logged_bugs:
            log.error("%s (%s)", message, key)
            return
        if len(self._logged_bugs) < 100:
            self._logged_bugs.add(key)
        log.error("%s:\n%s", message, trace.rstrip())

    # -- forever ---------------------------------------------------------------------------------
    def next_observe_delay(self):
        """Seconds until the next look at Slurm: the steady FS_SLEEP_INTERVAL, or sooner when the plan
        needs it (reconcile.next_look); while a submission has not published its URL, every 2 s for
        its first 30 s, then every half its age (a job that starts late is seen late by a bounded
        share, at a few calls in all), every tenth of its age while requests wait for it; doubling
        up to 2 min while Slurm does not answer."""
        if self.observe_failures:
            return backoff.delay(self.observe_failures, self.settings.sleep_interval,
                                 max(120.0, self.settings.sleep_interval))
        now = self.clock()
        snap = self.snapshot
        waiting = [now - m.submitted_at for m in snap.memory.jobs.values()
                   if m.submitted_at is not None and not m.url and m.cancelled_at is None and now >= m.submitted_at]
        if waiting:
            age = min(waiting)
            if self._holding():
                delay = max(MIN_LOOK_GAP, age * WAKING_LOOK_SHARE)
            else:
                delay = FOLLOW_UP_DELAY if age < FOLLOW_UP_WINDOW else age / 2
            return min(self.settings.sleep_interval, delay)
        views = reconcile.service_views(self.desired_now(), snap.jobs, snap.memory, now, self.policy,
                                        snap.observed_at or now, self.warnings)
        seconds, why = reconcile.next_look(views, self.policy, self.settings.sleep_interval)
        if why != "steady":
            log.debug("next look at Slurm in %.0fs (%s)", seconds, why)
        return max(seconds, FOLLOW_UP_DELAY / 2) if why != "steady" else seconds

    def run_forever(self, should_stop=lambda: False):
        """Cycles until should_stop(); nothing that happens inside a cycle ends the loop."""
        while not should_stop():
            started = self.monotonic()
            self.look_now = False
            self._guarded(self.cycle, "cycle")
            next_observe = started + self._guarded(self.next_observe_delay, "scheduling",
                                                   default=self.settings.sleep_interval)
            while not should_stop():
                remaining = next_observe - self.monotonic()
                if remaining <= 0:
                    break
                self.sleep(self._nap(started, remaining))
                self.wakeup.clear()
                if self.monotonic() < next_observe - 0.05:
                    self._guarded(self.tick, "probe pass")
                if self.look_now and not self.observe_failures and self.monotonic() - started >= MIN_LOOK_GAP:
                    break       # a backend stopped answering, a request woke a service, .env changed: ask Slurm now
        if self.wake is not None:
            self.wake.shutdown()

    def _nap(self, started, remaining):
        """Seconds to wait before the next probe pass: the probe interval, shorter while requests are
        held (they wait for the first ready backend) or a look at Slurm is already wanted."""
        nap = min(self.settings.probe_interval, remaining)
        if self._holding():
            nap = min(nap, WAKING_PROBE_DELAY)
        if self.look_now:
            nap = min(nap, max(0.05, started + MIN_LOOK_GAP - self.monotonic()))
        return nap

    def _holding(self):
        return self.wake is not None and any(h.count for h in self.wake.held().values())

    def _guarded(self, step, what, default=None):
        try:
            return step()
        except ForeverError as exc:
            log.error("%s failed: %s", what, exc)
        except Exception:   # noqa: a bug costs one pass, never the loop
            self._log_bug("%s failed (a bug; the loop goes on)" % what, traceback.format_exc())
        return default


def _initial_demand(name, memory, now):
    """A service that becomes MIN-MAX while jobs of it run (an edited SERVICE_LIST, a lost state.json)
    keeps them as if it had just been asked for them: down by the usual delay, idle from now."""
    running = sum(1 for m in memory.jobs.values() if m.service == name and not m.stopping and m.drain_since is None)
    if not running:
        return scale.Demand()
    return scale.Demand(target=running, last_request_at=now, asks=((now, running),))


def scaled_backends(memory, scaling):
    """{job_id: URL} of the ready backends of MIN-MAX services: where their load is counted."""
    if not scaling:
        return {}
    return {job_id: m.url for job_id, m in memory.jobs.items()
            if m.service in scaling and m.url and m.ready_since is not None and m.cancelled_at is None}


def _merged(*mappings):
    merged = {}
    for mapping in mappings:
        merged.update(mapping)
    return merged


def wake_url(port):
    return "http://127.0.0.1:%d" % port


def _refusing(name, memory, now):
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


def _health_of(item):
    """(health path, expected status) of a loaded service; '/' and any 2xx/3xx when unknown."""
    template = item.template if item else None
    if template is None:
        return "/", None
    try:
        return traefik.health_path(template), traefik.health_status(template)
    except Exception:   # noqa: a template quirk must not stop the probes of every service
        return "/", None


def _stamp(path):
    try:
        info = os.stat(path)
        return info.st_mtime_ns, info.st_size
    except OSError:
        return None


def _set_aside_foreign(path, layout):
    """A file in traefik-watch that we did not write (e.g. staged by the original bash tool) is moved
    to .work/backup/ before we take its name, never silently overwritten."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except FileNotFoundError:
        return
    if first.startswith(traefik.MARKER):
        return
    backup_dir = os.path.join(layout.work, "backup")
    os.makedirs(backup_dir, exist_ok=True)
    target = os.path.join(backup_dir, "%s.%d" % (os.path.basename(path), int(time.time())))
    shutil.move(path, target)
    log.warning("moved %s (not written by forever-slurm) to %s", path, target)


def failure_context(layout, job_id, service, lines=5):
    path = joblog.output_file(layout, job_id, service)
    return joblog.tail(path, lines) if path else []
