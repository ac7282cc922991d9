"""Train the OAT AR policy (observation encoder + AR transformer) on tokenized demonstrations.

The tokenizer is frozen: every training window's action chunk is tokenized once up front.
A step: random crop (per image) of the normalized camera frames -> observation features
[B,To,F] -> memory -> teacher forcing on [BOS, z1..z7] -> cross-entropy against z1..z8.
Evaluation uses the centre crop (the node's), greedy decoding of all 8 tokens and reports
held-out cross-entropy, token accuracy and the action MSE of the decoded chunk.

Outputs in --out:
  export/           native policy (model.safetensors + config.yaml): a complete OATPolicy with
                    the tokenizer and every normalizer; `oat_ros.checkpoint.load_policy(OUT/export)`
                    and the node's `policy_path` take it. EMA weights when EMA is on (default).
  train_state.pt    resumable state (model, EMA, optimizer, schedule, step), every --save-every
  normalizer.json   the fitted `limits` statistics; log.jsonl: losses, timings, evaluations

    python -m oat_ros.train.policy_train --data demos64.npz --tokenizer runs/tok --out runs/pol
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import save_native
from ..model.policy import OATPolicy
from . import common
from .demos import (Windows, add_data_args, fit_normalizers, flip_arg, load_demos, load_stats,
                    split_episodes, stats_to_json)
from .presets import get_preset, policy_config, stage_with_args
from .tokenizer_io import load_tokenizer


def resolve_tokenizer_path(path: str) -> str:
    """Accept a tokenizer_train output directory (OUT/tokenizer inside) as well."""
    sub = os.path.join(path, "tokenizer")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "tokenizer.yaml")) \
            and os.path.isfile(os.path.join(sub, "tokenizer.yaml")):
        return sub
    return path


@torch.no_grad()
def tokenize_windows(tok, windows: Windows, batch: int = 2048, device="cpu") -> torch.Tensor:
    tok = tok.to(device).eval()
    out = []
    for i in range(0, len(windows), batch):
        ids = np.arange(i, min(i + batch, len(windows)))
        out.append(tok.tokenize(torch.from_numpy(windows.actions(ids)).to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0, tok.cfg.latent_horizon, dtype=torch.long)


def to_obs(batch: dict, device) -> dict:
    """numpy window batch -> the policy's obs dict (uint8 images, float32 states) on device."""
    obs = {c: torch.from_numpy(np.ascontiguousarray(v)).to(device) for c, v in batch["images"].items()}
    obs.update({k: torch.from_numpy(np.ascontiguousarray(v)).to(device, torch.float32)
                for k, v in batch["states"].items()})
    return obs


def random_crop_offsets(policy: OATPolicy, B: int, rng: np.random.Generator) -> dict | None:
    """{cam: LongTensor [B*To, 2] (top, left)} uniform over every valid crop (robomimic's)."""
    cfg = policy.cfg
    ch, cw = cfg.crop_shape
    out = {}
    for cam, (H, W, _) in cfg.cameras.items():
        n = B * cfg.n_obs_steps
        out[cam] = torch.from_numpy(np.stack([rng.integers(0, H - ch + 1, n),
                                              rng.integers(0, W - cw + 1, n)], 1)).long()
    return out or None


def teacher_forcing_logits(policy: OATPolicy, obs: dict, tokens: torch.Tensor, crop_offsets=None):
    """obs {key: [B,To,...]}, tokens [B,L] -> logits [B,L,V] for z1..zL (BOS-shifted input)."""
    feats = policy.encode_obs(obs, crop_offsets)
    memory = policy.model.encode_memory(feats)
    bos = torch.full_like(tokens[:, :1], policy.bos_id)
    return policy.model(torch.cat([bos, tokens[:, :-1]], 1), memory)


def policy_loss(policy, obs, tokens, crop_offsets=None) -> torch.Tensor:
    logits = teacher_forcing_logits(policy, obs, tokens, crop_offsets)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))


@torch.no_grad()
def evaluate(policy: OATPolicy, windows: Windows, tokens: torch.Tensor, ids: np.ndarray,
             device, batch: int = 64) -> dict:
    """Centre crop: teacher-forced CE / token accuracy, greedy 8-token action MSE (normalized)."""
    was = policy.training
    policy.eval()
    norm = policy.action_tokenizer.action_normalizer
    ce, acc, mse, n = 0.0, 0.0, 0.0, 0
    acc_pos = torch.zeros(tokens.shape[1])
    for i in range(0, len(ids), batch):
        b = ids[i:i + batch]
        data = windows.batch(b)
        obs = to_obs(data, device)
        tk = tokens[b].to(device)
        logits = teacher_forcing_logits(policy, obs, tk)
        ce += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tk.reshape(-1),
                                    reduction="sum")) / tk.shape[1]
        hit = (logits[..., :-1].argmax(-1) == tk).float()
        acc += float(hit.mean(1).sum())
        acc_pos += hit.sum(0).cpu()
        pred = policy.predict_action(obs, K=policy.cfg.n_tokens, temperature=0.0)["action_pred"]
        gt = torch.from_numpy(data["actions"]).to(device)
        mse += float(((norm.normalize(pred) - norm.normalize(gt)) ** 2).mean((1, 2)).sum())
        n += len(b)
    policy.train(was)
    n = max(n, 1)
    return {"val_ce": ce / n, "val_token_acc": acc / n, "val_action_mse": mse / n,
            "val_token_acc_per_position": (acc_pos / n).round(decimals=4).tolist(), "n": n}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m oat_ros.train.policy_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    common.add_common_args(p)
    g = p.add_argument_group("policy")
    g.add_argument("--tokenizer", required=True,
                   help="trained tokenizer: a tokenizer_train --out dir, its tokenizer/ dir, an "
                        "original tokenizer.ckpt or a native policy export")
    g.add_argument("--no-ema", action="store_true", help="export the raw weights, not their EMA")
    g.add_argument("--encoder-lr-scale", type=float, default=None, help="obs-encoder lr = lr * this")
    g.add_argument("--no-random-crop", action="store_true", help="train with the centre crop")
    g.add_argument("--val-fraction", type=float, default=None)
    g.add_argument("--eval-samples", type=int, default=512, help="held-out windows per evaluation")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    preset = get_preset(args.preset, args.config)
    stage = stage_with_args(preset.policy, args)
    m = preset.model
    use_ema = preset.ema and not args.no_ema
    enc_scale = preset.encoder_lr_scale if args.encoder_lr_scale is None else args.encoder_lr_scale
    val_fraction = preset.val_fraction if args.val_fraction is None else args.val_fraction
    device = common.setup_run(args)

    tok = load_tokenizer(resolve_tokenizer_path(args.tokenizer))
    if tok.cfg.sample_horizon != m.horizon or tok.cfg.sample_dim != m.action_dim:
        raise SystemExit(f"the tokenizer decodes [{tok.cfg.sample_horizon}, {tok.cfg.sample_dim}] "
                         f"chunks, the preset wants [{m.horizon}, {m.action_dim}]")
    image_size = args.image_size if args.image_size is not None else m.image_size
    demos = load_demos(args.data, m.cameras, m.states, image_size, flip_arg(args.flip),
                       args.task_uid, args.max_demos, progress=not args.no_progress)
    train_eps, val_eps = split_episodes(demos, val_fraction, args.seed)
    train_w = Windows(demos, m.n_obs_steps, m.horizon, train_eps)
    val_w = Windows(demos, m.n_obs_steps, m.horizon, val_eps if len(val_eps) else train_eps)
    stats = fit_normalizers(demos, train_eps)
    common.write_json(os.path.join(args.out, "normalizer.json"), stats_to_json(stats))

    task = {"trained_by": "oat_ros.train.policy_train",
            "tasks": {str(u): demos.task_names.get(int(u), "") for u in np.unique(demos.episode_task_uid)},
            "image_size": list(next(iter(demos.images.values())).shape[1:3]) if demos.images else None,
            "camera_names": [c[:-len("_rgb")] if c.endswith("_rgb") else c for c in demos.images]}
    cfg = policy_config(m, demos.cameras, demos.state_dims, tok.cfg, task)
    policy = OATPolicy(cfg)
    common.gpt_init(policy.model)
    policy.model.tie_weights()
    policy.action_tokenizer.load_state_dict(tok.state_dict())
    policy.action_tokenizer.requires_grad_(False)
    for key, st in stats.items():
        for enc in (policy.obs_encoder.vision_encoder, policy.obs_encoder.state_encoder):
            if key in enc.normalizer.params_dict:
                load_stats(enc.normalizer[key], st)
    policy.to(device)

    t0 = time.perf_counter()
    train_tokens = tokenize_windows(policy.action_tokenizer, train_w, device=device).cpu()
    val_ids_all = np.arange(len(val_w))
    rng_eval = np.random.default_rng([args.seed, 99])
    val_ids = (np.sort(rng_eval.choice(val_ids_all, args.eval_samples, replace=False))
               if len(val_ids_all) > args.eval_samples else val_ids_all)
    val_tokens = torch.zeros(len(val_w), cfg.n_tokens, dtype=torch.long)
    val_tokens[val_ids] = tokenize_windows(policy.action_tokenizer, val_w.take(val_ids), device=device).cpu()
    tokenize_s = time.perf_counter() - t0
    policy.action_tokenizer.eval()

    opt = torch.optim.AdamW(common.param_groups(
        [("model", policy.model), ("obs_encoder", policy.obs_encoder)], stage.weight_decay,
        lrs=[stage.lr, stage.lr * enc_scale]), lr=stage.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, common.lr_lambda(stage.schedule, stage.warmup_steps, stage.steps))
    ema = common.EMA(policy) if use_ema else None
    signature = {"kind": "policy", "policy": {k: v for k, v in cfg.to_dict().items() if k != "task"},
                 "seed": args.seed, "steps": stage.steps, "batch_size": stage.batch_size,
                 "ema": use_ema, "random_crop": not args.no_random_crop}
    state = common.TrainState(args, signature, policy, opt, sched, ema)
    start = state.resume(device)
    policy.model.tie_weights()
    save_state = state.save

    export_dir = os.path.join(args.out, "export")

    def export_policy(step, metrics=None):
        out = policy
        if ema is not None:
            out = OATPolicy(cfg).to(device)
            ema.copy_to(out)
            out.model.tie_weights()
        save_native(out.eval(), export_dir, source={
            "trained_by": "oat_ros.train.policy_train", "step": step, "seed": args.seed,
            "ema": use_ema, "tokenizer": os.fspath(args.tokenizer),
            "data": [os.fspath(d) for d in args.data], **({"metrics": metrics} if metrics else {})})
        return out

    def run_eval(step):
        model = policy
        if ema is not None:
            model = OATPolicy(cfg).to(device)
            ema.copy_to(model)
            model.model.tie_weights()
        return evaluate(model, val_w, val_tokens, val_ids, device)

    prog = common.Progress(args.out, stage.steps, start, "policy", not args.no_progress)
    n_params = {"obs_encoder": sum(p.numel() for p in policy.obs_encoder.parameters()),
                "model": sum(p.numel() for p in policy.model.parameters()),
                "tokenizer (frozen)": sum(p.numel() for p in policy.action_tokenizer.parameters())}
    prog.log({"event": "resume" if start else "start", "step": start, "train_episodes": len(train_eps),
              "val_episodes": len(val_eps), "train_windows": len(train_w), "params": n_params,
              "device": str(device), "threads": torch.get_num_threads(), "tokenize_s": round(tokenize_s, 2)})
    policy.train()
    policy.action_tokenizer.eval()
    losses = common.LossLog(prog, stage.log_every)
    for step in range(start, stage.steps):
        rng = common.step_rng(args.seed, step)
        idx = rng.integers(0, len(train_w), stage.batch_size)
        obs = to_obs(train_w.batch(idx), device)
        crops = None if args.no_random_crop else random_crop_offsets(policy, stage.batch_size, rng)
        loss = policy_loss(policy, obs, train_tokens[idx].to(device), crops)
        lv = common.optimize(loss, opt, sched, [p for g in opt.param_groups for p in g["params"]], stage.grad_clip)
        if ema is not None:
            ema.update(policy)
        done = step + 1
        losses.add(done, lv, sched.get_last_lr()[0])
        if stage.save_every and done % stage.save_every == 0:
            save_state(done)
        if common.stop_early(args, prog, save_state, start, done, stage.steps):
            return 0
        if stage.eval_every and done % stage.eval_every == 0 and done < stage.steps:
            metrics = run_eval(done)
            prog.log({"step": done, **metrics})
            export_policy(done, metrics)
            losses.restart_clock()
    prog.close()
    if start < stage.steps:
        save_state(stage.steps)
    metrics = run_eval(stage.steps)
    export_policy(stage.steps, metrics)
    common.write_json(os.path.join(args.out, "metrics.json"), {"step": stage.steps, **metrics})
    prog.log({"event": "done", **metrics})
    print(export_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
