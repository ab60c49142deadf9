"""`logs`: the tail of a job's Slurm output file, found by job id or service."""

import os

from ..common.errors import ForeverError
from ..common.validate import ascii_digits
from ..core import state
from ..systems.slurm_output import output_file, tail


def show(layout, target=None, lines=20, out=print):
    """`logs`: the end of each target's output file (see targets) under a line naming the job."""
    found = targets(layout, state.load(layout.state_file), target)
    if not found:
        raise ForeverError("no job output found under %s" % layout.slurm_output)
    paths = [(job_id, service, output_file(layout, job_id, service)) for job_id, service in found]
    if not any(path for _, _, path in paths):
        if len(paths) == 1 and paths[0][1] is None:
            raise ForeverError("job %s: no output file under %s, and it is not a job the loop knows; "
                               "`status` lists this root's jobs" % (paths[0][0], layout.slurm_output))
        raise ForeverError("no output file yet under %s for job(s) %s (still pending, or removed)"
                           % (layout.slurm_output, ", ".join(job_id for job_id, _, _ in paths)))
    for job_id, service, path in paths:
        out("== job %s%s: %s" % (job_id, " (%s)" % service if service else "", path or "no output file"))
        for line in tail(path, lines) if path else []:
            out(line)
    return 0


def targets(layout, snapshot, target=None):
    """[(job id, service or None)] whose output `logs` shows: the job `target` names, else the newest
    job of the service `target` names (or of every service), from memory or else from the output files."""
    if target and ascii_digits(target):
        known = snapshot.memory.jobs.get(target)
        return [(target, known.service if known else None)]
    names = [target] if target else sorted(set(snapshot.desired) | {m.service for m in snapshot.memory.jobs.values()})
    found = []
    for name in names:
        ids = sorted((j for j, m in snapshot.memory.jobs.items() if m.service == name and ascii_digits(j)),
                     key=int)
        newest = ids[-1] if ids else _newest_output_id(layout, name)
        if newest:
            found.append((newest, name))
    return found


def _newest_output_id(layout, name):
    try:
        outputs = [p for p in os.listdir(layout.slurm_output) if p.startswith(name + "-") and p.endswith(".out")]
        outputs.sort(key=lambda p: os.path.getmtime(os.path.join(layout.slurm_output, p)))
    except OSError:
        return None
    return outputs[-1][len(name) + 1:-4] if outputs else None

