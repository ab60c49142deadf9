"""`status`: what the loop knows (state.json) and what users got (Traefik's access log), for people and scripts.

Exit codes (`status --help`, README): 0 the loop runs; 3 it does not (what is shown is what it last saw,
marked stale, and nothing keeps the services); 1 nothing to show (no setup, unreadable root).
"""

import json
import os
import sys
import time

from . import login_nodes
from ..core import model, planner, state
from ..common import settings as settings_mod
from ..systems import slurm, slurm_facts
from ..common.errors import ForeverError


EXIT_RUNNING = 0
EXIT_NOT_RUNNING = 3


def collect(layout, now=None, traffic_window=300.0, proc_root="/proc"):
    """A JSON-ready report: services, jobs, Slurm's health, and traffic over the last 5 minutes."""
    now = time.time() if now is None else now
    snap, state_problem = state.read(layout.state_file)
    conf, settings_error = _settings(layout)
    desired = conf.desired if conf else dict(snap.desired)
    # A MIN-MAX service wants what the loop last made of its demand.
    desired.update({name: snap.desired[name] for name in (conf.scaling if conf else snap.scale)
                    if name in snap.desired})
    policy = _policy(conf) if conf else model.Policy()
    names = set(desired) | {m.service for m in snap.memory.jobs.values()}
    definitions = {name: _definition(layout, name) for name in names}
    warnings = {name: d.warning_seconds if d else 0 for name, d in definitions.items()}
    # The planner's own view of each service: the same counts, lead and readiness the loop acts on.
    views = planner.service_views(desired, snap.jobs, snap.memory, now, policy,
                                    snap.observed_at if snap.observed_at is not None else now, warnings)
    for name in set(snap.routes) - set(views):
        views[name] = planner.service_views({name: 0}, [], model.empty_memory(), now, policy, now)[name]
    observed_age = None if snap.observed_at is None else now - snap.observed_at
    loop = _loop_state(layout, snap, now, proc_root)
    service_rows, job_rows = [], []
    for name, view in sorted(views.items()):
        servers = snap.routes.get(name, [])
        service_rows.append(dict(_service_row(view, servers, snap, now),
                                 **_shared_cluster_notes(view, definitions.get(name), snap)))
        job_rows += [_job_row(view, job, snap, observed_age)
                     for job in sorted(view.running + view.pending, key=_job_number)]
        job_rows += [_foreign_row(job) for job in sorted(snap.foreign, key=_job_number) if job.name == name]
    return {
        "root": layout.root,
        "loop": loop,
        # Without a running loop every fact below is as the loop last saw it, and nobody keeps it true;
        # a state saved by an earlier loop (before an uninstall and a new config) says nothing of this one.
        "stale": not loop["alive"] or (snap.pid is not None and snap.pid != loop["pid"]),
        "slurm": {"ok": snap.slurm_ok, "error": snap.slurm_error, "observed_seconds_ago": observed_age},
        "services": service_rows,
        "jobs": job_rows,
        "traffic": _traffic(layout, now, traffic_window),
        "faults": dict(snap.faults),
        "state_problem": state_problem,
        "traefik_port": conf.traefik_port if conf else None,
        "settings_error": settings_error,
        "settings_warnings": _settings_warnings(layout),
        "traefik": _traefik(layout, conf),
        "cluster": snap.cluster,
        "hosts": login_nodes.collect(layout, now),
        "loop_unit": "forever-slurm-%s" % layout.unit_id,
    }


def _settings(layout):
    """(settings, None) or (None, the problem): shown, not hidden, since a running loop keeps its
    last good settings while a new one refuses to start."""
    try:
        return settings_mod.load(layout), None
    except ForeverError as exc:
        return None, str(exc)


def _settings_warnings(layout):
    """Keys that change nothing (a typo of an FS_ key), as `file:line: message`."""
    try:
        return [str(exc) for exc in settings_mod.unknown_keys(layout, settings_mod.load_values(layout, problems=[]))]
    except ForeverError:
        return []


def _job_number(job):
    return slurm.job_number(job.job_id)


def _service_row(view, servers, snap, now):
    svc = view.service
    return {
        "service": view.name,
        "desired": view.wanted,
        "running": len(view.running),
        "pending": len(view.pending) + len(view.unseen),
        "pending_reasons": sorted({j.reason for j in view.pending if j.reason and j.reason != "None"}),
        "routed": sum(1 for s in servers if s.weight > 0),
        "draining": sum(1 for s in servers if s.weight == 0),
        "backoff_seconds": max(0.0, svc.next_try - now) if svc.failures else 0.0,
        "failures": svc.failures,
        "last_error": svc.last_error,
        "config_error": snap.service_errors.get(view.name, ""),
        "startup_seconds": list(svc.startup),
        "renew_lead_seconds": view.lead,
        "scale": snap.scale.get(view.name),
    }


def _health(job, m):
    """The job's phase as the planner sees it (model.phase), with what explains it."""
    Phase = model.Phase
    phase = model.phase(m, job.state)
    if phase == Phase.STOPPING and m.cancelled_at is None:
        return "stopping (scancel failed, retrying)"
    if phase in (Phase.STARTING, Phase.UNREADY) and m.comment_problem:
        return "bad comment"
    if phase in (Phase.STARTING, Phase.UNREADY) and m.url and m.probe_detail:
        return "not ready (%s)" % m.probe_detail
    if phase == Phase.STARTING and m.url:
        return "not ready"
    return phase


def _job_row(view, job, snap, observed_age):
    m = view.memory_of(job)
    left = view.left(job)
    left = None if left is None else max(0.0, left)
    return {
        "job_id": job.job_id, "service": view.name, "state": job.state,
        "node": job.nodes, "url": m.url, "reason": job.reason if not job.running else "",
        "age_seconds": None if job.time_used is None else job.time_used + (observed_age or 0),
        "time_left_seconds": left, "health": _health(job, m),
        "renew_in_seconds": None if left is None or not job.running
        else max(0.0, left - planner.job_lead(view.lead, job)),
        "owned": True, "comment_problem": m.comment_problem,
    }


def _foreign_row(job):
    return {
        "job_id": job.job_id, "service": job.name, "state": job.state, "node": job.nodes, "url": "",
        "reason": job.reason if not job.running else "", "age_seconds": job.time_used,
        "time_left_seconds": job.time_left, "health": "foreign: not ours", "renew_in_seconds": None,
        "owned": False, "comment_problem": "", "workdir": job.workdir,
    }


def _traefik(layout, conf):
    """Whether the Traefik answering on our port is ours and up (None: the settings cannot be read)."""
    from . import traefik_health
    if conf is None:
        return None
    return dict(traefik_health.check(layout, conf).as_dict(), port=conf.traefik_port)


def _definition(layout, name):
    """The service's ServiceDef, or None when its files cannot be read (status then says less)."""
    from ..common import services
    try:
        return services.load(layout, name)
    except ForeverError:
        return None


def _shared_cluster_notes(view, definition, snap):
    """What a busy, shared cluster does to the service, each as one line naming what to change:
    a limit sbatch refused it for, pending jobs that waiting will not start, a replacement Slurm
    expects to start after the job it replaces ends, and a maintenance window."""
    svc, notes = view.service, {}
    limit = slurm_facts.rejection(svc.last_error) if svc.failures else None
    if limit is not None:
        notes["limit"] = "sbatch refused it: %s%s" % (limit.what, slurm_facts.where_to_change(limit, definition))
    unavailable = (snap.cluster or {}).get("unavailable") or {}
    stuck = []
    for job in view.pending:
        lasting = slurm_facts.lasting_pending_reason(job.reason, unavailable)
        if lasting is not None:
            stuck.append("job %s waits for %s, which waiting will not change: %s%s" % (
                job.job_id, job.reason, lasting.what, slurm_facts.where_to_change(lasting, definition)))
    if stuck:
        notes["stuck"] = stuck
    late = _late_replacement(view)
    if late:
        notes["late"] = late
    window = ((snap.cluster or {}).get("windows") or {}).get(view.name)
    if window:
        notes["maintenance"] = window
    return notes


def _late_replacement(view):
    """A pending replacement Slurm expects to start after the retiring job it replaces has ended."""
    ending = [(view.left(job), job) for job in view.running
              if view.left(job) is not None and view.left(job) <= planner.job_lead(view.lead, job)]
    waiting = [job for job in view.pending if job.starts_in is not None and model.phase(
        view.memory_of(job), job.state) == model.Phase.PENDING]
    if not ending or not waiting:
        return ""
    left, old = min(ending, key=lambda pair: pair[0])
    new = min(waiting, key=lambda job: job.starts_in)
    starts = new.starts_in - view.age
    if starts <= left:
        return ""
    return ("replacement job %s is expected to start in %s, %s after job %s ends: the renewal lead grows "
            "with what replacements really needed" % (new.job_id, _duration(starts), _duration(starts - left),
                                                      old.job_id))


def _policy(conf):
    return model.policy_from(conf)


def _loop_state(layout, snap, now, proc_root="/proc"):
    """The loop that holds the root's lock now (loop_alive), else the pid that last saved the state."""
    from .loop_alive import running_loop_pid
    pid = running_loop_pid(layout, proc_root)
    return {"pid": pid if pid is not None else snap.pid, "alive": pid is not None,
            "updated_seconds_ago": None if snap.updated_at is None else now - snap.updated_at}


def exit_code(report):
    """EXIT_RUNNING while a loop keeps the services, else EXIT_NOT_RUNNING."""
    return EXIT_RUNNING if report["loop"]["alive"] else EXIT_NOT_RUNNING


def _traffic(layout, now, window):
    try:
        from . import accesslog
    except ImportError:
        return None
    return accesslog.summary(os.path.join(layout.log, "traefik-access.log"), now, window)


def _duration(seconds):
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return "%ds" % seconds
    if seconds < 7200:
        return "%dm" % (seconds // 60)
    if seconds < 172800:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dd%02dh" % (seconds // 86400, seconds % 86400 // 3600)


def _table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def show(layout, as_json=False, every=None, out=None, sleep=time.sleep):
    """Print the report once, or every `every` seconds until interrupted (the screen is cleared on a
    terminal, a blank line separates reports elsewhere). Returns the exit code."""
    out = out or sys.stdout
    while True:
        report = collect(layout)
        text = json.dumps(report, indent=1, sort_keys=True) if as_json else render(report, color=out.isatty())
        if every:
            out.write("\033[H\033[2J" if out.isatty() else "\n")
        out.write(text + "\n")
        out.flush()
        if not every:
            return exit_code(report)
        sleep(every)


def render(report, color=False):
    """Plain aligned columns that fit 80 characters; colour only on a terminal."""
    def paint(text, code):
        return "\033[%sm%s\033[0m" % (code, text) if color else text

    lines = _health_lines(report, paint) + _host_lines(report, paint) + _service_lines(report, paint) \
        + _job_lines(report, paint)
    return "\n".join(lines + _traffic_lines(report) + try_lines(report))


def _health_lines(report, paint):
    """The loop, Slurm, Traefik, the settings and every fault the loop keeps retrying."""
    slurm, loop = report["slurm"], report["loop"]
    if loop["alive"]:
        loop_text = paint("running", "32") + " (pid %s, updated %s ago)" % (loop["pid"], _duration(loop["updated_seconds_ago"]))
    else:
        loop_text = paint("NOT RUNNING", "31") + (" (last seen %s ago)" % _duration(loop["updated_seconds_ago"])
                                                  if loop["updated_seconds_ago"] is not None else "")
    slurm_text = ("-" if slurm["ok"] is None else paint("answers", "32") if slurm["ok"]
                  else paint("NOT answering: %s" % slurm["error"], "31"))
    if report.get("stale"):
        slurm_text = "-"        # what Slurm said then is no news now
    lines = ["loop: %s   slurm: %s" % (loop_text, slurm_text)]
    if report.get("stale") and (report["services"] or report["jobs"]):
        lines.append(paint("nothing keeps these services now: below is what the loop last saw, %s ago (start it: "
                           "systemctl --user start %s, or run config)"
                           % (_duration(loop["updated_seconds_ago"]), report.get("loop_unit") or "forever-slurm"),
                           "31"))
    if report.get("state_problem"):
        lines.append(paint("state: %s" % report["state_problem"], "31"))
    for what, problem in sorted((report.get("faults") or {}).items()):
        lines.append(paint("fault (%s): %s" % (what, problem), "31"))
    if loop["alive"] and (loop["updated_seconds_ago"] or 0) > 120:
        lines.append(paint("the loop has not saved its state for %s: see .work/log/loop.log (disk full?)"
                           % _duration(loop["updated_seconds_ago"]), "31"))
    if report.get("settings_error"):
        lines.append(paint("settings: BROKEN: %s" % report["settings_error"], "31"))
        lines.append("  a running loop keeps its last good settings and a new one will not start: "
                     "fix it, then run check")
    for warning in report.get("settings_warnings") or []:
        lines.append(paint("settings: %s" % warning, "33"))
    traefik = report.get("traefik")
    if traefik:
        lines.append("traefik: " + paint("running", "32") + " (pid %s, port %s)" % (traefik["pid"], traefik["port"])
                     if traefik["running"] else paint(traefik["problem"], "31"))  # the problem starts "Traefik ..."
    return lines


def _host_lines(report, paint):
    """Which login node leads, and each one's loop and Traefik, where several run this root."""
    view = report.get("hosts")
    return login_nodes.lines(view, _duration, paint) + [""] if view and login_nodes.shown(view) else []


def _service_lines(report, paint):
    rows = [("SERVICE", "WANT", "RUN", "PEND", "ROUTED", "DRAIN", "NOTE")]
    for s in report["services"]:
        note = []
        if s["config_error"]:
            note.append(paint("config error", "31"))
        if s["backoff_seconds"]:
            note.append(paint("backoff %s" % _duration(s["backoff_seconds"]), "33"))
        if s["pending_reasons"]:
            note.append("waiting: " + ",".join(s["pending_reasons"]))
        scaling = s.get("scale")
        if scaling:
            note.insert(0, scale_note(scaling, paint))
        if report.get("stale"):
            note.insert(0, paint("last seen %s ago" % _duration(report["loop"]["updated_seconds_ago"]), "33"))
        want = "%s (%d-%d)" % (s["desired"], scaling["low"], scaling["high"]) if scaling else s["desired"]
        rows.append((s["service"], want, s["running"], s["pending"], s["routed"], s["draining"],
                     "; ".join(note)))
    lines = _table(rows)
    for s in report["services"]:
        if s["last_error"] and s["failures"]:
            lines.append("  %s: %s" % (s["service"], s["last_error"]))
        if s.get("limit"):
            lines.append(paint("  %s: %s" % (s["service"], s["limit"]), "31"))
        for text in s.get("stuck") or []:
            lines.append(paint("  %s: %s" % (s["service"], text), "31"))
        if s.get("late"):
            lines.append(paint("  %s: %s" % (s["service"], s["late"]), "33"))
        if s.get("maintenance"):
            lines.append("  %s: %s" % (s["service"], s["maintenance"]))
        if s["config_error"]:
            lines.append("  %s" % s["config_error"])
    return lines + _cluster_lines(report, paint)


def _cluster_lines(report, paint):
    """Nodes the loop keeps its jobs off, and a failure to read them."""
    cluster = report.get("cluster") or {}
    lines = []
    unavailable = cluster.get("unavailable") or {}
    if unavailable:
        shown = ", ".join("%s %s" % item for item in sorted(unavailable.items())[:8])
        more = " and %d more" % (len(unavailable) - 8) if len(unavailable) > 8 else ""
        lines.append(paint("nodes down or drained (no job of ours stays or goes there): %s%s" % (shown, more), "33"))
    if cluster.get("error"):
        lines.append(paint("cannot read the cluster's nodes and reservations: %s" % cluster["error"], "33"))
    return lines


def scale_note(scaling, paint):
    """asleep / waking (requests held, seconds waited) / up, with the load behind the target."""
    load = "load %.1f in flight" % scaling["load"]
    if scaling.get("per_backend") is not None:
        load += " (%.1f a backend)" % scaling["per_backend"]
    if scaling["phase"] == "asleep":
        return paint("asleep", "36") + " (a request wakes it)"
    if scaling["phase"] == "waking":
        held = ", %d request%s held for %s" % (scaling["held"], "" if scaling["held"] == 1 else "s",
                                              _duration(scaling["held_seconds"])) if scaling["held"] else ""
        return paint("waking", "33") + held
    return paint("up", "32") + ", " + load


def _job_lines(report, paint=lambda text, code: text):
    if not report["jobs"]:
        return []
    stale = report.get("stale")
    rows = [("JOB", "SERVICE", "ST", "NODE:PORT", "AGE", "LEFT", "RENEW", "HEALTH")]
    for j in report["jobs"]:
        port = j["url"].rsplit(":", 1)[-1] if j["url"] else ""
        where = "%s:%s" % (j["node"], port) if port else (j["node"] or j["reason"] or "-")
        # Without a loop nothing renews a job, and its health is what the loop last saw.
        health = ("last seen " + j["health"])[:24] if stale else j["health"][:24]
        rows.append((j["job_id"], j["service"][:18], j["state"], where[:20], _duration(j["age_seconds"]),
                     _duration(j["time_left_seconds"]), "-" if stale else _duration(j["renew_in_seconds"]), health))
    lines = [""] + _table(rows)
    foreign = [j for j in report["jobs"] if not j["owned"]]
    if foreign:
        lines.append("foreign: job(s) %s share a service's name but were not submitted from this root; "
                     "forever-slurm never counts, routes or cancels them" % ", ".join(j["job_id"] for j in foreign))
    return lines


def _traffic_lines(report):
    traffic = report.get("traffic")
    if not traffic:
        return []
    lines = [""]
    if traffic.get("complete", True):
        lines.append("traffic, last %dm:" % (traffic["window_seconds"] // 60))
    else:
        lines.append("traffic since the access log begins, %s ago:" % _duration(traffic.get("covered_seconds")))
    rows = [("SERVICE", "REQUESTS", "5XX", "P50", "P95")]
    shown = set(s["service"] for s in report["services"])
    for name, t in sorted(traffic["services"].items()):
        if name not in shown and name != "empty":
            continue    # unrouted paths (scanners, typos) would each get a row
        rows.append((name, t["requests"], "%.1f%%" % (100.0 * t["share_5xx"]),
                     "%.0fms" % t["p50_ms"] if t["p50_ms"] is not None else "-",
                     "%.0fms" % t["p95_ms"] if t["p95_ms"] is not None else "-"))
    return lines + (_table(rows) if len(rows) > 1 else ["  no requests"])


def try_lines(report):
    """A curl line per wanted service, only while our Traefik answers (else it could reach someone else's)."""
    traefik = report.get("traefik")
    if not traefik or not traefik["running"]:
        return []
    names = [s["service"] for s in report["services"] if s["desired"] or s.get("scale")]
    return [""] + ["try: curl http://127.0.0.1:%d/%s/" % (traefik["port"], name) for name in names]
