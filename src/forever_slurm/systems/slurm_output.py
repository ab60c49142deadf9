"""Slurm's output files of our jobs in .work/slurm-output: which file is a job's, and its last lines."""

import glob
import os


def output_file(layout, job_id, service=None):
    """The newest output file whose name carries the job id (our default: <service>-<id>.out)."""
    candidates = []
    if service:
        candidates.append(os.path.join(layout.slurm_output, "%s-%s.out" % (service, job_id)))
    candidates.append(os.path.join(layout.slurm_output, "slurm-%s.out" % job_id))
    for path in candidates:
        if os.path.isfile(path):
            return path
    found = [p for p in glob.glob(os.path.join(glob.escape(layout.slurm_output), "*%s*" % job_id))
             if os.path.isfile(p)]
    return max(found, key=os.path.getmtime) if found else None


def tail(path, lines=10, max_bytes=64 * 1024):
    """The last lines of a file, reading at most max_bytes from its end."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    return text[-lines:] if lines else text
