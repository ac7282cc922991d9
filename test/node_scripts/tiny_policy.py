"""A tiny random OAT policy (native export) for node tests and the node benchmark.

Same structure as the real LIBERO policy (two 64x64 cameras, eef pos/quat, gripper, task uid,
32x7 chunks, 8 FSQ tokens, blockwise tail) but small, so the node configures in seconds.
Images are normalized to ~[-1, 1] and actions are bounded to [-1, 1] (the random decoder
overshoots them, so chunks come out clipped). The chunk depends on the images: different
pictures give different tokens.

    python test/node_scripts/tiny_policy.py OUT_DIR [--no-tail]
"""
from __future__ import annotations

import sys
from pathlib import Path

CAMERAS = {"agentview_rgb": [64, 64, 3], "robot0_eye_in_hand_rgb": [64, 64, 3]}
STATES = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "task_uid": 1}


def make_tiny_policy(out_dir, tail: bool = True, seed: int = 0) -> Path:
    """Build (seeded) and save a tiny native policy to out_dir; return out_dir."""
    import torch

    from oat_ros.checkpoint import save_native
    from oat_ros.model.policy import OATPolicy, PolicyConfig
    from oat_ros.model.tail import TailConfig
    from oat_ros.model.tokenizer import TokenizerConfig

    levels = [8, 5, 5, 5]
    tok = TokenizerConfig(sample_dim=7, sample_horizon=32, emb_dim=64, head_dim=32, enc_depth=1,
                          enc_mlp_hidden=128, num_registers=8, dec_depth=1, dec_ff_dim=128,
                          latent_horizon=8, levels=levels)
    cfg = PolicyConfig(
        cameras={k: list(v) for k, v in CAMERAS.items()}, states=dict(STATES), crop_shape=[56, 56],
        action_dim=7, horizon=32, n_action_steps=16, n_obs_steps=2, embed_dim=64, n_layers=2,
        n_heads=2, vocab_size=tok.vocab_size + 1, max_seq_len=tok.latent_horizon + 1,
        tokenizer=tok,
        vision_normalizer_fields={k: 3 for k in CAMERAS},      # per channel on HWC
        state_normalizer_fields=dict(STATES),
        task={"task_name": "tiny_random"})
    torch.manual_seed(seed)
    tail_cfg = TailConfig(prefix_len=4, n_tail=4, n_layers=1, n_heads=2) if tail else None
    policy = OATPolicy(cfg, tail_cfg).eval()
    with torch.no_grad():
        for cam in CAMERAS:                                    # 0..255 -> -1..1
            f = policy.obs_encoder.vision_encoder.normalizer[cam]
            f.scale.fill_(2.0 / 255.0)
            f.offset.fill_(-1.0)
        for key in STATES:                                     # identity (task uid scaled down)
            f = policy.obs_encoder.state_encoder.normalizer[key]
            f.scale.fill_(0.01 if key == "task_uid" else 1.0)
            f.offset.fill_(0.0)
        # Random init makes the tied token embedding dominate (every chunk the same token):
        # shrink it and amplify the observation path so the chunk depends on the images.
        policy.model.tok_emb.weight.mul_(0.05)
        policy.model.cond_emb.weight.mul_(20.0)
        for blk in policy.model.blocks:
            blk.cross_attn.c_proj.weight.mul_(5.0)
        act = policy.action_tokenizer.action_normalizer         # raw actions bounded to [-1, 1]
        act.scale.fill_(1.0)
        act.offset.fill_(0.0)
        act.input_stats.min.fill_(-1.0)
        act.input_stats.max.fill_(1.0)
    save_native(policy, out_dir, source={"kind": "tiny random test policy", "seed": seed})
    return Path(out_dir)


if __name__ == "__main__":
    out = make_tiny_policy(sys.argv[1], tail="--no-tail" not in sys.argv)
    print(out)
