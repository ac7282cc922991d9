"""Demonstrations in the LIBERO hdf5 layout (shared/design/libero-here.md §5), h5py only.

The layout is the one upstream LIBERO's ``scripts/create_dataset.py`` writes and OAT's
``dataset_conversion.py`` reads, so real LIBERO datasets and ours load through one reader::

    data                      attrs: env_name, problem_info (JSON: problem_name, domain_name,
                                     language_instruction), macros_image_convention ("opengl"),
                                     bddl_file_name, bddl_file_content, env_args (JSON
                                     {"type": 1, env_name, problem_name, bddl_file, env_kwargs}),
                                     num_demos, total
    data/demo_{i}             attrs: num_samples, model_file (MJCF xml), init_state (= states[0])
      actions       (T, 7) f64   OSC_POSE delta, gripper -1 open / +1 close
      states        (T, S) f64   flattened MuJoCo state before each action
      robot_states  (T, 9) f64   gripper_qpos(2) + eef_pos(3) + eef_quat(4, xyzw)
      rewards, dones (T,)  u8    0 ... 1 on the last step
      obs/agentview_rgb, obs/eye_in_hand_rgb  (T, H, W, 3) u8, RAW (upside down, OpenGL)
      obs/gripper_states (T, 2), joint_states (T, 7), ee_pos (T, 3), ee_ori (T, 3, axis-angle),
      obs/ee_states (T, 6) = ee_pos + ee_ori

Conventions of this writer (everything else exactly as above):

* ``obs[t]`` is the observation the action ``actions[t]`` was chosen from (robomimic
  convention). Upstream LIBERO files pair ``actions[t]`` with the observation *after* it
  (their replay script records ``env.step(a)``'s return value); the layout is the same.
* only successful episodes are written; the last step is the first one whose
  ``check_success()`` held, so ``rewards[-1] == dones[-1] == 1``.
* a few extra attributes that LIBERO readers ignore: ``data.attrs["oat_ros"]`` (JSON: suite,
  task index/uid/name, expert version), per demo ``init_state_index`` (the benchmark init state
  the episode started from), ``settle_steps`` and ``gripper_action0`` (robosuite's stateful
  gripper command at the first step: set it before replaying for a bit-exact replay).
* ``--no-images`` files simply lack the two ``*_rgb`` datasets.

This module imports neither LIBERO nor ROS (numpy and h5py only); `read_demo_file` is a
LIBERO-free reader for tests and tools.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

DATA_ATTRS = ("env_name", "problem_info", "macros_image_convention", "bddl_file_name",
              "bddl_file_content", "env_args", "num_demos", "total")
DEMO_ATTRS = ("num_samples", "model_file", "init_state")
DEMO_KEYS = ("actions", "states", "robot_states", "rewards", "dones")
OBS_KEYS = ("gripper_states", "joint_states", "ee_pos", "ee_ori", "ee_states")
IMAGE_KEYS = ("agentview_rgb", "eye_in_hand_rgb")
#: LIBERO camera name -> obs key
CAMERA_KEYS = {"agentview": "agentview_rgb", "robot0_eye_in_hand": "eye_in_hand_rgb"}


def quat2axisangle(quat_xyzw) -> np.ndarray:
    """robosuite's `quat2axisangle` (x, y, z, w quaternion -> axis * angle)."""
    q = np.asarray(quat_xyzw, dtype=np.float64).copy()
    q[3] = np.clip(q[3], -1.0, 1.0)
    den = math.sqrt(1.0 - q[3] * q[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return q[:3] * 2.0 * math.acos(q[3]) / den


@dataclass
class Episode:
    """Per-step buffers of one episode (append with `add_step`, then `finish`)."""
    actions: list = field(default_factory=list)
    states: list = field(default_factory=list)
    gripper_qpos: list = field(default_factory=list)
    joint_pos: list = field(default_factory=list)
    eef_pos: list = field(default_factory=list)
    eef_quat: list = field(default_factory=list)     # xyzw
    images: dict = field(default_factory=dict)       # obs key -> list of (H, W, 3) u8
    success_step: int | None = None                  # index of the first successful step
    model_file: str = ""
    attrs: dict = field(default_factory=dict)        # extra per-demo attrs

    def add_step(self, action, state, gripper_qpos, joint_pos, eef_pos, eef_quat_xyzw,
                 images: dict | None = None):
        """One step: the observation/state *before* `action`, and the action."""
        self.actions.append(np.asarray(action, dtype=np.float64).copy())
        self.states.append(np.asarray(state, dtype=np.float64).copy())
        self.gripper_qpos.append(np.asarray(gripper_qpos, dtype=np.float64).copy())
        self.joint_pos.append(np.asarray(joint_pos, dtype=np.float64).copy())
        self.eef_pos.append(np.asarray(eef_pos, dtype=np.float64).copy())
        self.eef_quat.append(np.asarray(eef_quat_xyzw, dtype=np.float64).copy())
        for key, img in (images or {}).items():
            self.images.setdefault(key, []).append(np.asarray(img, dtype=np.uint8))

    def __len__(self):
        return len(self.actions)

    def arrays(self) -> dict:
        """The datasets of this demo (keys relative to data/demo_i)."""
        T = len(self)
        if T == 0:
            raise ValueError("empty episode")
        ee_pos = np.stack(self.eef_pos)
        ee_ori = np.stack([quat2axisangle(q) for q in self.eef_quat])
        rewards = np.zeros(T, dtype=np.uint8)
        rewards[-1] = 1
        out = {
            "actions": np.stack(self.actions),
            "states": np.stack(self.states),
            "robot_states": np.concatenate([np.stack(self.gripper_qpos), ee_pos,
                                            np.stack(self.eef_quat)], axis=1),
            "rewards": rewards,
            "dones": rewards.copy(),
            "obs/gripper_states": np.stack(self.gripper_qpos),
            "obs/joint_states": np.stack(self.joint_pos),
            "obs/ee_pos": ee_pos,
            "obs/ee_ori": ee_ori,
            "obs/ee_states": np.concatenate([ee_pos, ee_ori], axis=1),
        }
        for key, imgs in self.images.items():
            if len(imgs) != T:
                raise ValueError(f"{key}: {len(imgs)} images for {T} steps")
            out[f"obs/{key}"] = np.stack(imgs).astype(np.uint8)
        return out


def env_metadata(control_env, bddl_file: str, env_kwargs: dict, extra: dict | None = None) -> dict:
    """The `data` attributes for a LIBERO `ControlEnv` built from `bddl_file` with
    `env_kwargs` (LIBERO-free: only reads attributes of the given env)."""
    env_name = type(control_env.env).__name__
    problem_info = {"problem_name": control_env.problem_name,
                    "domain_name": control_env.domain_name,
                    "language_instruction": control_env.language_instruction}
    env_args = {"type": 1, "env_name": env_name, "problem_name": control_env.problem_name,
                "bddl_file": bddl_file, "env_kwargs": env_kwargs}
    try:
        import robosuite.macros as macros
        convention = macros.IMAGE_CONVENTION
    except Exception:  # noqa: BLE001
        convention = "opengl"
    with open(bddl_file) as fh:
        content = fh.read()
    meta = {"env_name": env_name, "problem_info": json.dumps(problem_info),
            "macros_image_convention": convention, "bddl_file_name": bddl_file,
            "bddl_file_content": content, "env_args": json.dumps(env_args)}
    if extra:
        meta["oat_ros"] = json.dumps(extra)
    return meta


class DemoWriter:
    """Appends successful episodes to one LIBERO-layout hdf5 file.

    `mode="a"` reopens an existing (partial) file and continues its demo numbering;
    `close()` (or the context manager) writes `num_demos` and `total`.
    """

    def __init__(self, path, meta: dict | None = None, mode: str = "w",
                 compress_images: bool = True):
        import h5py
        self.path = str(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.f = h5py.File(self.path, mode)
        self.data = self.f.require_group("data")
        for k, v in (meta or {}).items():
            self.data.attrs[k] = v
        self.compress_images = bool(compress_images)
        self._refresh_counts()

    def _refresh_counts(self):
        demos = self.demo_names()
        self.num_demos = len(demos)
        self.total = int(sum(int(self.data[d].attrs["num_samples"]) for d in demos))
        self.data.attrs["num_demos"] = self.num_demos
        self.data.attrs["total"] = self.total

    def demo_names(self) -> list:
        names = [k for k in self.data.keys() if k.startswith("demo_")]
        return sorted(names, key=lambda k: int(k.split("_")[1]))

    def demo_attrs(self) -> list:
        return [dict(self.data[d].attrs) for d in self.demo_names()]

    def add(self, ep: Episode) -> str:
        """Write one (successful) episode as the next demo_i; returns its name."""
        arrays = ep.arrays()
        idx = max([int(n.split("_")[1]) for n in self.demo_names()] + [-1]) + 1
        name = f"demo_{idx}"
        g = self.data.create_group(name)
        g.create_group("obs")
        for key, arr in arrays.items():
            kw = {}
            if key.endswith("_rgb") and self.compress_images:
                kw = dict(compression="gzip", compression_opts=4,
                          chunks=(1,) + arr.shape[1:])
            g.create_dataset(key, data=arr, **kw)
        g.attrs["num_samples"] = len(ep)
        g.attrs["model_file"] = ep.model_file
        g.attrs["init_state"] = arrays["states"][0]
        for k, v in ep.attrs.items():
            g.attrs[k] = v
        self._refresh_counts()
        self.f.flush()
        return name

    def set_attr(self, key, value):
        self.data.attrs[key] = value

    def close(self):
        if self.f is not None:
            self._refresh_counts()
            self.f.close()
            self.f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_demo_file(path) -> list:
    """All demos of a LIBERO-layout hdf5 file as a list of dicts (LIBERO- and ROS-free).

    Each dict: every dataset under data/demo_i (``"actions"``, ``"states"``, ...,
    ``"obs/agentview_rgb"``...), ``"attrs"`` (the demo's attributes), ``"name"`` and
    ``"file_attrs"`` (the `data` group's attributes, JSON strings decoded into
    ``problem_info`` / ``env_args``). Works for upstream LIBERO datasets too.
    """
    import h5py
    out = []
    with h5py.File(path, "r") as f:
        data = f["data"]
        file_attrs = {k: _attr(v) for k, v in data.attrs.items()}
        for k in ("problem_info", "env_args", "oat_ros"):
            if isinstance(file_attrs.get(k), str):
                try:
                    file_attrs[k] = json.loads(file_attrs[k])
                except ValueError:
                    pass
        names = sorted((k for k in data.keys() if k.startswith("demo_")),
                       key=lambda k: int(k.split("_")[1]))
        for name in names:
            g = data[name]
            d = {"name": name, "attrs": {k: _attr(v) for k, v in g.attrs.items()},
                 "file_attrs": file_attrs}

            def visit(key, obj, _d=d):
                if isinstance(obj, h5py.Dataset):
                    _d[key] = obj[()]
            g.visititems(visit)
            out.append(d)
    return out


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def missing_layout_keys(path) -> list:
    """Names of §5 keys/attrs absent from a file (empty list = complete layout)."""
    import h5py
    missing = []
    with h5py.File(path, "r") as f:
        if "data" not in f:
            return ["data"]
        data = f["data"]
        missing += [f"data.attrs[{k}]" for k in DATA_ATTRS if k not in data.attrs]
        for name in (k for k in data.keys() if k.startswith("demo_")):
            g = data[name]
            missing += [f"{name}.attrs[{k}]" for k in DEMO_ATTRS if k not in g.attrs]
            missing += [f"{name}/{k}" for k in DEMO_KEYS if k not in g]
            missing += [f"{name}/obs/{k}" for k in OBS_KEYS + IMAGE_KEYS
                        if "obs" not in g or k not in g["obs"]]
    return missing
