#!/usr/bin/env python3
"""A stateful fake Slurm for fast tests: squeue/sbatch/scontrol/scancel over a JSON file.

State lives in $FS_SHIM_STATE (jobs.json); every call's argv is appended to calls.log, so tests
and benchmarks can count calls per cycle. Failure on request: a file fail-<command> (its text is
printed on stderr, exit 1) or FS_SHIM_FAIL=<command>[,<command>]; a file hang-<command> holding
seconds makes the command sleep that long first. squeue prints its header (the format with each
field's title) unless -h; a file squeue-no-me makes it a Slurm < 20.11 that refuses --me as getopt
does; squeue-extra-bytes and squeue-after-bytes hold text printed before and after the rows.
"""

import fcntl
import json
import os
import re
import sys
import time

STATE = os.environ.get("FS_SHIM_STATE")


def fmt_duration(seconds):
    if seconds is None:
        return "UNLIMITED"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return "%d-%02d:%02d:%02d" % (days, hours, minutes, secs)
    if hours:
        return "%d:%02d:%02d" % (hours, minutes, secs)
    return "%d:%02d" % (minutes, secs)


def fmt_time(epoch):
    """SLURM_TIME_FORMAT=standard: local time."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


def parse_time_limit(text):
    text = text.strip()
    m = re.match(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$", text)
    if not m:
        return None
    days, a, b, c = m.groups()
    if days is not None:        # D-HH[:MM[:SS]]
        return int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    if c is not None:           # HH:MM:SS
        return int(a) * 3600 + int(b) * 60 + int(c)
    if b is not None:           # MM:SS
        return int(a) * 60 + int(b)
    return int(a) * 60          # minutes


class Store:
    def __init__(self, path):
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.lock = open(os.path.join(path, "lock"), "a+")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        try:
            with open(os.path.join(path, "jobs.json")) as handle:
                self.data = json.load(handle)
        except (OSError, ValueError):
            self.data = {"next_id": 1000, "jobs": []}

    def save(self):
        tmp = os.path.join(self.path, "jobs.json.tmp")
        with open(tmp, "w") as handle:
            json.dump(self.data, handle, indent=1)
        os.replace(tmp, os.path.join(self.path, "jobs.json"))


def now_left(job):
    if job.get("end") is None:
        return None
    return max(0, job["end"] - time.time())


TITLES = {"i": "JOBID", "A": "JOBID", "t": "ST", "j": "NAME", "N": "NODELIST", "L": "TIME_LEFT",
          "M": "TIME", "r": "REASON", "k": "COMMENT", "Z": "WORK_DIR", "S": "START_TIME", "e": "END_TIME"}


def squeue(store, argv):
    fmt = "%i %t %j"
    states = None
    names = None
    header = True
    i = 0
    if "--me" in argv and os.path.exists(os.path.join(STATE, "squeue-no-me")):
        sys.stderr.write("squeue: unrecognized option '--me'\nTry \"squeue --help\" for more information\n")
        return 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--noheader"):
            header = False
        elif arg in ("-u", "--user"):
            i += 1
        elif arg in ("-o", "--format"):
            fmt = argv[i + 1]
            i += 1
        elif arg.startswith("--format="):
            fmt = arg.split("=", 1)[1]
        elif arg in ("-t", "--states"):
            states = argv[i + 1].split(",")
            i += 1
        elif arg in ("-n", "--name"):
            names = argv[i + 1].split(",")
            i += 1
        i += 1
    out = []
    for job in store.data["jobs"]:
        active = job["state"] in ("PD", "R", "CG", "CF", "S")
        min_job_age = float(os.environ.get("FS_SHIM_MIN_JOB_AGE", "300"))
        if not active and not (states and "all" in states and time.time() - job.get("ended", 0) < min_job_age):
            continue
        if states and job["state"] not in states and "all" not in states:
            continue
        if names and job["name"].lower() not in [n.lower() for n in names]:
            continue
        started = job.get("started")
        fields = {
            "i": job["id"], "A": job["id"], "t": job["state"], "j": job["name"],
            "N": job.get("nodes", "") if job["state"] == "R" else "",
            "L": fmt_duration(now_left(job)) if job["state"] == "R" else fmt_duration(job.get("limit")),
            "M": fmt_duration(time.time() - started) if started else "0:00",
            "r": job.get("reason", "None"), "k": job.get("comment") or "(null)",
            "Z": job.get("chdir") or "",
            "S": fmt_time(started) if started else "N/A",
            "e": fmt_time(job.get("end")) if job.get("end") and job["state"] == "R" else (
                fmt_time(job.get("ended")) if job.get("ended") else ("NONE" if job.get("limit") is None else "N/A")),
        }
        out.append(re.sub(r"%([a-zA-Z])", lambda m: str(fields.get(m.group(1), "")), fmt))
    raw = os.path.join(STATE, "squeue-extra-bytes")     # odd bytes (a warning line, say) before the rows
    if os.path.exists(raw):
        sys.stdout.buffer.write(open(raw, "rb").read())
        sys.stdout.buffer.flush()
    if header:
        out.insert(0, re.sub(r"%([a-zA-Z])", lambda m: TITLES.get(m.group(1), m.group(1).upper()), fmt))
    # Paths (the workdir) are bytes on the way in (argv) and out, as Slurm's are.
    sys.stdout.buffer.write("".join(line + "\n" for line in out).encode("utf-8", "surrogateescape"))
    sys.stdout.buffer.flush()
    after = os.path.join(STATE, "squeue-after-bytes")     # a footer after the last row
    if os.path.exists(after):
        sys.stdout.buffer.write(open(after, "rb").read())
        sys.stdout.buffer.flush()
    return 0


def sbatch(store, argv):
    opts = {}
    script = None
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            opts[key] = value
        elif arg.startswith("-"):
            opts[arg] = True
        else:
            script = arg
    if script is None or not os.path.isfile(script):
        sys.stderr.write("sbatch: error: Unable to open file %s\n" % script)
        return 1
    name = None
    limit = int(os.environ.get("FS_SHIM_TIME_LEFT", "3600"))
    for line in open(script):
        line = line.strip()
        m = re.match(r"^#SBATCH\s+(--job-name|-J)[= ]\s*\"?([^\"\s]+)\"?", line)
        if m:
            name = m.group(2)
        m = re.match(r"^#SBATCH\s+(--time|-t)[= ]\s*(\S+)", line)
        if m and "FS_SHIM_TIME_LEFT" not in os.environ:
            limit = parse_time_limit(m.group(2)) or limit
    name = opts.get("--job-name", name) or os.path.basename(script)
    nodes = os.environ.get("FS_SHIM_NODES", "node1,node2,node3").split(",")
    excluded = set(opts.get("--exclude", "").split(",")) - {""}
    allowed = [n for n in nodes if n not in excluded]
    if not allowed:
        sys.stderr.write("sbatch: error: Batch job submission failed: Requested node configuration is not available\n")
        return 1
    running = [j for j in store.data["jobs"] if j["state"] == "R"]
    node = min(allowed, key=lambda n: (sum(1 for j in running if j.get("nodes") == n), nodes.index(n)))
    job_id = store.data["next_id"]
    store.data["next_id"] += 1
    state = os.environ.get("FS_SHIM_START_STATE", "R")
    job = {"id": str(job_id), "name": name, "state": state, "limit": limit, "script": script,
           "chdir": opts.get("--chdir"), "exclude": sorted(excluded), "comment": "",
           "reason": "None" if state == "R" else "Priority",
           "env_root": os.environ.get("FOREVER_ROOT", "")}
    if state == "R":
        job.update(nodes=node, started=time.time(), end=time.time() + limit)
    store.data["jobs"].append(job)
    store.save()
    print("%d" % job_id if "--parsable" in opts else "Submitted batch job %d" % job_id)
    return 0


def scontrol(store, argv):
    if len(argv) >= 2 and argv[0] == "update":
        fields = dict(a.split("=", 1) for a in argv[1:] if "=" in a)
        job_id = fields.pop("JobId", fields.pop("JobID", None))
        for job in store.data["jobs"]:
            if job["id"] == job_id and job["state"] in ("PD", "R"):
                if "Comment" in fields:
                    job["comment"] = fields["Comment"]
                if "ExcNodeList" in fields:
                    job["exclude"] = [n for n in fields["ExcNodeList"].split(",") if n]
                store.save()
                return 0
        sys.stderr.write("slurm_update error: Invalid job id specified\n")
        return 1
    if argv[:1] == ["ping"]:
        print("Slurmctld(primary) at shim is UP")
        return 0
    if [a for a in argv if a != "-o"] == ["show", "reservation"]:
        # A test puts `scontrol -o show reservation` lines in <state>/reservations.
        path = os.path.join(STATE, "reservations")
        text = open(path).read() if os.path.exists(path) else ""
        print(text.rstrip("\n") if text.strip() else "No reservations in the system")
        return 0
    sys.stderr.write("scontrol shim: unsupported %s\n" % argv)
    return 1


def sinfo(store, argv):
    """`sinfo -h -R -o FORMAT`: one row per line of <state>/nodes-down ("node state reason"), in the format."""
    fmt = argv[argv.index("-o") + 1] if "-o" in argv else "%N %t %E"
    path = os.path.join(STATE, "nodes-down")
    for line in (open(path).read().splitlines() if os.path.exists(path) else []):
        node, state, reason = (line.split(None, 2) + ["", ""])[:3]
        print(fmt.replace("%N", node).replace("%t", state).replace("%E", reason))
    return 0


def scancel(store, argv):
    ids = [a for a in argv if not a.startswith("-")]
    for job in store.data["jobs"]:
        if job["id"] in ids and job["state"] in ("PD", "R"):
            job["state"] = "CA"
            job["ended"] = time.time()
    store.save()
    return 0


def main():
    command = sys.argv[1]
    argv = sys.argv[2:]
    if not STATE:
        sys.stderr.write("%s shim: FS_SHIM_STATE is not set\n" % command)
        return 2
    os.makedirs(STATE, exist_ok=True)
    with open(os.path.join(STATE, "calls.log"), "a") as handle:
        handle.write(json.dumps([command] + argv) + "\n")
    hang = os.path.join(STATE, "hang-" + command)
    if os.path.exists(hang):
        time.sleep(float(open(hang).read().strip() or "60"))
    fail = os.path.join(STATE, "fail-" + command)
    if os.path.exists(fail) or command in os.environ.get("FS_SHIM_FAIL", "").split(","):
        message = open(fail).read() if os.path.exists(fail) else ""
        sys.stderr.write(message or "%s: error: Unable to contact slurm controller (connect failure)\n" % command)
        return 1
    store = Store(STATE)
    return {"squeue": squeue, "sbatch": sbatch, "scontrol": scontrol, "scancel": scancel,
            "sinfo": sinfo}[command](store, argv)


if __name__ == "__main__":
    sys.exit(main())
