"""The deadline rule stops exactly where it should (injected clock and costs, no model)."""
import pytest

from oat_ros.engine.anytime import anytime_decode, finish_key, step_key, tail_key
from oat_ros.engine.deadline import CostModel, Deadline, plan_tokens
from oat_ros.engine.settings import DecodeSettings
from oat_ros.errors import ConfigError

MS = 1e-3


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class FakeBackend:
    """Each call advances the fake clock by its cost (synchronous, like the CPU backend);
    a deferred backend advances nothing at launch and reports its times afterwards, like CUDA."""

    def __init__(self, clock, step_ms=1.0, tail_ms=2.0, has_tail=True, deferred=False, batch=1):
        self.clock, self.step_ms, self.tail_ms = clock, step_ms, tail_ms
        self.has_tail, self.tail_prefix_len, self.deferred, self.batch = has_tail, None, deferred, batch
        self.calls, self._pending = [], []

    def _spend(self, key, ms):
        if self.deferred:
            self._pending.append((key, ms * MS))
        else:
            self.clock.t += ms * MS

    def ar_step(self, k):
        self.calls.append(("step", k))
        self._spend(None, self.step_ms if not callable(self.step_ms) else self.step_ms(k))

    def tail(self, prefix, r):
        self.calls.append(("tail", prefix, r))
        self._spend(None, self.tail_ms)

    def timed(self, key, fn):
        n = len(self._pending)
        fn()
        self._pending[n:] = [(key, s) for _, s in self._pending[n:]]

    def sync(self):
        self.clock.t += sum(s for _, s in self._pending)

    def measured_times(self):
        out, self._pending = self._pending, []
        return [(k, s) for k, s in out if k is not None]


def costs_for(step_ms=1.0, tail_ms=2.0, finish_ms=0.5, mode="ar", prefix=4, r=1):
    costs = CostModel()
    for k in range(8):
        costs.observe(step_key(mode, 1, k), step_ms * MS)
    costs.observe(tail_key(1, prefix, r), tail_ms * MS)
    costs.observe(finish_key(1), finish_ms * MS)
    return costs


# (settings, budget_ms, elapsed_ms, expected tokens, expected calls summary, used_tail)
CASES = [
    (dict(mode="ar", max_tokens=8), 0.0, 0.0, 8, False),          # no deadline
    (dict(mode="ar", max_tokens=3), 0.0, 0.0, 3, False),
    (dict(mode="ar", max_tokens=8), 100.0, 0.0, 8, False),        # everything fits
    (dict(mode="ar", max_tokens=8), 5.0, 0.0, 4, False),          # (5 - 0.5) / 1 -> 4
    (dict(mode="ar", max_tokens=8), 4.5, 0.0, 4, False),          # exactly fits: 4 + 0.5 <= 4.5
    (dict(mode="ar", max_tokens=8), 4.4999, 0.0, 3, False),
    (dict(mode="ar", max_tokens=8), 10.0, 6.0, 3, False),         # budget counted from capture
    (dict(mode="ar", max_tokens=2), 5.0, 0.0, 2, False),          # K caps it
    (dict(mode="ar", max_tokens=8), 0.2, 0.0, 1, False),          # K = 1 does not fit: still 1
    (dict(mode="ar", max_tokens=8, min_tokens=2), 0.2, 0.0, 2, False),
    (dict(mode="blockwise", prefix_len=4), 7.0, 0.0, 8, True),    # 4 + 2 + 0.5 <= 7
    (dict(mode="blockwise", prefix_len=4), 6.0, 0.0, 5, False),   # tail no, 1 more ar step
    (dict(mode="blockwise", prefix_len=4), 3.0, 0.0, 2, False),   # prefix itself truncated
    (dict(mode="blockwise", prefix_len=8), 100.0, 0.0, 8, False),  # P = 8: pure ar
]


@pytest.mark.parametrize("deferred", [False, True], ids=["sync", "deferred"])
@pytest.mark.parametrize("kwargs,budget,elapsed,tokens,used_tail", CASES)
def test_truncation_table(kwargs, budget, elapsed, tokens, used_tail, deferred):
    clock = FakeClock()
    backend = FakeBackend(clock, deferred=deferred)
    settings = DecodeSettings(deadline_ms=budget, **kwargs)
    costs = costs_for(mode=settings.mode, prefix=settings.prefix_len)
    deadline = Deadline.from_budget(budget, elapsed * MS, clock)
    out = anytime_decode(backend, settings, deadline, costs, clock)
    assert out.tokens == tokens
    assert out.used_tail == used_tail
    assert out.truncated == (tokens < settings.tokens_requested)
    steps = [c for c in backend.calls if c[0] == "step"]
    assert [c[1] for c in steps] == list(range(len(steps)))
    assert len(steps) == (settings.prefix_len if used_tail else tokens)


def test_late_when_even_one_token_does_not_fit():
    clock = FakeClock()
    deadline = Deadline.from_budget(0.2, 0.0, clock)
    out = anytime_decode(FakeBackend(clock), DecodeSettings(deadline_ms=0.2), deadline, costs_for(), clock)
    assert out.tokens == 1 and out.truncated
    assert not deadline.met()


def test_blockwise_without_tail_falls_back_to_ar_and_says_so():
    clock = FakeClock()
    out = anytime_decode(FakeBackend(clock, has_tail=False), DecodeSettings(mode="blockwise"),
                         Deadline(None, clock), costs_for(), clock)
    assert out.mode == "ar" and out.tokens == 8
    assert any("no tail" in n for n in out.notes)


def test_costs_are_learned_online_from_real_steps():
    clock = FakeClock()
    costs = CostModel()
    costs.observe(finish_key(1), 0.5 * MS)
    backend = FakeBackend(clock, step_ms=3.0)
    anytime_decode(backend, DecodeSettings(), Deadline(None, clock), costs, clock)   # learns 3 ms
    out = anytime_decode(backend, DecodeSettings(deadline_ms=10.0), Deadline.from_budget(10.0, 0, clock),
                         costs, clock)
    assert out.tokens == 3   # 3 * 3 + 0.5 <= 10


def test_position_dependent_costs():
    clock = FakeClock()
    step_ms = lambda k: 1.0 + k   # later positions are slower
    costs = CostModel()
    costs.observe(finish_key(1), 0.0)
    backend = FakeBackend(clock, step_ms=step_ms)
    anytime_decode(backend, DecodeSettings(), Deadline(None, clock), costs, clock)
    out = anytime_decode(backend, DecodeSettings(deadline_ms=6.0), Deadline.from_budget(6.0, 0, clock), costs, clock)
    assert out.tokens == 3   # 1 + 2 + 3 = 6


def test_typical_cost_ignores_a_rare_outlier_but_follows_a_lasting_slowdown():
    costs = CostModel(window=100)
    for _ in range(99):
        costs.observe("s", 1 * MS)
    costs.observe("s", 100 * MS)
    assert costs.typical("s") == pytest.approx(1 * MS)
    for _ in range(60):
        costs.observe("s", 5 * MS)
    assert costs.typical("s") == pytest.approx(5 * MS)


def test_the_last_measured_stage_sets_the_speed_of_the_next_prediction():
    costs = CostModel(quantile=0.5)
    for _ in range(10):
        costs.observe("a", 1 * MS)
        costs.observe("b", 4 * MS)
    assert costs.speed == pytest.approx(1.0) and costs.estimate("b") == pytest.approx(4 * MS)
    costs.observe("a", 2 * MS)                       # the machine runs at half speed now
    assert costs.speed == pytest.approx(2.0)
    assert costs.estimate("b") == pytest.approx(8 * MS)
    costs.observe("publish", 9 * MS, track_speed=False)
    assert costs.speed == pytest.approx(2.0)


def test_allowance_is_the_learned_quantile_of_what_speed_does_not_predict():
    import numpy as np
    rng = np.random.default_rng(1)
    costs_s = list(rng.uniform(0.9, 1.3, 600) * MS)
    costs = CostModel(quantile=0.99, window=64, residual_window=1000)
    residuals, prev_ratio = [], 1.0
    for i, c in enumerate(costs_s):
        costs.observe("s", c)
        if i:   # by hand: residual = (cost / median of the previous 64) / the previous such ratio
            ratio = c / float(np.median(costs_s[max(0, i - 64):i]))
            residuals.append(ratio / prev_ratio)
            prev_ratio = ratio
    assert costs.allowance() == pytest.approx(float(np.quantile(residuals, 0.99)), rel=1e-9)
    assert costs.speed == pytest.approx(prev_ratio, rel=1e-9)


def test_a_slowdown_within_the_chunk_stops_decoding_early_enough():
    """Steps and the finish run at half speed from this chunk on: a fixed per-stage estimate
    (the learned 1 ms) would take 5 tokens and miss; the speed-aware rule stops in time."""
    for quantile, tokens in ((0.5, 4), (0.999, 3)):
        clock = FakeClock()
        costs = CostModel(quantile=quantile)
        for _ in range(2):                            # two rounds: medians settle, speed 1
            for k in range(8):
                costs.observe(step_key("ar", 1, k), 1 * MS)
            costs.observe(finish_key(1), 0.5 * MS)
        slow = FakeBackend(clock, step_ms=2.0)
        deadline = Deadline.from_budget(10.0, 0.0, clock)
        out = anytime_decode(slow, DecodeSettings(deadline_ms=10.0), deadline, costs, clock)
        clock.t += 2 * 0.5 * MS                       # the finish runs slow too
        assert deadline.met()
        # speed 2 after step 0: 4 x 2 ms + 1 ms <= 10 ms, a 5th token would miss. The default
        # allowance also learns from step 0's surprise (residual 2) and stops one token sooner.
        assert out.tokens == tokens


def test_unmeasured_position_borrows_its_nearest_neighbour():
    costs = CostModel()
    costs.observe(step_key("ar", 1, 2), 2 * MS)
    assert costs.estimate(step_key("ar", 1, 7)) == pytest.approx(2 * MS)
    assert costs.estimate(step_key("ar", 8, 0)) == 0.0


@pytest.mark.parametrize("remaining,costs,finish,min_tokens,expected", [
    (10, [1] * 8, 0, 1, 8), (4.5, [1] * 8, 0.5, 1, 4), (0.1, [1] * 8, 0, 1, 1), (0.1, [1] * 8, 0, 0, 0),
    (6, [1, 2, 3, 4], 0, 1, 3), (5.9, [1, 2, 3, 4], 0, 1, 2),
])
def test_plan_tokens(remaining, costs, finish, min_tokens, expected):
    assert plan_tokens(remaining, costs, finish, min_tokens) == expected


@pytest.mark.parametrize("bad", [dict(mode="beam"), dict(max_tokens=0), dict(max_tokens=9), dict(prefix_len=0),
                                 dict(deadline_ms=-1), dict(temperature=-0.1), dict(top_k=-1),
                                 dict(deadline_reference="publish"), dict(refine_iters=0)])
def test_bad_settings_name_the_setting(bad):
    with pytest.raises(ConfigError) as err:
        DecodeSettings(**bad)
    assert repr(next(iter(bad))) in str(err.value) or next(iter(bad)) in str(err.value)


def test_rolling_quantile_matches_numpy_and_follows_new_samples():
    import numpy as np
    from oat_ros.engine.deadline import RollingQuantile
    rng = np.random.default_rng(0)
    rq = RollingQuantile(window=50)
    values = rng.exponential(1e-3, 200)
    for i, v in enumerate(values):
        rq.add(v)
        window = values[max(0, i - 49):i + 1]
        for q in (0.5, 0.95, 0.99, 1.0):
            assert rq.quantile(q) == pytest.approx(float(np.quantile(window, q)), rel=1e-12, abs=0)
    rq.add(float("nan"))                 # ignored, and the cached value stays right
    assert rq.quantile(0.99) == pytest.approx(float(np.quantile(values[-50:], 0.99)), rel=1e-12)


def test_reference_predictor_is_the_stage_quantile_without_speed():
    from oat_ros.engine.deadline import StageQuantileCostModel
    costs = StageQuantileCostModel(quantile=0.99, window=100)
    for i in range(100):
        costs.observe("a", (1 + i / 99) * MS)        # 1.00 .. 2.00 ms
    costs.observe("b", 1 * MS)
    costs.observe("b", 3 * MS)                       # a slow stage: no effect on "a"
    assert costs.estimate("a") == pytest.approx(1.99 * MS)
