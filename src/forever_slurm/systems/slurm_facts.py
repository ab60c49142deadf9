"""What a shared cluster says beside the queue, read from Slurm's text: nodes that are down or drained
(`sinfo -R`), maintenance reservations (`scontrol -o show reservation`), host lists, time limits, and
which limit a refused submission or a stuck pending job ran into. Parsers only: slurm.py runs the
commands. Everything here is read leniently: a line that does not parse is skipped, never fatal.

Measured on Slurm 22.05 (docs/shared-cluster-observed.md): squeue never says that a node is drained
under a running job; `sinfo -R` lists exactly the nodes with a reason (down, drain, fail), one RPC.
"""

import re
import time
from typing import FrozenSet, NamedTuple, Optional, Tuple

from ..common.sbatch_script import time_limit_seconds
from ..common.validate import ascii_digits

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"     # SLURM_TIME_FORMAT=standard
# Node states (sinfo %t, compact) in which a node runs nothing new of ours, or loses what it runs.
UNAVAILABLE_STATES = frozenset(["down", "drain", "drng", "drained", "draining", "fail", "failg", "maint",
                                "boot", "powered_down", "powering_down", "unk", "futr", "inval", "npc"])


class NodeProblem(NamedTuple):
    node: str
    state: str          # sinfo's compact state without its flags: down, drain, drng, fail...
    reason: str


class Reservation(NamedTuple):
    name: str
    start: Optional[float]
    end: Optional[float]
    nodes: Tuple[str, ...]      # expanded host names
    flags: FrozenSet[str]       # MAINT, IGNORE_JOBS, ALL_NODES, ...
    state: str                  # INACTIVE before its start, ACTIVE during it

    @property
    def maintenance(self):
        return "MAINT" in self.flags

    def covers(self, nodes):
        """True when it holds any of `nodes` (all of them when it holds every node, or nodes is empty)."""
        return "ALL_NODES" in self.flags or not nodes or bool(set(nodes) & set(self.nodes))


def expand_hostlist(text):
    """['node1', 'node2', 'node3', 'gpu01'] from Slurm's 'node[1-3],gpu01' (zero padding kept, several
    bracket groups multiply); [] for an empty or (null) list."""
    text = (text or "").strip()
    if not text or text == "(null)":
        return []
    names = []
    for part in _top_level_split(text):
        names.extend(_expand_one(part))
    return names


def _top_level_split(text):
    parts, depth, current = [], 0, []
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


_GROUP = re.compile(r"\[([^\]]*)\]")


def _expand_one(pattern):
    match = _GROUP.search(pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[:match.start()], pattern[match.end():]
    found = []
    for item in match.group(1).split(","):
        low, _, high = item.strip().partition("-")
        if not ascii_digits(low) or (high and not ascii_digits(high)):
            return [pattern]        # not a range we know: the pattern as it is, never a crash
        width = len(low)
        first, last = int(low), int(high) if high else int(low)
        if last - first > 100000:
            return [pattern]        # absurd: not expanded
        for number in range(first, last + 1):
            found.extend(_expand_one("%s%0*d%s" % (head, width, number, tail)))
    return found


def parse_node_problems(text, row, field, end):
    """{node: NodeProblem} from `sinfo -h -R -o '<row>%N<field>%t<field>%E<end>'` (a reason is free
    text: the markers keep it whole); nodes whose state is fine again (a stale reason) are left out."""
    found = {}
    for chunk in text.split(row)[1:]:
        body, framed, _ = chunk.partition(end)
        parts = body.split(field)
        if not framed or len(parts) != 3:
            continue
        nodes, state, reason = (part.strip() for part in parts)
        state = state.rstrip("*~#!%$@^-+").lower()
        if state not in UNAVAILABLE_STATES:
            continue
        for node in expand_hostlist(nodes):
            found[node] = NodeProblem(node, state, reason)
    return found


_KEY = re.compile(r"(?:^|\s)([A-Za-z]+)=")


def parse_key_values(line):
    """{Key: value} of one `scontrol -o` line; a value runs up to the next ' Key=' (it may hold spaces)."""
    found = {}
    matches = list(_KEY.finditer(line))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(line)
        found[match.group(1)] = line[match.end():end].strip()
    return found


def parse_reservations(text):
    """[Reservation] from `SLURM_TIME_FORMAT=standard scontrol -o show reservation`; [] for 'No
    reservations in the system'."""
    found = []
    for line in text.splitlines():
        fields = parse_key_values(line)
        if "ReservationName" not in fields:
            continue
        flags = frozenset(flag.strip().upper() for flag in fields.get("Flags", "").split(",") if flag.strip())
        found.append(Reservation(fields["ReservationName"], parse_time(fields.get("StartTime", "")),
                                 parse_time(fields.get("EndTime", "")),
                                 tuple(expand_hostlist(fields.get("Nodes", ""))), flags,
                                 fields.get("State", "").upper()))
    return found


def parse_time(text):
    try:
        return time.mktime(time.strptime(text.strip(), TIME_FORMAT))
    except (ValueError, OverflowError):
        return None


def time_limit_text(seconds):
    """sbatch's --time value for a number of seconds, in whole minutes rounded down (at least 1)."""
    return str(max(1, int(seconds // 60)))


class Limit(NamedTuple):
    """A limit a submission or a pending job ran into, and the #SBATCH options that would change it."""
    what: str
    options: Tuple[str, ...]
    lasting: bool           # waiting does not make it go away (an edit of the .sub does)


# sbatch's refusals (slurm_errno.c texts, measured where they could be: see the module docstring) and
# squeue's pending reasons that waiting will not cure, each with what to change in the .sub.
_TIME = ("--time", "-t")
_PARTITION = ("--partition", "-p")
_REJECTIONS = (
    ("requested time limit is invalid", Limit("a time limit above the partition's MaxTime", _TIME, True)),
    ("invalid partition", Limit("a partition that does not exist", _PARTITION, True)),
    ("required partition not available", Limit("a partition that is drained or inactive", _PARTITION, True)),
    ("node count specification invalid", Limit("more nodes than the partition has", ("--nodes", "-N"), True)),
    ("cpu count per node can not be satisfied", Limit("more CPUs per node than a node has",
                                                      ("--cpus-per-task", "-c", "--ntasks-per-node"), True)),
    ("memory specification can not be satisfied", Limit("more memory than a node has", ("--mem", "--mem-per-cpu"),
                                                         True)),
    ("invalid account", Limit("an account you may not use here", ("--account", "-A"), True)),
    ("invalid qos", Limit("a QOS you may not use here", ("--qos", "-q"), True)),
    ("job violates accounting/qos policy", Limit("a QOS or association limit (jobs, size or time per user)",
                                                 ("--qos", "-q", "--account", "-A", "--time", "-t"), True)),
    ("qosmaxsubmitjob", Limit("the QOS's limit of submitted jobs", ("--qos", "-q"), True)),
    ("assocmaxsubmitjob", Limit("the account's limit of submitted jobs", ("--account", "-A"), True)),
    ("requested node configuration is not available", Limit("resources no node has", ("--constraint", "-C",
                                                            "--gres", "--mem", "--cpus-per-task", "-c"), True)),
    ("temporarily unable to accept job", Limit("the cluster's limit of jobs in the queue (MaxJobCount)", (),
                                               False)),
)
_PENDING_REASONS = (
    ("PartitionTimeLimit", Limit("a time limit above the partition's MaxTime", _TIME, True)),
    ("PartitionNodeLimit", Limit("more nodes than the partition allows", ("--nodes", "-N"), True)),
    ("PartitionConfig", Limit("the partition's configuration", _PARTITION, True)),
    ("QOSMaxWallDurationPerJobLimit", Limit("the QOS's time limit", _TIME + ("--qos", "-q"), True)),
    ("QOSMax", Limit("a QOS limit", ("--qos", "-q"), True)),
    ("AssocMax", Limit("an association limit", ("--account", "-A"), True)),
    ("InvalidAccount", Limit("an account you may not use here", ("--account", "-A"), True)),
    ("InvalidQOS", Limit("a QOS you may not use here", ("--qos", "-q"), True)),
)


def rejection(text):
    """The Limit an sbatch error text names, or None (an outage, a timeout: nothing to change)."""
    low = (text or "").lower()
    for needle, limit in _REJECTIONS:
        if needle in low:
            return limit
    return None


def lasting_pending_reason(reason, unavailable_nodes=()):
    """The Limit behind a pending reason that waiting will not cure, or None. ReqNodeNotAvail counts
    only when every node it names is down or drained (a reservation's reason waits for its end)."""
    reason = reason or ""
    for prefix, limit in _PENDING_REASONS:
        if reason.startswith(prefix):
            return limit
    if reason.startswith("ReqNodeNotAvail") and "UnavailableNodes:" in reason:
        named = expand_hostlist(reason.split("UnavailableNodes:", 1)[1].strip())
        if named and all(node in unavailable_nodes for node in named):
            return Limit("nodes the job asks for that are down or drained (%s)" % ",".join(named[:5]),
                         ("--nodelist", "-w", "--exclude", "-x"), True)
    return None


# Pending reasons of a job that waits for something other than its turn in the queue: a reservation
# (a maintenance), nodes that are down, a partition that is down or too small, a begin time (a
# requeue's hold), a dependency or a hold. Such a wait is no measure of how long starts take.
_NOT_QUEUE_REASONS = ("ReqNodeNotAvail", "Reservation", "Partition", "BeginTime", "Dependency", "JobHeld",
                      "Held", "NodeDown")


def not_a_queue_wait(reason):
    return bool(reason) and reason.startswith(_NOT_QUEUE_REASONS)


def time_limit_seconds_or_none(text):
    """$SBATCH_TIMELIMIT (which beats the script's #SBATCH --time) in seconds; None when unset or odd."""
    return time_limit_seconds(text) if text else None


def where_to_change(limit, definition):
    """'; change #SBATCH --time=2-00:00:00 in <file>:<line>' for the options behind a limit, as the
    service's .sub has them (definition: services.ServiceDef or None); '' when nothing names one."""
    if definition is None or not limit.options:
        return ""
    lines = [(line, option, value) for line, option, value in definition.options if option in limit.options]
    if not lines:
        return "; set #SBATCH %s in %s" % (limit.options[0], definition.script)
    line, option, value = lines[-1]
    return "; change #SBATCH %s=%s in %s:%d" % (option, value, definition.script, line)
