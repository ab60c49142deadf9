"""The one retry schedule: exponential backoff with a cap and a deterministic jitter.

Jitter spreads retries of many services (or many loops of one user) so that they do not hit
slurmctld in the same second; it is derived from a key rather than from a random generator so
that the pure planner stays deterministic and its tests stay tables.
"""

import zlib


def delay(attempt, base, cap, key="", jitter=0.0):
    """Seconds to wait before retry number `attempt` (1 = first retry): base * 2**(attempt-1),
    at most cap, minus up to `jitter` (a fraction, 0..1) of it, chosen by `key`."""
    if attempt < 1:
        return 0.0
    seconds = min(float(base) * (2 ** min(attempt - 1, 62)), float(cap))
    if jitter and key:
        spread = (zlib.crc32(("%s/%d" % (key, attempt)).encode("utf-8")) % 1000) / 1000.0
        seconds -= seconds * jitter * spread
    return seconds
