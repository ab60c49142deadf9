"""Is a root's loop running: the process that holds its lock (.work/forever-slurm.lock), seen in /proc."""

import os


def running_loop_pid(layout, proc_root="/proc"):
    """The pid of the loop that holds this root's lock now, or None.

    The lock file keeps the last loop's pid after it stops, and a pid is reused, so a pid counts only
    while /proc/locks shows it holding a lock on that very file. Where /proc/locks cannot be read (not
    Linux), a live process whose command line names forever_slurm and this root has to do."""
    pid = _pid_in(layout.lock_file)
    if pid is None:
        return None
    try:
        inode = os.stat(layout.lock_file).st_ino
    except OSError:
        return None
    holders = _lock_holders(inode, proc_root)
    if holders is not None:
        # The loop writes its own pid into the file once it holds the lock.
        return pid if pid in holders else None
    return pid if _runs_for_root(pid, layout, proc_root) else None


def _pid_in(path):
    try:
        with open(path) as handle:
            text = handle.read(32).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _lock_holders(inode, proc_root):
    """Pids holding a POSIX lock on the file with this inode, from /proc/locks; None if unreadable.

    A line reads `1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF` (a blocked waiter has `->` first)."""
    try:
        with open(os.path.join(proc_root, "locks")) as handle:
            rows = handle.read().splitlines()
    except OSError:
        return None
    pids = set()
    for row in rows:
        fields = row.split()
        if len(fields) < 6 or "->" in fields[1]:
            continue
        if fields[1] == "POSIX" and fields[4].isdigit() and fields[5].rsplit(":", 1)[-1] == str(inode):
            pids.add(int(fields[4]))
    return pids


def _runs_for_root(pid, layout, proc_root):
    """pid is alive and its command line names forever_slurm and this root (units run `... --root ROOT run`)."""
    try:
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as handle:
            words = handle.read().split(b"\0")
    except OSError:
        return False
    return os.fsencode(layout.root) in words or any(b"forever_slurm" in word for word in words)
