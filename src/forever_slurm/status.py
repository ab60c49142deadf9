"""`status`: what the loop knows (state.json) and what users got (Traefik's access log), for people and scripts."""

import os
import time

from . import reconcile, settings as settings_mod, state, validate
from .errors import ForeverError


def collect(layout, now=None, traffic_window=300.0):
    """A JSON-ready report: services, jobs, Slurm's health, and traffic over the last 5 minutes."""
    now = time.time() if now is None else now
    snap, state_problem = state.read(layout.state_file)
    policy = reconcile.Policy()
    settings_error = None
    try:
        conf = settings_mod.load(layout)
        desired = conf.desired
        policy = _policy(conf)
    except ForeverError as exc:
        # Shown, not hidden: a running loop keeps its last good settings, a new one refuses to start.
        settings_error = str(exc)
        desired = dict(snap.desired)
        conf = None
    observed_age = None if snap.observed_at is None else now - snap.observed_at
    routed = {svc: servers for svc, servers in snap.routes.items()}
    warnings = {name: _warning(layout, name) for name in set(desired) | {m.service for m in snap.memory.jobs.values()}}
    # The planner's own view of each service: the same counts, lead and readiness the loop acts on.
    views = reconcile.service_views(desired, snap.jobs, snap.memory, now, policy,
                                    snap.observed_at if snap.observed_at is not None else now, warnings)
    names = sorted(set(views) | set(routed))
    service_rows = []
    job_rows = []
    for name in names:
        view = views.get(name) or reconcile.service_views({name: 0}, [], reconcile.empty_memory(), now, policy,
                                                          now)[name]
        svc_mem = view.service
        lead = view.lead
        servers = routed.get(name, [])
        pending = view.pending
        jobs = view.running + view.pending
        service_rows.append({
            "service": name,
            "desired": desired.get(name, 0),
            "running": len(view.running),
            "pending": len(pending) + len(view.unseen),
            "pending_reasons": sorted({j.reason for j in pending if j.reason and j.reason != "None"}),
            "routed": sum(1 for s in servers if s.weight > 0),
            "draining": sum(1 for s in servers if s.weight == 0),
            "backoff_seconds": max(0.0, svc_mem.next_try - now) if svc_mem.failures else 0.0,
            "failures": svc_mem.failures,
            "last_error": svc_mem.last_error,
            "config_error": snap.service_errors.get(name, ""),
            "startup_seconds": list(svc_mem.startup),
            "renew_lead_seconds": lead,
        })
        routed_urls = {s.url: s.weight for s in servers}
        for job in sorted(jobs, key=lambda j: int(j.job_id) if validate.ascii_digits(j.job_id) else 0):
            m = snap.memory.jobs.get(job.job_id, reconcile.JobMemory(service=name))
            left = view.left(job)
            left = None if left is None else max(0.0, left)
            if not job.running:
                health = "pending"
            elif m.stopping:
                health = "stopping" if m.cancelled_at is not None else "stopping (scancel failed, retrying)"
            elif m.url in routed_urls:
                health = "draining" if routed_urls[m.url] == 0 else "ready"
            elif m.comment_problem:
                health = "bad comment"
            elif not m.url:
                health = "starting"
            else:
                health = "not ready" + (" (%s)" % m.probe_detail if m.probe_detail else "")
            renew_in = None if left is None else max(0.0, left - lead)
            job_rows.append({
                "job_id": job.job_id, "service": name, "state": job.state,
                "node": job.nodes, "url": m.url, "reason": job.reason if not job.running else "",
                "age_seconds": None if job.time_used is None else job.time_used + (observed_age or 0),
                "time_left_seconds": left, "health": health,
                "renew_in_seconds": renew_in if job.running else None,
                "owned": True, "comment_problem": m.comment_problem,
            })
        for job in sorted((j for j in snap.foreign if j.name == name), key=lambda j: int(j.job_id)):
            job_rows.append({
                "job_id": job.job_id, "service": name, "state": job.state, "node": job.nodes, "url": "",
                "reason": job.reason if not job.running else "", "age_seconds": job.time_used,
                "time_left_seconds": job.time_left, "health": "foreign: not ours", "renew_in_seconds": None,
                "owned": False, "comment_problem": "", "workdir": job.workdir,
            })
    report = {
        "root": layout.root,
        "loop": _loop_state(layout, snap, now),
        "slurm": {"ok": snap.slurm_ok, "error": snap.slurm_error, "observed_seconds_ago": observed_age},
        "services": service_rows,
        "jobs": job_rows,
        "traffic": _traffic(layout, now, traffic_window),
        "faults": dict(snap.faults),
        "state_problem": state_problem,
        "traefik_port": conf.traefik_port if conf else None,
        "settings_error": settings_error,
        "traefik": _traefik(layout, conf),
    }
    return report


def _traefik(layout, conf):
    """Whether the Traefik answering on our port is ours and up (None: the settings cannot be read)."""
    from . import traefik_health
    if conf is None:
        return None
    return dict(traefik_health.check(layout, conf).as_dict(), port=conf.traefik_port)


def _warning(layout, name):
    from . import services
    try:
        return services.load(layout, name, unpack=False).warning_seconds
    except ForeverError:
        return 0


def _policy(conf):
    from .loop import policy_from
    return policy_from(conf)


def _loop_state(layout, snap, now):
    running = False
    if snap.pid:
        try:
            os.kill(snap.pid, 0)
            running = True
        except (OSError, ProcessLookupError):
            running = False
    return {"pid": snap.pid, "alive": running,
            "updated_seconds_ago": None if snap.updated_at is None else now - snap.updated_at}


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


def render(report, color=False):
    """Plain aligned columns that fit 80 characters; colour only on a terminal."""
    def paint(text, code):
        return "\033[%sm%s\033[0m" % (code, text) if color else text

    lines = []
    slurm = report["slurm"]
    loop = report["loop"]
    if loop["alive"]:
        loop_text = paint("running", "32") + " (pid %s, updated %s ago)" % (loop["pid"], _duration(loop["updated_seconds_ago"]))
    else:
        loop_text = paint("not running", "31") + (" (last update %s ago)" % _duration(loop["updated_seconds_ago"])
                                                  if loop["updated_seconds_ago"] is not None else "")
    slurm_text = ("-" if slurm["ok"] is None else paint("answers", "32") if slurm["ok"]
                  else paint("NOT answering: %s" % slurm["error"], "31"))
    lines.append("loop: %s   slurm: %s" % (loop_text, slurm_text))
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
    traefik = report.get("traefik")
    if traefik:
        lines.append("traefik: " + paint("running", "32") + " (pid %s, port %s)" % (traefik["pid"], traefik["port"])
                     if traefik["running"] else paint(traefik["problem"], "31"))  # the problem starts "Traefik ..."
    rows = [("SERVICE", "WANT", "RUN", "PEND", "ROUTED", "DRAIN", "NOTE")]
    for s in report["services"]:
        note = []
        if s["config_error"]:
            note.append(paint("config error", "31"))
        if s["backoff_seconds"]:
            note.append(paint("backoff %s" % _duration(s["backoff_seconds"]), "33"))
        if s["pending_reasons"]:
            note.append("waiting: " + ",".join(s["pending_reasons"]))
        rows.append((s["service"], s["desired"], s["running"], s["pending"], s["routed"], s["draining"],
                     "; ".join(note)))
    lines += _table(rows)
    for s in report["services"]:
        if s["last_error"] and s["failures"]:
            lines.append("  %s: %s" % (s["service"], s["last_error"]))
        if s["config_error"]:
            lines.append("  %s" % s["config_error"])
    if report["jobs"]:
        lines.append("")
        rows = [("JOB", "SERVICE", "ST", "NODE:PORT", "AGE", "LEFT", "RENEW", "HEALTH")]
        for j in report["jobs"]:
            port = j["url"].rsplit(":", 1)[-1] if j["url"] else ""
            where = "%s:%s" % (j["node"], port) if port else (j["node"] or j["reason"] or "-")
            rows.append((j["job_id"], j["service"][:18], j["state"], where[:20], _duration(j["age_seconds"]),
                         _duration(j["time_left_seconds"]), _duration(j["renew_in_seconds"]), j["health"][:24]))
        lines += _table(rows)
        foreign = [j for j in report["jobs"] if not j["owned"]]
        if foreign:
            lines.append("foreign: job(s) %s share a service's name but were not submitted from this root; "
                         "forever-slurm never counts, routes or cancels them" % ", ".join(j["job_id"] for j in foreign))
    traffic = report.get("traffic")
    if traffic:
        lines.append("")
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
        lines += _table(rows) if len(rows) > 1 else ["  no requests"]
    return "\n".join(lines + try_lines(report))


def try_lines(report):
    """A curl line per wanted service, only while our Traefik answers (else it could reach someone else's)."""
    traefik = report.get("traefik")
    if not traefik or not traefik["running"]:
        return []
    names = [s["service"] for s in report["services"] if s["desired"]]
    return [""] + ["try: curl http://127.0.0.1:%d/%s/" % (traefik["port"], name) for name in names]
