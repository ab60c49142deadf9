"""core/scale.py: instances from requests in flight, up at once, down after the delay, idle to MIN."""

import pytest

from forever_slurm.core import scale

POLICY = scale.ScalePolicy(per_backend=2.0, window=10.0, down_delay=60.0, idle=120.0)


def run(samples, low=0, high=4, policy=POLICY, demand=None, every=2.0, start=1000.0):
    """Feed (in_flight, seen) samples every `every` seconds; returns [(time, Demand)]."""
    demand = demand or scale.Demand()
    out = []
    for index, (in_flight, seen) in enumerate(samples):
        now = start + index * every
        demand = scale.step(demand, now, in_flight, seen, low, high, policy)
        out.append((now, demand))
    return out


@pytest.mark.parametrize("load,per_backend,instances", [
    (0, 2, 0), (0.1, 2, 1), (2, 2, 1), (2.01, 2, 2), (4, 2, 2), (5, 2, 3), (6, 4, 2), (1e-12, 2, 0)])
def test_instances_for(load, per_backend, instances):
    assert scale.instances_for(load, per_backend) == instances


def test_asleep_stays_asleep_without_requests():
    assert [d.target for _, d in run([(0, False)] * 50)] == [0] * 50


def test_a_first_request_asks_for_one_instance_at_once():
    (_, demand), = run([(1, False)])
    assert demand.target == 1 and demand.last_request_at == 1000.0


def test_load_scales_up_within_the_window_and_is_capped_at_max():
    targets = [d.target for _, d in run([(20, True)] * 10)]
    assert targets[0] >= 1 and targets[-1] == 4
    assert targets == sorted(targets), "up only while the load stays"


def test_steady_load_does_not_flap():
    # 3 in flight with 2 per backend: 2 instances, whatever the noise between 2 and 4.
    noisy = [(3, True), (2, True), (4, True), (3, True), (2, True), (4, True)] * 20
    targets = [d.target for _, d in run(noisy)][10:]
    assert set(targets) == {2}


def test_down_only_after_the_delay_and_never_below_min():
    history = run([(8, True)] * 10 + [(1, True)] * 60, low=1)
    # 8 in flight: 4 instances; after the drop to 1 the target stays 4 for down_delay (60 s = 30 samples).
    drop_at = history[10][0]
    for now, demand in history[10:]:
        if now - drop_at < POLICY.down_delay - POLICY.window:
            assert demand.target == 4, now - drop_at
    assert history[-1][1].target == 1


def test_idle_goes_to_min_even_to_zero_and_not_before():
    history = run([(1, True)] + [(0, False)] * 80)
    first = history[0][0]
    for now, demand in history:
        assert demand.target == (1 if now - first < POLICY.idle else 0), now - first


def test_idle_respects_a_nonzero_min():
    history = run([(6, True)] * 5 + [(0, False)] * 100, low=2)
    assert history[-1][1].target == 2


def test_a_request_seen_only_in_the_access_log_keeps_it_awake():
    history = run([(1, True)] + [(0, False)] * 40 + [(0, True)] + [(0, False)] * 40)
    assert all(d.target == 1 for _, d in history), "a short request between samples counts as a request"


def test_samples_and_asks_stay_bounded():
    _, last = run([(3, True)] * 1000)[-1]
    assert len(last.samples) <= POLICY.window / 2 + 1 and len(last.asks) <= POLICY.down_delay / 2 + 1


@pytest.mark.parametrize("target,ready,held,phase", [
    (0, 0, 0, "asleep"), (1, 0, 0, "waking"), (0, 0, 3, "waking"), (1, 1, 0, "up"), (0, 2, 0, "up")])
def test_phase(target, ready, held, phase):
    assert scale.phase(scale.Demand(target=target), ready, held) == phase
