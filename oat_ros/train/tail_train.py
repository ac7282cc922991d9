"""Train the Blockwise-OAT parallel tail with the policy frozen.

The tail predicts tokens z_{P+1}..z_8 in one pass from the prefix z_1..z_P and the AR
model's ln_f output after z_P (`prefix_hidden`), trained with cross-entropy against the
tokenized demonstration chunks (Blockwise-OAT `training_loss`: teacher prefix tokens;
with --refine-iters r > 1 the loss is averaged over r passes, each fed the argmax of the
previous one). prefix_hidden comes from teacher forcing on the true prefix (default), or
from greedy generation as the Blockwise-OAT script does (--prefix-hidden greedy).

The policy is frozen and evaluated with the centre crop, so the observation features of
every frame are computed once up front and the tail steps only run the small transformers.

Outputs in --out:
  export/                   native policy with the tail attached (load_policy(OUT/export);
                            the node's blockwise mode uses it)
  blockwise_tail_P<P>.pt    the tail alone in the Blockwise-OAT .pt format
                            (load_policy(policy, tail_path=...) / checkpoint.load_tail)
  train_state.pt, log.jsonl, metrics.json

    python -m oat_ros.train.tail_train --data demos64.npz --policy runs/pol/export --out runs/tail
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import load_policy, save_native
from ..model.policy import OATPolicy
from ..model.tail import ParallelTailDecoder
from . import common
from .demos import Windows, add_data_args, flip_arg, load_demos, split_episodes
from .policy_train import tokenize_windows
from .presets import get_preset, stage_with_args, tail_config

MIN_TAIL_PARAM_RATIO = 0.35  # Blockwise-OAT's build_blockwise_tail_decoder refuses smaller tails


def prefix_hidden(policy: OATPolicy, memory: torch.Tensor, tokens: torch.Tensor, P: int,
                  mode: str = "teacher", features=None) -> torch.Tensor:
    """ln_f output after z_P [B,d]: teacher forcing on [BOS, z_1..z_P], or greedy generation."""
    with torch.no_grad():
        if mode == "greedy":
            return policy.generate(features, P, temperature=0.0, return_hidden=True)[2]
        bos = torch.full_like(tokens[:, :1], policy.bos_id)
        _, h = policy.model(torch.cat([bos, tokens[:, :P]], 1), memory, return_hidden=True)
        return h[:, P]


def tail_loss(policy: OATPolicy, tail: ParallelTailDecoder, features: torch.Tensor,
              tokens: torch.Tensor, P: int, refine_iters: int = 1, mode: str = "teacher",
              return_logits: bool = False):
    """features [B,To,F] (frozen), tokens [B,8] -> mean CE over the tail positions."""
    with torch.no_grad():
        memory = policy.model.encode_memory(features)
    h = prefix_hidden(policy, memory, tokens, P, mode, features)
    prefix, target = tokens[:, :P], tokens[:, P:]
    model = policy.model
    logits = tail(prefix, h, model.tok_emb, model.tok_pos_emb)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    for _ in range(max(1, refine_iters) - 1):
        logits = tail(prefix, h, model.tok_emb, model.tok_pos_emb, logits.argmax(-1).detach())
        loss = loss + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    loss = loss / max(1, refine_iters)
    return (loss, logits) if return_logits else loss


@torch.no_grad()
def encode_all_frames(policy: OATPolicy, demos, device, batch: int = 256, progress=True) -> torch.Tensor:
    """Centre-crop features of every frame of the DemoSet [N,F] (the frozen encoder, once)."""
    from tqdm import tqdm
    policy.eval()
    N = demos.n_steps
    out = torch.empty(N, policy.cfg.obs_feature_dim)
    for i in tqdm(range(0, N, batch), desc="encoding frames", unit="batch", disable=not progress,
                  dynamic_ncols=True, file=sys.stderr):
        imgs = {c: torch.from_numpy(v[i:i + batch]).to(device) for c, v in demos.images.items()}
        sts = {k: torch.from_numpy(v[i:i + batch]).to(device, torch.float32) for k, v in demos.states.items()}
        out[i:i + batch] = policy.encode_frames(imgs, sts).cpu()
    return out


@torch.no_grad()
def evaluate(policy, tail, feats_all, windows: Windows, tokens, P, refine_iters, device,
             batch: int = 256) -> dict:
    """Held-out tail CE / token accuracy (teacher prefix) and the action MSE of greedy
    blockwise decoding vs greedy AR decoding (normalized units)."""
    was = tail.training
    tail.eval()
    norm = policy.action_tokenizer.action_normalizer
    ce, acc, mse_bw, mse_ar, agree, n = 0.0, 0.0, 0.0, 0.0, 0.0, 0
    for i in range(0, len(windows), batch):
        ids = np.arange(i, min(i + batch, len(windows)))
        rows = windows.indices(ids)[0]
        feats = feats_all[rows].to(device)
        tk = tokens[ids].to(device)
        loss, logits = tail_loss(policy, tail, feats, tk, P, refine_iters, return_logits=True)
        ce += float(loss) * len(ids)
        acc += float((logits[..., :-1].argmax(-1) == tk[:, P:]).float().mean(1).sum())
        ar_tokens = policy.generate(feats, policy.cfg.n_tokens, temperature=0.0)[0]
        prefix, _, hP = policy.generate(feats, P, temperature=0.0, return_hidden=True)
        prev = None
        for _ in range(max(1, refine_iters)):
            lg = tail(prefix, hP, policy.model.tok_emb, policy.model.tok_pos_emb, prev)
            prev = lg[..., :-1].argmax(-1)
        bw_tokens = torch.cat([prefix, prev], 1)
        gt = norm.normalize(torch.from_numpy(windows.actions(ids)).to(device))
        a_bw = norm.normalize(policy.action_tokenizer.detokenize(bw_tokens))
        a_ar = norm.normalize(policy.action_tokenizer.detokenize(ar_tokens))
        mse_bw += float(((a_bw - gt) ** 2).mean((1, 2)).sum())
        mse_ar += float(((a_ar - gt) ** 2).mean((1, 2)).sum())
        agree += float((bw_tokens[:, P:] == ar_tokens[:, P:]).float().mean(1).sum())
        n += len(ids)
    tail.train(was)
    n = max(n, 1)
    return {"val_tail_ce": ce / n, "val_tail_token_acc": acc / n, "val_action_mse_blockwise": mse_bw / n,
            "val_action_mse_ar": mse_ar / n, "tail_agrees_with_ar": agree / n, "n": n}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m oat_ros.train.tail_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p, images=False)
    common.add_common_args(p)
    g = p.add_argument_group("tail")
    g.add_argument("--policy", required=True, help="trained policy (native export dir or original .ckpt)")
    g.add_argument("--prefix-len", type=int, default=None, help="P: AR prefix tokens (default: preset, 4)")
    g.add_argument("--tail-layers", type=int, default=None, help="default max(4, n_layers // 2)")
    g.add_argument("--refine-iters", type=int, default=None, help="training/inference tail passes (default 1)")
    g.add_argument("--prefix-hidden", choices=["teacher", "greedy"], default="teacher",
                   help="prefix_hidden from teacher forcing on the true prefix, or from greedy "
                        "generation (the Blockwise-OAT script)")
    g.add_argument("--val-fraction", type=float, default=None)
    g.add_argument("--eval-samples", type=int, default=1024)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    preset = get_preset(args.preset, args.config)
    stage = stage_with_args(preset.tail, args)
    val_fraction = preset.val_fraction if args.val_fraction is None else args.val_fraction
    device = common.setup_run(args)

    policy = load_policy(args.policy).to(device).eval()
    policy.requires_grad_(False)
    pc = policy.cfg
    m = replace(preset.model, n_layers=pc.n_layers, n_heads=pc.n_heads, tok_latent_horizon=pc.n_tokens,
                **({"tail_prefix_len": args.prefix_len} if args.prefix_len else {}),
                **({"tail_layers": args.tail_layers} if args.tail_layers else {}),
                **({"tail_refine_iters": args.refine_iters} if args.refine_iters else {}))
    tcfg = tail_config(m)
    P = tcfg.prefix_len
    image_hw = {tuple(s[:2]) for s in pc.cameras.values()}
    if len(image_hw) > 1:
        raise SystemExit(f"cameras of different sizes {image_hw} are not supported by the loader")
    image_size = next(iter(image_hw)) if image_hw else None
    demos = load_demos(args.data, list(pc.cameras), list(pc.states), image_size, flip_arg(args.flip),
                       args.task_uid, args.max_demos, progress=not args.no_progress)
    train_eps, val_eps = split_episodes(demos, val_fraction, args.seed)
    train_w = Windows(demos, pc.n_obs_steps, pc.horizon, train_eps)
    val_w = Windows(demos, pc.n_obs_steps, pc.horizon, val_eps if len(val_eps) else train_eps)
    rng_eval = np.random.default_rng([args.seed, 99])
    if len(val_w) > args.eval_samples:
        val_w = val_w.take(np.sort(rng_eval.choice(len(val_w), args.eval_samples, replace=False)))

    t0 = time.perf_counter()
    train_tokens = tokenize_windows(policy.action_tokenizer, train_w, device=device).cpu()
    val_tokens = tokenize_windows(policy.action_tokenizer, val_w, device=device).cpu()
    feats_all = encode_all_frames(policy, demos, device, progress=not args.no_progress)
    prep_s = time.perf_counter() - t0

    torch.manual_seed(args.seed)
    tail = ParallelTailDecoder(pc.vocab_size, pc.embed_dim, tcfg.n_tail, tcfg.n_layers, tcfg.n_heads)
    common.gpt_init(tail)
    tail.to(device).train()
    tail_params = sum(p.numel() for p in tail.parameters())
    ar_params = sum(p.numel() for p in policy.model.parameters())
    opt = torch.optim.AdamW(common.param_groups([("tail", tail)], stage.weight_decay),
                            lr=stage.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, common.lr_lambda(stage.schedule, stage.warmup_steps, stage.steps))
    signature = {"kind": "tail", "tail": asdict(tcfg), "policy": os.path.abspath(args.policy),
                 "seed": args.seed, "steps": stage.steps, "batch_size": stage.batch_size,
                 "prefix_hidden": args.prefix_hidden}
    state = common.TrainState(args, signature, tail, opt, sched)
    start = state.resume(device)
    save_state = state.save

    prog = common.Progress(args.out, stage.steps, start, "tail", not args.no_progress)
    ratio = tail_params / max(ar_params, 1)
    prog.log({"event": "resume" if start else "start", "step": start, "prefix_len": P,
              "tail_layers": tcfg.n_layers, "tail_params": tail_params, "ar_params": ar_params,
              "tail_param_ratio": round(ratio, 3), "prep_s": round(prep_s, 1), "device": str(device)})
    if ratio < MIN_TAIL_PARAM_RATIO:
        prog.write(f"WARNING: tail/AR parameter ratio {ratio:.2f} < {MIN_TAIL_PARAM_RATIO} "
                   f"(Blockwise-OAT refuses such tails)")
    losses = common.LossLog(prog, stage.log_every)
    for step in range(start, stage.steps):
        rng = common.step_rng(args.seed, step)
        idx = rng.integers(0, len(train_w), stage.batch_size)
        feats = feats_all[train_w.indices(idx)[0]].to(device)
        loss = tail_loss(policy, tail, feats, train_tokens[idx].to(device), P, tcfg.refine_iters,
                         args.prefix_hidden)
        lv = common.optimize(loss, opt, sched, tail.parameters(), stage.grad_clip)
        done = step + 1
        losses.add(done, lv, sched.get_last_lr()[0])
        if stage.save_every and done % stage.save_every == 0:
            save_state(done)
        if common.stop_early(args, prog, save_state, start, done, stage.steps):
            return 0
        if stage.eval_every and done % stage.eval_every == 0 and done < stage.steps:
            prog.log({"step": done, **evaluate(policy, tail, feats_all, val_w, val_tokens, P,
                                               tcfg.refine_iters, device)})
    prog.close()
    if start < stage.steps:
        save_state(stage.steps)
    metrics = evaluate(policy, tail, feats_all, val_w, val_tokens, P, tcfg.refine_iters, device)

    tail = tail.cpu().eval()
    tail_path = os.path.join(args.out, f"blockwise_tail_P{P}.pt")
    torch.save({"prefix_len": P, "refine_iters": tcfg.refine_iters, "tail_layers": tcfg.n_layers,
                "tail_heads": tcfg.n_heads, "tail_params": tail_params, "ar_params": ar_params,
                "tail_param_ratio": ratio, "state_dict": tail.state_dict(),
                "policy_checkpoint": os.path.abspath(args.policy)}, tail_path + ".tmp")
    os.replace(tail_path + ".tmp", tail_path)
    policy = policy.cpu()
    policy.attach_tail(tail, tcfg)
    export_dir = os.path.join(args.out, "export")
    save_native(policy, export_dir, source={"trained_by": "oat_ros.train.tail_train",
                                            "policy": os.path.abspath(args.policy), "step": stage.steps,
                                            "seed": args.seed, "metrics": metrics})
    common.write_json(os.path.join(args.out, "metrics.json"), {"step": stage.steps, **metrics})
    prog.log({"event": "done", **metrics})
    print(export_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
