"""Time training steps of a preset on synthetic data (no files needed) and estimate the
training time of a dataset.

    python -m oat_ros.train.bench_step --preset default --threads 2 [--batch-size 64]
        [--episodes 500 --episode-length 150]     # dataset size for the epoch estimate

Prints JSON: seconds per step of each stage (tokenizer, policy: batch assembly / forward /
backward / optimizer / EMA, tail on cached features), and the total time of the preset's
step counts.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from ..model.policy import OATPolicy
from ..model.tail import ParallelTailDecoder
from ..model.tokenizer import OATTokenizer
from . import common
from .demos import DemoSet, Windows
from .policy_train import random_crop_offsets, teacher_forcing_logits, to_obs
from .presets import get_preset, policy_config, tail_config, tokenizer_config
from .synthetic import make_episodes
from .tail_train import tail_loss
from .tokenizer_train import sample_keep_k, tokenizer_loss


CPU_TIMES: dict = {}


def _median_time(fn, repeats: int, warmup: int = 1, name: str | None = None) -> float:
    """Median wall seconds per call; the median process CPU seconds go to CPU_TIMES[name]
    (on a shared machine wall time inflates with the load, CPU time much less)."""
    for _ in range(warmup):
        fn()
    ts, cs = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    if name:
        CPU_TIMES[name] = float(np.median(cs))
    return float(np.median(ts))


def _loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m oat_ros.train.bench_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default")
    p.add_argument("--config", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=None, help="policy batch (default: preset)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--episodes", type=int, default=500, help="dataset size for the estimate")
    p.add_argument("--episode-length", type=int, default=150)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    pr = get_preset(args.preset, args.config)
    m = pr.model
    B = args.batch_size or pr.policy.batch_size
    size = m.image_size or 128
    pairs = make_episodes(4, T=(60, 60), image_size=size, cameras=tuple(m.cameras))
    demos = DemoSet.from_episodes([ep for _, ep in pairs]).select_keys(m.cameras, m.states)
    tcfg = tokenizer_config(m)
    out = {"preset": args.preset, "threads": torch.get_num_threads(), "device": str(dev),
           "image_size": size, "crop": m.crop, "cameras": list(m.cameras)}

    # tokenizer
    tok = OATTokenizer(tcfg).to(dev)
    opt = torch.optim.AdamW(tok.parameters(), lr=1e-4)
    w1 = Windows(demos, 1, m.horizon)
    rng = np.random.default_rng(0)

    def tok_step():
        idx = rng.integers(0, len(w1), pr.tokenizer.batch_size)
        loss = tokenizer_loss(tok, torch.from_numpy(w1.actions(idx)).to(dev),
                              sample_keep_k(len(idx), tcfg.latent_horizon, pr.keep_k_mode, rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
    out["tokenizer_s_per_step"] = _median_time(tok_step, args.repeats, name="tokenizer")
    out["tokenizer_batch"] = pr.tokenizer.batch_size

    # policy
    cfg = policy_config(m, demos.cameras, demos.state_dims, tcfg)
    policy = OATPolicy(cfg).to(dev)
    policy.action_tokenizer.requires_grad_(False)
    popt = torch.optim.AdamW(common.param_groups([("model", policy.model), ("enc", policy.obs_encoder)],
                                                 1e-6), lr=1e-4)
    ema = common.EMA(policy) if pr.ema else None
    w = Windows(demos, m.n_obs_steps, m.horizon)
    tokens = torch.randint(0, cfg.vocab_size - 1, (len(w), cfg.n_tokens))
    parts = {"batch": [], "forward": [], "backward": [], "optimizer": [], "ema": []}

    def pol_step():
        t0 = time.perf_counter()
        idx = rng.integers(0, len(w), B)
        obs = to_obs(w.batch(idx), dev)
        crops = random_crop_offsets(policy, B, rng)
        t1 = time.perf_counter()
        logits = teacher_forcing_logits(policy, obs, tokens[idx].to(dev), crops)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 tokens[idx].to(dev).reshape(-1))
        t2 = time.perf_counter()
        popt.zero_grad()
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_([q for g in popt.param_groups for q in g["params"]], 1.0)
        popt.step()
        t4 = time.perf_counter()
        if ema is not None:
            ema.update(policy)
        t5 = time.perf_counter()
        for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            parts[k].append(v)
    total = _median_time(pol_step, args.repeats, name="policy")
    out["policy_batch"] = B
    out["policy_s_per_step"] = total
    out["policy_parts_s"] = {k: round(float(np.median(v[1:] or v)), 4) for k, v in parts.items()}

    # tail on cached features (the frozen encoder runs once per frame, timed per 1000 frames)
    with torch.no_grad():
        imgs = {c: torch.from_numpy(v[:64]).to(dev) for c, v in demos.images.items()}
        sts = {k: torch.from_numpy(v[:64]).to(dev) for k, v in demos.states.items()}
        enc_s = _median_time(lambda: policy.encode_frames(imgs, sts), args.repeats)
    out["encode_frames_s_per_1000"] = enc_s / 64 * 1000
    tc = tail_config(m)
    tail = ParallelTailDecoder(cfg.vocab_size, cfg.embed_dim, tc.n_tail, tc.n_layers, tc.n_heads).to(dev)
    topt = torch.optim.AdamW(tail.parameters(), lr=1e-4)
    TB = pr.tail.batch_size
    mem = torch.randn(TB, m.n_obs_steps, cfg.obs_feature_dim, device=dev)
    tt = torch.randint(0, cfg.vocab_size - 1, (TB, cfg.n_tokens), device=dev)

    def tail_step():
        loss = tail_loss(policy, tail, mem, tt, tc.prefix_len, 1)
        topt.zero_grad()
        loss.backward()
        topt.step()
    out["tail_s_per_step"] = _median_time(tail_step, args.repeats, name="tail")
    out["tail_batch"] = TB

    out["cpu_s_per_step"] = {k: round(v, 4) for k, v in CPU_TIMES.items()}
    out["load_average_1min"] = _loadavg()
    n_frames = args.episodes * args.episode_length
    est = {"tokenizer_h": pr.tokenizer.steps * out["tokenizer_s_per_step"] / 3600,
           "policy_h": pr.policy.steps * total / 3600,
           "tail_h": (pr.tail.steps * out["tail_s_per_step"]
                      + n_frames * out["encode_frames_s_per_1000"] / 1000) / 3600}
    est["total_h"] = sum(est.values())
    out["estimate"] = {"dataset_windows": n_frames, "steps": {"tokenizer": pr.tokenizer.steps,
                       "policy": pr.policy.steps, "tail": pr.tail.steps},
                       "policy_epochs": pr.policy.steps * B / n_frames,
                       **{k: round(v, 2) for k, v in est.items()}}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
