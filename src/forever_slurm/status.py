"""`status`: what the loop knows (state.json) and what users got (Traefik's access log), for people and scripts."""

import os
import time

from . import reconcile, settings as settings_mod, state
from .errors import ForeverError


def collect(layout, now=None, traffic_window=300.0):
    """A JSON-ready report: services, jobs, Slurm's health, and traffic over the last 5 minutes."""
    now = time.time() if now is None else now
    snap = state.load(layout.state_file)
    policy = reconcile.Policy()
    try:
        conf = settings_mod.load(layout)
        desired = conf.desired
        policy = _policy(conf)
    except ForeverError:
        desired = dict(snap.desired)
        conf = None
    observed_age = None if snap.observed_at is None else now - snap.observed_at
    routed = {svc: servers for svc, servers in snap.routes.items()}
    names = sorted(set(desired) | {m.service for m in snap.memory.jobs.values()} | set(routed))
    service_rows = []
    job_rows = []
    for name in names:
        jobs = [j for j in snap.jobs if j.name == name and j.active]
        svc_mem = snap.memory.services.get(name, reconcile.ServiceMemory())
        lead = reconcile.renew_lead(desired.get(name, 0), svc_mem, policy, _warning(layout, name))
        servers = routed.get(name, [])
        pending = [j for j in jobs if not j.running]
        seen_ids = {j.job_id for j in snap.jobs}
        submitted = [job_id for job_id, m in snap.memory.jobs.items()
                     if m.service == name and m.seen_at is None and job_id not in seen_ids]
        service_rows.append({
            "service": name,
            "desired": desired.get(name, 0),
            "running": sum(1 for j in jobs if j.running),
            "pending": len(pending) + len(submitted),
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
        for job in sorted(jobs, key=lambda j: int(j.job_id) if j.job_id.isdigit() else 0):
            m = snap.memory.jobs.get(job.job_id, reconcile.JobMemory(service=name))
            left = None
            if job.time_left is not None and snap.observed_at is not None:
                left = max(0.0, job.time_left - (now - snap.observed_at))
            if not job.running:
                health = "pending"
            elif m.cancelled_at is not None:
                health = "stopping"
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
                "owned": m.owned, "comment_problem": m.comment_problem,
            })
    report = {
        "root": layout.root,
        "loop": _loop_state(layout, snap, now),
        "slurm": {"ok": snap.slurm_ok, "error": snap.slurm_error, "observed_seconds_ago": observed_age},
        "services": service_rows,
        "jobs": job_rows,
        "traffic": _traffic(layout, now, traffic_window),
        "traefik_port": conf.traefik_port if conf else None,
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
        return services.load(layout, name).warning_seconds
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
