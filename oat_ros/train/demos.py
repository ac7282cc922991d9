"""Demonstrations for training: LIBERO / robomimic hdf5 reader, windows, normalizer fitting.

Reader (h5py only, LIBERO is never imported). Two layouts of `data/demo_<i>/`:

* LIBERO (`create_dataset.py`): `obs/agentview_rgb`, `obs/eye_in_hand_rgb` (raw, upside
  down), `obs/ee_pos`, `obs/ee_ori` (axis-angle), `obs/gripper_states`, `obs/joint_states`;
  `data.attrs`: `bddl_file_name`, `problem_info` (JSON with `language_instruction`).
* robomimic / robosuite: `obs/agentview_image`, `obs/robot0_eye_in_hand_image`,
  `obs/robot0_eef_pos`, `obs/robot0_eef_quat` (xyzw), `obs/robot0_gripper_qpos`, ...

Both are mapped onto the policy's observation keys: cameras `agentview_rgb`,
`robot0_eye_in_hand_rgb` (uint8 HWC RGB, flipped upright = `img[::-1]`, as OAT's dataset
conversion and env wrapper do), states `robot0_eef_pos` (3), `robot0_eef_quat` (4, xyzw;
`axisangle2quat(ee_ori)` for LIBERO), `robot0_gripper_qpos` (2), `robot0_joint_pos` (7) and
`task_uid` (1, the global LIBERO uid from the bddl file name, see libero_tasks), and `actions`.
Images may be resized on load (cv2 INTER_AREA, the node's resize), e.g. 128 -> 64.

Windows (OAT's dataset): sample t of an episode = observation frames t-To+1..t (the first
frame repeated before the episode start) and the action chunk t..t+H-1 (the last action
repeated after the episode end); every step of every episode is a sample.

Normalizers: mode `limits` (diffusion_policy `LinearNormalizer.fit`): per dimension
min/max -> [-1, 1] (a constant dimension gets scale 1 and is centred at 0), plus the
min/max/mean/std input stats; images per channel over all pixels of the raw uint8 data.

CLI (optional cache; every training CLI also reads hdf5 directly):
    python -m oat_ros.train.demos --data libero_object/ --image-size 64 --out demos64.npz
    python -m oat_ros.train.demos --data demos64.npz --info
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from dataclasses import dataclass, field
from glob import glob

import numpy as np

from ..errors import ConfigError, InputError
from . import libero_tasks

CAMERAS = ("agentview_rgb", "robot0_eye_in_hand_rgb")
STATES = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2,
          "robot0_joint_pos": 7, "task_uid": 1}

# policy camera key -> hdf5 obs keys that hold it (first found wins)
CAMERA_SOURCES = {
    "agentview_rgb": ("agentview_rgb", "agentview_image"),
    "robot0_eye_in_hand_rgb": ("eye_in_hand_rgb", "robot0_eye_in_hand_image",
                               "robot0_eye_in_hand_rgb"),
}


def axisangle2quat(vec: np.ndarray) -> np.ndarray:
    """robosuite `transform_utils.axisangle2quat`, vectorised: [...,3] -> [...,4] xyzw."""
    vec = np.asarray(vec, dtype=np.float64)
    angle = np.linalg.norm(vec, axis=-1, keepdims=True)
    zero = angle == 0.0  # math.isclose(angle, 0.0) with its default tolerances
    safe = np.where(zero, 1.0, angle)
    axis = vec / safe
    q = np.concatenate([axis * np.sin(angle / 2.0), np.cos(angle / 2.0)], axis=-1)
    return np.where(zero, np.array([0.0, 0.0, 0.0, 1.0]), q)


# policy state key -> [(hdf5 obs key, transform)] (first found wins)
STATE_SOURCES = {
    "robot0_eef_pos": (("robot0_eef_pos", None), ("ee_pos", None)),
    "robot0_eef_quat": (("robot0_eef_quat", None), ("ee_ori", axisangle2quat)),
    "robot0_gripper_qpos": (("robot0_gripper_qpos", None), ("gripper_states", None)),
    "robot0_joint_pos": (("robot0_joint_pos", None), ("joint_states", None)),
}


@dataclass
class Episode:
    images: dict            # camera key -> uint8 [T,H,W,3] (upright)
    states: dict            # state key -> float32 [T,d]
    actions: np.ndarray     # float32 [T,A]
    task_uid: int
    task_name: str = ""
    language: str = ""
    source: str = ""        # "<file>:<demo key>"

    def __len__(self) -> int:
        return int(self.actions.shape[0])


def resize_images(frames: np.ndarray, size) -> np.ndarray:
    """uint8 [T,H,W,3] -> [T,h,w,3] with cv2 INTER_AREA (the node's resize)."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if frames.shape[1:3] == (h, w):
        return frames
    import cv2
    out = np.empty((frames.shape[0], h, w, frames.shape[3]), np.uint8)
    for i, img in enumerate(frames):
        out[i] = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_AREA)
    return out


def _demo_keys(data) -> list[str]:
    keys = [k for k in data.keys() if k.startswith("demo_")]

    def order(k):
        tail = k[len("demo_"):]
        return (0, int(tail), k) if tail.isdigit() else (1, 0, k)
    return sorted(keys, key=order)


def _attr_str(attrs, key, default=""):
    v = attrs.get(key, default)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return str(v)


def file_task_info(path) -> dict:
    """{'task_name', 'language', 'task_uid' (None if unknown), 'num_demos', 'flip'} of a file."""
    import h5py
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise InputError(f"{path}: no 'data' group (not a LIBERO/robomimic demo file)")
        return _task_info(f["data"], path)


def _task_info(data, path) -> dict:
    attrs = data.attrs
    name, language = "", ""
    bddl = _attr_str(attrs, "bddl_file_name")
    if bddl:
        name = libero_tasks.task_name_from_bddl(bddl)
    info = _attr_str(attrs, "problem_info")
    if info:
        try:
            language = str(json.loads(info).get("language_instruction", ""))
        except (ValueError, AttributeError):
            pass
    if not name:
        env_args = _attr_str(attrs, "env_args")
        try:
            bddl = json.loads(env_args).get("bddl_file", "") if env_args else ""
        except (ValueError, AttributeError):
            bddl = ""
        name = libero_tasks.task_name_from_bddl(bddl) if bddl else ""
    uid = libero_tasks.task_uid(name) if name else None
    if uid is None:  # LIBERO files are named <task>_demo.hdf5
        stem = libero_tasks.task_name_from_filename(path)
        if libero_tasks.task_uid(stem) is not None:
            name, uid = stem, libero_tasks.task_uid(stem)
    convention = _attr_str(attrs, "macros_image_convention", "opengl").lower()
    return {"task_name": name, "language": language, "task_uid": uid,
            "num_demos": len(_demo_keys(data)), "flip": convention != "opencv"}


def read_hdf5(path, cameras=CAMERAS, states=tuple(STATES), image_size=None, flip="auto",
              task_uid: int | None = None, max_demos: int | None = None,
              demo_keys=None) -> list[Episode]:
    """One LIBERO/robomimic hdf5 file -> episodes (see the module doc for the key mapping).

    flip: 'auto' (upright unless `data.attrs['macros_image_convention'] == 'opencv'`), True, False.
    task_uid: override the uid derived from the bddl file name (needed for non-LIBERO files
    when `task_uid` is one of the states).
    """
    import h5py
    path = os.fspath(path)
    episodes = []
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise InputError(f"{path}: no 'data' group (not a LIBERO/robomimic demo file)")
        data = f["data"]
        info = _task_info(data, path)
        do_flip = info["flip"] if flip == "auto" else bool(flip)
        uid = task_uid if task_uid is not None else info["task_uid"]
        if "task_uid" in states and uid is None:
            raise InputError(f"{path}: cannot derive the LIBERO task uid (task name "
                             f"'{info['task_name']}' is not one of the 130 standard tasks); "
                             f"pass a task uid override for this file (--task-uid)")
        keys = list(demo_keys) if demo_keys is not None else _demo_keys(data)
        if max_demos is not None:
            keys = keys[:max_demos]
        for key in keys:
            demo = data[key]
            if "actions" not in demo:
                raise InputError(f"{path}:{key}: no 'actions' dataset")
            actions = np.asarray(demo["actions"], dtype=np.float32)
            T = actions.shape[0]
            obs = demo["obs"] if "obs" in demo else {}
            imgs = {}
            for cam in cameras:
                src = next((k for k in CAMERA_SOURCES.get(cam, (cam,)) if k in obs), None)
                if src is None:
                    raise InputError(f"{path}:{key}: no camera for '{cam}' (looked for "
                                     f"{list(CAMERA_SOURCES.get(cam, (cam,)))} in obs/)")
                x = np.asarray(obs[src])
                if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
                    raise InputError(f"{path}:{key}/obs/{src}: expected uint8 [T,H,W,3], "
                                     f"got {x.dtype} {list(x.shape)}")
                if do_flip:
                    x = x[:, ::-1]
                if image_size is not None:
                    x = resize_images(x, image_size)
                imgs[cam] = np.ascontiguousarray(x)
            st = {}
            for k in states:
                if k == "task_uid":
                    st[k] = np.full((T, 1), float(uid), np.float32)
                    continue
                found = next(((s, fn) for s, fn in STATE_SOURCES.get(k, ((k, None),)) if s in obs),
                             None)
                if found is None:
                    raise InputError(f"{path}:{key}: no state for '{k}' (looked for "
                                     f"{[s for s, _ in STATE_SOURCES.get(k, ((k, None),))]} in obs/)")
                s, fn = found
                v = np.asarray(obs[s], dtype=np.float64)
                st[k] = (fn(v) if fn else v).astype(np.float32).reshape(T, -1)
            for name, arr in list(imgs.items()) + list(st.items()):
                if arr.shape[0] != T:
                    raise InputError(f"{path}:{key}: '{name}' has {arr.shape[0]} steps, "
                                     f"actions have {T}")
            episodes.append(Episode(imgs, st, actions, -1 if uid is None else int(uid),
                                    info["task_name"], info["language"], f"{path}:{key}"))
    return episodes


# --- the concatenated set -------------------------------------------------------------------

@dataclass
class DemoSet:
    """All episodes concatenated along time (what the training loops index)."""

    images: dict                    # cam -> uint8 [N,H,W,3]
    states: dict                    # key -> float32 [N,d]
    actions: np.ndarray             # float32 [N,A]
    episode_ends: np.ndarray        # int64 [E], exclusive
    episode_task_uid: np.ndarray    # int64 [E]
    episode_source: list = field(default_factory=list)
    task_names: dict = field(default_factory=dict)   # uid -> name
    languages: dict = field(default_factory=dict)    # uid -> language instruction

    @property
    def n_episodes(self) -> int:
        return int(len(self.episode_ends))

    @property
    def n_steps(self) -> int:
        return int(self.actions.shape[0])

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def cameras(self) -> dict:
        return {k: list(v.shape[1:]) for k, v in self.images.items()}

    @property
    def state_dims(self) -> dict:
        return {k: int(v.shape[1]) for k, v in self.states.items()}

    @classmethod
    def from_episodes(cls, episodes: list) -> "DemoSet":
        if not episodes:
            raise InputError("no demonstrations were read")
        cams, keys = list(episodes[0].images), list(episodes[0].states)
        for ep in episodes:
            if list(ep.images) != cams or list(ep.states) != keys:
                raise InputError(f"{ep.source}: keys differ from the first episode")
            for c in cams:
                if ep.images[c].shape[1:] != episodes[0].images[c].shape[1:]:
                    raise InputError(f"{ep.source}: camera '{c}' is {list(ep.images[c].shape[1:])}, "
                                     f"the first episode's is {list(episodes[0].images[c].shape[1:])} "
                                     f"(pass an image size to resize)")
        return cls(
            images={c: np.concatenate([ep.images[c] for ep in episodes]) for c in cams},
            states={k: np.concatenate([ep.states[k] for ep in episodes]).astype(np.float32)
                    for k in keys},
            actions=np.concatenate([ep.actions for ep in episodes]).astype(np.float32),
            episode_ends=np.cumsum([len(ep) for ep in episodes]).astype(np.int64),
            episode_task_uid=np.array([ep.task_uid for ep in episodes], np.int64),
            episode_source=[ep.source for ep in episodes],
            task_names={int(ep.task_uid): ep.task_name for ep in episodes},
            languages={int(ep.task_uid): ep.language for ep in episodes})

    @classmethod
    def concat(cls, sets: list) -> "DemoSet":
        if len(sets) == 1:
            return sets[0]
        return cls.from_episodes([ep for s in sets for ep in s.episodes()])

    def episode(self, e: int) -> Episode:
        s, t = int(self.episode_starts[e]), int(self.episode_ends[e])
        uid = int(self.episode_task_uid[e])
        return Episode({c: v[s:t] for c, v in self.images.items()},
                       {k: v[s:t] for k, v in self.states.items()}, self.actions[s:t], uid,
                       self.task_names.get(uid, ""), self.languages.get(uid, ""),
                       self.episode_source[e] if e < len(self.episode_source) else "")

    def episodes(self):
        for e in range(self.n_episodes):
            yield self.episode(e)

    def subset(self, episode_ids) -> "DemoSet":
        return DemoSet.from_episodes([self.episode(int(e)) for e in episode_ids])

    def select_keys(self, cameras=None, states=None) -> "DemoSet":
        """A view with only the given cameras / state keys (error if one is missing)."""
        def pick(d, keys, what):
            if keys is None:
                return dict(d)
            missing = [k for k in keys if k not in d]
            if missing:
                raise ConfigError(f"the demonstrations have no {what} {missing} (have {list(d)})")
            return {k: d[k] for k in keys}
        return DemoSet(pick(self.images, cameras, "camera"), pick(self.states, states, "state"),
                       self.actions, self.episode_ends, self.episode_task_uid,
                       self.episode_source, self.task_names, self.languages)

    def save(self, path) -> None:
        """Uncompressed .npz (loads in seconds; `python -m oat_ros.train.demos --out`)."""
        arrays = {f"images/{c}": v for c, v in self.images.items()}
        arrays.update({f"states/{k}": v for k, v in self.states.items()})
        meta = {"episode_source": self.episode_source,
                "task_names": {str(k): v for k, v in self.task_names.items()},
                "languages": {str(k): v for k, v in self.languages.items()},
                "cameras": list(self.images), "states": list(self.states)}
        tmp = os.fspath(path) + ".tmp.npz"
        np.savez(tmp, actions=self.actions, episode_ends=self.episode_ends,
                 episode_task_uid=self.episode_task_uid,
                 meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        os.replace(tmp, os.fspath(path))

    @classmethod
    def load(cls, path) -> "DemoSet":
        with np.load(os.fspath(path), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            return cls(images={c: z[f"images/{c}"] for c in meta["cameras"]},
                       states={k: z[f"states/{k}"] for k in meta["states"]},
                       actions=z["actions"], episode_ends=z["episode_ends"],
                       episode_task_uid=z["episode_task_uid"],
                       episode_source=list(meta["episode_source"]),
                       task_names={int(k): v for k, v in meta["task_names"].items()},
                       languages={int(k): v for k, v in meta["languages"].items()})

    def summary(self) -> dict:
        lens = np.diff(np.concatenate([[0], self.episode_ends]))
        return {"episodes": self.n_episodes, "steps": self.n_steps,
                "episode_length": {"min": int(lens.min()), "mean": float(lens.mean()),
                                   "max": int(lens.max())},
                "cameras": self.cameras, "states": self.state_dims,
                "action_dim": int(self.actions.shape[1]),
                "tasks": {int(u): self.task_names.get(int(u), "")
                          for u in np.unique(self.episode_task_uid)},
                "image_mbytes": round(sum(v.nbytes for v in self.images.values()) / 2**20, 1)}


def parse_task_uids(specs) -> tuple[int | None, list]:
    """`--task-uid` values: 'N' (every file) or 'PATTERN=N' (files whose path or basename
    matches the fnmatch PATTERN) -> (default, [(pattern, uid)])."""
    default, rules = None, []
    for spec in specs or []:
        spec = str(spec)
        if "=" in spec:
            pat, _, val = spec.rpartition("=")
            rules.append((pat, int(val)))
        else:
            default = int(spec)
    return default, rules


def _uid_for(path: str, default, rules):
    for pat, uid in rules:
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(os.path.basename(path), pat):
            return uid
    return default


def expand_paths(paths) -> list[str]:
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found = sorted(glob(os.path.join(p, "**", "*.hdf5"), recursive=True)
                           + glob(os.path.join(p, "**", "*.h5"), recursive=True))
            if not found:
                raise InputError(f"{p}: directory without *.hdf5 / *.h5 files")
            out.extend(found)
        elif os.path.isfile(p):
            out.append(p)
        else:
            matches = sorted(glob(p))
            if not matches:
                raise InputError(f"{p}: no such file or directory")
            out.extend(matches)
    return out


def load_demos(paths, cameras=CAMERAS, states=tuple(STATES), image_size=None, flip="auto",
               task_uids=None, max_demos: int | None = None, progress: bool = False) -> DemoSet:
    """hdf5 files / directories / .npz caches -> one DemoSet with exactly these keys.

    A cache keeps its image size; image_size must then match it (or be None)."""
    default_uid, rules = parse_task_uids(task_uids)
    sets, episodes = [], []
    files = expand_paths(paths)
    it = files
    if progress:
        from tqdm import tqdm
        it = tqdm(files, desc="reading demos", unit="file", dynamic_ncols=True)
    for path in it:
        if path.endswith(".npz"):
            ds = DemoSet.load(path).select_keys(cameras, states)
            if image_size is not None:
                size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
                for c, v in ds.images.items():
                    if tuple(v.shape[1:3]) != size:
                        raise ConfigError(f"{path}: camera '{c}' is cached at {list(v.shape[1:3])}, "
                                          f"the config asks for {list(size)}")
            sets.append(ds)
        else:
            episodes.extend(read_hdf5(path, cameras, states, image_size, flip,
                                      _uid_for(path, default_uid, rules), max_demos))
    if episodes:
        sets.append(DemoSet.from_episodes(episodes))
    if not sets:
        raise InputError("no demonstrations given")
    return DemoSet.concat(sets)


# --- windows ------------------------------------------------------------------------------

class Windows:
    """OAT's sampling windows over chosen episodes of a DemoSet.

    Sample j (0 <= j < len) is step t of an episode: obs frames t-To+1..t (clamped to the
    episode start) and actions t..t+H-1 (clamped to the episode end).
    """

    def __init__(self, demos: DemoSet, n_obs_steps: int, horizon: int, episodes=None):
        self.demos, self.n_obs_steps, self.horizon = demos, int(n_obs_steps), int(horizon)
        eps = np.arange(demos.n_episodes) if episodes is None else np.asarray(episodes, np.int64)
        starts, ends = demos.episode_starts, demos.episode_ends
        self.episodes = eps
        self.t = np.concatenate([np.arange(starts[e], ends[e]) for e in eps]).astype(np.int64)
        self.start = np.concatenate([np.full(ends[e] - starts[e], starts[e]) for e in eps])
        self.end = np.concatenate([np.full(ends[e] - starts[e], ends[e]) for e in eps])

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def take(self, ids) -> "Windows":
        """A view holding only the given samples (same DemoSet)."""
        w = Windows.__new__(Windows)
        w.demos, w.n_obs_steps, w.horizon, w.episodes = (self.demos, self.n_obs_steps,
                                                         self.horizon, self.episodes)
        ids = np.asarray(ids, np.int64)
        w.t, w.start, w.end = self.t[ids], self.start[ids], self.end[ids]
        return w

    def indices(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """Sample ids [B] -> (obs frame rows [B,To], action rows [B,H]) into the DemoSet."""
        ids = np.asarray(ids, np.int64)
        t, s, e = self.t[ids, None], self.start[ids, None], self.end[ids, None]
        obs = np.maximum(t - self.n_obs_steps + 1 + np.arange(self.n_obs_steps), s)
        act = np.minimum(t + np.arange(self.horizon), e - 1)
        return obs, act

    def actions(self, ids) -> np.ndarray:
        return self.demos.actions[self.indices(ids)[1]]

    def obs(self, ids) -> tuple[dict, dict]:
        rows = self.indices(ids)[0]
        return ({c: v[rows] for c, v in self.demos.images.items()},
                {k: v[rows] for k, v in self.demos.states.items()})

    def batch(self, ids) -> dict:
        """{'images': {cam: uint8 [B,To,H,W,3]}, 'states': {k: [B,To,d]}, 'actions': [B,H,A]}."""
        obs_rows, act_rows = self.indices(ids)
        return {"images": {c: v[obs_rows] for c, v in self.demos.images.items()},
                "states": {k: v[obs_rows] for k, v in self.demos.states.items()},
                "actions": self.demos.actions[act_rows]}

    def all_action_chunks(self) -> np.ndarray:
        return self.actions(np.arange(len(self)))


def split_episodes(demos: DemoSet, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) episode ids; val has round(fraction*E) episodes, at least one when
    fraction > 0 and there are >= 2 episodes. Split within each task when possible."""
    rng = np.random.default_rng([int(seed), 7])
    E = demos.n_episodes
    if val_fraction <= 0 or E < 2:
        return np.arange(E), np.zeros(0, np.int64)
    val = []
    uids = demos.episode_task_uid
    for uid in np.unique(uids):
        eps = np.flatnonzero(uids == uid)
        n = int(round(val_fraction * len(eps)))
        if n and n < len(eps):
            val.extend(rng.choice(eps, n, replace=False).tolist())
    if not val:
        val = [int(rng.integers(E))]
    val = np.array(sorted(val), np.int64)
    train = np.setdiff1d(np.arange(E), val)
    return train, val


# --- normalizers --------------------------------------------------------------------------

def fit_limits(x: np.ndarray, output_min: float = -1.0, output_max: float = 1.0,
               range_eps: float = 1e-4) -> dict:
    """diffusion_policy `LinearNormalizer.fit(mode='limits')` over all rows of x [N,d]."""
    x = np.asarray(x, np.float64).reshape(-1, np.asarray(x).shape[-1])
    lo, hi = x.min(0), x.max(0)
    mean, std = x.mean(0), (x.std(0, ddof=1) if x.shape[0] > 1 else np.zeros(x.shape[1]))
    return _limits(lo, hi, mean, std, output_min, output_max, range_eps)


def _limits(lo, hi, mean, std, output_min=-1.0, output_max=1.0, range_eps=1e-4) -> dict:
    rng = hi - lo
    ignore = rng < range_eps
    rng = np.where(ignore, output_max - output_min, rng)
    scale = (output_max - output_min) / rng
    offset = output_min - scale * lo
    offset = np.where(ignore, (output_max + output_min) / 2 - lo, offset)
    f32 = lambda a: np.asarray(a, np.float32)
    return {"scale": f32(scale), "offset": f32(offset), "min": f32(lo), "max": f32(hi),
            "mean": f32(mean), "std": f32(std)}


def fit_image_limits(images: np.ndarray, chunk: int = 512) -> dict:
    """Per-channel limits over every pixel of uint8 [N,H,W,C] (chunked float64 sums)."""
    C = images.shape[-1]
    lo, hi = np.full(C, np.inf), np.full(C, -np.inf)
    s, s2, n = np.zeros(C), np.zeros(C), 0
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].reshape(-1, C)
        lo = np.minimum(lo, x.min(0))
        hi = np.maximum(hi, x.max(0))
        xf = x.astype(np.float64)
        s += xf.sum(0)
        s2 += (xf * xf).sum(0)
        n += x.shape[0]
    mean = s / max(n, 1)
    var = (s2 - n * mean * mean) / max(n - 1, 1)
    return _limits(lo, hi, mean, np.sqrt(np.maximum(var, 0.0)))


def fit_normalizers(demos: DemoSet, episodes=None) -> dict:
    """{'action': stats, <camera>: stats (per channel), <state>: stats} on the given episodes."""
    if episodes is not None and len(episodes) < demos.n_episodes:
        rows = np.concatenate([np.arange(demos.episode_starts[e], demos.episode_ends[e])
                               for e in episodes])
    else:
        rows = slice(None)
    out = {"action": fit_limits(demos.actions[rows])}
    for c, v in demos.images.items():
        out[c] = fit_image_limits(v[rows])
    for k, v in demos.states.items():
        out[k] = fit_limits(v[rows])
    return out


def load_stats(field_normalizer, stats: dict) -> None:
    """Write fitted stats into an oat_ros.model.normalizer.FieldNormalizer."""
    import torch
    with torch.no_grad():
        field_normalizer.scale.copy_(torch.as_tensor(stats["scale"]))
        field_normalizer.offset.copy_(torch.as_tensor(stats["offset"]))
        for name in ("min", "max", "mean", "std"):
            getattr(field_normalizer.input_stats, name).copy_(torch.as_tensor(stats[name]))


def stats_to_json(stats: dict) -> dict:
    return {k: {n: np.asarray(a).round(6).tolist() for n, a in v.items()} for k, v in stats.items()}


# --- CLI ----------------------------------------------------------------------------------

def add_data_args(p: argparse.ArgumentParser, images: bool = True) -> None:
    g = p.add_argument_group("demonstrations")
    g.add_argument("--data", nargs="+", required=True,
                   help="LIBERO/robomimic .hdf5 files, directories of them, or .npz caches "
                        "written by `python -m oat_ros.train.demos --out`")
    g.add_argument("--task-uid", action="append", default=[], metavar="[PATTERN=]UID",
                   help="task uid override: 'N' for every file, or 'PATTERN=N' for files matching "
                        "the glob (default: from the bddl file name, LIBERO standard-suite order)")
    g.add_argument("--max-demos", type=int, default=None, help="read at most this many demos per file")
    g.add_argument("--flip", choices=["auto", "yes", "no"], default="auto",
                   help="flip images upright (auto: unless the file says opencv convention)")
    if images:
        g.add_argument("--image-size", type=int, default=None,
                       help="resize images to this square size on load (default: the preset's)")


def flip_arg(v: str):
    return {"auto": "auto", "yes": True, "no": False}[v]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m oat_ros.train.demos",
                                description="Read LIBERO/robomimic demonstrations, print a summary, "
                                            "optionally cache them as .npz for the training CLIs.")
    add_data_args(p)
    p.add_argument("--cameras", nargs="*", default=list(CAMERAS))
    p.add_argument("--states", nargs="*", default=list(STATES))
    p.add_argument("--out", default=None, help="write the DemoSet cache (.npz) here")
    p.add_argument("--info", action="store_true", help="print the summary as JSON (default when no --out)")
    args = p.parse_args(argv)
    demos = load_demos(args.data, args.cameras, args.states, args.image_size, flip_arg(args.flip),
                       args.task_uid, args.max_demos, progress=True)
    print(json.dumps(demos.summary(), indent=2))
    if args.out:
        demos.save(args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
