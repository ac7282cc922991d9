"""Engine latency per mode, K and batch size, decoder alone and end to end, against a naive
reference decode measured in the same run.

Naive reference = what a first implementation does (and what the original OAT code does):
no KV cache, the whole token sequence re-run through the transformer for every new token,
the cross-attention K/V recomputed each time, and every frame of the observation history
re-encoded for every chunk.

    python bench/bench_engine.py --out bench/results/engine_cpu.json      # CPU
    python bench/bench_engine.py --device cuda --out bench/results/engine_gpu.json
"""
from __future__ import annotations

import argparse

import torch

from common import load_or_random, machine, stats, timeit, write_json

from oat_ros.engine.engine import Engine, Observation
from oat_ros.engine.settings import DecodeSettings


def naive_decode(policy, features, K):
    """No KV cache: the full sequence through model.forward for every token (greedy)."""
    memory = policy.model.encode_memory(features)
    ids = torch.full((features.shape[0], 1), policy.bos_id, dtype=torch.long, device=features.device)
    for _ in range(K):
        logits = policy.model(ids, memory)[:, -1, :-1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids[:, 1:]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", help="checkpoint (native dir or original .ckpt); default random weights")
    ap.add_argument("--shape", default="A", choices=["A", "B"], help="shape of the random policy (A = LIBERO-10)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--compile", action="store_true", help="CPU: torch.compile the decoding step")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    policy, source = load_or_random(args.policy, args.shape)
    engine = Engine(policy, device=args.device, max_batch=max(int(b) for b in args.batches.split(",")),
                    compile_step=args.compile)
    dev = engine.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    result = {"benchmark": "engine", "policy": source, "device": str(dev), "machine": machine(),
              "compile_step": args.compile, "runs": []}
    modes = [("ar", dict(mode="ar", max_tokens=k)) for k in (1, 2, 4, 8)] + \
            [("blockwise", dict(mode="blockwise", prefix_len=4, refine_iters=1))]
    for batch in (int(b) for b in args.batches.split(",")):
        warm = engine.warmup(batch_sizes=(batch,), repeats=3)
        obs = engine.dummy_observation(batch)
        with torch.inference_mode():
            features, _ = engine.encode(obs)
        To = engine.cfg.n_obs_steps
        # Robot case: the older frames were encoded for the previous chunk (frame cache).
        counter = iter(range(10**9))

        def next_obs():
            i = next(counter)
            return Observation(obs.images, obs.states, [[(b, i + t) for t in range(To)] for b in range(batch)])
        for name, kw in modes:
            s = DecodeSettings(**kw)
            K = s.tokens_requested
            backend = engine.backend(batch)

            def decode_only():
                with torch.inference_mode():
                    memory = engine.policy.model.encode_memory(features)
                    backend.begin(memory, 0.0, 0, -1)
                    from oat_ros.engine.anytime import anytime_decode
                    from oat_ros.engine.deadline import Deadline
                    anytime_decode(backend, s, Deadline(None), engine.costs)
                    backend.sync()

            row = {"batch": batch, "mode": name, "K": K, **({"P": 4, "r": 1} if name == "blockwise" else {})}
            row["decode"] = stats(timeit(decode_only, args.repeats, sync=sync))
            row["end_to_end"] = stats(timeit(lambda: engine.predict(next_obs(), s), args.repeats, sync=sync))
            row["end_to_end_no_frame_cache"] = stats(timeit(lambda: engine.predict(obs, s), args.repeats, sync=sync))
            if name == "ar":
                with torch.inference_mode():
                    row["naive_decode"] = stats(timeit(lambda: naive_decode(engine.policy, features, K),
                                                       args.repeats, sync=sync))

                    def naive_e2e():
                        f = engine.policy.encode_obs({**{k: torch.from_numpy(v).to(dev) for k, v in obs.images.items()},
                                                      **{k: torch.from_numpy(v).to(dev) for k, v in obs.states.items()}})
                        tokens = naive_decode(engine.policy, f, K)
                        engine.policy.action_tokenizer.detokenize(tokens, K).cpu()
                    row["naive_end_to_end"] = stats(timeit(naive_e2e, args.repeats, sync=sync))
                row["speedup_decode"] = round(row["naive_decode"]["median_ms"] / row["decode"]["median_ms"], 2)
                row["speedup_end_to_end"] = round(row["naive_end_to_end"]["median_ms"] / row["end_to_end"]["median_ms"], 2)
            result["runs"].append(row)
            print(f"batch {batch} {name:9s} K={K}: decode {row['decode']['median_ms']:.2f} ms, "
                  f"e2e {row['end_to_end']['median_ms']:.2f} ms"
                  + (f", naive decode {row['naive_decode']['median_ms']:.2f} ms (x{row['speedup_decode']}), "
                     f"naive e2e {row['naive_end_to_end']['median_ms']:.2f} ms (x{row['speedup_end_to_end']})"
                     if name == "ar" else ""), flush=True)
        result.setdefault("warmup_s", {})[batch] = round(warm["seconds"], 2)
    write_json(result, args.out)


if __name__ == "__main__":
    main()
