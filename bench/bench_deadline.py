"""Deadline benchmark: many chunks at several budgets; misses, tokens per chunk, slack.

Each chunk is a full engine call (a new camera frame is encoded, the older one comes from
the frame cache, as on a robot), with the budget counted from the call. Budgets are chosen
from the measured cost of K = 1 and K = 8 in this run: one below the K = 1 cost (every
chunk must come out late with K = 1), one between, one below the K = 8 cost, one above it.
"0 misses at every budget that the K = 1 cost fits in" is the target.

Two cost predictors run at every budget, alternating chunk by chunk so that both see the same
machine: the engine's (typical x speed x allowance, oat_ros.engine.deadline.CostModel) and the
per-stage p99 reference it replaced (StageQuantileCostModel); --chunks each.

    python bench/bench_deadline.py --chunks 10000 --out bench/results/deadline_cpu.json
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm import tqdm

from common import load_or_random, machine, timeit, write_json

from oat_ros.engine.deadline import StageQuantileCostModel
from oat_ros.engine.engine import Engine, Observation
from oat_ros.engine.settings import DecodeSettings


def summarize(budget: float, run: dict, costs) -> dict:
    tokens, met = run["tokens"], run["met"]
    totals = np.asarray(run["totals"])
    slack = budget - totals
    misses = len(met) - sum(met)
    # A miss at K = 1: the budget was gone after encoding + 1 token + detokenizing, nothing could help.
    at_k1 = sum(1 for t, m in zip(tokens, met) if not m and t == 1)
    return {"chunks": len(met), "misses": int(misses), "miss_rate": round(misses / len(met), 5),
            "misses_at_k1": int(at_k1), "misses_with_more_tokens": int(misses - at_k1),
            "tokens_histogram": {int(k): int(v) for k, v in zip(*np.unique(tokens, return_counts=True))},
            "tokens_mean": round(float(np.mean(tokens)), 3), "cost_factors_at_end": costs.factors(),
            "latency_ms": {"p50": round(float(np.percentile(totals, 50)), 3),
                           "p99": round(float(np.percentile(totals, 99)), 3), "max": round(float(totals.max()), 3)},
            "slack_ms": {"p1": round(float(np.percentile(slack, 1)), 3), "p50": round(float(np.percentile(slack, 50)), 3),
                         "min": round(float(slack.min()), 3)}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", help="checkpoint (native dir or original .ckpt); default random weights")
    ap.add_argument("--shape", default="A", choices=["A", "B"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunks", type=int, default=10000, help="chunks per budget and predictor")
    ap.add_argument("--mode", default="ar", choices=["ar", "blockwise"])
    ap.add_argument("--calibration", type=int, default=300, help="chunks timed at K=1 and K=8 to place the budgets")
    ap.add_argument("--budgets-ms", help="comma-separated budgets (default: derived from measured costs)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    policy, source = load_or_random(args.policy, args.shape)
    engine = Engine(policy, device=args.device, max_batch=1)
    # The engine's predictor, and the per-stage p99 reference it replaced, each warmed up.
    rules = {"speed": engine.costs,
             "stage_quantile": StageQuantileCostModel(quantile=0.99, margin_s=engine.costs.margin_s)}
    names = list(rules)
    for name in reversed(names):
        engine.costs = rules[name]
        engine.warmup(repeats=10)
    obs = engine.dummy_observation(1)
    To = engine.cfg.n_obs_steps
    frame = iter(range(10**9))

    def next_obs():
        i = next(frame)
        return Observation(obs.images, obs.states, [[i + t for t in range(To)]])

    sync = torch.cuda.synchronize if engine.device.type == "cuda" else None
    calib = {K: np.asarray(timeit(lambda K=K: engine.predict(next_obs(), DecodeSettings(max_tokens=K)),
                                  args.calibration, sync=sync)) for K in (1, 8)}
    k1, k8 = (float(np.median(calib[K])) for K in (1, 8))
    if args.budgets_ms:
        budgets = [float(b) for b in args.budgets_ms.split(",")]
    else:
        budgets = [round(x, 2) for x in (0.5 * k1, 1.5 * k1, (k1 + k8) / 2, 0.9 * k8, 1.5 * k8)]
    result = {"benchmark": "deadline", "policy": source, "device": str(engine.device), "machine": machine(),
              "mode": args.mode, "median_cost_ms": {"K1": round(k1, 3), "K8": round(k8, 3)},
              "cost_ms": {f"K{K}": {"p50": round(float(np.median(a)), 3), "p99": round(float(np.percentile(a, 99)), 3),
                                    "max": round(float(a.max()), 3), "n": len(a)} for K, a in calib.items()},
              "rules": {name: {"class": type(m).__name__, "quantile": m.quantile, "margin_ms": m.margin_s * 1e3}
                        for name, m in rules.items()},
              "budgets": []}
    for budget in budgets:
        s = DecodeSettings(mode=args.mode, max_tokens=8, deadline_ms=budget, deadline_reference="request")
        runs = {name: {"tokens": [], "totals": [], "met": []} for name in rules}
        # The two predictors alternate chunk by chunk, so both see the same machine conditions.
        for i in tqdm(range(args.chunks * len(rules)), desc=f"budget {budget} ms", leave=False, mininterval=5):
            name = names[i % len(names)]
            engine.costs = rules[name]
            r = engine.predict(next_obs(), s)
            runs[name]["tokens"].append(r.tokens_generated)
            runs[name]["totals"].append(r.total_ms)
            runs[name]["met"].append(r.deadline_met)
        row = {"budget_ms": budget, "k1_median_fits": budget >= k1,
               "k1_p99_fits": budget >= float(np.percentile(calib[1], 99))}
        for name, run in runs.items():
            row[name] = summarize(budget, run, rules[name])
        result["budgets"].append(row)
        for name in names:
            r = row[name]
            print(f"budget {budget:8.2f} ms, {name:15s}: misses {r['misses']}/{r['chunks']} "
                  f"(rule's own {r['misses_with_more_tokens']}), tokens mean {r['tokens_mean']}, "
                  f"slack p50 {r['slack_ms']['p50']} ms, min {r['slack_ms']['min']} ms", flush=True)
    write_json(result, args.out)


if __name__ == "__main__":
    main()
