"""oat_ros.chunks: the documented action sequences of every merge rule, delay compensation,
late policies, lockstep and rejections (tables: inputs -> expected per-tick actions)."""
import math

import numpy as np
import pytest

from oat_ros.chunks import (Chunk, ChunkQueue, ChunkRejected, lockstep_actions, make_chunk,
                            validate_chunk)

P = 0.05   # control period (LIBERO 20 Hz)
D = 3      # small action dim for readable tables


def chunk(stamp_steps, base, n=4, horizon=8, seq=0, period=P):
    """Chunk whose step i is the vector full(base + i): the expected tables read as scalars."""
    actions = np.repeat((base + np.arange(horizon, dtype=np.float64))[:, None], D, axis=1)
    return Chunk(stamp_steps * period, actions, n, period, seq)


def bl(old, new, w):
    """The documented crossfade value (1 - w) * old + w * new."""
    return (1 - w) * old + w * new


def run(queue, events, ticks):
    """events: {tick: [(chunk, arrival_tick or None), ...]} added before the tick's action.
    Returns the scalar action per tick (None = hold) and the infos."""
    out, infos = [], []
    for k in range(ticks):
        for c, arrival in events.get(k, []):
            ok, reason = queue.add(c, None if arrival is None else arrival * P)
            assert ok, reason
        action, info = queue.next_action(k * P)
        infos.append(info)
        if action is None:
            out.append(None)
        else:
            assert np.allclose(action, action[0]), action
            out.append(float(action[0]))
    return out, infos


E = math.exp
CASES = {
    # name: (queue kwargs, events, expected per tick)
    "latest_lockstep": (
        dict(merge="latest"), {0: [(chunk(0, 0), 0)]},
        [0, 1, 2, 3, None, None]),
    "latest_delay_compensation": (   # computed from stamp 0, arrives at tick 2: starts at step 2
        dict(merge="latest"), {2: [(chunk(0, 0), 2)]},
        [None, None, 2, 3, None, None]),
    "latest_replaces_remainder": (   # B (stamp 1) arrives at tick 2 -> its step 1
        dict(merge="latest"), {0: [(chunk(0, 0), 0)], 2: [(chunk(1, 100, seq=1), 2)]},
        [0, 1, 101, 102, 103, None, None]),
    "latest_newer_ends_first_no_fallback": (  # A (n=8) is not resumed after B (n=2) ends
        dict(merge="latest"),
        {0: [(chunk(0, 0, n=8), 0)], 2: [(chunk(2, 100, n=2, seq=1), 2)]},
        [0, 1, 100, 101, None, None]),
    "n_action_steps_override": (
        dict(merge="latest", n_action_steps=2), {0: [(chunk(0, 0), 0)]},
        [0, 1, None, None]),
    "hold_grace": (                  # grace 0.1 s = 2 steps beyond n = 4
        dict(merge="latest", hold_grace_s=0.1), {0: [(chunk(0, 0), 0)]},
        [0, 1, 2, 3, 4, 5, None, None]),
    "continue_to_horizon": (
        dict(merge="latest", late_policy="continue"), {0: [(chunk(0, 0, horizon=6), 0)]},
        [0, 1, 2, 3, 4, 5, None]),
    "continue_then_new_chunk": (     # late B (stamp 3, arrives 5 -> step 2) takes over A's tail
        dict(merge="latest", late_policy="continue"),
        {0: [(chunk(0, 0), 0)], 5: [(chunk(3, 100, seq=1), 5)]},
        [0, 1, 2, 3, 4, 102, 103, 104, 105, 106, 107, None]),
    "blend_crossfade": (             # A n=8; B stamp 2 arrives 3 (s0=1), A ends at 8 -> L=5
        dict(merge="blend"),
        {0: [(chunk(0, 0, n=8, horizon=10), 0)],
         3: [(chunk(2, 100, n=8, horizon=10, seq=1), 3)]},
        [0, 1, 2, bl(3, 101, 1 / 6), bl(4, 102, 2 / 6), bl(5, 103, 3 / 6), bl(6, 104, 4 / 6),
         bl(7, 105, 5 / 6), 106, 107, None]),
    "blend_no_overlap_is_latest": (  # B arrives exactly when A's used range ends: L = 0
        dict(merge="blend"),
        {0: [(chunk(0, 0), 0)], 4: [(chunk(4, 100, seq=1), 4)]},
        [0, 1, 2, 3, 100, 101, 102, 103, None]),
    "blend_nested": (                # C crossfades from the (A->B) blend: L_B = 2, L_C = 3
        dict(merge="blend"),
        {0: [(chunk(0, 0), 0)], 2: [(chunk(2, 100, seq=1), 2)],
         3: [(chunk(3, 200, seq=2), 3)]},
        [0, 1, bl(2, 100, 1 / 3), bl(bl(3, 101, 2 / 3), 200, 1 / 4), bl(102, 201, 2 / 4),
         bl(103, 202, 3 / 4), 203, None]),
    "ensemble_act_weights": (        # m = 0.5; j = 0 is the oldest covering chunk
        dict(merge="ensemble", ensemble_m=0.5),
        {0: [(chunk(0, 0), 0)], 2: [(chunk(2, 100, seq=1), 2)]},
        [0, 1, (2 + E(-.5) * 100) / (1 + E(-.5)), (3 + E(-.5) * 101) / (1 + E(-.5)),
         102, 103, None]),
    "ensemble_three_chunks": (
        dict(merge="ensemble", ensemble_m=0.5),
        {0: [(chunk(0, 0), 0)], 1: [(chunk(1, 100, seq=1), 1)], 2: [(chunk(2, 200, seq=2), 2)]},
        [0, (1 + E(-.5) * 100) / (1 + E(-.5)),
         (2 + E(-.5) * 101 + E(-1) * 200) / (1 + E(-.5) + E(-1)),
         (3 + E(-.5) * 102 + E(-1) * 201) / (1 + E(-.5) + E(-1)),
         (103 + E(-.5) * 202) / (1 + E(-.5)), 203, None]),
    "ensemble_m0_is_mean_with_delay": (  # B stamp 1 arrives at 3: covers from its step 2
        dict(merge="ensemble", ensemble_m=0.0),
        {0: [(chunk(0, 0), 0)], 3: [(chunk(1, 100, seq=1), 3)]},
        [0, 1, 2, (3 + 102) / 2, 103, None]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_documented_sequences(name):
    kwargs, events, expected = CASES[name]
    got, _ = run(ChunkQueue(**kwargs), events, len(expected))
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected)):
        if e is None:
            assert g is None, (name, k, got)
        else:
            assert g is not None and math.isclose(g, e, rel_tol=1e-12, abs_tol=1e-12), \
                (name, k, got, expected)


def test_info_reports_sources_and_weights():
    _, infos = run(ChunkQueue(merge="blend"),
                   {0: [(chunk(0, 0, n=8, horizon=10), 0)],
                    3: [(chunk(2, 100, n=8, horizon=10, seq=1), 3)]}, 11)
    assert [i["source"] for i in infos] == ["chunk"] * 3 + ["blend"] * 5 + ["chunk"] * 2 + ["none"]
    assert infos[3]["seqs"] == [0, 1] and infos[3]["steps"] == [3, 1]
    assert infos[3]["weights"] == pytest.approx([5 / 6, 1 / 6])
    _, infos = run(ChunkQueue(merge="latest", late_policy="continue"),
                   {0: [(chunk(0, 0), 0)]}, 5)
    assert [i["source"] for i in infos] == ["chunk"] * 4 + ["continue"]
    assert infos[4]["step"] == 4


def test_action_at_is_pure_and_next_action_prunes():
    q = ChunkQueue(merge="latest")
    q.add(chunk(0, 0), 0.0)
    q.add(chunk(1, 100, seq=1), 1 * P)
    a, _ = q.action_at(0.0)
    assert a[0] == 0 and len(q) == 2
    a, _ = q.action_at(2 * P)
    assert a[0] == 101 and len(q) == 2       # action_at does not consume
    q.next_action(2 * P)
    assert len(q) == 1 and q.newest.seq == 1


def test_float_noise_in_stamps_does_not_shift_steps():
    q = ChunkQueue()
    c = chunk(0, 0)
    c = Chunk(1000.05, c.actions, 4, P)
    q.add(c, 1000.05 + 2 * P - 1e-9)          # arrival a hair before step 2 is due
    a, info = q.next_action(1000.05 + 2 * 0.05000001)
    assert info["step"] == 2 and a[0] == 2


def test_lockstep_helper_matches_queue():
    c = chunk(7, 0, n=5, horizon=8)
    rows = lockstep_actions(c)
    assert rows.shape == (5, D) and rows[:, 0].tolist() == [0, 1, 2, 3, 4]
    q = ChunkQueue()
    q.add(c)                                  # no arrival time: starts at step 0
    seq = [q.next_action(c.due_time(k))[0] for k in range(5)]
    np.testing.assert_array_equal(np.stack(seq), rows)
    assert lockstep_actions(c, 2).shape == (2, D)
    assert lockstep_actions(c, 99).shape == (8, D)


REJECT_ADD = {
    # name: (queue kwargs, first (chunk, now) or None, rejected (chunk, now), reason fragment)
    "older_stamp": (dict(), (chunk(5, 0), 5 * P), (chunk(4, 0, seq=1), 5 * P), "not newer"),
    "same_stamp": (dict(), (chunk(5, 0), 5 * P), (chunk(5, 0, seq=1), 5 * P), "not newer"),
    "late_hold": (dict(), None, (chunk(0, 0, n=4), 4 * P), "late"),
    "late_beyond_grace": (dict(hold_grace_s=0.1), None, (chunk(0, 0, n=4), 6 * P), "late"),
    "late_beyond_horizon": (dict(late_policy="continue"), None, (chunk(0, 0), 8 * P), "late"),
}


@pytest.mark.parametrize("name", sorted(REJECT_ADD))
def test_queue_rejections(name):
    kwargs, first, bad, fragment = REJECT_ADD[name]
    q = ChunkQueue(**kwargs)
    if first:
        assert q.add(*first)[0]
    before = len(q)
    ok, reason = q.add(*bad)
    assert not ok and fragment in reason, reason
    assert len(q) == before


def test_late_chunk_accepted_when_policy_can_use_it():
    q = ChunkQueue(late_policy="continue")
    assert q.add(chunk(0, 0, n=4), 5 * P) == (True, "")
    a, info = q.next_action(5 * P)
    assert a[0] == 5 and info["source"] == "continue"
    q = ChunkQueue(hold_grace_s=0.1)
    assert q.add(chunk(0, 0, n=4), 5 * P)[0]
    assert q.next_action(5 * P)[0][0] == 5 and q.next_action(6 * P)[0] is None


GOOD = dict(horizon=4, action_dim=7, n_action_steps=2, control_period_s=P)
VALIDATION = {
    # name: (overrides, make_chunk kwargs, reason fragment)
    "wrong_dim": (dict(action_dim=6, actions=np.zeros(24)), {}, "action_dim 6 != expected 7"),
    "wrong_length": (dict(actions=np.zeros(27)), {}, "len(actions) 27 != horizon 4 x action_dim 7"),
    "nan": (dict(actions=np.r_[np.zeros(10), np.nan, np.zeros(17)]), {}, "non-finite value nan at step 1, dim 3"),
    "inf": (dict(actions=np.r_[np.zeros(27), np.inf]), {}, "non-finite value inf at step 3, dim 6"),
    "n_zero": (dict(n_action_steps=0), {}, "n_action_steps 0 not in [1, horizon 4]"),
    "n_too_big": (dict(n_action_steps=5), {}, "n_action_steps 5 not in [1, horizon 4]"),
    "empty": (dict(horizon=0, actions=np.zeros(0)), {}, "empty chunk"),
    "out_of_range": (dict(actions=np.r_[np.zeros(8), 1.5, np.zeros(19)]), dict(limit=1.0),
                     "value 1.5 at step 1, dim 1 outside [-1, 1]"),
    "negative_period": (dict(control_period_s=-0.05), {}, "bad control_period_s"),
    "zero_period_no_default": (dict(control_period_s=0.0), {}, "no default period"),
    "nan_stamp": (dict(stamp_s=float("nan")), {}, "bad stamp"),
}


@pytest.mark.parametrize("name", sorted(VALIDATION))
def test_make_chunk_rejects_with_reason(name):
    overrides, kwargs, fragment = VALIDATION[name]
    fields = dict(GOOD, stamp_s=1.0, actions=np.zeros(28))
    fields.update(overrides)
    with pytest.raises(ChunkRejected) as err:
        make_chunk(fields.pop("stamp_s"), fields.pop("actions"), **fields, expected_dim=7,
                   **kwargs)
    assert fragment in err.value.reason


def test_make_chunk_clip_override_and_default_period():
    flat = np.r_[np.zeros(8), 1.5, np.zeros(18), -2.0]
    c, clipped = make_chunk(1.0, flat, **dict(GOOD, control_period_s=0.0), expected_dim=7,
                            clip=1.0, limit=1.0, default_period_s=P, seq=9)
    assert clipped and c.actions[1, 1] == 1.0 and c.actions[3, 6] == -1.0
    assert c.control_period_s == P and c.seq == 9 and c.n_action_steps == 2
    assert not c.actions.flags.writeable
    c, clipped = make_chunk(1.0, np.zeros(28), **dict(GOOD, n_action_steps=0),
                            n_action_steps_override=16)
    assert not clipped and c.n_action_steps == 4          # override clamped to the horizon
    assert validate_chunk(np.zeros(28), 4, 7, expected_dim=7, n_action_steps=2) is None


def test_bad_queue_settings_raise():
    for kwargs in (dict(merge="avg"), dict(late_policy="wait"), dict(hold_grace_s=-1),
                   dict(ensemble_m=float("nan")), dict(n_action_steps=-1)):
        with pytest.raises(ValueError):
            ChunkQueue(**kwargs)
