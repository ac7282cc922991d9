"""Shared machinery of the training CLIs: seeding, devices, schedules, optimizer groups,
EMA, resumable training state and progress output.

Determinism and resume: every random draw of step s (batch indices, crops, nested-dropout
K) comes from generators seeded with (seed, s), and the models have no dropout, so a run
resumed from `train_state.pt` at step s continues exactly as the uninterrupted run would
(bit-identical on CPU with the same thread count).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
from torch import nn

STATE_FILE = "train_state.pt"


# --- setup --------------------------------------------------------------------------------

def add_common_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, help="output directory (training state, logs, exports)")
    g.add_argument("--preset", default="default", help="size preset (see oat_ros.train.presets)")
    g.add_argument("--config", default=None, help="YAML file overriding preset fields")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    g.add_argument("--steps", type=int, default=None, help="optimizer steps (default: preset)")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--schedule", choices=["cosine", "linear", "constant"], default=None)
    g.add_argument("--warmup-steps", type=int, default=None)
    g.add_argument("--save-every", type=int, default=None,
                   help="write the resumable training state every N steps")
    g.add_argument("--eval-every", type=int, default=None, help="validate every N steps (0 = only at the end)")
    g.add_argument("--log-every", type=int, default=None)
    g.add_argument("--stop-after-steps", type=int, default=None,
                   help="leave after this many steps of this invocation (state saved; run the same "
                        "command again to continue), e.g. to train in time-boxed sessions")
    g.add_argument("--no-resume", action="store_true",
                   help="start from scratch even if OUT/train_state.pt exists")
    g.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available")
    return dev


def setup_run(args) -> torch.device:
    if args.threads:
        torch.set_num_threads(int(args.threads))
    seed_everything(args.seed)
    os.makedirs(args.out, exist_ok=True)
    return select_device(args.device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The numpy generator of one step (independent of what ran before: resumable)."""
    return np.random.default_rng([int(seed), int(step), int(stream)])


def step_torch_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(step_rng(seed, step, 1000 + stream).integers(2**62)))
    return g


# --- optimization -------------------------------------------------------------------------

def lr_lambda(schedule: str, warmup: int, total: int, min_ratio: float = 0.0):
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return min_ratio + (1 - min_ratio) * (1.0 - frac)
        return min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))
    return f


def param_groups(named_modules: list, weight_decay: float, lrs=None) -> list:
    """AdamW groups: weights of Linear/Conv (>= 2-D, not embeddings/pos-embs) decay; biases,
    norms, embeddings, registers, MASK token and pos-embs do not. named_modules: [(name,
    module)], one decay/no-decay pair per entry (the original has 4 groups: policy, encoder)."""
    groups, seen = [], set()
    for i, (name, module) in enumerate(named_modules):
        decay, no_decay = [], []
        for pname, p in module.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            leaf = pname.rsplit(".", 1)[-1]
            is_emb = (pname.endswith("tok_emb.weight") or "pos_emb" in pname
                      or leaf in ("registers", "dropout_mask_token"))
            (decay if p.dim() >= 2 and not is_emb else no_decay).append(p)
        extra = {} if lrs is None or lrs[i] is None else {"lr": lrs[i]}
        groups.append({"params": decay, "weight_decay": weight_decay, "name": f"{name}.decay", **extra})
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": f"{name}.no_decay", **extra})
    return [g for g in groups if g["params"]]


class EMA:
    """diffusion_policy's EMAModel schedule: decay = 1 - (1 + step)^-power, capped at max_decay.

    Holds one copy per distinct tensor of `module`'s state dict: entries that share storage
    (tied `model.head.weight` = `model.tok_emb.weight`, robomimic's `backbone.*` = `nets.0.*`)
    are averaged once and written back to every alias. Trainable floating-point parameters are
    averaged; everything else (frozen tokenizer, normalizers, buffers) is copied verbatim.
    """

    def __init__(self, module: nn.Module, power: float = 0.75, max_decay: float = 0.9999):
        self.power, self.max_decay = power, max_decay
        self.shadow, self.alias = {}, {}
        seen = {}
        for k, v in module.state_dict().items():
            key = (v.data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype) if v.numel() else None
            if key is not None and key in seen:
                self.alias[k] = seen[key]
                continue
            if key is not None:
                seen[key] = k
            self.shadow[k] = v.detach().clone()
        self.step = 0

    def decay(self) -> float:
        if self.step <= 0:
            return 0.0
        return min(self.max_decay, max(0.0, 1 - (1 + self.step) ** -self.power))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = self.decay()
        trainable = {p.data_ptr() for p in module.parameters() if p.requires_grad}
        sd = module.state_dict()
        for k, s in self.shadow.items():
            v = sd[k]
            if v.dtype.is_floating_point and v.data_ptr() in trainable:
                s.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                s.copy_(v)
        self.step += 1

    def state_dict(self) -> dict:
        return {"step": self.step, "shadow": self.shadow}

    def load_state_dict(self, sd: dict) -> None:
        self.step = int(sd["step"])
        for k, v in sd["shadow"].items():
            self.shadow[k].copy_(v)

    def full_state_dict(self) -> dict:
        out = dict(self.shadow)
        out.update({a: self.shadow[c] for a, c in self.alias.items()})
        return out

    def copy_to(self, module: nn.Module) -> None:
        module.load_state_dict(self.full_state_dict(), strict=True)


def gpt_init(module: nn.Module, std: float = 0.02) -> None:
    """The original AR model's init: Linear/Embedding ~ N(0, 0.02), biases 0, pos-embs N(0, 0.02)."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
    for name, p in module.named_parameters(recurse=True):
        if name.endswith("pos_emb") and p.dim() == 3:
            nn.init.normal_(p, 0.0, std)


# --- resumable state ----------------------------------------------------------------------

def save_train_state(out_dir: str, payload: dict) -> str:
    """Atomically write OUT/train_state.pt (plain tensors/containers: loads with weights_only)."""
    path = os.path.join(out_dir, STATE_FILE)
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_train_state(out_dir: str, map_location="cpu") -> dict | None:
    path = os.path.join(out_dir, STATE_FILE)
    if not os.path.isfile(path):
        return None
    return torch.load(path, map_location=map_location, weights_only=True)


def check_resume_compatible(saved: dict, current: dict, path: str) -> None:
    """Refuse to resume a run whose model-shaping settings differ."""
    diffs = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if diffs:
        raise SystemExit(f"{path}: cannot resume, settings differ from the saved run "
                         f"(saved, now): {diffs}. Use --no-resume or another --out.")


class TrainState:
    """What a training CLI saves and resumes: model, optimizer, LR schedule, EMA (optional),
    the step, and the model-shaping `signature` a resumed run must match."""

    def __init__(self, args, signature: dict, model: nn.Module, opt, sched, ema=None):
        self.out, self.signature = args.out, signature
        self.model, self.opt, self.sched, self.ema = model, opt, sched, ema
        self.resume_allowed = not args.no_resume

    def resume(self, device) -> int:
        """Load OUT/train_state.pt if there is one (and resuming is allowed); the step to start at."""
        saved = load_train_state(self.out) if self.resume_allowed else None
        if saved is None:
            return 0
        check_resume_compatible(saved["signature"], self.signature, os.path.join(self.out, STATE_FILE))
        self.model.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        optimizer_to(self.opt, device)
        self.sched.load_state_dict(saved["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        return int(saved["step"])

    def save(self, step: int) -> str:
        return save_train_state(self.out, {
            "signature": self.signature, "step": step, "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {})})


def should_stop(args, start: int, done: int, total: int) -> bool:
    """--stop-after-steps reached before the end of training."""
    n = getattr(args, "stop_after_steps", None)
    return bool(n) and done - start >= n and done < total


def optimizer_to(optimizer, device) -> None:
    for state in optimizer.state.values():
        for k, v in state.items():
            if torch.is_tensor(v):
                state[k] = v.to(device)


# --- progress / logs ----------------------------------------------------------------------

class Progress:
    """tqdm bar over steps (start..total) + a JSON-lines log in OUT/log.jsonl."""

    def __init__(self, out_dir: str, total: int, start: int, desc: str, enabled: bool = True):
        from tqdm import tqdm
        self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True,
                        disable=not enabled, file=sys.stderr)
        self.log_path = os.path.join(out_dir, "log.jsonl")
        self.t0 = time.perf_counter()
        self.enabled = enabled

    def update(self, n: int = 1, **postfix) -> None:
        if postfix:
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                                  for k, v in postfix.items()}, refresh=False)
        self.bar.update(n)

    def log(self, record: dict) -> None:
        record = {"time_s": round(time.perf_counter() - self.t0, 2), **record}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if not self.enabled:
            print(json.dumps(record), file=sys.stderr, flush=True)

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def optimize(loss: torch.Tensor, opt, sched, params, grad_clip: float) -> float:
    """One optimizer step on `loss` (global-norm clipping when grad_clip); returns its value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    sched.step()
    return float(loss.detach())


class LossLog:
    """The running training loss: tqdm postfix every step, a log line every `every` steps
    (mean loss, learning rate, seconds per step since the last line)."""

    def __init__(self, prog, every: int):
        self.prog, self.every = prog, every
        self.restart_clock()

    def restart_clock(self):
        """Forget the time spent so far (e.g. on an evaluation) and the losses since the last line."""
        self.t0, self.total, self.n = time.perf_counter(), 0.0, 0

    def add(self, done: int, loss: float, lr: float):
        self.total, self.n = self.total + loss, self.n + 1
        self.prog.update(1, loss=loss, lr=lr)
        if self.every and done % self.every == 0:
            now = time.perf_counter()
            self.prog.log({"step": done, "loss": self.total / self.n, "lr": lr,
                           "s_per_step": (now - self.t0) / self.n})
            self.restart_clock()


def stop_early(args, prog, save_state, start: int, done: int, total: int) -> bool:
    """--stop-after-steps: save, say how to continue, and tell the caller to return."""
    if not should_stop(args, start, done, total):
        return False
    save_state(done)
    prog.log({"event": "stopped", "step": done})
    prog.close()
    print(f"stopped at step {done}/{total}; run again to continue", file=sys.stderr)
    return True
