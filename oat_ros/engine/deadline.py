"""Measured stage costs and the deadline rule of anytime decoding (no torch, no ROS).

The rule: before decoding token k, take the step only if

    now + cost(step k) + cost(finish) <= deadline          (finish = detokenize + publish)

Every cost is predicted as

    cost(stage) = typical(stage) x speed x allowance

plus a fixed `margin` once per decision (timer and bookkeeping between the check and the work).

* typical: the median of the last `window` measurements of that exact stage (mode, batch
  size, token position, ...): robust to rare spikes, follows a lasting change within a few chunks.
* speed: actual / typical of the most recently measured stage. On a shared machine the stages
  slow down and speed up together (a neighbour's load, cache pressure): measured here,
  consecutive steps' ratios correlate at 0.8-0.9, a step's and the detokenizer's at 0.8, so the
  stage just measured predicts the next far better than any fixed quantile can.
* allowance: the `quantile` (default 0.999) of the residual actual / (typical x speed before
  it) over the last `residual_window` measurements of all stages: what the speed does not
  predict. It is learned online like the rest, so the rule is as cautious as the machine
  requires and no more.

In bench/bench_deadline.py (10,000 chunks per budget each, interleaved) it caused 4 misses in
40,000 chunks where per-stage p99 estimates (StageQuantileCostModel) caused 104 (README "Deadlines").
A stage never measured borrows the typical cost of its nearest measured
neighbour, or 0 if nothing was measured (the engine's warm-up measures every stage first).
"""
from __future__ import annotations

import bisect
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

Clock = Callable[[], float]
_EPS = 1e-9  # seconds: float round-off must not turn an exact fit into a miss


class RollingQuantile:
    """A quantile over the last `window` samples (numpy's default linear interpolation).

    The samples are also kept sorted (bisect insert/remove, O(window) memmove in C), so a
    quantile is two list reads: the rule asks for several before every token."""

    def __init__(self, window: int = 128):
        self._samples: deque[float] = deque(maxlen=window)
        self._sorted: list[float] = []

    def add(self, value: float) -> bool:
        """Add a sample; NaN, inf and negative values are ignored (returns False)."""
        if not (math.isfinite(value) and value >= 0):
            return False
        value = float(value)
        if len(self._samples) == self._samples.maxlen:
            del self._sorted[bisect.bisect_left(self._sorted, self._samples[0])]
        self._samples.append(value)
        bisect.insort(self._sorted, value)
        return True

    def __len__(self) -> int:
        return len(self._samples)

    def quantile(self, q: float) -> float:
        ordered = self._sorted
        pos = q * (len(ordered) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class CostModel:
    """Online per-stage cost predictions in seconds, keyed by a tuple such as
    ("step", mode, batch, position), ("tail", batch, n_tail, refine_iters), ("finish", batch)."""

    def __init__(self, quantile: float = 0.999, window: int = 128, residual_window: int = 1024,
                 margin_s: float = 0.0):
        if not 0.5 <= quantile <= 1.0:
            raise ValueError(f"cost quantile {quantile} must be in [0.5, 1]")
        self.quantile = quantile
        self.window = window
        self.margin_s = margin_s
        self._stats: dict[Hashable, RollingQuantile] = {}
        self._residuals = RollingQuantile(residual_window)
        self.speed = 1.0  # actual / typical of the last stage measured

    def observe(self, key: Hashable, seconds: float, track_speed: bool = True):
        """One measurement. track_speed=False for stages too small or too far from the
        decoder to say how fast the machine runs now (e.g. the caller's publish)."""
        stats = self._stats.setdefault(key, RollingQuantile(self.window))
        typical = stats.quantile(0.5) if len(stats) else 0.0  # before this sample joins it
        if stats.add(seconds) and track_speed and typical > 0:
            ratio = seconds / typical
            self._residuals.add(ratio / self.speed)
            self.speed = max(ratio, 1e-3)

    def known(self, key: Hashable) -> bool:
        return len(self._stats.get(key, ())) > 0

    def typical(self, key: Hashable) -> float:
        """Median measured cost of the stage (its nearest measured neighbour if unmeasured)."""
        return self._stage_quantile(key, 0.5)

    def allowance(self) -> float:
        """High quantile of actual / predicted-by-speed; 1 until something was measured."""
        return self._residuals.quantile(self.quantile) if len(self._residuals) else 1.0

    def estimate(self, key: Hashable) -> float:
        """Predicted cost of the stage if it ran now (the margin is added once per decision)."""
        return self.typical(key) * self.speed * self.allowance()

    def _stage_quantile(self, key: Hashable, q: float) -> float:
        """Quantile q of the stage's measurements; an unmeasured position borrows the closest
        measured position of the same stage; 0 if there is none."""
        stats = self._stats.get(key)
        if stats:
            return stats.quantile(q)
        if isinstance(key, tuple) and key and isinstance(key[-1], int):
            same = [(abs(k[-1] - key[-1]), k) for k in self._stats
                    if isinstance(k, tuple) and len(k) == len(key) and k[:-1] == key[:-1] and self._stats[k]]
            if same:
                return self._stats[min(same)[1]].quantile(q)
        return 0.0

    def summary_ms(self) -> dict[str, float]:
        """Typical cost per stage in ms."""
        return {"/".join(map(str, k)): round(self.typical(k) * 1e3, 4) for k in sorted(self._stats, key=str)}

    def factors(self) -> dict[str, float]:
        return {"speed": round(self.speed, 3), "allowance": round(self.allowance(), 3)}


class StageQuantileCostModel(CostModel):
    """The simpler predictor this package used first, kept as the benchmarks' reference:
    cost(stage) = a high quantile (default p99) of that stage's own last `window` measurements,
    no speed factor. It ignores that stages slow down together, so it is both more cautious on
    average and late more often (bench/bench_deadline.py runs both, interleaved)."""

    def __init__(self, quantile: float = 0.99, window: int = 128, margin_s: float = 0.0):
        super().__init__(quantile=quantile, window=window, margin_s=margin_s)

    def observe(self, key: Hashable, seconds: float, track_speed: bool = False):
        super().observe(key, seconds, track_speed=False)  # no speed, no residuals to keep

    def estimate(self, key: Hashable) -> float:
        return self._stage_quantile(key, self.quantile)

    def factors(self) -> dict[str, float]:
        return {"quantile": self.quantile}


@dataclass
class Deadline:
    """An absolute end time on `clock` (None = no deadline)."""

    end: float | None
    clock: Clock = time.perf_counter

    @classmethod
    def from_budget(cls, budget_ms: float, elapsed_s: float = 0.0, clock: Clock = time.perf_counter) -> "Deadline":
        """budget_ms counted from an instant `elapsed_s` seconds before now (0 = no deadline)."""
        if budget_ms <= 0:
            return cls(None, clock)
        return cls(clock() - elapsed_s + budget_ms / 1e3, clock)

    @property
    def active(self) -> bool:
        return self.end is not None

    def remaining(self) -> float:
        return math.inf if self.end is None else self.end - self.clock()

    def fits(self, cost_s: float) -> bool:
        return self.end is None or self.clock() + cost_s <= self.end + _EPS

    def met(self) -> bool:
        return self.end is None or self.clock() <= self.end + _EPS


def plan_tokens(remaining_s: float, step_costs: Sequence[float], finish_s: float, min_tokens: int = 1) -> int:
    """How many of the next steps fit in `remaining_s` (never fewer than min_tokens).

    Used ahead of time where checking the clock per token would cost a host sync (GPU)."""
    n, spent = 0, finish_s
    for cost in step_costs:
        if spent + cost > remaining_s + _EPS:
            break
        spent += cost
        n += 1
    return max(n, min(min_tokens, len(step_costs)))
