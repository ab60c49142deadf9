#!/usr/bin/env python3
"""A stateful fake Slurm for fast tests: squeue/sbatch/scontrol/scancel over a JSON file.

State lives in $FS_SHIM_STATE (jobs.json); every call's argv is appended to calls.log, so tests
and benchmarks can count calls per cycle. Failure on request: a file fail-<command> (its text is
printed on stderr, exit 1) or FS_SHIM_FAIL=<command>[,<command>]; a file hang-<command> holding
seconds makes the command sleep that long first. squeue prints its header (the format with each
field's title) unless -h; a file squeue-no-me makes it a Slurm < 20.11 that refuses --me as getopt
does; squeue-extra-bytes and squeue-after-bytes hold text printed before and after the rows.
sinfo -R lists the lines of a file nodes-down ("node state reason"), `scontrol show reservation`
prints a file reservations (`scontrol -o show reservation` lines), else "No reservations".

The rules (what each command does to the jobs) are `call`, which works on a plain dict and an
environment: tests/fakes.py runs the same rules in-process, with the jobs kept in memory.
"""

import fcntl
import json
import os
import re
import sys
import time

COMMANDS = ("squeue", "sbatch", "scontrol", "scancel", "sinfo")
DEFAULT_ERROR = "%s: error: Unable to contact slurm controller (connect failure)\n"


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


def empty_data():
    return {"next_id": 1000, "jobs": []}


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
            self.data = empty_data()

    def save(self):
        tmp = os.path.join(self.path, "jobs.json.tmp")
        with open(tmp, "w") as handle:
            json.dump(self.data, handle, indent=1)
        os.replace(tmp, os.path.join(self.path, "jobs.json"))


class Answer:
    """What one command printed and returned."""

    def __init__(self, code=0):
        self.code = code
        self.out = []
        self.err = []

    def print(self, text):
        self.out.append(text)

    def error(self, text, code=1):
        self.err.append(text)
        self.code = code
        return self

    def stdout(self, before=b"", after=b""):
        """What it printed, as bytes: paths (the workdir) are bytes on the way in (argv) and out, as
        Slurm's are. before/after: odd bytes around the rows (a warning, a site's banner), squeue only."""
        if self.code:
            before = after = b""
        return before + "".join(self.out).encode("utf-8", "surrogateescape") + after


def call(command, argv, data, env, now=time.time):
    """The Answer of `command argv` on the jobs in `data` (changed in place). env: the command's
    environment (FS_SHIM_NODES, FS_SHIM_START_STATE, FS_SHIM_TIME_LEFT, FS_SHIM_MIN_JOB_AGE, and
    FOREVER_ROOT, which sbatch records; main() adds what the state folder's files say:
    FS_SHIM_NO_ME, FS_SHIM_NODES_DOWN, FS_SHIM_RESERVATIONS); now: the clock."""
    rules = {"squeue": squeue, "sbatch": sbatch, "scontrol": scontrol, "scancel": scancel, "sinfo": sinfo}
    return rules[command](data, argv, env, now, Answer())


def now_left(job, now):
    if job.get("end") is None:
        return None
    return max(0, job["end"] - now())


TITLES = {"i": "JOBID", "A": "JOBID", "t": "ST", "j": "NAME", "N": "NODELIST", "L": "TIME_LEFT",
          "M": "TIME", "r": "REASON", "k": "COMMENT", "Z": "WORK_DIR", "S": "START_TIME", "e": "END_TIME"}


def squeue(data, argv, env, now, answer):
    fmt = "%i %t %j"
    states = None
    names = None
    header = True
    i = 0
    if "--me" in argv and env.get("FS_SHIM_NO_ME"):
        return answer.error("squeue: unrecognized option '--me'\nTry \"squeue --help\" for more information\n")
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
    min_job_age = float(env.get("FS_SHIM_MIN_JOB_AGE", "300"))
    if header:
        answer.print(re.sub(r"%([a-zA-Z])", lambda m: TITLES.get(m.group(1), m.group(1).upper()), fmt) + "\n")
    for job in data["jobs"]:
        active = job["state"] in ("PD", "R", "CG", "CF", "S")
        if not active and not (states and "all" in states and now() - job.get("ended", 0) < min_job_age):
            continue
        if states and job["state"] not in states and "all" not in states:
            continue
        if names and job["name"].lower() not in [n.lower() for n in names]:
            continue
        started = job.get("started")
        fields = {
            "i": job["id"], "A": job["id"], "t": job["state"], "j": job["name"],
            "N": job.get("nodes", "") if job["state"] == "R" else "",
            "L": fmt_duration(now_left(job, now)) if job["state"] == "R" else fmt_duration(job.get("limit")),
            "M": fmt_duration(now() - started) if started else "0:00",
            "r": job.get("reason", "None"), "k": job.get("comment") or "(null)",
            "Z": job.get("chdir") or "",
            "S": fmt_time(started) if started else "N/A",
            "e": fmt_time(job.get("end")) if job.get("end") and job["state"] == "R" else (
                fmt_time(job.get("ended")) if job.get("ended") else ("NONE" if job.get("limit") is None else "N/A")),
        }
        answer.print(re.sub(r"%([a-zA-Z])", lambda m: str(fields.get(m.group(1), "")), fmt) + "\n")
    return answer


def sbatch(data, argv, env, now, answer):
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
        return answer.error("sbatch: error: Unable to open file %s\n" % script)
    name = None
    limit = int(env.get("FS_SHIM_TIME_LEFT", "3600"))
    for line in open(script):
        line = line.strip()
        m = re.match(r"^#SBATCH\s+(--job-name|-J)[= ]\s*\"?([^\"\s]+)\"?", line)
        if m:
            name = m.group(2)
        m = re.match(r"^#SBATCH\s+(--time|-t)[= ]\s*(\S+)", line)
        if m and "FS_SHIM_TIME_LEFT" not in env:
            limit = parse_time_limit(m.group(2)) or limit
    name = opts.get("--job-name", name) or os.path.basename(script)
    nodes = env.get("FS_SHIM_NODES", "node1,node2,node3").split(",")
    excluded = set(opts.get("--exclude", "").split(",")) - {""}
    allowed = [n for n in nodes if n not in excluded]
    if not allowed:
        return answer.error("sbatch: error: Batch job submission failed: "
                            "Requested node configuration is not available\n")
    running = [j for j in data["jobs"] if j["state"] == "R"]
    node = min(allowed, key=lambda n: (sum(1 for j in running if j.get("nodes") == n), nodes.index(n)))
    job_id = data["next_id"]
    data["next_id"] += 1
    state = env.get("FS_SHIM_START_STATE", "R")
    job = {"id": str(job_id), "name": name, "state": state, "limit": limit, "script": script,
           "chdir": opts.get("--chdir"), "exclude": sorted(excluded), "comment": "",
           "reason": "None" if state == "R" else "Priority",
           "env_root": env.get("FOREVER_ROOT", "")}
    if state == "R":
        job.update(nodes=node, started=now(), end=now() + limit)
    data["jobs"].append(job)
    answer.print("%d\n" % job_id if "--parsable" in opts else "Submitted batch job %d\n" % job_id)
    return answer


def scontrol(data, argv, env, now, answer):
    if len(argv) >= 2 and argv[0] == "update":
        fields = dict(a.split("=", 1) for a in argv[1:] if "=" in a)
        job_id = fields.pop("JobId", fields.pop("JobID", None))
        for job in data["jobs"]:
            if job["id"] == job_id and job["state"] in ("PD", "R"):
                if "Comment" in fields:
                    job["comment"] = fields["Comment"]
                if "ExcNodeList" in fields:
                    job["exclude"] = [n for n in fields["ExcNodeList"].split(",") if n]
                return answer
        return answer.error("slurm_update error: Invalid job id specified\n")
    if argv[:1] == ["ping"]:
        answer.print("Slurmctld(primary) at shim is UP\n")
        return answer
    if [a for a in argv if a != "-o"] == ["show", "reservation"]:
        text = env.get("FS_SHIM_RESERVATIONS", "")
        answer.print((text.rstrip("\n") if text.strip() else "No reservations in the system") + "\n")
        return answer
    return answer.error("scontrol shim: unsupported %s\n" % argv)


def sinfo(data, argv, env, now, answer):
    """`sinfo -h -R -o FORMAT`: one row per line of FS_SHIM_NODES_DOWN ("node state reason")."""
    fmt = argv[argv.index("-o") + 1] if "-o" in argv else "%N %t %E"
    for line in env.get("FS_SHIM_NODES_DOWN", "").splitlines():
        node, state, reason = (line.split(None, 2) + ["", ""])[:3]
        answer.print(fmt.replace("%N", node).replace("%t", state).replace("%E", reason) + "\n")
    return answer


def scancel(data, argv, env, now, answer):
    ids = [a for a in argv if not a.startswith("-")]
    for job in data["jobs"]:
        if job["id"] in ids and job["state"] in ("PD", "R"):
            job["state"] = "CA"
            job["ended"] = now()
    return answer


def main():
    command = sys.argv[1]
    argv = sys.argv[2:]
    state = os.environ.get("FS_SHIM_STATE")
    if not state:
        sys.stderr.write("%s shim: FS_SHIM_STATE is not set\n" % command)
        return 2
    os.makedirs(state, exist_ok=True)
    with open(os.path.join(state, "calls.log"), "a") as handle:
        handle.write(json.dumps([command] + argv) + "\n")
    hang = os.path.join(state, "hang-" + command)
    if os.path.exists(hang):
        time.sleep(float(open(hang).read().strip() or "60"))
    fail = os.path.join(state, "fail-" + command)
    if os.path.exists(fail) or command in os.environ.get("FS_SHIM_FAIL", "").split(","):
        message = open(fail).read() if os.path.exists(fail) else ""
        sys.stderr.write(message or DEFAULT_ERROR % command)
        return 1
    store = Store(state)
    before = json.dumps(store.data, sort_keys=True)
    env = dict(os.environ)
    if os.path.exists(os.path.join(state, "squeue-no-me")):
        env["FS_SHIM_NO_ME"] = "1"
    for name, key in (("nodes-down", "FS_SHIM_NODES_DOWN"), ("reservations", "FS_SHIM_RESERVATIONS")):
        text = _read_bytes(state, name).decode("utf-8", "surrogateescape")
        if text:
            env[key] = text
    answer = call(command, argv, store.data, env)
    if json.dumps(store.data, sort_keys=True) != before:
        store.save()
    around = (_read_bytes(state, "squeue-extra-bytes"), _read_bytes(state, "squeue-after-bytes")) \
        if command == "squeue" else (b"", b"")
    sys.stdout.buffer.write(answer.stdout(*around))
    sys.stdout.buffer.flush()
    sys.stderr.write("".join(answer.err))
    return answer.code


def _read_bytes(state, name):
    path = os.path.join(state, name)
    if not os.path.exists(path):
        return b""
    with open(path, "rb") as handle:
        return handle.read()


if __name__ == "__main__":
    sys.exit(main())
