"""Deadline-aware anytime decoding: how many tokens to generate, decided step by step.

Works over any backend with this shape (the torch one is oat_ros.engine.backend):

    batch: int, deferred: bool (True: steps run asynchronously, e.g. CUDA; False: CPU)
    has_tail: bool, tail_prefix_len: int | None
    ar_step(k)              decode token k (0-based) into the backend's token buffer
    tail(prefix_len, r)     fill tokens prefix_len..7 in one parallel pass (+ r-1 refinements)
    timed(key, fn)          deferred backends: run fn and time it on the device under `key`
    measured_times()        deferred backends: [(cost key, seconds)] timed since the last call,
                            measured on the device (CUDA events), valid after sync()
    sync()                  wait for the device

Rules (README "Deadlines"):
* ar mode: token k is decoded only if `now + cost(step k) + cost(finish) + margin <= deadline`,
  where finish = detokenize + publish and every cost is the cost model's prediction for now
  (typical x current speed x allowance, oat_ros.engine.deadline); the first `min_tokens`
  tokens (default 1) are always decoded, so a chunk whose deadline cannot be met is still
  published with K = 1 and flagged late.
* blockwise mode: the prefix follows the ar rule; the tail is all-or-nothing: it runs only if
  `now + cost(tail) + cost(finish) + margin <= deadline`. If it does not fit, decoding
  continues token by token in ar mode (each step adds a token) while steps fit.
* deferred backends (GPU) never wait for the device per token: `now` is the host clock plus the
  estimated cost of the work launched but not yet waited for, so the decision is conservative
  and costs no synchronization; the device-measured times update the cost model afterwards.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from oat_ros.engine.deadline import Clock, CostModel, Deadline
from oat_ros.engine.settings import MAX_TOKENS, DecodeSettings


def step_key(mode: str, batch: int, k: int) -> tuple:
    return ("step", mode, batch, k)


def tail_key(batch: int, prefix_len: int, refine_iters: int) -> tuple:
    return ("tail", batch, MAX_TOKENS - prefix_len, refine_iters)


def finish_key(batch: int) -> tuple:
    """Detokenizing the chunk."""
    return ("finish", batch)


def publish_key(batch: int) -> tuple:
    """What the caller spends after the engine returns (message fill + publish)."""
    return ("publish", batch)


@dataclass
class DecodeOutcome:
    tokens: int                       # tokens decoded by the model (the rest become MASK)
    mode: str                         # what ran: "ar" or "blockwise"
    used_tail: bool = False
    truncated: bool = False           # fewer tokens than requested because of the deadline
    notes: list[str] = field(default_factory=list)


def anytime_decode(backend, settings: DecodeSettings, deadline: Deadline, costs: CostModel,
                   clock: Clock = time.perf_counter) -> DecodeOutcome:
    batch = backend.batch
    queued = 0.0  # deferred backends: estimated seconds of launched, not yet awaited work
    notes: list[str] = []

    def fits(cost: float) -> bool:
        # finish is re-estimated per decision: the cost model's speed moves with every step
        finish = costs.estimate(finish_key(batch)) + costs.estimate(publish_key(batch))
        return deadline.fits(queued + cost + finish + costs.margin_s)

    def run(key, fn):
        nonlocal queued
        if backend.deferred:
            backend.timed(key, fn)
            queued += costs.estimate(key)
        else:
            t0 = clock()
            fn()
            costs.observe(key, clock() - t0)

    def ar_steps(start: int, stop: int, mode: str) -> int:
        k = start
        while k < stop:
            key = step_key(mode, batch, k)
            if k >= settings.min_tokens and not fits(costs.estimate(key)):
                break
            run(key, lambda k=k: backend.ar_step(k))
            k += 1
        return k

    mode = settings.mode
    if mode == "blockwise" and not backend.has_tail:
        notes.append("blockwise requested but no tail decoder is loaded: decoded in ar mode")
        mode = "ar"
    if mode == "blockwise" and backend.tail_prefix_len not in (None, settings.prefix_len):
        notes.append(f"the loaded tail was trained for prefix_len={backend.tail_prefix_len}, "
                     f"not {settings.prefix_len}: decoded in ar mode")
        mode = "ar"

    if mode == "ar":
        n = ar_steps(0, settings.max_tokens, "ar")
        outcome = DecodeOutcome(n, "ar", truncated=n < settings.max_tokens, notes=notes)
    else:
        prefix = min(settings.prefix_len, MAX_TOKENS)
        n = ar_steps(0, prefix, "blockwise")
        used_tail = False
        if n == prefix and prefix < MAX_TOKENS:
            key = tail_key(batch, prefix, settings.refine_iters)
            if fits(costs.estimate(key)):
                run(key, lambda: backend.tail(prefix, settings.refine_iters))
                n, used_tail = MAX_TOKENS, True
            else:
                notes.append("tail did not fit the deadline: continued token by token")
                n = ar_steps(prefix, MAX_TOKENS, "blockwise")
        outcome = DecodeOutcome(n, "blockwise", used_tail=used_tail, truncated=n < MAX_TOKENS, notes=notes)

    if backend.deferred:
        backend.sync()
        for key, seconds in backend.measured_times():
            costs.observe(key, seconds)
    return outcome
