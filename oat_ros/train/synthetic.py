"""Fake demonstrations for tests and smoke runs: smooth action trajectories, consistent
states, and small images whose content follows the end effector (so a policy can learn
from them). `write_libero_hdf5` writes them in the LIBERO layout (libero-here.md §5): raw
images upside down, `ee_ori` as axis-angle, task info in `data.attrs`.
"""
from __future__ import annotations

import json

import numpy as np

from . import libero_tasks
from .demos import Episode, axisangle2quat


def smooth_actions(T: int, rng: np.random.Generator, action_dim: int = 7,
                   periods=(25, 70), n_waves: int = 2) -> np.ndarray:
    """[T, action_dim] float32: sums of sinusoids (periods in steps) in [-1, 1], gripper -1
    then +1."""
    t = np.arange(T)[:, None]
    a = np.zeros((T, action_dim))
    for _ in range(n_waves):
        period = rng.uniform(*periods, size=(1, action_dim - 1))
        phase = rng.uniform(0, 2 * np.pi, size=(1, action_dim - 1))
        amp = rng.uniform(0.15, 0.45, size=(1, action_dim - 1))
        a[:, :-1] += amp * np.sin(2 * np.pi * t / period + phase)
    switch = int(rng.integers(T // 3, max(T // 3 + 1, 2 * T // 3)))
    a[:, -1] = np.where(np.arange(T) < switch, -1.0, 1.0)
    return np.clip(a, -1, 1).astype(np.float32)


def _render(pos: np.ndarray, size: int, color, bg) -> np.ndarray:
    """Upright uint8 [T,size,size,3]: a square blob at the (x, y) of pos on a plain background."""
    T = pos.shape[0]
    img = np.empty((T, size, size, 3), np.uint8)
    img[:] = np.asarray(bg, np.uint8)
    r = max(1, size // 10)
    c = np.clip(((pos[:, :2] + 0.5) * size).astype(int), r, size - r - 1)
    for i in range(T):
        y, x = c[i, 1], c[i, 0]
        img[i, y - r:y + r + 1, x - r:x + r + 1] = color
    return img


def make_episode(T: int, rng: np.random.Generator, image_size: int = 32, task_uid: int = 10,
                 task_name: str = "", cameras=("agentview_rgb", "robot0_eye_in_hand_rgb"),
                 periods=(25, 70), n_waves: int = 2):
    """One fake episode as the raw LIBERO obs dict (upright images) + its Episode view."""
    actions = smooth_actions(T, rng, periods=periods, n_waves=n_waves)
    ee_pos = (np.cumsum(actions[:, :3], 0) * 0.01 + rng.uniform(-0.1, 0.1, 3)).astype(np.float64)
    ee_ori = (np.cumsum(actions[:, 3:6], 0) * 0.005 + np.array([np.pi - 0.1, 0.05, 0.0]))
    opening = np.clip(0.5 - 0.5 * np.cumsum(actions[:, 6]) / 10.0, 0.0, 1.0)
    gripper = np.stack([0.04 * opening, -0.04 * opening], 1)
    joints = np.cumsum(rng.normal(0, 0.01, (T, 7)), 0)
    bg = rng.integers(40, 90, 3)
    agent = _render(ee_pos, image_size, (230, 60, 40), bg)
    hand = _render(ee_pos[:, [1, 2]], image_size, (40, 200, 90), bg[::-1])
    raw = {"actions": actions.astype(np.float64), "agentview_rgb": agent, "eye_in_hand_rgb": hand,
           "ee_pos": ee_pos, "ee_ori": ee_ori, "gripper_states": gripper, "joint_states": joints}
    images = {"agentview_rgb": agent, "robot0_eye_in_hand_rgb": hand}
    states = {"robot0_eef_pos": ee_pos.astype(np.float32),
              "robot0_eef_quat": axisangle2quat(ee_ori).astype(np.float32),
              "robot0_gripper_qpos": gripper.astype(np.float32),
              "robot0_joint_pos": joints.astype(np.float32),
              "task_uid": np.full((T, 1), float(task_uid), np.float32)}
    ep = Episode({c: images[c] for c in cameras}, states, actions, int(task_uid), task_name)
    return raw, ep


def make_episodes(n: int, T=(40, 60), image_size: int = 32, seed: int = 0, task_uid: int = 10,
                  cameras=("agentview_rgb", "robot0_eye_in_hand_rgb"), periods=(25, 70),
                  n_waves: int = 2) -> list:
    """n (raw, Episode) pairs with lengths drawn from [T0, T1]."""
    rng = np.random.default_rng(seed)
    lo, hi = (T, T) if isinstance(T, int) else T
    name = libero_tasks.task_of_uid(task_uid)[1] if 0 <= task_uid < libero_tasks.N_TASKS else ""
    return [make_episode(int(rng.integers(lo, hi + 1)), rng, image_size, task_uid, name, cameras,
                         periods, n_waves) for _ in range(n)]


def write_libero_hdf5(path, raws: list, task_name: str, language: str = "",
                      suite: str = "libero_object") -> None:
    """Write raw episodes (upright images) in the LIBERO demo layout (images stored upside down)."""
    import h5py
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_name"] = "Libero_Tabletop_Manipulation"
        data.attrs["problem_info"] = json.dumps({"problem_name": "libero_tabletop_manipulation",
                                                 "domain_name": "robosuite",
                                                 "language_instruction": language})
        data.attrs["macros_image_convention"] = "opengl"
        data.attrs["bddl_file_name"] = f"chiliocosm/bddl_files/{suite}/{task_name}.bddl"
        data.attrs["num_demos"] = len(raws)
        data.attrs["total"] = int(sum(r["actions"].shape[0] for r in raws))
        for i, r in enumerate(raws):
            T = r["actions"].shape[0]
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = T
            g.create_dataset("actions", data=r["actions"])
            g.create_dataset("rewards", data=np.r_[np.zeros(T - 1), 1].astype(np.uint8))
            g.create_dataset("dones", data=np.r_[np.zeros(T - 1), 1].astype(np.uint8))
            g.create_dataset("robot_states", data=np.concatenate(
                [r["gripper_states"], r["ee_pos"], axisangle2quat(r["ee_ori"])], 1))
            o = g.create_group("obs")
            o.create_dataset("agentview_rgb", data=r["agentview_rgb"][:, ::-1])
            o.create_dataset("eye_in_hand_rgb", data=r["eye_in_hand_rgb"][:, ::-1])
            for k in ("ee_pos", "ee_ori", "gripper_states", "joint_states"):
                o.create_dataset(k, data=r[k])
            o.create_dataset("ee_states", data=np.concatenate([r["ee_pos"], r["ee_ori"]], 1))
