"""Measured stage costs and the deadline rule of anytime decoding (no torch, no ROS).

The rule: before decoding token k, take the step only if

    now + cost(step k) + cost(finish) <= deadline          (finish = detokenize + publish)

where every cost is a high quantile (default p95) of the most recent measurements of that
exact stage (mode, batch size, position): a quantile over a window ignores rare spikes that
would make a mean useless, yet follows a real slowdown within a few chunks. A stage with no
measurement yet is assumed to cost what its nearest measured neighbour costs, or 0 if nothing
was measured (the engine's warm-up measures every stage before the first real chunk).
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

Clock = Callable[[], float]
_EPS = 1e-9  # seconds: float round-off must not turn an exact fit into a miss


class RollingQuantile:
    """A quantile over the last `window` samples (numpy's default linear interpolation).

    The value is cached until the next sample arrives: the deadline rule asks for it before
    every token, and on a CPU a numpy call per token costs more than the bookkeeping should."""

    def __init__(self, window: int = 128):
        self._samples: deque[float] = deque(maxlen=window)
        self._cache: dict[float, float] = {}

    def add(self, value: float):
        if math.isfinite(value) and value >= 0:
            self._samples.append(float(value))
            self._cache.clear()

    def __len__(self) -> int:
        return len(self._samples)

    def quantile(self, q: float) -> float:
        value = self._cache.get(q)
        if value is None:
            ordered = sorted(self._samples)
            pos = q * (len(ordered) - 1)
            lo = int(pos)
            hi = min(lo + 1, len(ordered) - 1)
            value = ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
            self._cache[q] = value
        return value


class CostModel:
    """Online per-stage cost estimates in seconds, keyed by a tuple such as
    ("step", mode, batch, position), ("tail", batch, n_tail, refine_iters), ("finish", batch)."""

    def __init__(self, quantile: float = 0.95, window: int = 128, margin_s: float = 0.0):
        if not 0.5 <= quantile <= 1.0:
            raise ValueError(f"cost quantile {quantile} must be in [0.5, 1]")
        self.quantile = quantile
        self.window = window
        self.margin_s = margin_s
        self._stats: dict[Hashable, RollingQuantile] = {}

    def observe(self, key: Hashable, seconds: float):
        self._stats.setdefault(key, RollingQuantile(self.window)).add(seconds)

    def known(self, key: Hashable) -> bool:
        return len(self._stats.get(key, ())) > 0

    def estimate(self, key: Hashable) -> float:
        stats = self._stats.get(key)
        if stats:
            return stats.quantile(self.quantile) + self.margin_s
        return self._nearest(key)

    def _nearest(self, key: Hashable) -> float:
        """Unmeasured position: borrow the closest measured position of the same stage."""
        if isinstance(key, tuple) and key and isinstance(key[-1], int):
            same = [(abs(k[-1] - key[-1]), k) for k in self._stats
                    if isinstance(k, tuple) and len(k) == len(key) and k[:-1] == key[:-1] and self._stats[k]]
            if same:
                return self._stats[min(same)[1]].quantile(self.quantile) + self.margin_s
        return 0.0

    def summary_ms(self) -> dict[str, float]:
        return {"/".join(map(str, k)): round(self.estimate(k) * 1e3, 4) for k in sorted(self._stats, key=str)}


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
