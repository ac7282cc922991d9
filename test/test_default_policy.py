"""The embedded default policy: found by the main job, small, loads, and produces sane chunks."""
import numpy as np
import torch

from oat_ros import default_policy
from oat_ros.checkpoint import load_policy
from oat_ros.engine.engine import Engine
from oat_ros.engine.settings import DecodeSettings
from oat_ros.paths import DEFAULT_POLICY_DIR


def test_main_job_uses_the_embedded_policy():
    path, what = default_policy.resolve()
    assert path == DEFAULT_POLICY_DIR and what.startswith("embedded default policy")


def test_it_is_small():
    size = sum(f.stat().st_size for f in DEFAULT_POLICY_DIR.iterdir())
    assert size < 12e6, f"{size / 1e6:.1f} MB"


def test_it_is_the_libero_shape_the_sim_bridge_serves():
    p = load_policy(DEFAULT_POLICY_DIR)
    assert list(p.cfg.cameras) == ["agentview_rgb", "robot0_eye_in_hand_rgb"]
    assert list(p.cfg.states) == ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "task_uid"]
    assert (p.cfg.horizon, p.cfg.action_dim, p.cfg.n_action_steps, p.cfg.n_obs_steps) == (32, 7, 16, 2)
    assert p.tail is not None and p.tail_cfg.prefix_len == 4
    assert all(t.dtype == torch.float32 for t in p.state_dict().values() if t.is_floating_point())


def test_every_prefix_and_blockwise_give_bounded_chunks():
    p = load_policy(DEFAULT_POLICY_DIR)
    engine = Engine(p, device="cpu", max_batch=1)
    obs = engine.dummy_observation(1)
    chunks = {}
    for name, s in [(f"ar{k}", DecodeSettings(mode="ar", max_tokens=k)) for k in (1, 2, 4, 8)] + \
                   [("bw", DecodeSettings(mode="blockwise", prefix_len=4, refine_iters=1))]:
        r = engine.predict(obs, s)
        a = np.asarray(r.actions)[0]
        assert a.shape == (32, 7) and np.isfinite(a).all(), name
        chunks[name] = a
    # coarse to fine: the chunk changes as tokens are added, and K = 8 is the greedy AR chunk
    assert not np.allclose(chunks["ar1"], chunks["ar8"])
