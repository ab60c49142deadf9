"""One root's loop: a look at Slurm (one squeue), probe passes between looks, the plan (pure), and the
parts that carry it out: the executor (sbatch, scancel), the route writer (Traefik's files) and the
demand keeper (MIN-MAX services and the wake proxy). scheduler.py runs it forever.

Words: a *look* is one squeue and everything decided on it; a *probe pass* probes the backends and
re-plans on the last look, without asking Slurm (so it never submits or cancels)."""

import logging
import os
import time
import traceback
from typing import NamedTuple, Optional

from ..common import backoff, fsutil, services, settings as settings_mod
from ..common.errors import CommandError, ConfigError, ForeverError
from ..systems import slurm as slurm_mod, slurm_facts, slurm_output, traefik_logs, traefik_ping
from . import absorb, follow, hosts, inflight, maintenance, model, planner, probe, scale, state
from .demand import DemandKeeper, scaled_backends
from .executor import Executor
from .faults import Faults
from .routes import RouteWriter
from .service_files import ServiceFiles, health_of

log = logging.getLogger(__name__)

ACCESS_LOG_CHECK = 60.0     # seconds between two looks at the access log's size (rotation)
FACTS_INTERVAL = 600.0      # seconds between two reads of nodes and reservations (two RPCs beside squeue)
FACTS_SOON = 60.0           # ... and at most this often when a look saw a job requeued or lost to its node


class ClusterFacts(NamedTuple):
    """What the cluster says beside the queue (systems/slurm_facts.py), as last read."""
    unavailable: dict = {}          # node -> NodeProblem: down, drained, failing
    reservations: list = []         # slurm_facts.Reservation
    read_at: Optional[float] = None
    error: str = ""                 # why the last read failed ('' when it did not)


class Controller:
    """One root's loop. Clock, Slurm, the prober and the in-flight counter are passed in so tests can
    fake them. `clock` is wall time, stored in state.json (it must mean the same after a restart)."""

    def __init__(self, layout, settings, slurm, clock=time.time, probe_all=probe.probe_all, pyz=None,
                 count_inflight=inflight.counts, wake=None, lease=None, host=None, monotonic=time.monotonic):
        self.layout = layout
        self.settings = settings
        self.slurm = slurm
        self.clock = clock
        self.probe_all = probe_all
        self.count_inflight = count_inflight
        self.policy = model.policy_from(settings)
        self.scale_policy = scale.policy_from(settings)
        self.workdirs = frozenset([os.path.normpath(layout.slurm_output),        # (frozen: hashed once
                                   os.path.normpath(os.path.realpath(layout.slurm_output))])  # a look)
        self.faults = Faults()
        self.reserve = fsutil.Reserve(layout.disk_reserve)
        self.snapshot = self._load_state(set_aside=lease is None)
        self.saver = state.Saver(layout.state_file, self.reserve, self.faults)
        self.files = ServiceFiles(layout, self.snapshot.service_errors)
        self.executor = Executor(layout, slurm, self._save_intents, pyz, may_act=self.may_act)
        self.routes = RouteWriter(layout, settings, self.reserve, self.faults)
        self.demand = DemandKeeper(os.path.join(layout.log, "traefik-access.log"), self.snapshot.scale, wake)
        if wake is not None:
            wake.timeout = settings.wake_timeout
        self.observe_failures = 0       # looks in a row at which Slurm did not answer
        self._doubted = []              # jobs a look lost while they still answered: asked again
        self.last_plan = None           # model.Plan of the last pass: its next_look says when to look again
        self.owns_root = True           # False once another loop holds the root's lock: write nothing more
        self._logged_bugs = set()
        self._foreign_seen = set()
        self._next_log_check = 0.0
        self._env_stamp = None
        self.facts = ClusterFacts()
        # Several login nodes (lease.py): one leads, the others follow (follow.py). Without a lease
        # this loop is the only one and always leads.
        self.lease = lease
        self.host = host or layout.host
        self.leading = lease is None
        self.leader_view = follow.LeaderView(layout.state_file, monotonic)
        self.reporter = hosts.Reporter(layout, clock, monotonic) if lease is not None else None
        self.others = hosts.Others(layout, monotonic) if lease is not None else None
        self.loads = {}                 # {service: hosts.Load} this host saw at the last pass
        self._traefik_ok = None         # (when, whether this host's Traefik answered its ping)
        self.look_owed = False          # this loop took the lead and has not looked at Slurm since

    def _load_state(self, set_aside=True):
        """The saved snapshot. An unreadable state.json is set aside (kept) by the loop that leads: with
        several login nodes, state.json is the leader's, and a follower never moves or writes it."""
        snapshot, problem = state.read(self.layout.state_file)
        if problem and not set_aside:
            log.warning("%s; starting with an empty memory (the leading loop sets it aside)", problem)
        elif problem:
            aside = state.set_aside(self.layout.state_file, self.clock())
            log.error("%s; %s. Starting with an empty memory: our jobs are found again in squeue by their "
                      "working directory", problem, "kept it as %s" % aside if aside else "could not move it aside")
        return snapshot._replace(faults={})

    @property
    def wake(self):
        return self.demand.wake

    # -- a look at Slurm, and a probe pass ---------------------------------------------------------
    def look(self):
        """Observe (one squeue), absorb, then a pass that may submit and cancel. True when Slurm answered.
        A follower reads what the leader observed instead, and never acts."""
        self.reload_settings_if_changed()
        if not self._lead():
            return self._follow(fresh=True)
        self.look_owed = False
        now = self.clock()
        try:
            jobs = self.slurm.observe()
        except CommandError as exc:
            self._slurm_state(False, str(exc), now)
            self.observe_failures += 1
            self._pass(fresh=False)
            return False
        old = self.snapshot.memory
        ours, foreign = self._split_ours(jobs, old)
        if not self._believable(old, ours):
            self._pass(fresh=False)
            return False
        self.observe_failures = 0
        self._slurm_state(True, "", now)
        self.reserve.ensure()
        memory, events = absorb.absorb(old, ours, now, self.policy)
        _log_events(events)
        self._log_crash_output(old, memory)
        self.snapshot = self.snapshot._replace(memory=memory, jobs=ours, foreign=foreign, observed_at=now)
        self._read_cluster_facts(now, urgent=_node_trouble(memory, ours, self.facts.read_at))
        self._pass(fresh=True)
        return True

    def _read_cluster_facts(self, now, urgent=False):
        """Nodes down or drained, and reservations: every FACTS_INTERVAL, sooner (FACTS_SOON) when a job
        was requeued or ended with its node. A failure keeps the last facts and is said once."""
        last = self.facts.read_at
        if last is not None and 0 <= now - last < (FACTS_SOON if urgent else FACTS_INTERVAL):
            return
        try:
            unavailable = self.slurm.node_problems()
            reservations = self.slurm.reservations()
        except CommandError as exc:
            if not self.facts.error:
                log.warning("cannot read the cluster's nodes and reservations (%s); keeping what was read "
                            "before, asking again in %ds", exc, FACTS_INTERVAL)
            self.facts = self.facts._replace(read_at=now, error=str(exc))
            return
        for node in sorted(set(unavailable) - set(self.facts.unavailable)):
            problem = unavailable[node]
            log.warning("node %s is %s (%s): our jobs there are drained and replaced, none go there",
                        node, problem.state, problem.reason or "no reason given")
        for node in sorted(set(self.facts.unavailable) - set(unavailable)):
            log.info("node %s is back", node)
        self.facts = ClusterFacts(unavailable, reservations, now, "")

    def probe_pass(self):
        """Probe the backends and re-plan on the last look: routes follow readiness within seconds."""
        self.reload_settings_if_changed()
        if not self._lead():
            self._follow(fresh=False)
            return
        self._pass(fresh=False)

    # -- several login nodes: who leads, and following ---------------------------------------------
    def _lead(self):
        """True when this loop leads (always, without a lease). Renews or watches the lease at every
        pass; a follower that takes over continues from the leader's memory and its own probes."""
        if self.lease is None:
            return True
        leading = self.lease.step(others_alive=bool(self.others.fresh()))
        if self.lease.changed:
            term = self.lease.current
            if leading:
                log.info("this host (%s) leads now (term %d): it looks at Slurm and acts", self.host, term.epoch)
                if state.read(self.layout.state_file)[1]:
                    self._load_state(set_aside=True)        # unreadable: kept aside, rebuilt from Slurm
                memory = follow.merged(self.leader_view.read().memory, self.snapshot.memory)
                previous = self.lease.previous
                if previous is not None and previous.host != self.host:
                    memory = follow.taken_over(memory)
                self.snapshot = self.snapshot._replace(memory=memory)
                # At once, even when the lead came in a probe pass (whose plan says when to look next).
                self.observe_failures, self._doubted, self.look_owed = 0, [], True
            else:
                log.info("host %s leads (term %d): this loop follows (routes its own Traefik, acts on nothing)",
                         term.host if term else "?", term.epoch if term else 0)
        if self.lease.error:
            self.faults.report("lease", "cannot use the lease in %s: %s" % (self.lease.directory, self.lease.error))
        else:
            self.faults.clear("lease")
        self.leading = leading
        return leading

    def may_act(self):
        """True when this loop may submit or cancel now: it leads and renewed its lease in time."""
        return self.lease is None or (self.leading and self.lease.may_act())

    def _follow(self, fresh):
        """A follower's pass: the leader's observation and decisions, this host's own probes and routes.
        When the leader's file is stale (its loop gone quiet without losing the lease), its own squeue."""
        leader = self.leader_view.read()
        snap = self.snapshot._replace(memory=follow.merged(leader.memory, self.snapshot.memory),
                                      jobs=leader.jobs, foreign=leader.foreign, observed_at=leader.observed_at,
                                      slurm_ok=leader.slurm_ok, slurm_error=leader.slurm_error)
        if fresh and self.leader_view.stale():
            try:
                jobs = self.slurm.observe()
                ours, foreign = self._split_ours(jobs, snap.memory)
                memory, _ = absorb.absorb(snap.memory, ours, self.clock(), self.policy)
                snap = snap._replace(memory=memory, jobs=ours, foreign=foreign, observed_at=self.clock())
            except CommandError as exc:
                log.debug("a follower's own squeue failed: %s", exc)
        self.snapshot = snap
        self._pass(fresh=False, leader_desired=leader.desired)
        return True

    def _pass(self, fresh, leader_desired=None):
        now = self.clock()
        snap = self.snapshot
        desired = self.settings.desired
        loaded = self.files.load(set(desired) | {m.service for m in snap.memory.jobs.values()}, desired)
        memory = self._probe(snap, loaded, now)
        draining = {job_id: m.url for job_id, m in memory.jobs.items()
                    if m.drain_since is not None and m.cancelled_at is None and m.url}
        scaled = scaled_backends(memory, self.settings.scaling)
        counted = self.count_inflight(_merged(scaled, draining)) if draining or scaled else {}
        self.loads = self.demand.sample(self.settings.scaling, memory, counted)
        if self.leading:
            others = self.others.loads() if self.others is not None else None
            desired = self.demand.follow(self.settings.scaling, desired, memory, self.loads, now,
                                         self.scale_policy, others)
        else:       # the leader's counts: it decides them on every login node's load
            desired = dict(desired, **{name: leader_desired[name] for name in self.settings.scaling
                                       if name in (leader_desired or {})})
        windows = self._windows(loaded, memory, snap.jobs, now)
        result = planner.plan(desired, snap.jobs, memory, now, self.policy, observed_at=snap.observed_at or now,
                              fresh=fresh, warnings=_warnings(loaded),
                              inflight={job_id: counted.get(job_id) for job_id in draining},
                              steady=self.settings.sleep_interval, waking=self.demand.holding(),
                              blocked={name for name, item in loaded.items() if item.definition is None},
                              unavailable=frozenset(self.facts.unavailable),
                              time_limits={name: w.time_limit for name, w in windows.items() if w.time_limit},
                              follow=not self.leading)
        self.last_plan = result
        _log_events(result.events)
        for service, trace in sorted(result.failed.items()):
            self._log_bug("planning %s failed; its jobs and routes stay as they were, the other services "
                          "go on" % service, trace)
        memory = self.executor.act(result.actions, result.memory, loaded, now, self.policy) \
            if self.leading else result.memory
        routes = dict(result.routes)
        routes.update({name: snap.routes[name] for name in result.failed if name in snap.routes})
        written = self.demand.with_wake_routes(self.settings.scaling, result.routes, loaded, self.faults,
                                               memory, now)
        self.snapshot = self.snapshot._replace(
            memory=memory, routes=routes, desired=dict(desired), updated_at=now, pid=os.getpid(),
            service_errors={k: v.error for k, v in loaded.items() if v.error},
            scale=self.demand.report(self.settings.scaling, routes),
            cluster=self._cluster_report(windows))
        self.routes.write(written, loaded, set(result.failed), self.demand.waking_ports)
        if self.may_act():      # not a leader woken from a pause: state.json may be another's by now
            self._save(now)
        self._report_host()
        if fresh and now >= self._next_log_check:
            self._next_log_check = now + ACCESS_LOG_CHECK
            self._rotate_traefik_access_log()

    def _report_host(self):
        """This host's line in .work/hosts/<host>/host.json: its role and the load it sees."""
        if self.reporter is None:
            return
        term = self.lease.current
        now = self.clock()
        if self._traefik_ok is None or not 0 <= now - self._traefik_ok[0] < hosts.HEARTBEAT:
            self._traefik_ok = (now, not traefik_ping.ping(self.settings.traefik_ping_port, timeout=0.5))
        self.reporter.report("leader" if self.leading else "follower", term.since if term else None,
                             self.loads, self.settings.traefik_port, self._traefik_ok[1])

    def _windows(self, loaded, memory, jobs, now):
        """{service: maintenance.Window} of each service with a definition."""
        if not any(r.maintenance for r in self.facts.reservations):
            return {}
        nodes = {node for job in jobs if job.nodes for node in slurm_facts.expand_hostlist(job.nodes)}
        override = slurm_facts.time_limit_seconds_or_none(os.environ.get("SBATCH_TIMELIMIT"))
        found = {}
        for name, item in loaded.items():
            if item.definition is None:
                continue
            lead = planner.renew_lead(memory.services.get(name, model.ServiceMemory()), self.policy,
                                      item.definition.warning_seconds)
            found[name] = maintenance.window(now, self.facts.reservations, nodes,
                                             override or item.definition.time_limit, lead)
        return found

    def _cluster_report(self, windows):
        """What `status` shows of the cluster: nodes down or drained, and what maintenance means."""
        facts = self.facts
        return {"unavailable": {node: "%s%s" % (p.state, " (%s)" % p.reason if p.reason else "")
                                for node, p in sorted(facts.unavailable.items())},
                "windows": {name: w.note for name, w in sorted(windows.items()) if w.note},
                "read_at": facts.read_at, "error": facts.error}

    def _probe(self, snap, loaded, now):
        """Memory after one probe of every running job that published a URL."""
        targets, health = {}, {}    # health: per service, not per job (10,000 template look-ups a pass)
        for job_id, url in absorb.probe_targets(snap.memory, snap.jobs).items():
            service = snap.memory.jobs[job_id].service
            if service not in health:
                health[service] = health_of(loaded.get(service))
            targets[job_id] = (url,) + health[service] + (service,)    # fair shares are per service
        results = self.probe_all(targets, timeout=self.settings.probe_timeout, own_ports=self.own_ports())
        memory, events = absorb.apply_probes(snap.memory, results, now, self.policy)
        _log_events(events)
        return memory

    def _believable(self, memory, ours):
        """False (once) for an answer that lost ready jobs whose servers still answer: the next look,
        soon, decides (absorb.unexplained_losses)."""
        lost = absorb.unexplained_losses(memory, ours)
        if not lost or lost == self._doubted:
            self._doubted = []
            return True
        self._doubted = lost
        log.warning("squeue's answer lacks %d job(s) whose servers still answer (%s): not believed until "
                    "the next look says the same; nothing submitted or cancelled meanwhile", len(lost),
                    ", ".join(lost[:10]))
        return False

    def stop(self):
        """Before the loop exits: no Traefik file may name a wake proxy port nobody will own (any local
        user could bind it and receive the service's requests, tokens included). Such routes are
        written without it (Traefik answers 503 until a restarted loop takes the port back), then the
        proxy answers what it holds with 503 and closes. A leader releases the lead."""
        if self.wake is not None and self.demand.waking_ports and self.owns_root:
            desired = self.settings.desired
            loaded = self.files.load(set(desired) | {m.service for m in self.snapshot.memory.jobs.values()},
                                     desired)
            routes = dict(self.snapshot.routes)
            for name in self.demand.waking_ports:
                routes[name] = list(routes.get(name) or ())
            self.routes.write(routes, loaded)
            log.info("stopping: the wake proxy's routes are withdrawn (%s)", ", ".join(sorted(self.demand.waking_ports)))
        if self.wake is not None:
            self.wake.shutdown()
        self.release()

    def release(self):
        """A clean stop: another login node's loop takes over at once."""
        if self.lease is not None and self.leading and self.owns_root:
            self.lease.release()
            log.info("released the lead")

    def own_ports(self):
        """This host's listeners: Traefik's entry points and the wake proxy's ports. A backend URL
        that points at one of them is never probed nor routed (the proxy would forward to itself)."""
        ports = {self.settings.traefik_port, self.settings.traefik_ping_port}
        if self.wake is not None:
            ports |= set(self.wake.own_ports())
        return frozenset(ports)

    def _split_ours(self, jobs, memory):
        """(ours, foreign) of a look's jobs. Ours: submitted from this root (their working directory,
        which a job cannot change) and named like a service of this root (SERVICE_LIST, memory, or a
        folder in services/), so a user's own job started in that folder is never taken for ours.
        Foreign: active jobs of our services' names that this root did not submit, shown by status."""
        names = set(self.settings.desired) | {m.service for m in memory.jobs.values()}
        ours, foreign, strays = [], [], []
        for job in jobs:
            mine = slurm_mod.submitted_from(job, self.workdirs)
            if mine and (job.name in names or self._is_service(job.name)):
                ours.append(job)
            elif job.active and (job.name in names or mine):
                (strays if mine else foreign).append(job)
        self._log_foreign(foreign, strays)
        return ours, foreign + strays

    def _is_service(self, name):
        try:
            return name in services.available(self.layout)
        except OSError:
            return False

    def next_look_in(self):
        """Seconds until the next look at Slurm: what the last plan asked for (planner.service_next_look),
        or, while Slurm does not answer, a backoff doubling up to 2 min."""
        if self.look_owed:
            return 0.0
        if self._doubted:
            return planner.FOLLOW_UP_DELAY
        if self.observe_failures:
            return backoff.delay(self.observe_failures, self.settings.sleep_interval,
                                 max(120.0, self.settings.sleep_interval))
        if self.last_plan is None:
            return 0.0
        if self.last_plan.why != "steady":
            log.debug("next look at Slurm in %.0fs (%s)", self.last_plan.next_look, self.last_plan.why)
        return self.last_plan.next_look

    # -- settings --------------------------------------------------------------------------------
    def reload_settings_if_changed(self):
        """Pick up an edited .env (or `config` run again) without a restart, which cron cannot do.
        A broken .env is reported once and the settings in force are kept."""
        stamp = _stamp(self.layout.env_file), _stamp(self.layout.env_default)
        if self._env_stamp is None or stamp == self._env_stamp:
            self._env_stamp = stamp
            return False
        self._env_stamp = stamp
        try:
            fresh = settings_mod.load(self.layout)
        except (ConfigError, OSError) as exc:
            log.error("%s; keeping the settings in force until it is fixed", exc)
            return False
        if fresh == self.settings:
            return False
        changed = settings_mod.changed_keys(self.settings, fresh)
        log.info(".env changed: %s", ", ".join(changed))
        self.settings = fresh
        self.policy = model.policy_from(fresh)
        self.scale_policy = scale.policy_from(fresh)
        self.routes.settings = fresh
        if self.wake is not None:
            self.wake.timeout = fresh.wake_timeout
        return True

    # -- state.json -------------------------------------------------------------------------------
    def _save(self, now):
        self.saver.save(self.snapshot._replace(faults=self.faults.as_dict()), now)

    def _save_intents(self, memory):
        """Save memory with the intents of submissions about to be made: True when it is on disk."""
        snapshot = self.snapshot._replace(memory=memory, faults=self.faults.as_dict())
        return self.saver.save(snapshot, self.clock(), force=True)

    # -- logging what happened ---------------------------------------------------------------------
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

    def _log_foreign(self, foreign, strays):
        for job in foreign + strays:
            if job.job_id in self._foreign_seen:
                continue
            if len(self._foreign_seen) < 10000:
                self._foreign_seen.add(job.job_id)
            if job in strays:
                log.warning("job %s (%s) runs in %s but is not a service of this root: never counted, "
                            "routed or cancelled", job.job_id, job.name, self.layout.slurm_output)
            else:
                log.warning("job %s is named %s but was not submitted from this root (working directory "
                            "%s, not %s): never counted, routed or cancelled", job.job_id, job.name,
                            job.workdir or "unknown", self.layout.slurm_output)

    def _log_crash_output(self, old, new):
        """For each job that just counted as a crash, the last lines of its Slurm output."""
        if all(new.services.get(name, svc).failures <= svc.failures for name, svc in old.services.items()) \
                and not (new.services.keys() - old.services.keys()):
            return      # no crash counted at this look (the common case: nothing to look through)
        for job_id, gone in sorted(old.jobs.items()):
            if job_id in new.jobs or gone.cancelled_at is not None or model.is_intent(job_id):
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

    def _log_bug(self, message, trace):
        """A bug is logged with its traceback once; after that one line per occurrence."""
        key = trace.strip().splitlines()[-1] if trace.strip() else message
        if key in self._logged_bugs:
            log.error("%s (%s)", message, key)
            return
        if len(self._logged_bugs) < 100:
            self._logged_bugs.add(key)
        log.error("%s:\n%s", message, trace.rstrip())

    def guarded(self, step, what, default=None):
        """step(), with any error logged: a bug costs one pass, never the loop."""
        try:
            return step()
        except Exception as exc:   # noqa
            if isinstance(exc, ForeverError):
                log.error("%s failed: %s", what, exc)
            else:
                self._log_bug("%s failed (a bug; the loop goes on)" % what, traceback.format_exc())
        return default

    def _rotate_traefik_access_log(self):
        try:
            for path in traefik_logs.rotate_if_large([os.path.join(self.layout.log, "traefik-access.log")],
                                                     self.layout.traefik_pid):
                log.info("rotated %s (Traefik reopens it on USR1)", path)
        except OSError as exc:
            log.warning("could not rotate Traefik's access log: %s", exc)


def _node_trouble(memory, jobs, since):
    """True when a job was requeued (held) since `since`, or a look shows one that ended with its node
    (NF): nodes are read again soon, not at the next FACTS_INTERVAL."""
    if any(job.state == "NF" for job in jobs):
        return True
    return any(m.held_since is not None and (since is None or m.held_since >= since) for m in memory.jobs.values())


def _log_events(events):
    for event in events:
        log.info("%s", event)


def _warnings(loaded):
    """{service: seconds of its --signal warning}: the renewal lead makes room for it."""
    return {name: item.definition.warning_seconds for name, item in loaded.items() if item.definition}


def _merged(*mappings):
    merged = {}
    for mapping in mappings:
        merged.update(mapping)
    return merged


def _stamp(path):
    try:
        info = os.stat(path)
        return info.st_mtime_ns, info.st_size
    except OSError:
        return None


def failure_context(layout, job_id, service, lines=5):
    path = slurm_output.output_file(layout, job_id, service)
    return slurm_output.tail(path, lines) if path else []
