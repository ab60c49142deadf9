"""The reconcile loop: observe (one squeue), probe, plan (pure), act (sbatch/scancel), write Traefik config."""

import fcntl
import logging
import os
import shutil
import time
from typing import NamedTuple

from . import accesslog, inflight, joblog, probe, reconcile, services, state, traefik
from . import settings as settings_mod
from .errors import CommandError, ConfigError, ForeverError, LockedError
from .reconcile import Cancel, ClearExclude, Submit

log = logging.getLogger("forever_slurm")

FOLLOW_UP_DELAY = 2.0       # seconds between looks at Slurm while a fresh submission starts
FOLLOW_UP_WINDOW = 30.0     # ... for at most this long after the submission


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


class Controller:
    """One root's loop. Clock, sleep, Slurm and the prober are passed in so tests can fake them."""

    def __init__(self, layout, settings, slurm, clock=time.time, sleep=time.sleep,
                 probe_all=probe.probe_all, pyz=None, count_inflight=inflight.counts):
        self.layout = layout
        self.settings = settings
        self.slurm = slurm
        self.clock = clock
        self.sleep = sleep
        self.probe_all = probe_all
        self.count_inflight = count_inflight
        self.pyz = pyz
        self.policy = policy_from(settings)
        self.snapshot = state.load(layout.state_file)
        self.observe_failures = 0
        self._logged_errors = dict(self.snapshot.service_errors)
        self._next_log_check = 0.0
        self._env_stamp = None

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
        except ConfigError as exc:
            log.error("%s; keeping the settings in force until it is fixed", exc)
            return False
        if fresh != self.settings:
            log.info(".env changed: services now %s", settings_mod.format_service_list(fresh.service_list) or "none")
            self.settings = fresh
            self.policy = policy_from(fresh)
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
        tracked = set(desired) | {m.service for m in self.snapshot.memory.jobs.values()}
        old = self.snapshot.memory
        memory, events = reconcile.absorb(old, jobs, tracked, now, self.policy)
        self._log_events(events, memory)
        self._log_crash_output(old, memory)
        self.snapshot = self.snapshot._replace(memory=memory, jobs=jobs, observed_at=now)
        self._probe_and_route(desired, loaded, fresh=True)
        return True

    def tick(self):
        """Probe-only pass between squeue calls: routes follow readiness within seconds."""
        desired = self.settings.desired
        self._probe_and_route(desired, self._load_services(desired), fresh=False)

    def _probe_and_route(self, desired, loaded, fresh):
        now = self.clock()
        snap = self.snapshot
        targets = {}
        for job_id, url in reconcile.probe_targets(snap.memory, snap.jobs).items():
            item = loaded.get(snap.memory.jobs[job_id].service)
            template = item.template if item else None
            path = traefik.health_path(template) if template is not None else "/"
            status = traefik.health_status(template) if template is not None else None
            targets[job_id] = (url, path, status)
        results = self.probe_all(targets, timeout=self.settings.probe_timeout)
        memory, events = reconcile.apply_probes(snap.memory, results, now, self.policy)
        self._log_events(events, memory)
        warnings = {name: item.definition.warning_seconds for name, item in loaded.items() if item.definition}
        draining = {job_id: m.url for job_id, m in memory.jobs.items()
                    if m.drain_since is not None and m.cancelled_at is None and m.url}
        result = reconcile.plan(desired, snap.jobs, memory, now, self.policy,
                                observed_at=snap.observed_at or now, fresh=fresh, warnings=warnings,
                                inflight=self.count_inflight(draining))
        self._log_events(result.events, result.memory)
        memory = self._act(result.actions, result.memory, loaded, now)
        self.snapshot = self.snapshot._replace(memory=memory, routes=result.routes, desired=dict(desired),
                                               updated_at=now, pid=os.getpid(),
                                               service_errors={k: v.error for k, v in loaded.items() if v.error})
        self._write_routes(result.routes, loaded)
        state.save(self.layout.state_file, self.snapshot)
        if fresh and now >= self._next_log_check:
            self._next_log_check = now + 60
            self._rotate_traefik_access_log()

    def _rotate_traefik_access_log(self):
        try:
            for path in accesslog.rotate_if_large([os.path.join(self.layout.log, "traefik-access.log")],
                                                  os.path.join(self.layout.work, "traefik.pid")):
                log.info("rotated %s (Traefik reopens it on USR1)", path)
        except OSError as exc:
            log.warning("could not rotate Traefik's access log: %s", exc)

    # -- acting ----------------------------------------------------------------------------------
    def _act(self, actions, memory, loaded, now):
        cancels = [a for a in actions if isinstance(a, Cancel)]
        if cancels:
            memory = self._cancel(cancels, memory)
        failed_services = set()
        for action in actions:
            if isinstance(action, Submit) and action.service not in failed_services:
                memory, ok = self._submit(action, memory, loaded.get(action.service), now)
                if not ok:
                    failed_services.add(action.service)
            elif isinstance(action, ClearExclude):
                try:
                    self.slurm.clear_exclude(action.job_id)
                    log.info("job %s of %s: still pending, may now run on any node", action.job_id, action.service)
                except CommandError as exc:
                    log.warning("job %s: could not clear its node exclusion: %s", action.job_id, exc)
        return memory

    def _submit(self, action, memory, item, now):
        if item is None or item.definition is None:
            return memory, False
        definition = item.definition
        try:
            script = services.stage(self.layout, definition)
        except OSError as exc:
            log.error("%s: cannot stage %s: %s", action.service, definition.folder, exc)
            return memory, False
        output = None if definition.script_sets_output else "%x-%j.out"
        env = {"FOREVER_ROOT": self.layout.root}
        if self.pyz:
            env["FOREVER_PYZ"] = self.pyz
        exclude = action.exclude
        try:
            try:
                job_id = self.slurm.submit(script, self.layout.slurm_output, exclude, output, env)
            except CommandError as exc:
                if not exclude:
                    raise
                # Excluding busy nodes can make a job unschedulable on a small cluster: spread
                # is a preference, so try once more without it.
                log.info("%s: sbatch with --exclude=%s failed (%s); submitting without it",
                         action.service, ",".join(exclude), exc)
                exclude = ()
                job_id = self.slurm.submit(script, self.layout.slurm_output, exclude, output, env)
        except CommandError as exc:
            memory = reconcile.record_submit_failed(memory, action.service, "sbatch failed: %s" % exc,
                                                    now, self.policy)
            delay = memory.services[action.service].next_try - now
            log.error("%s: sbatch failed: %s; next try in %ds", action.service,
                      exc.stderr or exc, delay)
            return memory, False
        log.info("submitted job %s of %s (%s%s)", job_id, action.service, action.reason,
                 ", avoiding %s" % ",".join(exclude) if exclude else "")
        return reconcile.record_submitted(memory, action.service, job_id, now, exclude), True

    def _cancel(self, cancels, memory):
        ids = [a.job_id for a in cancels]
        try:
            self.slurm.cancel(ids)
        except CommandError as exc:
            log.error("scancel %s failed: %s; will retry", " ".join(ids), exc)
            jobs = dict(memory.jobs)
            for job_id in ids:
                if job_id in jobs:
                    jobs[job_id] = jobs[job_id]._replace(cancelled_at=None)
            return memory._replace(jobs=jobs)
        for action in cancels:
            log.info("cancelled job %s of %s (%s)", action.job_id, action.service, action.reason)
        return memory

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
            try:
                if definition is not None and definition.template:
                    template = traefik.load_template(definition.template, name)
                elif definition is not None or name not in desired:
                    template = traefik.default_template(name)
            except ConfigError as exc:
                errors.append(str(exc) + " (Traefik keeps its last good config for %s)" % name)
            error = "; ".join(errors)
            if error != self._logged_errors.get(name, ""):
                if error:
                    log.error("%s", error)
                else:
                    log.info("%s: service files are fine again", name)
                self._logged_errors[name] = error
            loaded[name] = Loaded(definition, template, error)
        return loaded

    def _write_routes(self, routes, loaded):
        keep = []
        for service, servers in sorted(routes.items()):
            path = os.path.join(self.layout.watch, service + ".yml")
            keep.append(os.path.basename(path))
            item = loaded.get(service)
            if item is None or item.template is None:
                continue    # bad template: leave the last good file in place
            try:
                text = traefik.render_dynamic(service, item.template, servers)
            except ConfigError as exc:
                log.error("%s: %s", service, exc)
                continue
            _set_aside_foreign(path, self.layout)
            if traefik.write_if_changed(path, text, self.layout.staging_tmp):
                log.info("traefik: %s -> %s", service, ", ".join(
                    s.url + (" (draining)" if s.weight == 0 else "") for s in servers) or "no backends (503)")
        keep += [name + ".yml" for name, item in loaded.items() if item.template is None]
        for removed in traefik.remove_stale(self.layout.watch, keep):
            log.info("traefik: removed %s (service no longer active)", removed)

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

    def _log_crash_output(self, old, new):
        """For each job that just counted as a crash, the last lines of its Slurm output."""
        for job_id, gone in sorted(old.jobs.items()):
            if job_id in new.jobs or gone.cancelled_at is not None:
                continue
            before = old.services.get(gone.service)
            after = new.services.get(gone.service)
            if after is None or (before is not None and after.failures <= before.failures):
                continue
            lines = failure_context(self.layout, job_id, gone.service)
            if lines:
                log.info("last output of job %s:\n  %s", job_id, "\n  ".join(lines))

    def _log_events(self, events, memory):
        for event in events:
            log.info("%s", event)

    # -- forever ---------------------------------------------------------------------------------
    def next_observe_delay(self):
        """Sleep interval while Slurm answers; doubling up to 2 min while it does not. Right after a
        submission, look again within 2 s for up to 30 s: a job that starts at once is routed at once
        (one squeue per 2 s during that short window is still a light load)."""
        if self.observe_failures == 0:
            now = self.clock()
            starting = any(m.owned and m.submitted_at is not None and now - m.submitted_at < FOLLOW_UP_WINDOW
                           and not m.ever_ready for m in self.snapshot.memory.jobs.values())
            return min(self.settings.sleep_interval, FOLLOW_UP_DELAY) if starting else self.settings.sleep_interval
        return min(self.settings.sleep_interval * (2 ** (self.observe_failures - 1)),
                   max(120.0, self.settings.sleep_interval))

    def run_forever(self, should_stop=lambda: False):
        while not should_stop():
            started = self.clock()
            try:
                self.cycle()
            except ForeverError as exc:
                log.error("cycle failed: %s", exc)
            next_observe = started + self.next_observe_delay()
            while not should_stop():
                remaining = next_observe - self.clock()
                if remaining <= 0:
                    break
                self.sleep(min(self.settings.probe_interval, remaining))
                if self.clock() < next_observe - 0.05:
                    try:
                        self.tick()
                    except ForeverError as exc:
                        log.error("probe pass failed: %s", exc)


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


class RootLock:
    """One loop per root: an fcntl lock on .work/forever-slurm.lock holding the owner's pid."""

    def __init__(self, path):
        self.path = path
        self.handle = None

    def acquire(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise LockedError("another forever-slurm loop (pid %s) already runs for this root; stop it "
                              "first (e.g. systemctl --user stop forever-slurm)" % holder, self.path)
        handle.seek(0)
        handle.truncate()
        handle.write("%d\n" % os.getpid())
        handle.flush()
        self.handle = handle
        return self

    def release(self):
        if self.handle:
            self.handle.close()
            self.handle = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def failure_context(layout, job_id, service, lines=5):
    path = joblog.output_file(layout, job_id, service)
    return joblog.tail(path, lines) if path else []
