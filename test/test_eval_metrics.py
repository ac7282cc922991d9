"""Metric functions against numbers computed by hand."""
import math
from types import SimpleNamespace

import pytest

from oat_ros.eval import bags, metrics


def ep(suite="libero_object", task=0, status="success", init=0, seed=0, run="r", index=0,
       start=None):
    return bags.Episode(run, index, suite, task, 10 + task, f"task{task}", "", init, seed,
                        status=status, success=status == "success", start_ns=start)


def chunk(latency=10.0, tokens=8, tokens_max=8, deadline=0.0, met=True, age=1.0, mode="ar",
          truncated=False, episode=0):
    return bags.Chunk(t_ns=0, stamp_ns=0, seq=0, policy_id="p", task_uid=0, horizon=32,
                      action_dim=7, n_action_steps=16, control_period_s=0.05,
                      decode_mode=mode, tokens_generated=tokens, tokens_max=tokens_max,
                      prefix_len=4 if mode == "blockwise" else 0,
                      refine_iters=1 if mode == "blockwise" else 0, temperature=0.0, top_k=0,
                      seed=-1, deadline_ms=deadline, deadline_reference=0, deadline_met=met,
                      truncated=truncated, observation_age_ms=age, latency_ms=latency,
                      encode_ms=1.0, decode_ms=latency - 2, detokenize_ms=1.0, clipped=False,
                      episode=episode)


@pytest.mark.parametrize("k,n,lo,hi", [
    (7, 10, 0.396777, 0.892209),   # textbook: [0.3968, 0.8922]
    (0, 10, 0.0, 0.277533),
    (10, 10, 0.722467, 1.0),
    (3, 6, 0.187616, 0.812384),    # p = .5: .5 -+ z*sqrt(.25/6 + z²/144) / (1 + z²/6)
])
def test_wilson_interval(k, n, lo, hi):
    got = metrics.wilson_interval(k, n)
    assert got[0] == pytest.approx(lo, abs=1e-5) and got[1] == pytest.approx(hi, abs=1e-5)


def test_wilson_empty_and_rate():
    assert metrics.wilson_interval(0, 0) == (None, None)
    assert metrics.rate(0, 0)["rate"] is None
    assert metrics.rate(3, 4)["rate"] == 0.75


def test_quantiles_linear_interpolation():
    q = metrics.quantiles(range(1, 101))
    assert q == {"n": 100, "mean": 50.5, "min": 1.0, "p50": 50.5, "p95": pytest.approx(95.05),
                 "p99": pytest.approx(99.01), "max": 100.0}
    assert metrics.quantiles([])["p50"] is None
    assert metrics.quantiles([5.0, float("nan"), None])["n"] == 1


def test_success_per_task_and_overall():
    eps = [ep(task=0, status="success"), ep(task=0, status="success"),
           ep(task=0, status="failure"), ep(task=0, status="success"),
           ep(task=0, status="aborted"), ep(task=1, status="failure"),
           ep(task=1, status="failure"), ep(task=1, status="incomplete")]
    overall = metrics.success_overall(eps)
    assert (overall["successes"], overall["n"], overall["rate"]) == (3, 6, 0.5)
    assert overall["ci95_low"] == pytest.approx(0.187616, abs=1e-6)
    rows = metrics.success_by_task(eps)
    assert [(r["task_index"], r["successes"], r["n"], r["aborted"], r["incomplete"])
            for r in rows] == [(0, 3, 4, 1, 0), (1, 0, 2, 0, 1)]
    assert rows[0]["rate"] == 0.75 and rows[1]["rate"] == 0.0
    assert rows[1]["ci95_high"] == pytest.approx(1.959964**2 / 2 / (1 + 1.959964**2 / 2),
                                                 abs=1e-5)
    counts = metrics.episode_counts(eps)
    assert counts == {"total": 8, "completed": 6, "success": 3, "failure": 3, "aborted": 1,
                      "incomplete": 1}


def test_deadline_tokens_and_age():
    cs = [chunk(latency=12, tokens=8, deadline=20, met=True, age=1),
          chunk(latency=25, tokens=5, deadline=20, met=False, truncated=True, age=2),
          chunk(latency=30, tokens=3, deadline=20, met=False, truncated=True, age=3),
          chunk(latency=18, tokens=8, deadline=20, met=True, age=4),
          chunk(latency=40, tokens=8, deadline=0, met=True, age=5),
          chunk(latency=50, tokens=8, deadline=0, met=True, age=6)]
    miss = metrics.deadline_misses(cs)
    assert (miss["misses"], miss["n"], miss["rate"], miss["truncated"]) == (2, 4, 0.5, 2)
    hist = metrics.tokens_histogram(cs)
    assert hist["values"] == list(range(9))
    assert hist["counts"] == [0, 0, 0, 1, 0, 1, 0, 0, 4]
    assert hist["mean"] == pytest.approx(40 / 6)
    rows = metrics.tokens_vs_deadline(cs)
    assert [r["deadline_ms"] for r in rows] == [0.0, 20.0]
    assert rows[0]["n"] == 2 and rows[0]["miss_rate"] is None and rows[0]["tokens_mean"] == 8
    assert rows[1]["n"] == 4 and rows[1]["miss_rate"] == 0.5
    assert rows[1]["tokens_mean"] == 6.0 and rows[1]["truncated_rate"] == 0.5
    assert rows[1]["latency_p50"] == 21.5  # median of 12, 18, 25, 30
    age = metrics.observation_age(cs)
    assert age["p50"] == 3.5 and age["max"] == 6 and age["mean"] == 3.5
    lat = metrics.latency(cs)
    assert lat["p50"] == 27.5 and lat["max"] == 50
    assert lat["p95"] == pytest.approx(40 + 0.75 * 10)  # rank 0.95*5 = 4.75


def test_paired_comparison_known_deltas():
    # keys (task, init, seed); A succeeds on 2 of 4 task-0 pairs, B on all 4; task 1: A 1/2, B 0/2
    a = [ep(task=0, init=i, seed=i, status="success" if i < 2 else "failure", run="a", index=i)
         for i in range(4)]
    a += [ep(task=1, init=0, seed=9, status="success", run="a", index=4),
          ep(task=1, init=1, seed=9, status="failure", run="a", index=5),
          ep(task=2, init=0, seed=0, status="success", run="a", index=6)]  # unpaired
    b = [ep(task=0, init=i, seed=i, status="success", run="b", index=i) for i in range(4)]
    b += [ep(task=1, init=0, seed=9, status="failure", run="b", index=4),
          ep(task=1, init=1, seed=9, status="failure", run="b", index=5),
          ep(task=0, init=0, seed=0, status="aborted", run="b", index=7)]  # aborted: ignored
    pairs, only_a, only_b = metrics.pair_episodes(a, b)
    assert len(pairs) == 6 and len(only_a) == 1 and not only_b
    assert all(x.pair_key == y.pair_key for x, y in pairs)
    res = metrics.compare(bags.Dataset(episodes=a), bags.Dataset(episodes=b), "ar", "blockwise")
    overall = res["paired"]["overall"]
    assert overall["n_pairs"] == 6
    assert (overall["a_successes"], overall["b_successes"]) == (3, 4)
    assert overall["delta"] == pytest.approx(1 / 6)
    assert (overall["both"], overall["a_only"], overall["b_only"], overall["neither"]) == \
        (2, 1, 2, 1)
    assert overall["mcnemar_p"] == pytest.approx(1.0)  # 2 * P(X<=1 | n=3) = 2 * 4/8 -> 1
    tasks = {r["task_index"]: r for r in res["paired"]["per_task"]}
    assert tasks[0]["delta"] == 0.5 and tasks[0]["a_rate"] == 0.5 and tasks[0]["b_rate"] == 1.0
    assert tasks[1]["delta"] == -0.5
    assert tasks[2]["n_pairs"] == 0 and tasks[2]["unpaired_a"] == 1
    assert res["paired"]["unpaired_a"] == 1 and res["paired"]["unpaired_b"] == 0


def test_repeated_keys_pair_in_order():
    a = [ep(status=s, start=t, index=t) for t, s in enumerate(["success", "failure"])]
    b = [ep(status=s, start=t, index=t) for t, s in enumerate(["failure", "failure"])]
    pairs, _, _ = metrics.pair_episodes(a, b)
    assert [(x.status, y.status) for x, y in pairs] == [("success", "failure"),
                                                         ("failure", "failure")]


def test_mcnemar_exact():
    assert metrics.mcnemar_exact_p(0, 5) == pytest.approx(2 / 32)
    assert metrics.mcnemar_exact_p(1, 6) == pytest.approx(2 * 8 / 128)
    assert metrics.mcnemar_exact_p(0, 0) is None


def _msg(t, event, index, success=False, run="r", task=0):
    return (t, "bag", SimpleNamespace(event=event, run_id=run, episode_index=index,
                                      suite="s", task_index=task, task_uid=task,
                                      task_name="", language_instruction="",
                                      init_state_index=0, seed=index, success=success,
                                      reason="", step=5, max_steps=10, chunks_executed=2))


def test_episodes_and_chunk_assignment():
    events = [_msg(100, 0, 0), _msg(200, 1, 0, success=True),
              _msg(300, 0, 1), _msg(400, 2, 1),                    # aborted
              _msg(500, 0, 2),                                     # never ended
              _msg(700, 1, 3)]                                     # END without START
    warnings = []
    eps = bags.build_episodes(events, warnings)
    assert [e.status for e in eps] == ["success", "aborted", "incomplete", "failure"]
    assert len(warnings) == 1
    cs = [chunk() for _ in range(6)]
    for c, t in zip(cs, [50, 150, 205, 250, 350, 600]):
        c.t_ns, c.episode, c.run_id = t, None, None
    bags.assign_chunks(eps, cs, grace_ns=10)
    assert [c.episode for c in cs] == [None, 0, 0, None, 1, 2]
    assert [e.n_chunks for e in eps] == [2, 1, 1, 0]
    assert all(c.run_id == "r" for c in cs)  # single run: outside chunks belong to it
    counts = metrics.chunk_counts(cs)
    assert counts["in_episodes"] == 4 and counts["outside_episodes"] == 2
    assert math.isclose(metrics.success_overall(eps)["rate"], 0.5)


@pytest.mark.parametrize("n", [1, 3, 7, 50, 500])
def test_wilson_bounds_are_exact_at_the_extremes(n):
    """0/n and n/n give exactly 0 and 1 (a float residue made negative error bars)."""
    assert metrics.wilson_interval(0, n)[0] == 0.0
    assert metrics.wilson_interval(n, n)[1] == 1.0


def test_success_plot_draws_all_zero_and_all_one_tasks(tmp_path):
    from oat_ros.eval import report
    rows = [{"suite": "libero_object", "task_index": i, **metrics.rate(k, n)}
            for i, (k, n) in enumerate([(0, 3), (3, 3), (0, 50), (1, 2)])]
    path = tmp_path / "success.png"
    report.plot_success_per_task({"ar": rows, "blockwise": rows[::-1]}, path)
    assert path.stat().st_size > 1000


def test_chunks_of_parallel_bags_stay_with_their_own_episodes():
    """Two graphs recorded at the same time (Ray workers): bag A's episode started later than
    bag B's, so a time-only match would hand A's chunks to B's episode and the other way round."""
    def ep_msgs(bag, run, t0, t1, success):
        return [(t0, bag, _msg(t0, 0, 0, run=run)[2]), (t1, bag, _msg(t1, 1, 0, success=success, run=run)[2])]
    events = sorted(ep_msgs("A", "ra", 100, 400, True) + ep_msgs("B", "rb", 150, 900, False))
    eps = bags.build_episodes(events)
    cs = []
    for bag, times in (("A", [120, 200, 300]), ("B", [160, 250, 500, 800])):
        for t in times:
            c = chunk()
            c.t_ns, c.episode, c.run_id, c.bag = t, None, None, bag
            cs.append(c)
    bags.assign_chunks(eps, cs, grace_ns=10)
    assert {c.bag: c.run_id for c in cs} == {"A": "ra", "B": "rb"}
    assert [(e.run_id, e.n_chunks) for e in eps] == [("ra", 3), ("rb", 4)]
