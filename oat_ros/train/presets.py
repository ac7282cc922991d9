"""Model sizes and training hyper-parameters of the training CLIs.

Presets (`--preset NAME`, fields overridable with `--config file.yaml` holding the same
nested keys, and the most common ones with CLI flags):

* `default` -- the default policy, sized for a 2-core CPU: both LIBERO cameras resized
  128 -> 64 and cropped to 56 (random crop in training, centre crop in eval), AR d=128,
  4 layers, 4 heads; tokenizer E=128 (2 encoder / 2 decoder layers); Blockwise tail P=4;
  ResNet18 trunks at a quarter of the original width (vision_width 16: 16-32-64-128
  channels, 1/16 of the weights and FLOPs), so the whole policy is a few MB and a training
  step costs a fraction of the full-width one.
* `libero` -- the paper's LIBERO-10 shape (128x128, crop 76, full-width ResNet18, d=256, tokenizer E=256,
  4 decoder layers): for a GPU.
* `tiny` -- seconds-long runs for tests and smoke checks (one 24x24 camera).

    python -m oat_ros.train.presets default        # print a preset as YAML
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace

import yaml

from ..errors import ConfigError
from ..model.policy import PolicyConfig
from ..model.tail import TailConfig
from ..model.tokenizer import TokenizerConfig


@dataclass
class ModelPreset:
    cameras: list = field(default_factory=lambda: ["agentview_rgb", "robot0_eye_in_hand_rgb"])
    image_size: int = 64              # images resized to image_size^2 on load (None = as stored)
    crop: int = 56
    vision_width: int = 16            # ResNet18 base channels per camera (64 = the original)
    states: list = field(default_factory=lambda: ["robot0_eef_pos", "robot0_eef_quat",
                                                  "robot0_gripper_qpos", "task_uid"])
    action_dim: int = 7
    horizon: int = 32
    n_action_steps: int = 16
    n_obs_steps: int = 2
    embed_dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    temperature: float = 1.0          # the policy's default sampling (the node decodes greedily unless told)
    top_k: int = 10
    tok_emb_dim: int = 128
    tok_head_dim: int = 32
    tok_enc_depth: int = 2
    tok_dec_depth: int = 2
    tok_latent_horizon: int = 8
    tok_levels: list = field(default_factory=lambda: [8, 5, 5, 5])
    tail_prefix_len: int = 4
    tail_layers: int | None = None    # None = max(4, n_layers // 2) (Blockwise-OAT)
    tail_heads: int | None = None     # None = n_heads
    tail_refine_iters: int = 1


@dataclass
class StagePreset:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 100
    grad_clip: float = 1.0
    save_every: int = 500
    eval_every: int = 1000
    log_every: int = 50


@dataclass
class Preset:
    model: ModelPreset = field(default_factory=ModelPreset)
    tokenizer: StagePreset = field(default_factory=lambda: StagePreset(
        steps=4000, batch_size=128, lr=5e-4, weight_decay=1e-4, warmup_steps=200,
        save_every=500, eval_every=1000, log_every=50))
    policy: StagePreset = field(default_factory=lambda: StagePreset(
        steps=3000, batch_size=64, lr=3e-4, weight_decay=1e-6, warmup_steps=200,
        save_every=250, eval_every=1000, log_every=25))
    tail: StagePreset = field(default_factory=lambda: StagePreset(
        steps=3000, batch_size=256, lr=3e-4, weight_decay=1e-6, warmup_steps=100,
        save_every=500, eval_every=1000, log_every=50))
    keep_k_mode: str = "uniform"      # nested dropout: 'uniform' 1..8, 'pow2' {1,2,4,8} (OAT)
    val_fraction: float = 0.1         # held-out episodes (per task)
    ema: bool = True                  # export EMA weights of the policy (as the original)
    encoder_lr_scale: float = 1.0     # obs-encoder lr = lr * this


def _libero() -> Preset:
    p = Preset()
    p.model = replace(p.model, image_size=128, crop=76, vision_width=64, embed_dim=256, n_layers=4, n_heads=4,
                      tok_emb_dim=256, tok_head_dim=64, tok_enc_depth=2, tok_dec_depth=4)
    p.policy = replace(p.policy, steps=100000, batch_size=64, lr=1e-4, save_every=2000,
                       eval_every=5000, log_every=100)
    p.tokenizer = replace(p.tokenizer, steps=30000)
    p.tail = replace(p.tail, steps=20000)
    return p


def _tiny() -> Preset:
    p = Preset()
    p.model = replace(p.model, cameras=["agentview_rgb"], image_size=24, crop=20,
                      states=["robot0_eef_pos", "robot0_gripper_qpos", "task_uid"],
                      horizon=16, n_action_steps=8, embed_dim=64, n_layers=2, n_heads=2,
                      tok_emb_dim=64, tok_head_dim=32, tok_enc_depth=1, tok_dec_depth=1,
                      tail_layers=2)
    p.tokenizer = replace(p.tokenizer, steps=400, batch_size=32, lr=1e-3, warmup_steps=20,
                          save_every=100, eval_every=0, log_every=50)
    p.policy = replace(p.policy, steps=200, batch_size=16, lr=1e-3, warmup_steps=10,
                       save_every=100, eval_every=0, log_every=50)
    p.tail = replace(p.tail, steps=100, batch_size=32, lr=1e-3, warmup_steps=10,
                     save_every=50, eval_every=0, log_every=50)
    p.ema = False
    return p


PRESETS = {"default": Preset, "libero": _libero, "tiny": _tiny}


def _merge(obj, overrides: dict, where: str):
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(overrides).__name__}")
    names = {f.name: f for f in fields(obj)}
    changes = {}
    for k, v in overrides.items():
        if k not in names:
            raise ConfigError(f"{where}: unknown key '{k}' (known: {sorted(names)})")
        cur = getattr(obj, k)
        changes[k] = _merge(cur, v, f"{where}.{k}") if is_dataclass(cur) else v
    return replace(obj, **changes)


def get_preset(name: str = "default", config_path: str | None = None) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (known: {sorted(PRESETS)})")
    p = PRESETS[name]()
    if config_path:
        with open(config_path) as f:
            doc = yaml.safe_load(f) or {}
        p = _merge(p, doc, config_path)
    return p


def stage_with_args(stage: StagePreset, args) -> StagePreset:
    """CLI flags (--steps, --lr, ...) over the preset's stage."""
    over = {}
    for name in ("steps", "batch_size", "lr", "weight_decay", "schedule", "warmup_steps",
                 "save_every", "eval_every", "log_every"):
        v = getattr(args, name, None)
        if v is not None:
            over[name] = v
    return replace(stage, **over)


def tokenizer_config(m: ModelPreset) -> TokenizerConfig:
    E = m.tok_emb_dim
    if E % m.tok_head_dim:
        raise ConfigError(f"tok_emb_dim {E} not divisible by tok_head_dim {m.tok_head_dim}")
    return TokenizerConfig(sample_dim=m.action_dim, sample_horizon=m.horizon, emb_dim=E,
                           head_dim=m.tok_head_dim, enc_depth=m.tok_enc_depth,
                           enc_mlp_hidden=int(2 * 4 * E / 3), num_registers=m.tok_latent_horizon,
                           dec_depth=m.tok_dec_depth, dec_ff_dim=4 * E,
                           latent_horizon=m.tok_latent_horizon, levels=list(m.tok_levels))


def policy_config(m: ModelPreset, cameras: dict, state_dims: dict,
                  tokenizer: TokenizerConfig, task: dict | None = None) -> PolicyConfig:
    """cameras {key: [H,W,3]} and state_dims {key: d} as present in the data (preset order)."""
    fields_all = {"action": m.action_dim, **{c: 3 for c in cameras}, **state_dims}
    vocab = 1
    for v in tokenizer.levels:
        vocab *= int(v)
    cfg = PolicyConfig(cameras={c: list(cameras[c]) for c in cameras},
                       states={k: int(state_dims[k]) for k in state_dims},
                       crop_shape=[m.crop, m.crop], vision_width=m.vision_width, action_dim=m.action_dim, horizon=m.horizon,
                       n_action_steps=m.n_action_steps, n_obs_steps=m.n_obs_steps,
                       embed_dim=m.embed_dim, n_layers=m.n_layers, n_heads=m.n_heads,
                       vocab_size=vocab + 1, max_seq_len=tokenizer.latent_horizon + 1,
                       temperature=m.temperature, top_k=m.top_k, tokenizer=tokenizer,
                       vision_normalizer_fields=dict(fields_all),
                       state_normalizer_fields=dict(fields_all), task=dict(task or {}))
    cfg.validate()
    return cfg


def tail_config(m: ModelPreset) -> TailConfig:
    P = m.tail_prefix_len
    if not 1 <= P < m.tok_latent_horizon:
        raise ConfigError(f"tail_prefix_len {P} must be in 1..{m.tok_latent_horizon - 1}")
    return TailConfig(prefix_len=P, n_tail=m.tok_latent_horizon - P,
                      n_layers=m.tail_layers or max(4, m.n_layers // 2),
                      n_heads=m.tail_heads or m.n_heads, refine_iters=m.tail_refine_iters)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    name = argv[0] if argv else "default"
    if name in ("-h", "--help"):
        print(__doc__)
        return 0
    print(yaml.safe_dump(asdict(get_preset(name)), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
