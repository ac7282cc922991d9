"""Action -> robot command math of the chunk executor (numpy only: no rclpy, no torch).

`oat_ros.ros.executor_node` turns the action in force at each control tick (from
`oat_ros.chunks.ChunkQueue`) into one command with a `CommandAdapter`, then into a ROS message.
Everything here is plain numpy so it is unit-tested without ROS.

Adapters (``output``)
---------------------
``joint_trajectory``  joint position targets for a joint_trajectory_controller.
    ``joint_mode = absolute``: target = joint_scale * action[joint_indices] (the policy's
    actions are joint positions). Chunks whose used rows put a joint outside
    [joint_lower_limits, joint_upper_limits] are rejected on arrival.
    ``joint_mode = delta``: target = measured joint position (last /joint_states) +
    joint_scale * action[joint_indices] * tick / step, i.e. the delta per chunk step is spread
    over the ticks of that step (tick = step: target = measured + delta); clamped to the joint
    limits.
    Both: the change from the reference (previous target, else the measured position) is
    limited to max_joint_velocity * tick per joint (0 = no limit); no joint state and no
    previous target: no command (the node waits for /joint_states).
``twist``  end-effector velocity (e.g. MoveIt Servo): OSC-style deltas (LIBERO: action 1.0 =
    linear_scale_m = 5 cm / angular_scale_rad = 0.5 rad per chunk step) become
    velocity = action * scale / step, with step = the chunk's control_period_s. The linear
    (angular) velocity vector is scaled down to max_linear_speed (max_angular_speed) if it is
    faster (0 = no limit). Hold = zero twist.
``pose``  integrated end-effector target: starts at the measured pose (eef_pose_topic), then
    each tick moves it by the (speed-limited) twist above times the tick: position += v * tick,
    orientation = exp(w * tick) * orientation (rotation in the command frame, like LIBERO's OSC
    axis-angle deltas); the position is clamped to the workspace box (a measured pose outside
    the box starts nothing). Hold = the last target.
Gripper (every adapter, ``gripper_index >= 0``): action in [-1 open, +1 closed] (LIBERO) ->
    binary: closed if action > 0 else open; linear: open + (a + 1) / 2 * (closed - open).
    Hold = the last gripper command.

Every command passes `CommandAdapter.check_command` (finite, inside the configured bounds)
before the node sends it; a command that fails is not sent (the node holds instead).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

OUTPUTS = ("joint_trajectory", "twist", "pose")
JOINT_MODES = ("absolute", "delta")
_BOUND_TOL = 1e-9


# ---------------------------------------------------------------------------------------
# rotations (quaternions are x, y, z, w like geometry_msgs and LIBERO)
# ---------------------------------------------------------------------------------------
def quat_multiply(a, b) -> np.ndarray:
    """Hamilton product a * b (xyzw)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw,
                     aw * bw - ax * bx - ay * by - az * bz])


def quat_from_rotvec(rotvec) -> np.ndarray:
    """Unit quaternion (xyzw) of the rotation vector (axis * angle, radians)."""
    v = np.asarray(rotvec, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.array([0.5 * v[0], 0.5 * v[1], 0.5 * v[2], 1.0]) / math.sqrt(
            1.0 + 0.25 * angle * angle)
    s = math.sin(angle / 2) / angle
    return np.array([v[0] * s, v[1] * s, v[2] * s, math.cos(angle / 2)])


def quat_normalize(q) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    n = float(np.linalg.norm(q))
    if not math.isfinite(n) or n < 1e-9:
        raise ValueError(f"not a rotation quaternion: {q.tolist()}")
    q = q / n
    return q if q[3] >= 0 else -q


def limit_norm(v, max_norm: float) -> tuple[np.ndarray, bool]:
    """v scaled down to |v| <= max_norm (0 = no limit); (v, whether it was limited)."""
    v = np.asarray(v, dtype=np.float64)
    if max_norm <= 0:
        return v, False
    n = float(np.linalg.norm(v))
    if n > max_norm:
        return v * (max_norm / n), True
    return v, False


def gripper_position(a: float, open_pos: float, closed_pos: float, binary: bool) -> float:
    """Gripper action (-1 open .. +1 closed) -> gripper joint position."""
    if binary:
        return float(closed_pos if a > 0 else open_pos)
    w = (min(1.0, max(-1.0, float(a))) + 1.0) / 2.0
    return float(open_pos + w * (closed_pos - open_pos))


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
@dataclass
class AdapterConfig:
    output: str = "twist"
    action_dim: int = 7
    joint_names: list = field(default_factory=lambda: [f"panda_joint{i}" for i in range(1, 8)])
    joint_indices: list = field(default_factory=lambda: list(range(7)))
    linear_indices: list = field(default_factory=lambda: [0, 1, 2])
    angular_indices: list = field(default_factory=lambda: [3, 4, 5])
    gripper_index: int = 6                # -1 = the actions have no gripper dimension
    joint_mode: str = "absolute"
    joint_scale: float = 1.0
    joint_lower_limits: list = field(default_factory=lambda: [-math.pi] * 7)
    joint_upper_limits: list = field(default_factory=lambda: [math.pi] * 7)
    max_joint_velocity: float = 0.5       # rad/s per joint; 0 = no limit
    linear_scale_m: float = 0.05          # metres per unit action per chunk step
    angular_scale_rad: float = 0.5        # radians per unit action per chunk step
    max_linear_speed: float = 0.25        # m/s; 0 = no limit
    max_angular_speed: float = 1.0        # rad/s; 0 = no limit
    workspace_min: list = field(default_factory=lambda: [-1.0, -1.0, 0.0])
    workspace_max: list = field(default_factory=lambda: [1.0, 1.0, 1.5])
    gripper_open_position: float = 0.04
    gripper_closed_position: float = 0.0
    gripper_binary: bool = True
    gripper_joint_count: int = 1

    def check(self) -> str | None:
        """Why this configuration cannot be used, or None."""
        if self.output not in OUTPUTS:
            return f"output '{self.output}' not in {OUTPUTS}"
        if self.joint_mode not in JOINT_MODES:
            return f"joint_mode '{self.joint_mode}' not in {JOINT_MODES}"
        d = int(self.action_dim)
        if d < 1:
            return f"action_dim {d} must be >= 1"
        if not -1 <= self.gripper_index < d:
            return f"gripper_index {self.gripper_index} not in [-1, action_dim {d})"
        used = {"joint_trajectory": [("joint_indices", self.joint_indices)],
                "twist": [("linear_indices", self.linear_indices),
                          ("angular_indices", self.angular_indices)],
                "pose": [("linear_indices", self.linear_indices),
                         ("angular_indices", self.angular_indices)]}[self.output]
        taken = [self.gripper_index] if self.gripper_index >= 0 else []
        for name, idx in used:
            if name != "joint_indices" and len(idx) != 3:
                return f"{name} {list(idx)}: expected 3 action indices (x, y, z)"
            for i in idx:
                if not 0 <= i < d:
                    return f"{name}: index {i} not in [0, action_dim {d})"
            taken += list(idx)
        if len(set(taken)) != len(taken):
            return f"an action index is mapped twice: {taken} (indices + gripper_index)"
        n = len(self.joint_names)
        if self.output == "joint_trajectory":
            if n < 1 or len(set(self.joint_names)) != n or not all(self.joint_names):
                return f"joint_names {list(self.joint_names)}: expected distinct non-empty names"
            if len(self.joint_indices) != n:
                return (f"joint_indices has {len(self.joint_indices)} entries for "
                        f"{n} joint_names")
        for name in ("joint_lower_limits", "joint_upper_limits"):
            if len(getattr(self, name)) != n:
                return f"{name} has {len(getattr(self, name))} entries for {n} joint_names"
        lo, hi = np.asarray(self.joint_lower_limits, float), np.asarray(self.joint_upper_limits, float)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (lo < hi).all()):
            return "joint limits: expected finite lower < upper for every joint"
        for name in ("workspace_min", "workspace_max"):
            if len(getattr(self, name)) != 3:
                return f"{name}: expected 3 values (x, y, z)"
        wlo, whi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if not (np.isfinite(wlo).all() and np.isfinite(whi).all() and (wlo < whi).all()):
            return "workspace box: expected finite workspace_min < workspace_max"
        for name in ("joint_scale", "linear_scale_m", "angular_scale_rad", "max_joint_velocity",
                     "max_linear_speed", "max_angular_speed", "gripper_open_position",
                     "gripper_closed_position"):
            if not math.isfinite(getattr(self, name)):
                return f"{name}: must be finite"
        for name in ("max_joint_velocity", "max_linear_speed", "max_angular_speed"):
            if getattr(self, name) < 0:
                return f"{name} {getattr(self, name)}: must be >= 0 (0 = no limit)"
        if self.gripper_joint_count < 1:
            return f"gripper_joint_count {self.gripper_joint_count}: must be >= 1"
        return None


@dataclass
class Command:
    """One arm command (which fields are set depends on the output) + the gripper position."""

    output: str
    positions: np.ndarray | None = None      # joint_trajectory
    linear: np.ndarray | None = None         # twist
    angular: np.ndarray | None = None        # twist
    position: np.ndarray | None = None       # pose
    orientation: np.ndarray | None = None    # pose (xyzw)
    gripper: float | None = None
    limited: tuple = ()                      # what was saturated / clamped this tick
    hold: bool = False

    def values(self) -> np.ndarray:
        parts = [p for p in (self.positions, self.linear, self.angular, self.position,
                             self.orientation) if p is not None]
        if self.gripper is not None:
            parts.append(np.array([self.gripper]))
        return np.concatenate(parts) if parts else np.zeros(0)


# ---------------------------------------------------------------------------------------
# adapter
# ---------------------------------------------------------------------------------------
class CommandAdapter:
    """Stateful (previous target, last gripper command) action -> `Command` conversion."""

    def __init__(self, cfg: AdapterConfig):
        reason = cfg.check()
        if reason:
            raise ValueError(reason)
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        """Forget the previous target (after enable): the next one starts from the measured
        state again."""
        self.last: Command | None = None
        self.gripper: float | None = None

    # -- chunk-level check ------------------------------------------------------------------
    def check_rows(self, rows: np.ndarray) -> str | None:
        """Why these action rows (the used steps of a chunk) cannot be executed, or None.
        Absolute joint targets must lie inside the joint limits (other outputs are limited
        per tick)."""
        cfg = self.cfg
        if cfg.output != "joint_trajectory" or cfg.joint_mode != "absolute":
            return None
        targets = cfg.joint_scale * np.asarray(rows, float)[:, cfg.joint_indices]
        lo, hi = np.asarray(cfg.joint_lower_limits), np.asarray(cfg.joint_upper_limits)
        bad = (targets < lo - _BOUND_TOL) | (targets > hi + _BOUND_TOL)
        if bad.any():
            step, j = map(int, np.argwhere(bad)[0])
            return (f"joint target {targets[step, j]:.4g} of {cfg.joint_names[j]} at step "
                    f"{step} outside the joint limits [{lo[j]:g}, {hi[j]:g}]")
        return None

    # -- per-tick conversion ----------------------------------------------------------------
    def command(self, action, step_s: float, tick_s: float, joints: dict | None = None,
                pose: tuple | None = None) -> tuple[Command | None, str]:
        """The command for `action` (one row, policy units) held for one tick of `tick_s`
        seconds, where one chunk step lasts `step_s`. `joints`: measured {name: position};
        `pose`: measured (xyz, quat xyzw). Returns (command, "") or (None, why not)."""
        cfg = self.cfg
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (cfg.action_dim,) or not np.isfinite(a).all():
            return None, f"bad action {a.tolist()}"
        if cfg.output == "joint_trajectory":
            cmd, why = self._joints(a, step_s, tick_s, joints)
        elif cfg.output == "twist":
            lin, ang, limited = self._velocity(a, step_s)
            cmd, why = Command("twist", linear=lin, angular=ang, limited=limited), ""
        else:
            cmd, why = self._pose(a, step_s, tick_s, pose)
        if cmd is None:
            return None, why
        if cfg.gripper_index >= 0:
            cmd.gripper = gripper_position(a[cfg.gripper_index], cfg.gripper_open_position,
                                           cfg.gripper_closed_position, cfg.gripper_binary)
        why = self.check_command(cmd, tick_s)
        if why:
            return None, why
        self.last, self.gripper = cmd, cmd.gripper
        return cmd, ""

    def hold(self) -> Command | None:
        """What holding means for this output: zero twist, or the last target (None when no
        target was sent yet: the controller keeps its own)."""
        if self.cfg.output == "twist":
            return Command("twist", linear=np.zeros(3), angular=np.zeros(3), gripper=self.gripper,
                           hold=True)
        if self.last is None:
            return None
        last = self.last
        return Command(last.output, positions=last.positions, position=last.position,
                       orientation=last.orientation, gripper=self.gripper, hold=True)

    def check_command(self, cmd: Command, tick_s: float) -> str | None:
        """Why `cmd` must not be sent (non-finite or outside a bound), or None. The limits above
        already keep commands inside; this is the last guard before publishing."""
        cfg = self.cfg
        values = cmd.values()
        if not np.isfinite(values).all():
            return f"non-finite command {values.tolist()}"
        tol = 1e-6
        if cmd.positions is not None:
            lo, hi = np.asarray(cfg.joint_lower_limits), np.asarray(cfg.joint_upper_limits)
            if ((cmd.positions < lo - tol) | (cmd.positions > hi + tol)).any():
                return f"joint target {cmd.positions.tolist()} outside the joint limits"
        if cmd.linear is not None:
            if cfg.max_linear_speed > 0 and np.linalg.norm(cmd.linear) > cfg.max_linear_speed + tol:
                return f"linear speed {np.linalg.norm(cmd.linear):.4g} > max_linear_speed"
            if (cfg.max_angular_speed > 0
                    and np.linalg.norm(cmd.angular) > cfg.max_angular_speed + tol):
                return f"angular speed {np.linalg.norm(cmd.angular):.4g} > max_angular_speed"
        if cmd.position is not None:
            lo, hi = np.asarray(cfg.workspace_min), np.asarray(cfg.workspace_max)
            if ((cmd.position < lo - tol) | (cmd.position > hi + tol)).any():
                return f"pose target {cmd.position.tolist()} outside the workspace box"
            if abs(np.linalg.norm(cmd.orientation) - 1.0) > 1e-6:
                return "pose target orientation is not a unit quaternion"
        return None

    # -- outputs ----------------------------------------------------------------------------
    def _velocity(self, a: np.ndarray, step_s: float):
        cfg = self.cfg
        lin = a[cfg.linear_indices] * cfg.linear_scale_m / step_s
        ang = a[cfg.angular_indices] * cfg.angular_scale_rad / step_s
        lin, lin_limited = limit_norm(lin, cfg.max_linear_speed)
        ang, ang_limited = limit_norm(ang, cfg.max_angular_speed)
        limited = tuple(name for name, hit in (("linear_speed", lin_limited),
                                               ("angular_speed", ang_limited)) if hit)
        return lin, ang, limited

    def _joints(self, a, step_s, tick_s, joints):
        cfg = self.cfg
        measured = None
        if joints is not None and all(n in joints for n in cfg.joint_names):
            measured = np.array([joints[n] for n in cfg.joint_names], dtype=np.float64)
        values = cfg.joint_scale * a[cfg.joint_indices]
        if cfg.joint_mode == "absolute":
            target = values
        else:
            if measured is None:
                return None, "no joint state yet (joint_mode delta integrates from it)"
            target = measured + values * (tick_s / step_s)
        limited = []
        lo, hi = np.asarray(cfg.joint_lower_limits), np.asarray(cfg.joint_upper_limits)
        clamped = np.clip(target, lo, hi)
        if (clamped != target).any():
            limited.append("joint_limits")
            target = clamped
        if cfg.max_joint_velocity > 0:
            ref = self.last.positions if self.last is not None else measured
            if ref is None:
                return None, "no joint state yet (needed to limit the joint velocity)"
            max_step = cfg.max_joint_velocity * tick_s
            stepped = ref + np.clip(target - ref, -max_step, max_step)
            if (np.abs(stepped - target) > 1e-12).any():
                limited.append("joint_velocity")
                target = np.clip(stepped, lo, hi)
        return Command("joint_trajectory", positions=target, limited=tuple(limited)), ""

    def _pose(self, a, step_s, tick_s, pose):
        cfg = self.cfg
        if self.last is not None:
            position, orientation = self.last.position, self.last.orientation
        elif pose is not None:
            try:
                position = np.asarray(pose[0], dtype=np.float64)
                orientation = quat_normalize(pose[1])
            except ValueError as err:
                return None, f"measured pose unusable: {err}"
            if not np.isfinite(position).all():
                return None, "measured pose unusable: non-finite position"
            if ((position < np.asarray(cfg.workspace_min) - _BOUND_TOL)
                    | (position > np.asarray(cfg.workspace_max) + _BOUND_TOL)).any():
                return None, (f"end effector at {position.round(4).tolist()} is outside the "
                              "workspace box: not starting a pose target there")
        else:
            return None, "no end-effector pose yet (pose output integrates from it)"
        lin, ang, limited = self._velocity(a, step_s)
        limited = list(limited)
        new_position = position + lin * tick_s
        lo, hi = np.asarray(cfg.workspace_min), np.asarray(cfg.workspace_max)
        clamped = np.clip(new_position, lo, hi)
        if (clamped != new_position).any():
            limited.append("workspace")
        new_orientation = quat_normalize(quat_multiply(quat_from_rotvec(ang * tick_s),
                                                       orientation))
        return Command("pose", position=clamped, orientation=new_orientation,
                       limited=tuple(limited)), ""
