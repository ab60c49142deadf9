"""How many jobs a MIN-MAX service wants now, from the requests in flight on it (pure).

The signal is requests in flight (on its backends, plus those the wake proxy holds), sampled at
every probe pass and averaged over FS_SCALE_WINDOW. The number of instances that load asks for is
ceil(average / FS_SCALE_TARGET). Up is followed at once; down only once every recommendation of the
last FS_SCALE_DOWN_SECONDS was lower (the highest recent one wins, as the Kubernetes autoscaler's
scale-down stabilisation does), so load that comes and goes does not start and stop jobs. A service
with a request in the last FS_IDLE_SECONDS keeps at least one instance; after that it goes down to
MIN, which may be 0 (asleep: the next request wakes it, see wake.py).
"""

import math
from typing import NamedTuple, Optional, Tuple

EPSILON = 1e-9


class ScalePolicy(NamedTuple):
    per_backend: float          # FS_SCALE_TARGET: requests in flight per backend before one more starts
    window: float               # FS_SCALE_WINDOW: seconds the load is averaged over
    down_delay: float           # FS_SCALE_DOWN_SECONDS
    idle: float                 # FS_IDLE_SECONDS


def policy_from(settings):
    return ScalePolicy(settings.scale_target, settings.scale_window, settings.scale_down_seconds,
                       settings.idle_seconds)


class Demand(NamedTuple):
    """What the loop remembers of one MIN-MAX service's load."""
    target: int = 0                                   # instances wanted now
    load: float = 0.0                                 # requests in flight, averaged over the window
    last_request_at: Optional[float] = None           # when a request was last seen (None: never)
    samples: Tuple[Tuple[float, float], ...] = ()     # (time, requests in flight) within the window
    asks: Tuple[Tuple[float, int], ...] = ()          # (time, instances the load asked for) within the delay


def instances_for(load, per_backend):
    """Instances that carry `load` requests in flight with at most per_backend each."""
    return int(math.ceil(load / per_backend - EPSILON)) if load > 0 else 0


def step(demand, now, in_flight, seen_request, low, high, policy):
    """The Demand after one sample. in_flight: requests in flight now (held ones included);
    seen_request: a request began or ended since the last sample (the access log, the proxy)."""
    if seen_request or in_flight > 0:
        demand = demand._replace(last_request_at=now)
    samples = tuple(s for s in demand.samples if s[0] > now - policy.window) + ((now, float(in_flight)),)
    load = sum(value for _, value in samples) / len(samples)
    # A request in flight now asks for one instance at once, whatever the average says.
    asked = max(instances_for(load, policy.per_backend), 1 if in_flight > 0 else 0)
    asks = tuple(a for a in demand.asks if a[0] > now - policy.down_delay) + ((now, asked),)
    recent = demand.last_request_at is not None and now - demand.last_request_at < policy.idle
    # Idle: what the load asked for in the last minutes no longer counts; nobody has asked since.
    target = min(high, max(low, 1, max(count for _, count in asks))) if recent else low
    return Demand(target, load, demand.last_request_at, samples, asks)


def phase(demand, ready, held):
    """'asleep', 'waking' or 'up', as `status` shows a MIN-MAX service."""
    if ready:
        return "up"
    if held or demand.target > 0:
        return "waking"
    return "asleep"
