"""The loop's records: its policy, its memory of each job and service, the actions a plan asks for,
and the named phases of a job's life. Plain values only: no I/O, no clock."""

from typing import Dict, List, NamedTuple, Optional, Tuple

from ..systems.slurm import RUNNING_STATES
from ..systems.traefik import Server


class Policy(NamedTuple):
    surge: int = 1                  # extra jobs per service during renewal
    drain_seconds: float = 20.0     # weight 0 at least this long before a drained job is stopped
    drain_max_seconds: float = 600.0    # ... and at most this long while requests are still in flight
    renew_lead: Optional[float] = None   # fixed lead time; None: from measured start-up
    renew_margin: float = 60.0
    default_startup: float = 60.0   # start-up guess before any job of the service was measured
    spread: bool = True
    spread_patience: float = 60.0   # then a pending job may run on any node after all
    spread_ramp_max: int = 4        # up to this many missing jobs are submitted one per look
    expect_timeout: float = 120.0   # a submitted job not seen by then is considered lost
    crash_window: float = 120.0     # a job ending sooner after its start counts as a crash
    publish_timeout: float = 600.0  # a running job with no URL by then counts as a crash
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    backoff_reset: float = 600.0    # healthy this long: the crash count starts over
    probe_failure_threshold: int = 2
    max_submit_per_look: int = 100


INTENT_PREFIX = "intent:"   # memory key of a submission recorded before its sbatch ran


class JobMemory(NamedTuple):
    """What the loop remembers of one of its jobs between looks (persisted in state.json)."""
    service: str
    submitted_at: Optional[float] = None
    seen_at: Optional[float] = None         # first seen in squeue
    running_since: Optional[float] = None
    url: str = ""
    comment_problem: str = ""
    ready_since: Optional[float] = None
    ever_ready: bool = False
    probe_failures: int = 0
    probe_detail: str = ""
    drain_since: Optional[float] = None
    cancelled_at: Optional[float] = None    # scancel succeeded
    cancel_failures: int = 0                # scancel failed this often (the job stays unrouted)
    cancel_retry_at: Optional[float] = None
    excluded: Tuple[str, ...] = ()
    publish_late: bool = False
    unready_at: Optional[float] = None      # when a ready job stopped answering (None: it answers)
    ends_at: Optional[float] = None         # the end Slurm last gave it while running (time limit)
    cut_short_at: Optional[float] = None    # when Slurm moved that end earlier (preemption's GraceTime)
    held_since: Optional[float] = None      # requeued or suspended after it ran: not serving, not counted
    renewing_since: Optional[float] = None  # entered its renewal lead: it stays renewed (the lead moves)
    not_queued: bool = False                # pended for a reservation, a node, a partition or a hold:
                                            # its wait says nothing of the queue (no start-up sample)

    @property
    def stopping(self):
        """We asked Slurm to stop it (successfully or not yet): never routed, never counted."""
        return self.cancelled_at is not None or self.cancel_failures > 0


class ServiceMemory(NamedTuple):
    failures: int = 0
    next_try: float = 0.0
    last_error: str = ""
    startup: Tuple[float, ...] = ()         # recent submit->ready seconds
    drains: Tuple[float, ...] = ()          # recent drain->cancel seconds (long answers make them long)


class Memory(NamedTuple):
    jobs: Dict[str, JobMemory]
    services: Dict[str, ServiceMemory]


def empty_memory():
    return Memory(jobs={}, services={})


def is_intent(key):
    return key.startswith(INTENT_PREFIX)


class ProbeResult(NamedTuple):
    ok: bool
    detail: str = ""
    refused: bool = False       # connection refused: nobody listens, no need to wait for a 2nd failure


class Submit(NamedTuple):
    service: str
    exclude: Tuple[str, ...] = ()
    reason: str = ""
    time_limit: Optional[float] = None      # seconds, when shorter than the script's (maintenance.py)


class Cancel(NamedTuple):
    job_id: str
    service: str
    reason: str = ""


class ClearExclude(NamedTuple):
    job_id: str
    service: str


class Plan(NamedTuple):
    actions: List[object]
    routes: Dict[str, List[Server]]     # services without an entry keep their current Traefik file
    memory: Memory
    events: List[str]
    failed: Dict[str, str]              # service -> traceback of a bug met while planning it
    next_look: float = 0.0              # seconds until the plan needs a fresh look at Slurm
    why: str = "steady"                 # ... and what it waits for


class Phase:
    """The named states of one job's life, in the order a job goes through them. Computed in one
    place, phase(), from the job's memory and its squeue row; the planner and `status` both use it.

    SUBMITTED -> PENDING -> STARTING -> READY <-> UNREADY, then DRAINING -> STOPPING -> (gone);
    a job can also leave squeue from any of them (it ended: its time limit, a crash, a node, scancel),
    and a running one can be HELD (requeued, suspended) and run again (STARTING).
    """
    SUBMITTED = "submitted"     # sbatch ran (or its intent is recorded); squeue has not shown it yet
    PENDING = "pending"         # in squeue, waiting for a node
    HELD = "held"               # it ran, then Slurm requeued (pending again) or suspended it: not counted
    STARTING = "starting"       # running; its server has not published a URL or answered a probe yet
    READY = "ready"             # answering its probes: routed, takes new requests
    UNREADY = "not ready"       # was ready, stopped answering: out of Traefik until it answers again
    DRAINING = "draining"       # routed at weight 0: no new requests, those in flight finish
    STOPPING = "stopping"       # scancel asked (or failed and is retried): never routed or counted again
    ENDING = "ending"           # completing (CG) or not in the last look: leaving squeue


# The phases in which a job carries its service (counts toward the instances wanted).
CARRYING = frozenset([Phase.SUBMITTED, Phase.PENDING, Phase.STARTING, Phase.READY, Phase.UNREADY])


def phase(m, state=None):
    """The Phase of a job: m its JobMemory, state its compact squeue state (None when the last look
    did not show it as active)."""
    if m.cancelled_at is not None or m.cancel_failures:
        return Phase.STOPPING
    if state is None:
        return Phase.SUBMITTED if m.seen_at is None else Phase.ENDING
    if state not in RUNNING_STATES:
        return Phase.HELD if m.held_since is not None or state == "S" else Phase.PENDING
    if m.drain_since is not None:
        return Phase.DRAINING
    if m.ready_since is not None and m.url:
        return Phase.READY
    return Phase.UNREADY if m.ever_ready and m.url else Phase.STARTING


def policy_from(settings):
    return Policy(
        surge=settings.surge,
        drain_seconds=settings.drain_seconds,
        drain_max_seconds=settings.drain_max_seconds,
        renew_lead=settings.renew_lead,
        renew_margin=settings.renew_margin,
        spread=settings.spread,
    )
