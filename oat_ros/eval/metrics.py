"""Evaluation metrics: pure functions over episodes and chunks (see ``oat_ros.eval.bags``).

Definitions (also stated in the report):

* success rate = successes / completed episodes (END events); ABORTed and never-ended
  episodes are counted separately and excluded; 95 % Wilson score interval.
* quantiles: numpy ``percentile`` with linear interpolation (type 7), plus max and mean.
* deadline-miss rate = chunks with ``deadline_met == False`` / chunks with ``deadline_ms > 0``.
* paired comparison: completed episodes of A and B with the same
  (suite, task_index, init_state_index, seed) are paired in order of occurrence; delta = B - A;
  McNemar exact two-sided p-value on the discordant pairs.

Functions take any objects with the attributes of ``bags.Episode`` / ``bags.Chunk``.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

Z95 = 1.959963984540054
QUANTILES = (50, 95, 99)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple:
    """Wilson score interval of a binomial proportion; (None, None) when n == 0."""
    if n <= 0:
        return (None, None)
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0/n and n/n the bound is exactly 0 / 1; floating point would leave a residue of 1e-17
    lo = 0.0 if successes <= 0 else max(0.0, center - half)
    hi = 1.0 if successes >= n else min(1.0, center + half)
    return (lo, hi)


def rate(successes: int, n: int) -> dict:
    lo, hi = wilson_interval(successes, n)
    return {"n": n, "successes": successes, "rate": successes / n if n else None,
            "ci95_low": lo, "ci95_high": hi}


def quantiles(values, qs=QUANTILES) -> dict:
    """{n, mean, min, p50, p95, p99, max} of finite values (None entries when empty)."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    out = {"n": int(arr.size)}
    if not arr.size:
        out.update({"mean": None, "min": None, **{f"p{q}": None for q in qs}, "max": None})
        return out
    out["mean"] = float(arr.mean())
    out["min"] = float(arr.min())
    for q, v in zip(qs, np.percentile(arr, qs)):
        out[f"p{q}"] = float(v)
    out["max"] = float(arr.max())
    return out


def ecdf(values) -> tuple:
    """Sorted values and their empirical CDF (i/n)."""
    arr = np.sort(np.asarray(values, dtype=np.float64))
    return arr, np.arange(1, arr.size + 1) / max(arr.size, 1)


# -- episodes ----------------------------------------------------------------------------------

def episode_counts(episodes) -> dict:
    status = Counter(ep.status for ep in episodes)
    return {"total": len(episodes), "completed": status["success"] + status["failure"],
            "success": status["success"], "failure": status["failure"],
            "aborted": status["aborted"], "incomplete": status["incomplete"]}


def success_overall(episodes) -> dict:
    done = [ep for ep in episodes if ep.status in ("success", "failure")]
    return rate(sum(ep.status == "success" for ep in done), len(done))


def success_by_task(episodes) -> list:
    """One row per (suite, task_index), sorted: counts, rate and Wilson CI."""
    groups: dict = defaultdict(list)
    for ep in episodes:
        groups[(ep.suite, ep.task_index)].append(ep)
    rows = []
    for (suite, task_index), eps in sorted(groups.items()):
        counts = episode_counts(eps)
        names = [ep.task_name for ep in eps if ep.task_name]
        row = {"suite": suite, "task_index": task_index,
               "task_name": names[0] if names else "",
               **rate(counts["success"], counts["completed"]),
               "aborted": counts["aborted"], "incomplete": counts["incomplete"]}
        rows.append(row)
    return rows


# -- chunks ------------------------------------------------------------------------------------

def latency(chunks) -> dict:
    return quantiles([c.latency_ms for c in chunks])


def observation_age(chunks) -> dict:
    return quantiles([c.observation_age_ms for c in chunks])


def tokens_histogram(chunks) -> dict:
    """Counts of tokens_generated per value 0..max(tokens_max, tokens_generated)."""
    gen = [int(c.tokens_generated) for c in chunks]
    top = max([int(c.tokens_max) for c in chunks] + gen + [0])
    counts = Counter(gen)
    return {"values": list(range(top + 1)), "counts": [counts.get(v, 0) for v in range(top + 1)],
            "n": len(gen), "mean": float(np.mean(gen)) if gen else None}


def deadline_misses(chunks) -> dict:
    """Miss rate among chunks that had a deadline (deadline_ms > 0), with Wilson CI."""
    with_deadline = [c for c in chunks if c.deadline_ms > 0]
    misses = sum(not c.deadline_met for c in with_deadline)
    out = rate(misses, len(with_deadline))
    out["misses"] = out.pop("successes")
    out["truncated"] = sum(bool(c.truncated) for c in with_deadline)
    return out


def tokens_vs_deadline(chunks) -> list:
    """Per deadline_ms value: tokens generated (mean, histogram), truncation, misses, latency."""
    groups: dict = defaultdict(list)
    for c in chunks:
        groups[round(float(c.deadline_ms), 3)].append(c)
    rows = []
    for deadline, cs in sorted(groups.items()):
        n = len(cs)
        misses = sum(not c.deadline_met for c in cs) if deadline > 0 else 0
        lat = latency(cs)
        rows.append({
            "deadline_ms": deadline, "n": n,
            "tokens_mean": float(np.mean([c.tokens_generated for c in cs])),
            "tokens_max_mean": float(np.mean([c.tokens_max for c in cs])),
            "truncated_rate": sum(bool(c.truncated) for c in cs) / n,
            "miss_rate": misses / n if deadline > 0 else None,
            "latency_p50": lat["p50"], "latency_p95": lat["p95"],
            "histogram": tokens_histogram(cs),
        })
    return rows


def chunk_counts(chunks) -> dict:
    return {"total": len(chunks),
            "in_episodes": sum(c.episode is not None for c in chunks),
            "outside_episodes": sum(c.episode is None for c in chunks),
            "truncated": sum(bool(c.truncated) for c in chunks),
            "clipped": sum(bool(c.clipped) for c in chunks)}


def by_config(chunks) -> dict:
    groups: dict = defaultdict(list)
    for c in chunks:
        groups[c.config_label].append(c)
    return dict(sorted(groups.items()))


# -- one dataset ---------------------------------------------------------------------------------

def evaluate(data) -> dict:
    """All numbers of a report for one ``bags.Dataset``."""
    chunks = data.chunks
    return {
        "bags": list(data.bags),
        "runs": data.runs(),
        "decode": data.decode_label(),
        "warnings": list(data.warnings),
        "episodes": episode_counts(data.episodes),
        "success": {"overall": success_overall(data.episodes),
                    "per_task": success_by_task(data.episodes)},
        "chunks": chunk_counts(chunks),
        "latency_ms": {"all": latency(chunks),
                       "by_config": {k: latency(v) for k, v in by_config(chunks).items()}},
        "stage_ms": {"encode": quantiles([c.encode_ms for c in chunks]),
                     "decode": quantiles([c.decode_ms for c in chunks]),
                     "detokenize": quantiles([c.detokenize_ms for c in chunks])},
        "observation_age_ms": observation_age(chunks),
        "tokens": {"histogram": tokens_histogram(chunks),
                   "by_deadline": tokens_vs_deadline(chunks)},
        "deadline": deadline_misses(chunks),
    }


# -- paired comparison ---------------------------------------------------------------------------

def _order(ep):
    return (ep.start_ns if ep.start_ns is not None else -1, ep.run_id, ep.episode_index)


def pair_episodes(episodes_a, episodes_b) -> tuple:
    """(pairs, unpaired_a, unpaired_b): completed episodes matched on pair_key, in order."""
    def group(eps):
        out: dict = defaultdict(list)
        for ep in sorted((e for e in eps if e.status in ("success", "failure")), key=_order):
            out[(ep.suite, ep.task_index, ep.init_state_index, ep.seed)].append(ep)
        return out

    ga, gb = group(episodes_a), group(episodes_b)
    pairs, only_a, only_b = [], [], []
    for key in sorted(set(ga) | set(gb), key=lambda k: tuple(map(str, k))):
        a, b = ga.get(key, []), gb.get(key, [])
        m = min(len(a), len(b))
        pairs.extend(zip(a[:m], b[:m]))
        only_a.extend(a[m:])
        only_b.extend(b[m:])
    return pairs, only_a, only_b


def mcnemar_exact_p(a_only: int, b_only: int) -> float | None:
    """Two-sided exact McNemar p-value (binomial test of the discordant pairs at 1/2)."""
    n = a_only + b_only
    if n == 0:
        return None
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_summary(pairs) -> dict:
    n = len(pairs)
    a_succ = sum(a.status == "success" for a, _ in pairs)
    b_succ = sum(b.status == "success" for _, b in pairs)
    both = sum(a.status == "success" and b.status == "success" for a, b in pairs)
    a_only, b_only = a_succ - both, b_succ - both
    return {
        "n_pairs": n, "a_successes": a_succ, "b_successes": b_succ,
        "a_rate": a_succ / n if n else None, "b_rate": b_succ / n if n else None,
        "delta": (b_succ - a_succ) / n if n else None,
        "both": both, "a_only": a_only, "b_only": b_only, "neither": n - both - a_only - b_only,
        "mcnemar_p": mcnemar_exact_p(a_only, b_only),
    }


def _delta(a, b):
    return None if a is None or b is None else b - a


def compare(data_a, data_b, label_a: str = "A", label_b: str = "B") -> dict:
    """Paired comparison of two datasets (runs on the same tasks / init states / seeds)."""
    pairs, only_a, only_b = pair_episodes(data_a.episodes, data_b.episodes)
    per_task: dict = defaultdict(list)
    for a, b in pairs:
        per_task[(a.suite, a.task_index)].append((a, b))
    names = {}
    for ep in [*data_a.episodes, *data_b.episodes]:
        if ep.task_name:
            names.setdefault((ep.suite, ep.task_index), ep.task_name)
    tasks = []
    for key in sorted(set(per_task) | {(e.suite, e.task_index) for e in only_a + only_b}):
        row = {"suite": key[0], "task_index": key[1], "task_name": names.get(key, ""),
               **paired_summary(per_task.get(key, [])),
               "unpaired_a": sum((e.suite, e.task_index) == key for e in only_a),
               "unpaired_b": sum((e.suite, e.task_index) == key for e in only_b)}
        tasks.append(row)

    def chunk_side(data):
        return {"latency_ms": latency(data.chunks),
                "observation_age_ms": observation_age(data.chunks),
                "tokens_mean": tokens_histogram(data.chunks)["mean"],
                "deadline_miss_rate": deadline_misses(data.chunks)["rate"],
                "n_chunks": len(data.chunks)}

    ca, cb = chunk_side(data_a), chunk_side(data_b)
    chunk_delta = {
        "latency_ms": {k: _delta(ca["latency_ms"][k], cb["latency_ms"][k])
                       for k in ("mean", "p50", "p95", "p99", "max")},
        "observation_age_ms": {k: _delta(ca["observation_age_ms"][k],
                                         cb["observation_age_ms"][k])
                               for k in ("mean", "p50", "p95", "p99", "max")},
        "tokens_mean": _delta(ca["tokens_mean"], cb["tokens_mean"]),
        "deadline_miss_rate": _delta(ca["deadline_miss_rate"], cb["deadline_miss_rate"]),
    }
    return {
        "labels": {"a": label_a, "b": label_b},
        "a": evaluate(data_a), "b": evaluate(data_b),
        "paired": {"overall": paired_summary(pairs), "per_task": tasks,
                   "unpaired_a": len(only_a), "unpaired_b": len(only_b)},
        "chunks": {"a": ca, "b": cb, "delta": chunk_delta},
    }
