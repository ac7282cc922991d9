"""Train the OAT action tokenizer (register encoder + FSQ + nested-dropout decoder).

Training forward (`tokenizer_loss`): normalize the action chunk (the tokenizer's own
`limits` normalizer, fitted on the training episodes) -> RegisterEncoder (causal register
attention: register i sees every action step and registers 0..i) -> FSQ with a
straight-through round -> decoder with nested dropout: per sample keep_k is drawn from
{1,2,4,8} (`pow2`, OAT) or 1..8 (`uniform`) and latent slots >= keep_k are replaced by the
learned MASK token -> MSE against the normalized chunk.

keep_k mode: the presets use `uniform` (1..8). With OAT's `pow2` the prefixes K=3,5,6,7 are
never seen in training, and on held-out data MSE(K=3) came out above MSE(K=2) (measured on
synthetic chunks); the node's anytime decoding stops at any K, and the issue asks for an MSE
that falls monotonically with K, so every prefix is trained. `--keep-k-mode pow2` gives OAT's.

Outputs in --out:
  tokenizer/          the trained tokenizer (native: tokenizer.safetensors + tokenizer.yaml,
                      see oat_ros.train.tokenizer_io); policy_train embeds it in the policy
  prefix_mse.json     held-out reconstruction MSE per prefix K=1..8 (normalized and raw
                      action units) + whether it falls monotonically with K
  prefix_mse.png      the same as a plot
  train_state.pt      resumable state (model, optimizer, schedule, step), every --save-every
  log.jsonl           losses and evaluations

    python -m oat_ros.train.tokenizer_train --data demos.npz --out runs/tok [--steps N]
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..model.fsq import FSQ
from ..model.tokenizer import OATTokenizer
from . import common
from .demos import Windows, add_data_args, fit_limits, flip_arg, load_demos, load_stats, split_episodes
from .presets import get_preset, stage_with_args, tokenizer_config
from .tokenizer_io import save_tokenizer


# --- model pieces -------------------------------------------------------------------------

def fsq_ste(fsq: FSQ, z: torch.Tensor) -> torch.Tensor:
    """FSQ codes in [-1, 1] with a straight-through round (identity gradient), float32.
    Forward values equal `fsq.quantize(z)`."""
    b = fsq.bound(z.float())
    q = b + (torch.round(b) - b).detach()
    return q / fsq._half_width()


def keep_k_choices(L: int, mode: str) -> np.ndarray:
    if mode == "uniform":
        return np.arange(1, L + 1)
    if mode == "pow2":
        ks = sorted({2 ** i for i in range(L.bit_length()) if 2 ** i <= L} | {L})
        return np.array(ks)
    if mode == "full":
        return np.array([L])
    raise ValueError(f"unknown keep_k mode '{mode}' (pow2, uniform, full)")


def sample_keep_k(n: int, L: int, mode: str, rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(rng.choice(keep_k_choices(L, mode), size=n)).long()


def tokenizer_loss(tok: OATTokenizer, actions: torch.Tensor, keep_k: torch.Tensor) -> torch.Tensor:
    """Raw action chunks [B,T,A] + keep_k [B] -> reconstruction MSE in normalized units."""
    x = tok.action_normalizer.normalize(actions)
    codes = fsq_ste(tok.quantizer, tok.encoder(x))
    recon = tok.decoder(codes, keep_k.to(actions.device))
    return F.mse_loss(recon, x)


def init_tokenizer(tok: OATTokenizer, std: float = 0.02) -> OATTokenizer:
    """Registers and the MASK token ~ N(0, std) (the model allocates them as zeros: eight
    identical registers); Linear layers keep torch's default init. (The original zero-inits
    both LinearHeads; on short CPU runs that trains markedly slower, so it is not done.)"""
    nn.init.normal_(tok.encoder.registers, std=std)
    nn.init.normal_(tok.decoder.nested_dropout.dropout_mask_token, std=std)
    return tok


# --- evaluation ---------------------------------------------------------------------------

@torch.no_grad()
def prefix_mse(tok: OATTokenizer, chunks: torch.Tensor, batch: int = 1024) -> dict:
    """Reconstruction MSE of detokenize(tokens[:, :K]) for K = 1..L on raw chunks [N,T,A]."""
    was_training = tok.training
    tok.eval()
    L = tok.cfg.latent_horizon
    dev = next(tok.parameters()).device
    norm = tok.action_normalizer
    se_n, se_r = np.zeros(L), np.zeros(L)
    n_el = 0
    ids_all = []
    for i in range(0, chunks.shape[0], batch):
        a = chunks[i:i + batch].to(dev)
        ids = tok.tokenize(a)
        ids_all.append(ids.cpu())
        an = norm.normalize(a)
        for K in range(1, L + 1):
            rec = tok.detokenize(ids[:, :K])
            se_n[K - 1] += float(((norm.normalize(rec) - an) ** 2).sum())
            se_r[K - 1] += float(((rec - a) ** 2).sum())
        n_el += a.numel()
    tok.train(was_training)
    ids_all = torch.cat(ids_all)
    mse_n, mse_r = (se_n / n_el).tolist(), (se_r / n_el).tolist()
    usage = [int(torch.unique(ids_all[:, k]).numel()) for k in range(L)]
    rises = [b / a - 1 for a, b in zip(mse_n, mse_n[1:]) if a > 0]
    return {"K": list(range(1, L + 1)), "mse": mse_n, "mse_raw": mse_r,
            "monotone": bool(all(b <= a for a, b in zip(mse_n, mse_n[1:]))),
            "max_relative_rise": max([0.0] + rises),
            "n_chunks": int(chunks.shape[0]), "codes_used_per_position": usage}


def plot_prefix_mse(result: dict, path: str, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(result["K"], result["mse"], "o-", label="normalized units")
    ax.set_xlabel("prefix length K (tokens decoded)")
    ax.set_ylabel("reconstruction MSE")
    ax.set_yscale("log")
    ax.set_xticks(result["K"])
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"held-out MSE per prefix ({result['n_chunks']} chunks)")
    ax2 = ax.twinx()
    ax2.plot(result["K"], result["mse_raw"], "s--", color="tab:orange", alpha=0.7, label="raw units")
    ax2.set_yscale("log")
    ax2.set_ylabel("MSE (raw action units)")
    fig.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- CLI ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m oat_ros.train.tokenizer_train",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p, images=False)
    common.add_common_args(p)
    g = p.add_argument_group("tokenizer")
    g.add_argument("--keep-k-mode", choices=["pow2", "uniform", "full"], default=None,
                   help="nested dropout: uniform = keep_k in 1..8 (preset default: every prefix "
                        "the anytime engine may decode is trained), pow2 = {1,2,4,8} (original OAT; "
                        "prefixes 3,5,6,7 are then never trained and MSE(K) need not be monotone)")
    g.add_argument("--val-fraction", type=float, default=None, help="held-out episodes per task")
    g.add_argument("--eval-samples", type=int, default=4096, help="max held-out chunks to evaluate")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    preset = get_preset(args.preset, args.config)
    stage = stage_with_args(preset.tokenizer, args)
    keep_mode = args.keep_k_mode or preset.keep_k_mode
    val_fraction = preset.val_fraction if args.val_fraction is None else args.val_fraction
    device = common.setup_run(args)
    m = preset.model
    tcfg = tokenizer_config(m)

    demos = load_demos(args.data, cameras=(), states=(), flip=flip_arg(args.flip),
                       task_uids=args.task_uid, max_demos=args.max_demos)
    if demos.actions.shape[1] != tcfg.sample_dim:
        raise SystemExit(f"the demonstrations have {demos.actions.shape[1]}-D actions, "
                         f"the preset expects {tcfg.sample_dim}")
    train_eps, val_eps = split_episodes(demos, val_fraction, args.seed)
    train_w = Windows(demos, 1, tcfg.sample_horizon, train_eps)
    val_w = Windows(demos, 1, tcfg.sample_horizon, val_eps if len(val_eps) else train_eps)
    train_chunks = torch.from_numpy(train_w.all_action_chunks())
    rng_eval = np.random.default_rng([args.seed, 99])
    val_ids = np.arange(len(val_w))
    if len(val_ids) > args.eval_samples:
        val_ids = np.sort(rng_eval.choice(val_ids, args.eval_samples, replace=False))
    val_chunks = torch.from_numpy(val_w.actions(val_ids))

    tok = init_tokenizer(OATTokenizer(tcfg))
    rows = np.concatenate([np.arange(demos.episode_starts[e], demos.episode_ends[e]) for e in train_eps])
    stats = fit_limits(demos.actions[rows])
    load_stats(tok.normalizer["action"], stats)
    tok.to(device).train()

    opt = torch.optim.AdamW(common.param_groups([("tokenizer", tok)], stage.weight_decay),
                            lr=stage.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, common.lr_lambda(stage.schedule, stage.warmup_steps, stage.steps))
    signature = {"kind": "tokenizer", "tokenizer": asdict(tcfg), "keep_k_mode": keep_mode,
                 "seed": args.seed, "steps": stage.steps, "batch_size": stage.batch_size}
    state = common.TrainState(args, signature, tok, opt, sched)
    start = state.resume(device)
    save_state = state.save

    L = tcfg.latent_horizon
    prog = common.Progress(args.out, stage.steps, start, "tokenizer", not args.no_progress)
    if start == 0:
        prog.log({"event": "start", "train_episodes": len(train_eps), "val_episodes": len(val_eps),
                  "train_chunks": len(train_w), "val_chunks": int(val_chunks.shape[0]),
                  "params": sum(p.numel() for p in tok.parameters()), "device": str(device),
                  "keep_k_mode": keep_mode})
    else:
        prog.log({"event": "resume", "step": start})
    losses = common.LossLog(prog, stage.log_every)
    for step in range(start, stage.steps):
        rng = common.step_rng(args.seed, step)
        idx = torch.from_numpy(rng.integers(0, len(train_w), stage.batch_size))
        keep_k = sample_keep_k(stage.batch_size, L, keep_mode, rng)
        loss = tokenizer_loss(tok, train_chunks[idx].to(device), keep_k)
        lv = common.optimize(loss, opt, sched, tok.parameters(), stage.grad_clip)
        done = step + 1
        losses.add(done, lv, sched.get_last_lr()[0])
        if stage.eval_every and done % stage.eval_every == 0 and done < stage.steps:
            r = prefix_mse(tok, val_chunks)
            prog.log({"step": done, "val_mse": r["mse"], "monotone": r["monotone"]})
        if stage.save_every and done % stage.save_every == 0:
            save_state(done)
        if common.stop_early(args, prog, save_state, start, done, stage.steps):
            return 0
    prog.close()
    if start < stage.steps:
        save_state(stage.steps)

    tok.eval()
    result = prefix_mse(tok, val_chunks)
    result.update({"split": "held-out episodes" if len(val_eps) else "train (no held-out episodes)",
                   "val_episodes": [int(e) for e in val_eps], "steps": stage.steps,
                   "keep_k_mode": keep_mode})
    common.write_json(os.path.join(args.out, "prefix_mse.json"), result)
    plot_prefix_mse(result, os.path.join(args.out, "prefix_mse.png"))
    save_tokenizer(tok.cpu(), os.path.join(args.out, "tokenizer"),
                   source={"trained_by": "oat_ros.train.tokenizer_train", "steps": stage.steps,
                           "seed": args.seed, "keep_k_mode": keep_mode,
                           "data": [os.fspath(d) for d in args.data],
                           "prefix_mse": result["mse"]})
    prog.log({"event": "done", "val_mse": result["mse"], "monotone": result["monotone"]})
    print("held-out reconstruction MSE per prefix K (normalized units):", file=sys.stderr)
    for K, v, r in zip(result["K"], result["mse"], result["mse_raw"]):
        print(f"  K={K}: {v:.5f}  (raw {r:.5f})", file=sys.stderr)
    if not result["monotone"]:
        print(f"WARNING: MSE is not monotone in K (largest rise {100 * result['max_relative_rise']:.2f}% "
              f"between neighbours; under-trained late tokens: train longer)", file=sys.stderr)
    print(os.path.join(args.out, "tokenizer"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
