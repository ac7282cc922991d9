"""The chunk queue: which action to apply at time t, given the action chunks received so far.

numpy only (no torch, no rclpy): used by the LIBERO sim bridge and by a robot-side executor.

Definitions
-----------
A *chunk* ``c`` is ``(stamp_s, actions[H, D], n_action_steps, control_period_s, seq)``.
``stamp_s`` is the capture time of the newest observation the chunk was computed from, so
step ``i`` of the chunk is due at ``t_i = stamp_s + i * p`` (``p = control_period_s``).

* **Step at time t**: ``i_c(t) = floor((t - stamp_s) / p + 1e-3)`` — zero-order hold: step ``i``
  is the action from ``t_i`` until ``t_{i+1}`` (the 1e-3 step tolerance absorbs float noise of
  stamps).
* **Used steps**: only steps ``0 .. n-1`` are used, ``n = n_action_steps`` of the chunk or the
  queue's override, clamped to ``H``; steps ``n .. H-1`` are discarded (except by the late
  policy below).
* **Delay compensation** (``add(chunk, now)``): steps already due when the chunk arrives are
  skipped by stamp. The chunk starts at ``s0 = max(0, i_c(now))`` (the step matching ``now``),
  not at step 0; its *activation time* is ``a_c = t_{s0}``. ``now=None`` means ``s0 = 0``
  (lockstep: the chunk's stamp is the time of the request).
* **Active chunk at t**: the newest chunk with ``a_c <= t`` (i.e. ``i_c(t) >= s0``).

Merge rules (``merge=``), for the action at time ``t``:

``latest``
    Latest-only. The active chunk's step ``i_c(t)`` if ``i_c(t) < n``. A new chunk replaces the
    remainder of the older one from its activation on; an older chunk is never used again,
    even if the newer one ends first.
``blend``
    Linear crossfade. When chunk ``c`` is added after chunk ``b`` (the previous one), its
    *overlap* is its used steps ``s0 <= i < n`` that are due before ``b``'s used range ends
    (``t_i < b.stamp + n_b * p``); ``L`` = their number, fixed when ``c`` is added. At overlap
    step ``k = i - s0`` (``0 <= k < L``) the action is ``(1 - w) * prev(t) + w * c[i]`` with
    ``w = (k + 1) / (L + 1)``, where ``prev(t)`` is the queue's output at ``t`` without ``c``
    (so chains of overlaps nest). Before ``c`` is active: ``prev``; after its overlap: ``c``
    alone. Example ``L = 3``: weights of the new chunk 1/4, 2/4, 3/4, then 1.
``ensemble``
    ACT temporal ensembling. All chunks *covering* t (``s0 <= i_c(t) < n``) are averaged with
    weights ``w_j = exp(-m * j)``, ``j = 0`` for the OLDEST covering chunk, ``1`` for the next,
    ... (ACT's indexing), normalized to sum 1. ``m > 0`` favours older chunks (ACT: m = 0.01),
    ``m = 0`` is the plain mean, ``m < 0`` favours newer chunks.

Late policy (``late_policy=``), when no used step covers ``t``: the newest active chunk is
past its used range (``i = i_c(t) >= n``; for ``ensemble``: no chunk covers t):

``hold``
    Return ``None`` (the caller holds its position: zero motion, last gripper command), after
    an optional grace ``hold_grace_s``: steps ``n <= i < n + ceil(grace / p)`` (and ``< H``)
    of the newest active chunk are still used.
``continue``
    Keep executing the newest active chunk beyond ``n`` up to its horizon ``H``; ``None``
    after that.

Rejections (``add`` returns ``(False, reason)``; ``validate_chunk`` / ``make_chunk`` check the
raw message):

* not newer: ``stamp_s`` <= the newest accepted chunk's stamp ("older than the current one");
* late: at arrival every step it could still supply is past (``s0 >=`` the late-policy limit:
  ``n`` for hold, ``n + grace steps`` with a grace, ``H`` for continue);
* invalid: wrong ``action_dim``, ``len(actions) != H * D``, ``H < 1``, ``n_action_steps`` not in
  ``[1, H]`` (without an override), non-finite values, values outside ``[-limit, limit]``
  after the optional clip, non-finite/negative stamp or period.

Lockstep: ``lockstep_actions(chunk)`` = rows ``0 .. n-1``: the chunk's stamp equals the sim
time of the request, so nothing is skipped and exactly ``n`` steps run, one per control step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from oat_ros.errors import InputError

MERGE_RULES = ("latest", "blend", "ensemble")
LATE_POLICIES = ("hold", "continue")
STEP_EPS = 1e-3          # tolerance, in steps, of the step-at-time rounding
_STAMP_EPS_S = 1e-9      # two stamps closer than this are the same stamp


class ChunkRejected(InputError):
    """A chunk that cannot be used; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Chunk:
    """An action chunk. ``actions`` is a read-only float64 array [H, D]."""

    stamp_s: float
    actions: np.ndarray
    n_action_steps: int
    control_period_s: float
    seq: int = 0

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def due_time(self, i: int) -> float:
        """Time at which step i is due: stamp + i * period."""
        return self.stamp_s + i * self.control_period_s

    def step_at(self, t: float) -> int:
        """Index of the step in force at time t (may be < 0 or >= H)."""
        return math.floor((t - self.stamp_s) / self.control_period_s + STEP_EPS)


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------
def validate_chunk(actions, horizon: int, action_dim: int, *, expected_dim: int | None = None,
                   n_action_steps: int | None = None, limit: float | None = None,
                   stamp_s: float | None = None, control_period_s: float | None = None
                   ) -> str | None:
    """Why the raw chunk fields cannot be used, or None if they can.

    ``actions`` is the flat row-major sequence (or an [H, D] array). ``n_action_steps=None``
    skips that check (an override replaces it); ``limit`` checks ``|a| <= limit``;
    ``control_period_s`` may be 0 (= "use the default"), not negative.
    """
    horizon, action_dim = int(horizon), int(action_dim)
    if expected_dim is not None and action_dim != expected_dim:
        return f"action_dim {action_dim} != expected {expected_dim}"
    if horizon < 1 or action_dim < 1:
        return f"empty chunk: horizon {horizon}, action_dim {action_dim}"
    values = np.asarray(actions, dtype=np.float64).reshape(-1)
    if values.size != horizon * action_dim:
        return f"len(actions) {values.size} != horizon {horizon} x action_dim {action_dim}"
    if n_action_steps is not None and not 1 <= int(n_action_steps) <= horizon:
        return f"n_action_steps {n_action_steps} not in [1, horizon {horizon}]"
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(np.argmin(finite))
        return (f"non-finite value {values[bad]} at step {bad // action_dim}, "
                f"dim {bad % action_dim}")
    if limit is not None and values.size and np.abs(values).max() > limit:
        bad = int(np.argmax(np.abs(values)))
        return (f"value {values[bad]:.4g} at step {bad // action_dim}, dim {bad % action_dim} "
                f"outside [-{limit:g}, {limit:g}]")
    if stamp_s is not None and not (math.isfinite(stamp_s) and stamp_s >= 0):
        return f"bad stamp {stamp_s}"
    if control_period_s is not None and not (math.isfinite(control_period_s)
                                             and control_period_s >= 0):
        return f"bad control_period_s {control_period_s}"
    return None


def make_chunk(stamp_s: float, actions, horizon: int, action_dim: int, n_action_steps: int,
               control_period_s: float, seq: int = 0, *, expected_dim: int | None = None,
               clip: float | None = None, limit: float | None = None,
               n_action_steps_override: int | None = None,
               default_period_s: float | None = None) -> tuple[Chunk, bool]:
    """Validate raw chunk fields and build a `Chunk`; returns ``(chunk, clipped)``.

    Order: shape/dim/n/finite checks, then the optional clip to ``[-clip, clip]``, then the
    ``limit`` range check. A ``control_period_s`` of 0 becomes ``default_period_s``. An
    ``n_action_steps_override`` (> 0) replaces the message's value (clamped to H).
    Raises `ChunkRejected` with the reason.
    """
    override = int(n_action_steps_override or 0)
    reason = validate_chunk(actions, horizon, action_dim, expected_dim=expected_dim,
                            n_action_steps=None if override > 0 else n_action_steps,
                            stamp_s=stamp_s, control_period_s=control_period_s)
    if reason:
        raise ChunkRejected(reason)
    values = np.array(actions, dtype=np.float64).reshape(int(horizon), int(action_dim))
    clipped = False
    if clip is not None:
        bounded = np.clip(values, -clip, clip)
        clipped = bool((bounded != values).any())
        values = bounded
    if limit is not None:
        reason = validate_chunk(values, horizon, action_dim, limit=limit)
        if reason:
            raise ChunkRejected(reason)
    period = float(control_period_s)
    if period == 0.0:
        if not default_period_s:
            raise ChunkRejected("control_period_s is 0 and no default period is set")
        period = float(default_period_s)
    n = min(override, int(horizon)) if override > 0 else int(n_action_steps)
    values.setflags(write=False)
    return Chunk(float(stamp_s), values, n, period, int(seq)), clipped


def lockstep_actions(chunk: Chunk, n_action_steps: int | None = None) -> np.ndarray:
    """Lockstep execution: rows 0 .. n-1 (n = override or the chunk's n_action_steps, <= H)."""
    n = int(n_action_steps) if n_action_steps else chunk.n_action_steps
    return chunk.actions[:max(1, min(n, chunk.horizon))]


# ---------------------------------------------------------------------------------------
# queue
# ---------------------------------------------------------------------------------------
@dataclass
class _Entry:
    chunk: Chunk
    n_used: int          # used steps (n)
    start: int           # s0: first step executed (delay compensation)
    usable_end: int      # late policy limit: steps < usable_end can ever be returned
    overlap: int = 0     # blend: L
    arrival_s: float | None = None

    def active(self, t: float) -> bool:
        return self.chunk.step_at(t) >= self.start


@dataclass
class ChunkQueue:
    """Chunks in stamp order and the rule to turn them into one action per time (see module
    docstring for the exact semantics)."""

    merge: str = "latest"
    n_action_steps: int | None = None     # override of every chunk's n_action_steps (> 0)
    ensemble_m: float = 0.01
    late_policy: str = "hold"
    hold_grace_s: float = 0.0
    max_chunks: int = 64
    _entries: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        if self.merge not in MERGE_RULES:
            raise ValueError(f"merge rule '{self.merge}' not in {MERGE_RULES}")
        if self.late_policy not in LATE_POLICIES:
            raise ValueError(f"late policy '{self.late_policy}' not in {LATE_POLICIES}")
        if not (math.isfinite(self.hold_grace_s) and self.hold_grace_s >= 0):
            raise ValueError(f"hold_grace_s {self.hold_grace_s} must be >= 0")
        if not math.isfinite(self.ensemble_m):
            raise ValueError(f"ensemble_m {self.ensemble_m} must be finite")
        if self.n_action_steps is not None and self.n_action_steps < 0:
            raise ValueError(f"n_action_steps override {self.n_action_steps} must be >= 0")

    # -- state ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    @property
    def newest(self) -> Chunk | None:
        return self._entries[-1].chunk if self._entries else None

    def clear(self) -> None:
        self._entries.clear()

    def used_steps(self, chunk: Chunk) -> int:
        n = self.n_action_steps if self.n_action_steps else chunk.n_action_steps
        return max(1, min(int(n), chunk.horizon))

    def _usable_end(self, chunk: Chunk, n_used: int) -> int:
        if self.late_policy == "continue":
            return chunk.horizon
        grace = math.ceil(self.hold_grace_s / chunk.control_period_s - STEP_EPS)
        return min(chunk.horizon, n_used + max(0, grace))

    # -- input ------------------------------------------------------------------------------
    def add(self, chunk: Chunk, now: float | None = None) -> tuple[bool, str]:
        """Queue `chunk` arriving at time `now` (None: start at step 0). Returns
        ``(accepted, reason)``; a rejected chunk leaves the queue unchanged."""
        newest = self.newest
        if newest is not None and chunk.stamp_s <= newest.stamp_s + _STAMP_EPS_S:
            return False, (f"stamp {chunk.stamp_s:.6f} not newer than the current chunk's "
                           f"{newest.stamp_s:.6f} (seq {newest.seq})")
        n_used = self.used_steps(chunk)
        start = 0 if now is None else max(0, chunk.step_at(now))
        usable_end = self._usable_end(chunk, n_used)
        if start >= usable_end:
            return False, (f"late: arrived at step {start} of the chunk, every usable step "
                           f"(< {usable_end}) is past")
        overlap = 0
        if self.merge == "blend" and self._entries:
            prev = self._entries[-1]
            prev_end = prev.chunk.due_time(prev.n_used)
            last = math.ceil((prev_end - chunk.stamp_s) / chunk.control_period_s - STEP_EPS)
            overlap = max(0, min(n_used, last) - start)
        self._entries.append(_Entry(chunk, n_used, start, usable_end, overlap, now))
        if len(self._entries) > self.max_chunks:
            del self._entries[0]
        return True, ""

    # -- output -----------------------------------------------------------------------------
    def action_at(self, t: float) -> tuple[np.ndarray | None, dict]:
        """The action in force at time t (None: nothing covers t, the caller holds) and an info
        dict: ``source`` (chunk | blend | ensemble | continue | grace | none), ``seq`` and
        ``step`` of the newest chunk used, and ``seqs``/``steps``/``weights`` of every chunk
        that contributed. Valid for t >= the last `next_action` time."""
        if self.merge == "ensemble":
            return self._ensemble(t)
        if self.merge == "blend":
            return self._blend(t, len(self._entries))
        return self._latest(t)

    def next_action(self, now: float) -> tuple[np.ndarray | None, dict]:
        """Stepwise consumption: `action_at(now)`, then drop chunks that can no longer
        contribute at any time >= now."""
        result = self.action_at(now)
        self._prune(now)
        return result

    def _active_index(self, t: float, end: int) -> int:
        for j in range(end - 1, -1, -1):
            if self._entries[j].active(t):
                return j
        return -1

    def _late(self, entry: _Entry | None, t: float) -> tuple[np.ndarray | None, dict]:
        if entry is not None:
            i = entry.chunk.step_at(t)
            if entry.n_used <= i < entry.usable_end:
                source = "continue" if self.late_policy == "continue" else "grace"
                return entry.chunk.actions[i].copy(), _info(source, [entry], [i], [1.0])
        return None, _info("none", [], [], [])

    def _latest(self, t: float):
        j = self._active_index(t, len(self._entries))
        if j < 0:
            return None, _info("none", [], [], [])
        entry = self._entries[j]
        i = entry.chunk.step_at(t)
        if i < entry.n_used:
            return entry.chunk.actions[i].copy(), _info("chunk", [entry], [i], [1.0])
        return self._late(entry, t)

    def _blend(self, t: float, end: int):
        j = self._active_index(t, end)
        if j < 0:
            return None, _info("none", [], [], [])
        entry = self._entries[j]
        i = entry.chunk.step_at(t)
        if i >= entry.n_used:
            return self._late(entry, t)
        k = i - entry.start
        own = entry.chunk.actions[i]
        if k < entry.overlap and j > 0:
            prev, prev_info = self._blend(t, j)
            if prev is not None:
                w = (k + 1) / (entry.overlap + 1)
                info = _info("blend", [], [], [])
                info["seqs"] = prev_info["seqs"] + [entry.chunk.seq]
                info["steps"] = prev_info["steps"] + [i]
                info["weights"] = [x * (1 - w) for x in prev_info["weights"]] + [w]
                info["seq"], info["step"] = entry.chunk.seq, i
                return (1 - w) * prev + w * own, info
        return own.copy(), _info("chunk", [entry], [i], [1.0])

    def _ensemble(self, t: float):
        covering, steps = [], []
        for entry in self._entries:               # oldest first: j = 0 is the oldest
            i = entry.chunk.step_at(t)
            if entry.start <= i < entry.n_used:
                covering.append(entry)
                steps.append(i)
        if not covering:
            j = self._active_index(t, len(self._entries))
            return self._late(self._entries[j] if j >= 0 else None, t)
        w = np.exp(-self.ensemble_m * np.arange(len(covering)))
        w = w / w.sum()
        stacked = np.stack([e.chunk.actions[i] for e, i in zip(covering, steps)])
        source = "ensemble" if len(covering) > 1 else "chunk"
        return w @ stacked, _info(source, covering, steps, w.tolist())

    def _prune(self, now: float) -> None:
        entries = self._entries
        keep = []
        for j, entry in enumerate(entries[:-1]):
            nxt = entries[j + 1]
            if self.merge == "latest":
                drop = any(e.active(now) for e in entries[j + 1:])
            elif self.merge == "ensemble":
                drop = entry.chunk.step_at(now) >= entry.n_used
            else:  # blend: needed only while the next chunk's overlap can still come
                drop = nxt.active(now) and nxt.chunk.step_at(now) >= nxt.start + nxt.overlap
            if not drop:
                keep.append(entry)
        if entries:
            keep.append(entries[-1])
        self._entries = keep


def _info(source: str, entries, steps, weights) -> dict:
    seqs = [e.chunk.seq for e in entries]
    return {"source": source, "seq": seqs[-1] if seqs else None,
            "step": steps[-1] if steps else None, "seqs": seqs, "steps": list(steps),
            "weights": list(weights)}
