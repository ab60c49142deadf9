"""Maintenance windows: how long a job submitted now may run so that it ends before a maintenance
reservation begins (pure).

Slurm does not start a job whose time limit crosses a MAINT reservation on its nodes: it waits,
pending with `ReqNodeNotAvail, Reserved for maintenance`, until the reservation ends. Sites announce
maintenance days ahead, so a service asking 8-hour jobs would go dark 8 hours early. Instead, the
replacements submitted before it get a time limit that ends MARGIN before it begins (the margin covers
the replacement's wait in the queue: Slurm starts it only if it ends in time), and the service runs
right up to it. A job too short to be worth starting (less than MIN_JOB, or than the renewal lead: it
would serve for less than its own start takes) is submitted as the script asks and simply waits for
the end of the maintenance, as are all jobs submitted during it, so the service is back as soon as
the nodes are. The service is below N for at most MARGIN plus the minute Slurm's limits are counted
in before the maintenance (and the lead, when even that is too short a job).
"""

import time
from typing import NamedTuple, Optional

MARGIN = 60.0       # seconds between a shortened job's end and the reservation's start
MIN_JOB = 120.0     # a job shorter than this is not worth starting before a maintenance (Slurm: whole minutes)


class Window(NamedTuple):
    """What a maintenance reservation means for a service's next submission."""
    time_limit: Optional[float]     # seconds to ask for (None: what the script asks)
    note: str                       # what `status` says about it ('' when nothing applies)


def window(now, reservations, nodes, script_limit, lead):
    """The Window of a service. reservations: slurm_facts.Reservation; nodes: the nodes its jobs run or
    ran on (a reservation covering none of them is no concern; unknown: every one is); script_limit:
    seconds its script asks (None: unknown or unlimited); lead: its renewal lead."""
    relevant = sorted((r for r in reservations if r.maintenance and r.start is not None and r.covers(nodes)
                       and (r.end is None or r.end > now)), key=lambda r: r.start)
    if not relevant:
        return Window(None, "")
    first = relevant[0]
    if first.start <= now:
        return Window(None, "maintenance %s until %s: jobs wait for its end" % (first.name, _at(first.end)))
    room = first.start - now - MARGIN
    if script_limit is not None and script_limit <= room:
        return Window(None, "maintenance %s at %s: jobs as asked still end before it" % (
            first.name, _at(first.start)))
    if room < max(MIN_JOB, lead):
        return Window(None, "maintenance %s at %s: too close to start a job before it; new jobs wait for "
                            "its end (%s)" % (first.name, _at(first.start), _at(first.end)))
    return Window(room, "maintenance %s at %s: jobs submitted now ask %d min so they end before it"
                  % (first.name, _at(first.start), room // 60))


def _at(when):
    return "?" if when is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(when))
