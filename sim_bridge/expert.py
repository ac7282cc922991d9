"""Scripted expert for LIBERO tasks, driven by the parsed BDDL goal and the simulator's
privileged state (object, fixture and site poses, joint positions).

The expert turns `e.parsed_problem["goal_state"]` into a sequence of skills and runs them as
a P-controller on the end-effector pose (OSC_POSE deltas, 1.0 = 5 cm / 0.5 rad, gripper
-1 open / +1 close, see shared/design/libero-here.md §2-§3):

* ``in`` / ``on`` (object into a region or onto an object / site): pick (yaw-aligned pinch
  grasp across the narrowest horizontal width for small items, a rim grasp for bowls, mugs
  and pots; the grasp yaw avoids hand collisions with neighbours and keeps joint 7 inside
  its limits), lift over the obstacles on the way (direct route or one detour waypoint),
  transport, lower until the object rests (or the release height is reached), open,
  retreat. Several objects into one region get one slot each; an object going into an open
  drawer is put into the part that is out of the cabinet; a closed drawer whose region is
  the target is opened first. Flat wide objects (plates) going onto a table zone are pushed.
* ``open`` drawers (slide joints): horizontal grasp of the handle bar, pull along the joint
  axis; ``close`` drawers: push the handle with the fingertips, gripper tilted by 35 deg so
  the hand clears the handles above.
* ``close`` hinged doors (microwave, vertical hinge): push the door near its top edge along
  its arc. (Opening a closed hinged door is not implemented.)
* ``turnon`` / ``turnoff`` (stove knob, hinge about z): grasp the knob and twist it.
* conjunctions (libero_10): one goal after the other (``turnon`` first; a ``close`` of a
  fixture after the goals that put something into it).

Every motion has a step budget and a stall guard (no progress for N steps); a failed pick
is retried; a goal gets 3 attempts. The expert never touches the simulator state: it only
returns actions, so an episode is reproduced by replaying its actions from its first state
(with robosuite's stateful gripper command, which the demo writer records).

Usage::

    expert = ScriptedExpert(control_env)       # a LIBERO ControlEnv / OffScreenRenderEnv
    expert.reset()                             # after reset / set_init_state / settle steps
    while not done and expert.active:
        obs, reward, done, info = control_env.step(expert.act())

Only this sub-package imports LIBERO; this module itself needs just numpy and a LIBERO env.
"""
from __future__ import annotations

import math

import numpy as np

POS_SCALE = 0.05          # metres per unit of a[:3]
ROT_SCALE = 0.5           # radians per unit of a[3:6]
OPEN, CLOSE = -1.0, 1.0
EEF_SITE = "gripper0_grip_site"


class SkillFailed(Exception):
    """A skill could not reach its sub-goal (stall, timeout, lost object)."""


# ---------------------------------------------------------------------------------------
# small geometry helpers (pure numpy)
# ---------------------------------------------------------------------------------------
def rot_down(yaw: float) -> np.ndarray:
    """Gripper pointing down (z axis = world -z) with its finger-closing axis (the grip
    site's x axis) at angle `yaw` in the world xy plane."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


def rotvec(rot: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix (robust near 0 and pi)."""
    cos = np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)
    angle = math.acos(cos)
    if angle < 1e-6:
        return np.zeros(3)
    if angle > math.pi - 1e-4:
        # axis from the symmetric part
        m = (rot + np.eye(3)) / 2.0
        axis = np.sqrt(np.clip(np.diag(m), 0.0, None))
        i = int(np.argmax(axis))
        axis = m[:, i] / max(axis[i], 1e-9)
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    return axis / (2.0 * math.sin(angle)) * angle


def wrap_pi(a: float) -> float:
    return (a + math.pi) % (2.0 * math.pi) - math.pi


def closest_yaw(desired: float, current: float, period: float = math.pi) -> float:
    """`desired` + k*period closest to `current` (the gripper is symmetric under pi)."""
    k = round((current - desired) / period)
    return desired + k * period


def narrowest_direction(points_xy: np.ndarray, step_deg: float = 3.0):
    """(angle, width, centre_xy, length) of the narrowest horizontal extent of a point set."""
    best = None
    for deg in np.arange(0.0, 180.0, step_deg):
        a = math.radians(deg)
        u = np.array([math.cos(a), math.sin(a)])
        v = np.array([-u[1], u[0]])
        pu, pv = points_xy @ u, points_xy @ v
        w = pu.max() - pu.min()
        if best is None or w < best[1] - 1e-9:
            centre = u * (pu.max() + pu.min()) / 2 + v * (pv.max() + pv.min()) / 2
            best = (a, w, centre, pv.max() - pv.min())
    return best


# ---------------------------------------------------------------------------------------
# the expert
# ---------------------------------------------------------------------------------------
class ScriptedExpert:
    """Goal-driven scripted policy for one LIBERO episode (call `reset()` per episode)."""

    def __init__(self, env, max_steps: int = 600, verbose: bool = False):
        self.env = env                                   # ControlEnv-like (has .env)
        self.e = env.env if hasattr(env, "env") and hasattr(env.env, "sim") else env
        self.max_steps = int(max_steps)
        self.verbose = bool(verbose)
        self.steps = 0
        self.log: list[str] = []
        self.failed = False
        self.finished = False
        self._gen = None
        self._grip = OPEN
        self._rot = None
        self._held = None

    # -- public API ---------------------------------------------------------------------
    def reset(self) -> None:
        self.steps = 0
        self.log = []
        self.failed = False
        self.finished = False
        self._grip = OPEN
        self._rot = rot_down(self._current_yaw())
        self._home = self.eef_pos()
        self._home_yaw = self._current_yaw()
        self._held = None
        self._gen = self._run()

    @property
    def active(self) -> bool:
        return not (self.finished or self.failed) and self.steps < self.max_steps

    def act(self, obs=None) -> np.ndarray:
        """The next 7-D action (a hold action once the plan is finished or failed)."""
        if self._gen is None:
            self.reset()
        self.steps += 1
        if not (self.finished or self.failed):
            try:
                return np.asarray(next(self._gen), dtype=np.float64)
            except StopIteration:
                self.finished = True
            except SkillFailed as exc:
                self._note(f"failed: {exc}")
                self.failed = True
        return self._hold()

    # -- state access -------------------------------------------------------------------
    @property
    def sim(self):
        return self.e.sim

    def eef_pos(self) -> np.ndarray:
        return np.array(self.sim.data.get_site_xpos(EEF_SITE), dtype=np.float64)

    def eef_mat(self) -> np.ndarray:
        return np.array(self.sim.data.get_site_xmat(EEF_SITE), dtype=np.float64).reshape(3, 3)

    def _current_yaw(self) -> float:
        x = self.eef_mat()[:, 0]
        return math.atan2(x[1], x[0])

    def gripper_opening(self) -> float:
        ids = self.e.robots[0]._ref_gripper_joint_pos_indexes
        qp = self.sim.data.qpos[ids]
        return float(abs(qp[0]) + abs(qp[1]))

    def goal_satisfied(self, pred) -> bool:
        try:
            return bool(self.e._eval_predicate(pred))
        except Exception:  # noqa: BLE001
            return False

    def _note(self, msg: str) -> None:
        self.log.append(f"[{self.steps}] {msg}")
        if self.verbose:
            print(f"expert [{self.steps}] {msg}", flush=True)

    # geometry of objects / fixtures ---------------------------------------------------
    def _subtree(self, body_id: int) -> list:
        m = self.sim.model
        out = []
        for b in range(m.nbody):
            p = b
            while p not in (0, body_id):
                p = m.body_parentid[p]
            if p == body_id:
                out.append(b)
        return out

    def _geom_points(self, geoms) -> np.ndarray:
        m, d = self.sim.model, self.sim.data
        pts = []
        for g in geoms:
            t = m.geom_type[g]
            pos = d.geom_xpos[g]
            mat = d.geom_xmat[g].reshape(3, 3)
            size = m.geom_size[g]
            if t == 7:      # mesh
                mid = m.geom_dataid[g]
                a, k = m.mesh_vertadr[mid], m.mesh_vertnum[mid]
                local = m.mesh_vert[a:a + k]
            else:
                if t == 6:      # box
                    half = size[:3]
                elif t == 2:    # sphere
                    half = np.array([size[0]] * 3)
                elif t == 3:    # capsule
                    half = np.array([size[0], size[0], size[1] + size[0]])
                elif t == 5:    # cylinder
                    half = np.array([size[0], size[0], size[1]])
                elif t == 4:    # ellipsoid
                    half = size[:3]
                else:
                    continue
                signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
                local = signs * half
            pts.append(pos + local @ mat.T)
        if not pts:
            return np.zeros((0, 3))
        return np.concatenate(pts)

    def _collision_geoms(self, bodies) -> list:
        m = self.sim.model
        bodies = set(int(b) for b in bodies)
        return [g for g in range(m.ngeom) if int(m.geom_bodyid[g]) in bodies
                and (m.geom_contype[g] or m.geom_conaffinity[g])]

    def body_id(self, name: str) -> int:
        if name in self.e.obj_body_id:
            return int(self.e.obj_body_id[name])
        return int(self.sim.model.body_name2id(name))

    def object_points(self, name: str) -> np.ndarray:
        """World points (collision geom corners / vertices) of an object or fixture."""
        bid = self.body_id(name)
        return self._geom_points(self._collision_geoms(self._subtree(bid)))

    def object_pos(self, name: str) -> np.ndarray:
        return np.array(self.sim.data.body_xpos[self.body_id(name)], dtype=np.float64)

    def aabb(self, name: str):
        p = self.object_points(name)
        if len(p) == 0:
            pos = self.object_pos(name)
            return pos.copy(), pos.copy()
        return p.min(0), p.max(0)

    def site_box(self, site: str):
        """(centre, world half extents) of a region site (size rotated as LIBERO does)."""
        d = self.sim.data
        pos = np.array(d.get_site_xpos(site), dtype=np.float64)
        mat = np.array(d.get_site_xmat(site), dtype=np.float64).reshape(3, 3)
        size = np.asarray(self.e.object_sites_dict[site].size, dtype=np.float64)
        return pos, np.abs(mat @ size)

    def _scene_items(self):
        """Names of objects and fixtures that can be obstacles (not the floor / table)."""
        names = list(self.e.objects_dict) + [n for n in self.e.fixtures_dict
                                             if "table" not in n and "floor" not in n]
        return [n for n in names if n in self.e.obj_body_id]

    def max_eef_z(self) -> float:
        """Highest eef z used for transport (the arm's comfortable reach)."""
        return self.table_z() + 0.42

    def table_z(self) -> float:
        """Height of the surface the objects stand on (min bottom of the movable objects)."""
        zs = [self.aabb(n)[0][2] for n in self.e.objects_dict if n in self.e.obj_body_id]
        return float(min(zs)) if zs else float(self.eef_pos()[2] - 0.3)

    # -- low-level control --------------------------------------------------------------
    def rot_error(self) -> np.ndarray:
        """Axis-angle (world frame) from the current eef orientation to the target one."""
        return rotvec(self._rot @ self.eef_mat().T)

    def _action(self, target, grip, speed=1.0, rot_gain=1.0):
        eef = self.eef_pos()
        a = np.zeros(7)
        a[:3] = np.clip((np.asarray(target) - eef) / POS_SCALE, -speed, speed)
        a[3:6] = np.clip(rot_gain * self.rot_error() / ROT_SCALE, -1.0, 1.0)
        a[6] = grip
        return a

    def _hold(self):
        return self._action(self.eef_pos(), self._grip) * np.array([0, 0, 0, 1, 1, 1, 1.0])

    def move(self, target, grip=None, yaw=None, rot=None, tol=0.008, max_steps=120,
             stall=None, speed=1.0, rot_tol=0.05):
        """Generator: P-control the eef to `target` and the orientation to `rot` (or pointing
        down at `yaw`; default: the current target orientation). Returns 'reached', 'stalled'
        (no 2 mm / 0.02 rad progress for `stall` steps) or 'timeout'."""
        grip = self._grip if grip is None else grip
        self._grip = grip
        if yaw is not None:
            self._rot = rot_down(yaw)
        if rot is not None:
            self._rot = np.asarray(rot, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        best, since = np.inf, 0
        for _ in range(max_steps):
            eef = self.eef_pos()
            dist = float(np.linalg.norm(target - eef))
            rerr = float(np.linalg.norm(self.rot_error()))
            if dist < tol and rerr < rot_tol:
                return "reached"
            dist = dist + 0.1 * rerr
            if dist < best - 0.002:
                best, since = dist, 0
            else:
                since += 1
            if stall is not None and since >= stall:
                return "stalled"
            yield self._action(target, grip, speed=speed)
        return "timeout"

    def wait(self, n, grip=None):
        """Generator: hold the current position `n` steps (gripper `grip`)."""
        grip = self._grip if grip is None else grip
        self._grip = grip
        target = self.eef_pos()
        for _ in range(n):
            yield self._action(target, grip)

    def grip_to(self, grip, max_steps=25, min_steps=6):
        """Generator: close/open the gripper until the fingers stop moving."""
        self._grip = grip
        target = self.eef_pos()
        last = None
        for k in range(max_steps):
            w = self.gripper_opening()
            if k >= min_steps and last is not None and abs(w - last) < 2e-4:
                return
            last = w
            yield self._action(target, grip)

    def rise_to(self, z, **kw):
        p = self.eef_pos()
        p[2] = max(p[2], z)
        return (yield from self.move(p, **kw))

    # -- plan ----------------------------------------------------------------------------
    def _ordered_goals(self):
        goals = [list(g) for g in self.e.parsed_problem["goal_state"]]

        def fixture_of(name):
            if name in self.e.object_states_dict and hasattr(self.e.object_states_dict[name],
                                                              "parent_name"):
                return self.e.object_states_dict[name].parent_name
            return name

        def key(ig):
            i, g = ig
            kind = g[0].lower()
            if kind in ("close", "turnoff"):
                fx = fixture_of(g[1])
                # close X after every goal that puts something in/on X
                if any(h[0].lower() in ("in", "on") and len(h) > 2 and fixture_of(h[2]) == fx
                       for h in goals):
                    return (2, i)
            if kind == "turnon":
                return (0, i)
            return (1, i)
        return [g for _, g in sorted(enumerate(goals), key=key)]

    def _run(self):
        goals = self._ordered_goals()
        self._note(f"goals {goals}")
        yield from self.wait(2, OPEN)
        for goal in goals:
            for attempt in range(3):
                if self.goal_satisfied(goal):
                    break
                self._note(f"goal {goal} attempt {attempt}")
                try:
                    yield from self._solve(goal)
                except SkillFailed as exc:
                    self._note(f"skill failed: {exc}")
                    yield from self._recover()
                    continue
                yield from self.wait(3)
            if not self.goal_satisfied(goal):
                raise SkillFailed(f"goal {goal} not reached")
        # all goals: wait for the success check (in/on need contact / settling)
        for _ in range(30):
            if all(self.goal_satisfied(g) for g in goals):
                return
            yield self._hold()
        raise SkillFailed("goals not all satisfied at the end")

    def _recover(self):
        """After a failure: open the gripper and move up."""
        self._held = None
        yield from self.grip_to(OPEN, max_steps=10)
        yield from self.rise_to(self.eef_pos()[2] + 0.08, max_steps=30)

    def _solve(self, goal):
        kind = goal[0].lower()
        if kind in ("in", "on"):
            obj, target = goal[1], goal[2]
            # a closed drawer that must receive the object: open it first
            if kind == "in" and target in self.e.object_sites_dict:
                site = self.e.object_sites_dict[target]
                joints = getattr(site, "joints", None) or []
                if joints and self._is_slide(joints[0]) and not self.goal_satisfied(["open", target]):
                    self._note(f"opening {target} first")
                    yield from self.open_close_drawer(target, "open")
            if self.allow_push and self._should_push(obj, target, kind):
                yield from self.push(obj, target)
                return
            yield from self.pick(obj)
            yield from self.place(obj, target, kind)
        elif kind in ("open", "close"):
            name = goal[1]
            joints = self._articulation_joints(name)
            if joints and self._is_slide(joints[0]):
                yield from self.open_close_drawer(name, kind)
            else:
                yield from self.open_close_door(name, kind)
        elif kind in ("turnon", "turnoff"):
            yield from self.turn_knob(goal[1], kind)
        else:
            raise SkillFailed(f"unsupported predicate {kind}")

    # -- helpers for articulated objects -------------------------------------------------
    def _articulation_joints(self, name):
        if name in self.e.object_sites_dict:
            j = getattr(self.e.object_sites_dict[name], "joints", None)
            if j:
                return list(j)
        if name in self.e.objects_dict or name in self.e.fixtures_dict:
            return list(self.e.get_object(name).joints)
        return []

    def _parent(self, name):
        st = self.e.object_states_dict.get(name)
        return getattr(st, "parent_name", None) or name

    def _is_slide(self, joint) -> bool:
        m = self.sim.model
        return int(m.jnt_type[m.joint_name2id(joint)]) == 2

    def _qpos(self, joint) -> float:
        return float(self.sim.data.get_joint_qpos(joint))

    def _art_range(self, name, kind):
        par = self._parent(name)
        return list(self.e.get_object(par).object_properties["articulation"][f"default_{kind}_ranges"])

    # -- pick and place -------------------------------------------------------------------
    #: half extents of the hand's footprint around the grip site: along the closing axis
    #: (open fingers + hand) and across it; the hand's underside is ~4 cm above the site
    HAND_HALF = (0.11, 0.045)
    HAND_BOTTOM = 0.035
    #: push flat objects (plates) onto table zones instead of picking them by the rim
    allow_push = True
    RIM_DEPTH = 0.028

    def _obstacle_boxes(self, exclude, z_min):
        """Per collision geom of the other items whose top is above `z_min` (the hand's
        underside): its world corner points in xy. (Geoms above the hand count too: the
        wrist and forearm come down over the hand.)"""
        out = []
        for n in self._scene_items():
            if n in exclude:
                continue
            for g in self._collision_geoms(self._subtree(self.body_id(n))):
                pts = self._geom_points([g])
                if len(pts) and pts[:, 2].max() > z_min:
                    out.append(pts[:, :2])
        return out

    def hand_clearance(self, xy, yaw, boxes) -> float:
        """Smallest separation (m) between the hand footprint at `xy`/`yaw` and the boxes."""
        u = np.array([math.cos(yaw), math.sin(yaw)])
        v = np.array([-u[1], u[0]])
        xy = np.asarray(xy, dtype=np.float64)
        best = 1.0
        for pts in boxes:
            pu, pv = (pts - xy) @ u, (pts - xy) @ v
            sep = max(pu.min() - self.HAND_HALF[0], -self.HAND_HALF[0] - pu.max(),
                      pv.min() - self.HAND_HALF[1], -self.HAND_HALF[1] - pv.max())
            best = min(best, sep)
        return best

    def grasp_plan(self, obj):
        """(eef xyz, yaw, kind) of a grasp of `obj`, avoiding hand collisions with neighbours."""
        pts = self.object_points(obj)
        lo, hi = pts.min(0), pts.max(0)
        height = hi[2] - lo[2]
        # band of points near the top (where the fingers close)
        band = pts[pts[:, 2] > hi[2] - min(0.04, max(height * 0.6, 0.012))]
        angle, width, centre, _ = narrowest_direction(band[:, :2])
        if width <= 0.068:
            z = max((lo[2] + hi[2]) / 2.0, hi[2] - 0.035, lo[2] + 0.011)
            z = min(z, hi[2] - 0.006)
            boxes = self._obstacle_boxes({obj}, z + self.HAND_BOTTOM)
            best = None
            for deg in (0, 10, -10, 20, -20, 30, -30, 40, -40, 50, -50, 90):
                a = angle + math.radians(deg)
                u = np.array([math.cos(a), math.sin(a)])
                v = np.array([-u[1], u[0]])
                pu, pv = band[:, :2] @ u, band[:, :2] @ v
                w = pu.max() - pu.min()
                if w > 0.072:
                    continue
                c = u * (pu.max() + pu.min()) / 2 + v * (pv.max() + pv.min()) / 2
                clear = self.hand_clearance(c, a, boxes)
                cost = -min(clear, 0.015) * 100.0 + abs(deg) / 90.0 + (w - width) * 10.0
                if best is None or cost < best[0]:
                    best = (cost, c, a, clear)
            _, c, a, clear = best
            return np.array([c[0], c[1], z]), self.choose_yaw(a, c), "pinch"
        # rim grasp (bowls, mugs): fingers straddle the wall, closing radially
        top = pts[pts[:, 2] > hi[2] - 0.015]
        c = (top[:, :2].min(0) + top[:, :2].max(0)) / 2.0
        z = hi[2] - self.RIM_DEPTH
        boxes = self._obstacle_boxes({obj}, z + self.HAND_BOTTOM)
        base = self._robot_base_xy()
        best = None
        for deg in range(0, 360, 15):
            a = math.radians(deg)
            u = np.array([math.cos(a), math.sin(a)])
            proj = (top[:, :2] - c) @ u
            perp = np.abs((top[:, :2] - c) @ np.array([-u[1], u[0]]))
            near = proj[perp < 0.012]
            if len(near) == 0:
                continue
            r = near.max()
            p = c + u * (r - 0.006)
            clear = self.hand_clearance(p, a, boxes)
            # prefer the side facing the robot, avoid protrusions (handles) and neighbours
            cost = (r * 2.0 + 0.3 * float(np.linalg.norm(p - base)) - min(clear, 0.015) * 20.0
                    + (1.0 if clear < 0.005 else 0.0))
            if best is None or cost < best[0]:
                best = (cost, p, a)
        _, p, a = best
        return np.array([p[0], p[1], z]), self.choose_yaw(a, p), "rim"

    def choose_yaw(self, desired: float, xy=None, extra_turn: float = 0.0) -> float:
        """`desired` or `desired + pi` (the gripper is symmetric), whichever is the smaller
        wrist turn from now that keeps joint 7 inside its limits (+-2.9 rad) once the arm is
        at `xy` (the base rotation turns the gripper too) and after `extra_turn` (a knob
        twist). Returns the target yaw unwrapped near the current one."""
        cur = self._current_yaw()
        q7 = float(self.sim.data.qpos[self.e.robots[0]._ref_joint_pos_indexes[6]])
        phi = 0.0
        if xy is not None:
            phi = self.neutral_yaw(xy) - self.neutral_yaw(self.eef_pos()[:2])
        best = None
        for c in (desired, desired + math.pi):
            d = wrap_pi(c - cur)
            q7p = q7 - d + phi
            q7e = q7p - extra_turn
            over = max(abs(q7p), abs(q7e)) - 2.4
            cost = abs(d) + (10.0 + over if over > 0 else 0.0)
            if best is None or cost < best[0]:
                best = (cost, cur + d)
        return best[1]

    def neutral_yaw(self, xy) -> float:
        """The gripper yaw the arm has at `xy` without wrist rotation: the start yaw turned
        by the base-joint angle (choosing grasp yaws near it keeps joint 7 off its limits)."""
        base = self._robot_base_xy()
        d0 = self._home[:2] - base
        d1 = np.asarray(xy, dtype=np.float64)[:2] - base
        return self._home_yaw + math.atan2(d1[1], d1[0]) - math.atan2(d0[1], d0[0])

    def _robot_base_xy(self):
        m = self.sim.model
        try:
            return np.array(self.sim.data.body_xpos[m.body_name2id("robot0_base")][:2])
        except Exception:  # noqa: BLE001
            return self.eef_pos()[:2] - np.array([0.5, 0.0])

    def _footprints(self, exclude):
        """(lo, hi) world boxes of the collision geoms of the other scene items."""
        out = []
        for n in self._scene_items():
            if n in exclude:
                continue
            for g in self._collision_geoms(self._subtree(self.body_id(n))):
                pts = self._geom_points([g])
                if len(pts):
                    out.append((pts.min(0), pts.max(0)))
        return out

    @staticmethod
    def _path_top(boxes, path, radius):
        """Highest top of the boxes whose footprint comes within `radius` of the polyline."""
        z = -np.inf
        samples = []
        for p0, p1 in zip(path[:-1], path[1:]):
            L = float(np.linalg.norm(p1 - p0))
            for t in np.linspace(0.0, 1.0, max(2, int(L / 0.015) + 1)):
                samples.append(p0 + (p1 - p0) * t)
        samples = np.array(samples)
        for lo, hi in boxes:
            if hi[2] <= z:
                continue
            dx = np.maximum(np.maximum(lo[0] - samples[:, 0], samples[:, 0] - hi[0]), 0.0)
            dy = np.maximum(np.maximum(lo[1] - samples[:, 1], samples[:, 1] - hi[1]), 0.0)
            if np.min(np.hypot(dx, dy)) < radius:
                z = hi[2]
        return z

    def plan_route(self, exclude, start_xy, goal_xy, radius):
        """(waypoints xy after the start, clearance z): the direct path or a detour through
        one intermediate point, whichever needs the lower flight height (ties: shorter)."""
        boxes = self._footprints(exclude)
        start_xy, goal_xy = np.asarray(start_xy, float), np.asarray(goal_xy, float)
        seg = goal_xy - start_xy
        L = float(np.linalg.norm(seg)) or 1e-9
        u = seg / L
        v = np.array([-u[1], u[0]])
        cands = [[goal_xy]]
        mid = (start_xy + goal_xy) / 2
        for off in (0.1, -0.1, 0.2, -0.2, 0.3, -0.3):
            cands.append([mid + v * off, goal_xy])
        best = None
        for c in cands:
            path = [start_xy] + c
            z = self._path_top(boxes, path, radius)
            length = sum(float(np.linalg.norm(q1 - q0)) for q0, q1 in zip(path[:-1], path[1:]))
            cost = max(z, -1e3) + 0.05 * length
            if best is None or cost < best[0] - 1e-6:
                best = (cost, c, z)
        return best[1], best[2]

    def pick(self, obj):
        """Generator: grasp `obj` and lift it a little. Raises SkillFailed."""
        table = self.table_z()
        for attempt in range(2):
            grasp, yaw, kind = self.grasp_plan(obj)
            lo, hi = self.aabb(obj)
            self._note(f"pick {obj} ({kind}) at {np.round(grasp, 3)} yaw {yaw:.2f}")
            # go up first if we are low (e.g. right after a previous placement)
            route, clear = self.plan_route({obj}, self.eef_pos()[:2], grasp[:2], 0.08)
            safe = min(max(hi[2] + 0.06, clear + 0.06), self.max_eef_z())
            yield from self.rise_to(safe, grip=OPEN, max_steps=40, stall=10)
            fly = max(safe, self.eef_pos()[2])
            for wp in route:
                yield from self.move([wp[0], wp[1], fly], grip=OPEN, yaw=yaw, tol=0.02,
                                     max_steps=100, stall=15)
            above = np.array([grasp[0], grasp[1], max(hi[2] + 0.06, grasp[2] + 0.06)])
            yield from self.move(above, grip=OPEN, yaw=yaw, tol=0.01, max_steps=100, stall=20)
            # re-plan with the object where it is now (we may have nudged it)
            grasp, yaw, kind = self.grasp_plan(obj)
            above = np.array([grasp[0], grasp[1], above[2]])
            yield from self.move(above, grip=OPEN, yaw=yaw, tol=0.006, max_steps=40)
            st = yield from self.move(grasp, grip=OPEN, tol=0.006, max_steps=80, stall=12,
                                      speed=0.6)
            self._note(f"descend {st} eef {np.round(self.eef_pos(), 3)}")
            z0 = self.object_pos(obj)[2]
            yield from self.grip_to(CLOSE)
            lift = self.eef_pos() + np.array([0.0, 0.0, 0.06])
            yield from self.move(lift, grip=CLOSE, tol=0.01, max_steps=40)
            if self.object_pos(obj)[2] > z0 + 0.015 and self.gripper_opening() > 0.004:
                self._held = obj
                # thin-walled rim grasps slip under fast accelerations: carry them slowly
                self._carry_speed = 0.45 if kind == "rim" else 1.0
                return
            self._note(f"grasp of {obj} failed (dz {self.object_pos(obj)[2] - z0:.3f})")
            yield from self.grip_to(OPEN, max_steps=12)
            yield from self.rise_to(table + 0.25, max_steps=40)
        raise SkillFailed(f"could not pick {obj}")

    def _place_target(self, obj, target, kind):
        """(object xy, support z, top of the receptacle) for `obj` in/on `target`."""
        if target in self.e.object_sites_dict:
            centre, half = self.site_box(target)
            parent = self._parent(target)
            par_top = self.aabb(parent)[1][2] if parent in self.e.obj_body_id else centre[2]
            if kind == "in":
                support = centre[2] - half[2]
            else:
                support = centre[2] + half[2]
            xy = self._free_spot(obj, target, centre[:2].copy(), half[:2])
            same = [g[1] for g in self.e.parsed_problem["goal_state"]
                    if g[0].lower() in ("in", "on") and len(g) > 2 and g[2] == target]
            if len(same) > 1 and obj in same and not self._articulation_joints(target):
                # several objects into one region: one slot each along its longer axis
                i, n = same.index(obj), len(same)
                axis = 0 if half[0] > half[1] + 1e-3 else 1
                off = np.zeros(2)
                off[axis] = (-1.0 + 2.0 * i / (n - 1)) * max(half[axis] - 0.02, 0.0)
                xy = centre[:2] + off
            return xy, support, max(par_top, support)
        lo, hi = self.aabb(target)
        pos = self.object_pos(target)
        return pos[:2].copy(), hi[2], hi[2]

    def _free_spot(self, obj, region, centre, half):
        """A point of the region for the object's centre: the part of an open drawer that is
        out of the cabinet, and away from objects already standing in the region."""
        olo, ohi = self.aabb(obj)
        r = float(np.max(ohi[:2] - olo[:2])) / 2.0
        lo_b, hi_b = centre - half + 0.005, centre + half - 0.005
        joints = self._articulation_joints(region) if region in self.e.object_sites_dict else []
        if joints and self._is_slide(joints[0]):
            joint, u, handle, hpts = self._drawer(region)
            geoms = self._collision_geoms(self._subtree(self._joint_body(joint)))
            fronts = [float((self._geom_points([g]) @ u).max()) for g in geoms]
            hmin = float((hpts @ u).min())
            front = max([f for f in fronts if f < hmin - 1e-4] or [hmin])
            q = self._qpos(joint)
            qc = float(np.mean(self._art_range(region, "close")))
            face = front - abs(q - qc)
            protrusion = float((hpts @ u).max()) - front     # handles of the other drawers
            lo_u, hi_u = face + protrusion + r + 0.01, front - r - 0.008
            cu = float(centre @ u[:2])
            want = min(max(cu, lo_u), hi_u) if lo_u <= hi_u else (lo_u + hi_u) / 2
            centre = centre + u[:2] * (want - cu)
            self._note(f"drawer spot: face {face:.3f} front {front:.3f} r {r:.3f} shift "
                       f"{want - cu:+.3f}")
            return centre
        # other objects already in / on the region
        others = []
        for n in self.e.objects_dict:
            if n == obj or n not in self.e.obj_body_id:
                continue
            lo, hi = self.aabb(n)
            if np.all(hi[:2] > lo_b - r) and np.all(lo[:2] < hi_b + r):
                others.append((lo[:2], hi[:2]))
        if not others:
            return centre
        best = None
        span = np.maximum(half - r * 0.5, 0.0)
        for dx in np.linspace(-span[0], span[0], 7):
            for dy in np.linspace(-span[1], span[1], 7):
                p = centre + np.array([dx, dy])
                dist = min(math.hypot(max(lo[0] - p[0], 0, p[0] - hi[0]),
                                      max(lo[1] - p[1], 0, p[1] - hi[1])) for lo, hi in others)
                score = min(dist, r + 0.02) - 0.2 * math.hypot(dx, dy)
                if best is None or score > best[0]:
                    best = (score, p)
        return best[1]

    def place(self, obj, target, kind):
        """Generator: carry the held `obj` over `target` and release it there."""
        if self._held != obj:
            raise SkillFailed(f"{obj} not held")
        goal_xy, support, top = self._place_target(obj, target, kind)
        eef = self.eef_pos()
        olo, ohi = self.aabb(obj)
        opos = self.object_pos(obj)
        off_xy = opos[:2] - eef[:2]
        bottom_below_eef = eef[2] - olo[2]
        eef_goal_xy = goal_xy - off_xy
        width = float(np.max(ohi[:2] - olo[:2]))
        route, clear = self.plan_route({obj, target, self._parent(target)}, eef[:2],
                                       eef_goal_xy, max(width / 2 + 0.03, 0.08))
        clear = max(clear, top, olo[2])
        carry_z = min(clear + 0.04 + bottom_below_eef, self.max_eef_z())
        self._note(f"place {obj} {kind} {target}: xy {np.round(goal_xy, 3)} support "
                   f"{support:.3f} top {top:.3f} carry {carry_z:.3f} via {len(route) - 1}")
        sp = getattr(self, "_carry_speed", 1.0)
        yield from self.rise_to(carry_z, grip=CLOSE, tol=0.015, max_steps=60, stall=10,
                                speed=sp)
        for wp in route[:-1]:
            yield from self.move([wp[0], wp[1], max(carry_z, self.eef_pos()[2])], grip=CLOSE,
                                 tol=0.03, max_steps=100, stall=15, speed=sp)
        yield from self.move([eef_goal_xy[0], eef_goal_xy[1], max(carry_z, self.eef_pos()[2])],
                             grip=CLOSE, tol=0.012, max_steps=150, stall=20, speed=sp)
        self._check_held(obj)
        # fine alignment with the object's actual offset
        opos = self.object_pos(obj)
        eef = self.eef_pos()
        eef_goal_xy = goal_xy - (opos[:2] - eef[:2])
        yield from self.move([eef_goal_xy[0], eef_goal_xy[1], eef[2]], grip=CLOSE, tol=0.006,
                             max_steps=40)
        # lower until the object rests (stall) or its bottom is just above the support
        release_z = support + 0.012 + (self.eef_pos()[2] - self.aabb(obj)[0][2])
        st = yield from self.move([eef_goal_xy[0], eef_goal_xy[1], release_z], grip=CLOSE,
                                  tol=0.006, max_steps=100, stall=8, speed=0.5)
        self._note(f"lowered ({st}) obj bottom {self.aabb(obj)[0][2]:.3f}")
        yield from self.grip_to(OPEN, max_steps=15)
        self._held = None
        yield from self.rise_to(self.eef_pos()[2] + 0.08, grip=OPEN, tol=0.015, max_steps=30)

    def _should_push(self, obj, target, kind) -> bool:
        """Flat wide objects (plates) going onto a table zone are pushed, not picked."""
        if kind != "on" or target not in self.e.object_sites_dict:
            return False
        lo, hi = self.aabb(obj)
        pts = self.object_points(obj)
        _, width, _, _ = narrowest_direction(pts[:, :2], step_deg=10.0)
        _, support, _ = self._place_target(obj, target, kind)
        return hi[2] - lo[2] < 0.03 and width > 0.075 and abs(support - lo[2]) < 0.03

    def push(self, obj, target):
        """Generator: push `obj` along the table until its centre is on the target zone."""
        pred = ["on", obj, target]
        for attempt in range(4):
            goal_xy, _, _ = self._place_target(obj, target, "on")
            lo, hi = self.aabb(obj)
            pos = self.object_pos(obj)[:2]
            d = goal_xy - pos
            dist = float(np.linalg.norm(d))
            if self.goal_satisfied(pred) and dist < 0.02:
                return
            pts = self.object_points(obj)[:, :2]
            z = lo[2] + 0.012
            boxes = self._obstacle_boxes({obj}, z + self.HAND_BOTTOM)
            # push straight at the goal; the hand across or along the push direction,
            # whichever stands clearer of the fixtures behind the object
            n = d / max(dist, 1e-9)
            r = float(((pts - pos) @ -n).max())          # extent behind the centre
            start = pos - n * (r + 0.025)
            leg_goal = goal_xy
            best = None
            for off in (math.pi / 2, 0.0):
                yaw_n = math.atan2(n[1], n[0]) + off
                clear = self.hand_clearance(start, yaw_n, boxes)
                if best is None or clear > best[0] + 0.01:
                    best = (clear, yaw_n)
            yaw = self.choose_yaw(best[1], start)
            self._note(f"push {obj} by {dist:.3f} towards {np.round(goal_xy, 3)} along "
                       f"{np.round(n, 2)}")
            safe = max(hi[2] + 0.08, self.eef_pos()[2])
            yield from self.rise_to(safe, grip=CLOSE, max_steps=40, stall=10)
            yield from self.move([start[0], start[1], safe], grip=CLOSE, yaw=yaw, tol=0.01,
                                 max_steps=120, stall=20)
            yield from self.move([start[0], start[1], z], grip=CLOSE, tol=0.006, max_steps=60,
                                 stall=10, speed=0.6)
            end = leg_goal - n * (r + 0.006)
            yield from self.move([end[0], end[1], z], grip=CLOSE, tol=0.006, max_steps=120,
                                 stall=20, speed=0.4)
            yield from self.rise_to(self.eef_pos()[2] + 0.08, grip=CLOSE, max_steps=30, stall=8)
            yield from self.wait(3)
            if self.goal_satisfied(pred):
                return
        raise SkillFailed(f"could not push {obj} onto {target}")

    def _check_held(self, obj):
        eef = self.eef_pos()
        if np.linalg.norm(self.object_pos(obj) - eef) > 0.15 or self.gripper_opening() < 0.003:
            self._held = None
            raise SkillFailed(f"lost {obj}")

    # -- articulated objects --------------------------------------------------------------
    def _joint_body(self, joint) -> int:
        m = self.sim.model
        return int(m.jnt_bodyid[m.joint_name2id(joint)])

    def _joint_axis(self, joint) -> tuple:
        m, d = self.sim.model, self.sim.data
        j = m.joint_name2id(joint)
        return np.array(d.xaxis[j], dtype=np.float64), np.array(d.xanchor[j], dtype=np.float64)

    def rot_horizontal(self, approach) -> np.ndarray:
        """Gripper pointing along the horizontal `approach`, fingers closing vertically (the
        one of the two finger orders that is closer to the current orientation)."""
        z = np.asarray(approach, dtype=np.float64).copy()
        z[2] = 0.0
        z /= np.linalg.norm(z)
        best = None
        for sx in (-1.0, 1.0):
            x = np.array([0.0, 0.0, sx])
            y = np.cross(z, x)
            r = np.column_stack([x, y, z])
            ang = float(np.linalg.norm(rotvec(r @ self.eef_mat().T)))
            if best is None or ang < best[0]:
                best = (ang, r)
        return best[1]

    def _drawer(self, name):
        """(joint, opening direction u (horizontal), handle centre, handle points)."""
        joint = self._articulation_joints(name)[0]
        axis, _ = self._joint_axis(joint)
        open_r, close_r = self._art_range(name, "open"), self._art_range(name, "close")
        sgn = 1.0 if np.mean(open_r) > np.mean(close_r) else -1.0
        u = axis * sgn
        u[2] = 0.0
        u /= np.linalg.norm(u)
        geoms = self._collision_geoms(self._subtree(self._joint_body(joint)))
        fronts = [(float((self._geom_points([g]) @ u).max()), g) for g in geoms]
        fmax = max(f for f, _ in fronts)
        handle = [g for f, g in fronts if f > fmax - 0.004]
        pts = self._geom_points(handle)
        return joint, u, (pts.min(0) + pts.max(0)) / 2.0, pts

    def _restore_down(self, up=0.06):
        """Back away upwards towards the start pose and point the gripper down again, slowly
        (a fast wrist flip from a horizontal grasp can leave the arm stretched at a joint
        limit, where the OSC no longer moves it)."""
        yaw = closest_yaw(self._current_down_yaw(), self.neutral_yaw(self._home[:2]))
        p = self.eef_pos()
        mid = np.array([(p[0] + self._home[0]) / 2, (p[1] + self._home[1]) / 2,
                        max(p[2] + up, self._home[2] - 0.05)])
        # translate first (keeping the orientation), then turn the wrist slowly
        yield from self.move(mid, tol=0.03, max_steps=50, stall=10, speed=0.8, rot_tol=0.2)
        self._rot = rot_down(yaw)
        for _ in range(60):
            if float(np.linalg.norm(self.rot_error())) < 0.08:
                break
            a = self._action(mid, self._grip, speed=0.6)
            a[3:6] = np.clip(a[3:6], -0.3, 0.3)
            yield a

    def _current_down_yaw(self):
        """Yaw of the closing axis projected on the xy plane (or of the approach axis)."""
        r = self.eef_mat()
        for col in (0, 2):
            v = r[:2, col]
            if np.linalg.norm(v) > 0.3:
                return math.atan2(v[1], v[0]) + (0.0 if col == 0 else math.pi / 2)
        return math.pi / 2

    def open_close_drawer(self, name, kind):
        """Generator: pull a drawer open by its handle (horizontal grasp), or push it shut."""
        pred = [kind, name]
        if kind == "close":
            yield from self.push_drawer_closed(name)
            return
        joint, u, handle, pts = self._drawer(name)
        rot = self.rot_horizontal(-u)
        self._note(f"{kind} drawer {name}: handle {np.round(handle, 3)} u {np.round(u, 2)} "
                   f"q {self._qpos(joint):.3f}")
        grip = OPEN if kind == "open" else CLOSE
        # pre-pose in front of the handle, at a safe height first
        pre = handle + u * 0.12
        yield from self.rise_to(max(handle[2] + 0.05, self.eef_pos()[2]), grip=grip,
                                max_steps=40, stall=10)
        yield from self.move([pre[0], pre[1], max(handle[2] + 0.05, self.eef_pos()[2])],
                             grip=grip, tol=0.02, max_steps=100, stall=20)
        yield from self.move(pre, grip=grip, rot=rot, tol=0.01, max_steps=80, stall=20,
                             rot_tol=0.08)
        if kind == "open":
            # fingers straddle the bar vertically; pad centre ~4 mm behind the grip site
            grasp = handle - u * 0.004
            st = yield from self.move(grasp, grip=OPEN, tol=0.005, max_steps=60, stall=10,
                                      speed=0.5)
            self._note(f"at handle ({st}) eef {np.round(self.eef_pos(), 3)}")
            yield from self.grip_to(CLOSE)
            q_goal = float(np.mean(self._art_range(name, "open")))
        else:
            q_goal = float(max(self._art_range(name, "close")))
        # pull / push along u until the predicate holds
        best, since = np.inf, 0
        for _ in range(150):
            if self.goal_satisfied(pred):
                break
            q = self._qpos(joint)
            dq = abs(q_goal - q)
            _, _, h_now, _ = self._drawer(name)
            sign = 1.0 if kind == "open" else -1.0
            target = h_now + u * sign * (dq + 0.03)
            if kind == "close":
                target = target + u * 0.012        # fingers in front of the bar
            if dq < best - 0.001:
                best, since = dq, 0
            else:
                since += 1
            if since > 15:
                break
            yield self._action(target, self._grip, speed=0.6)
        self._note(f"drawer q {self._qpos(joint):.3f} ok={self.goal_satisfied(pred)}")
        yield from self.grip_to(OPEN, max_steps=10)
        back = self.eef_pos() + u * 0.08
        yield from self.move(back, grip=OPEN, tol=0.015, max_steps=40, stall=10)
        yield from self._restore_down()
        if not self.goal_satisfied(pred):
            raise SkillFailed(f"{kind} {name}: q={self._qpos(joint):.3f}")

    def push_drawer_closed(self, name):
        """Generator: push an open drawer shut by its handle with the closed fingertips, the
        gripper pointing down and tilted so the hand stays clear of the handles above."""
        pred = ["close", name]
        joint, u, handle, pts = self._drawer(name)
        lateral = np.array([-u[1], u[0], 0.0])
        yaw = self.choose_yaw(math.atan2(lateral[1], lateral[0]), handle[:2])
        base = rot_down(yaw)
        tilt = math.radians(35.0)
        best = None
        for sgn in (-1.0, 1.0):
            k = base[:, 0]                              # closing axis = rotation axis
            kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
            a = sgn * tilt
            r = (np.eye(3) + math.sin(a) * kx + (1 - math.cos(a)) * kx @ kx) @ base
            lead = float(r[:, 2] @ -u)                  # approach axis towards the cabinet
            if best is None or lead > best[0]:
                best = (lead, r)
        rot = best[1]
        q_goal = float(max(self._art_range(name, "close")))
        hu = float((pts @ u).max())                     # front of the bar along u
        self._note(f"close drawer {name}: handle {np.round(handle, 3)} q {self._qpos(joint):.3f}")
        z = handle[2] + 0.004
        pre = handle + u * (hu - float(handle @ u) + 0.045)
        yield from self.rise_to(max(handle[2] + 0.12, self.eef_pos()[2]), grip=CLOSE,
                                max_steps=40, stall=10)
        yield from self.move([pre[0], pre[1], max(handle[2] + 0.12, self.eef_pos()[2])],
                             grip=CLOSE, rot=rot, tol=0.015, max_steps=120, stall=20,
                             rot_tol=0.1)
        yield from self.move([pre[0], pre[1], z], grip=CLOSE, tol=0.008, max_steps=60,
                             stall=12, speed=0.6)
        best_dq, since = np.inf, 0
        for _ in range(150):
            if self.goal_satisfied(pred):
                break
            q = self._qpos(joint)
            dq = abs(q_goal - q)
            _, _, h_now, p_now = self._drawer(name)
            front = float((p_now @ u).max())
            target = h_now + u * (front - float(h_now @ u) - dq - 0.03)
            target[2] = z
            if dq < best_dq - 0.001:
                best_dq, since = dq, 0
            else:
                since += 1
            if since > 15:
                break
            yield self._action(target, CLOSE, speed=0.6)
        self._note(f"drawer q {self._qpos(joint):.3f} ok={self.goal_satisfied(pred)}")
        back = self.eef_pos() + u * 0.06 + np.array([0, 0, 0.04])
        yield from self.move(back, grip=CLOSE, tol=0.015, max_steps=40, stall=10)
        yield from self._restore_down()
        if not self.goal_satisfied(pred):
            raise SkillFailed(f"close {name}: q={self._qpos(joint):.3f}")

    def open_close_door(self, name, kind):
        """Generator: push a hinged door (vertical hinge, e.g. the microwave) shut with the
        closed fingertips near its top edge, following its arc. Opening a closed door (a
        handle pull along an arc) is not implemented."""
        pred = [kind, name]
        joints = self._articulation_joints(name)
        if not joints:
            raise SkillFailed(f"{name} has no joint")
        joint = joints[0]
        axis, anchor = self._joint_axis(joint)
        if kind != "close" or abs(axis[2]) < 0.9:
            raise SkillFailed(f"{kind} of hinged {name} not supported")
        q_goal = float(max(self._art_range(name, "close")))
        sgn = float(np.sign(q_goal - self._qpos(joint)) * np.sign(axis[2])) or 1.0
        geoms = self._collision_geoms(self._subtree(self._joint_body(joint)))

        def door():
            pts = self._geom_points(geoms)
            rel = pts[:, :2] - anchor[:2]
            far = rel[np.argmax(np.linalg.norm(rel, axis=1))]
            rhat = far / np.linalg.norm(far)
            t = sgn * np.array([-rhat[1], rhat[0]])      # tangent towards "closed"
            return pts, rhat, float(np.linalg.norm(far)), t

        pts, rhat, R, t = door()
        top = float(pts[:, 2].max())
        z = top - 0.02
        rho = 0.75 * R
        contact = anchor[:2] + rhat * rho
        pre = contact - t * 0.05
        yaw = self.choose_yaw(math.atan2(rhat[1], rhat[0]), pre)
        self._note(f"close door {name}: q {self._qpos(joint):.2f} R {R:.3f} top {top:.3f}")
        safe = max(top + 0.08, self.eef_pos()[2])
        yield from self.rise_to(safe, grip=CLOSE, max_steps=40, stall=10)
        yield from self.move([pre[0], pre[1], safe], grip=CLOSE, yaw=yaw, tol=0.01,
                             max_steps=120, stall=20)
        yield from self.move([pre[0], pre[1], z], grip=CLOSE, tol=0.008, max_steps=60,
                             stall=10, speed=0.6)
        best_dq, since = np.inf, 0
        for _ in range(200):
            if self.goal_satisfied(pred):
                break
            dq = abs(q_goal - self._qpos(joint))
            if dq < best_dq - 0.005:
                best_dq, since = dq, 0
            else:
                since += 1
            if since > 20:
                break
            _, rhat, R, t = door()
            target = anchor[:2] + rhat * rho + t * 0.04
            yield self._action([target[0], target[1], z], CLOSE, speed=0.5)
        self._note(f"door q {self._qpos(joint):.3f} ok={self.goal_satisfied(pred)}")
        _, rhat, R, t = door()
        back = self.eef_pos() + np.array([-t[0] * 0.05, -t[1] * 0.05, 0.06])
        yield from self.move(back, grip=CLOSE, tol=0.015, max_steps=40, stall=10)
        if not self.goal_satisfied(pred):
            raise SkillFailed(f"close {name}: q={self._qpos(joint):.3f}")

    def turn_knob(self, name, kind):
        """Generator: grasp a knob (hinge about z) from above and twist it into the range."""
        pred = [kind, name]
        joints = self._articulation_joints(name)
        joint = joints[0]
        axis, anchor = self._joint_axis(joint)
        rng = self._art_range(name, kind)
        q_goal = float(np.mean(rng))
        geoms = self._collision_geoms(self._subtree(self._joint_body(joint)))
        pts = self._geom_points(geoms)
        top = pts[:, 2].max()
        band = pts[pts[:, 2] > top - 0.02]
        angle, width, centre, _ = narrowest_direction(band[:, :2])
        z = top - 0.014
        dq0 = q_goal - self._qpos(joint)
        twist = float(np.sign(dq0 * axis[2])) * min(abs(dq0) + 0.15, 1.4)
        yaw = self.choose_yaw(angle, anchor[:2], extra_turn=twist)
        self._note(f"{kind} knob {name}: q {self._qpos(joint):.2f} -> {q_goal:.2f}, width "
                   f"{width:.3f} at {np.round(anchor, 3)}")
        xy = anchor[:2]
        yield from self.rise_to(top + 0.06, grip=OPEN, max_steps=40, stall=10)
        yield from self.move([xy[0], xy[1], max(top + 0.06, self.eef_pos()[2])], grip=OPEN,
                             yaw=yaw, tol=0.01, max_steps=120, stall=20)
        st = yield from self.move([xy[0], xy[1], z], grip=OPEN, tol=0.006, max_steps=60,
                                  stall=10, speed=0.5)
        yield from self.grip_to(CLOSE)
        dq = q_goal - self._qpos(joint)
        turn = float(np.sign(dq * axis[2])) * min(abs(dq) + 0.15, 1.4)
        yaw2 = yaw + turn
        hold = np.array([xy[0], xy[1], z])
        for _ in range(60):
            if self.goal_satisfied(pred) and abs(self._qpos(joint) - q_goal) < 0.3:
                break
            self._rot = rot_down(yaw2)
            if float(np.linalg.norm(self.rot_error())) < 0.03:
                break
            yield self._action(hold, CLOSE)
        self._note(f"knob q {self._qpos(joint):.2f} ok={self.goal_satisfied(pred)}")
        yield from self.grip_to(OPEN, max_steps=10)
        yield from self.move(self.eef_pos() + np.array([0, 0, 0.06]), grip=OPEN, tol=0.015,
                             max_steps=30, stall=10)
        self._rot = rot_down(self._current_yaw())
        if not self.goal_satisfied(pred):
            raise SkillFailed(f"{kind} {name}: q={self._qpos(joint):.2f}")
