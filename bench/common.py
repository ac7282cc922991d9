"""Shared helpers for the benchmarks: policies of the published shapes, timing, JSON output."""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from oat_ros.model.policy import OATPolicy, PolicyConfig  # noqa: E402
from oat_ros.model.tail import TailConfig  # noqa: E402
from oat_ros.model.tokenizer import TokenizerConfig  # noqa: E402

# Fixture configuration A = the LIBERO-10 shape of the paper's policies; B = a small one.
SHAPES = {
    "A": dict(cameras={"agentview_rgb": [128, 128, 3], "robot0_eye_in_hand_rgb": [128, 128, 3]}, crop=76,
              states={"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "task_uid": 1},
              horizon=32, n_action_steps=16, n_obs_steps=2, d=256, layers=4, heads=4,
              tok=dict(emb_dim=256, head_dim=64, enc_depth=2, dec_depth=4, enc_mlp_hidden=682, dec_ff_dim=1024)),
    "B": dict(cameras={"agentview_rgb": [96, 96, 3]}, crop=80,
              states={"robot0_eef_pos": 3, "robot0_gripper_qpos": 2, "task_uid": 1},
              horizon=16, n_action_steps=8, n_obs_steps=3, d=128, layers=2, heads=2,
              tok=dict(emb_dim=128, head_dim=32, enc_depth=1, dec_depth=2, enc_mlp_hidden=341, dec_ff_dim=512)),
}


def random_policy(shape: str = "A", seed: int = 0) -> OATPolicy:
    """A randomly initialised policy of a published shape (speed does not depend on the weights)."""
    s = SHAPES[shape]
    torch.manual_seed(seed)
    tok = TokenizerConfig(sample_horizon=s["horizon"], **s["tok"])
    cams = s["cameras"]
    cfg = PolicyConfig(cameras=cams, states=s["states"], crop_shape=[s["crop"], s["crop"]],
                       horizon=s["horizon"], n_action_steps=s["n_action_steps"], n_obs_steps=s["n_obs_steps"],
                       embed_dim=s["d"], n_layers=s["layers"], n_heads=s["heads"], tokenizer=tok,
                       vision_normalizer_fields={c: 3 for c in cams},
                       state_normalizer_fields=dict(s["states"]))
    policy = OATPolicy(cfg, TailConfig(prefix_len=4, n_tail=4, n_layers=max(4, s["layers"] // 2), n_heads=s["heads"]))
    return policy.eval()


def load_or_random(path: str | None, shape: str):
    if path:
        from oat_ros.checkpoint import load_policy
        return load_policy(path).eval(), str(path)
    return random_policy(shape), f"random weights, shape {shape}"


def timeit(fn, repeats: int, warmup: int = 3, sync=None) -> list[float]:
    """Wall-clock milliseconds of fn() per repeat (sync() after each call on GPU)."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"median_ms": round(float(np.median(a)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3),
            "min_ms": round(float(a.min()), 3), "n": len(ms)}


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_json(result: dict, out: str | None):
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


def median(xs):
    return statistics.median(xs)
