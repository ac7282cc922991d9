"""oat_ros.executor_adapters (numpy only): action -> command math of every output adapter,
bounds, limits and the final guard."""
import math

import numpy as np
import pytest

from oat_ros.executor_adapters import (AdapterConfig, CommandAdapter, gripper_position,
                                       limit_norm, quat_from_rotvec, quat_multiply,
                                       quat_normalize)

P = 0.05


def cfg(**kw):
    base = dict(joint_names=["a", "b", "c"], joint_indices=[0, 1, 2], gripper_index=3,
                action_dim=4, joint_lower_limits=[-1.0] * 3, joint_upper_limits=[1.0] * 3,
                linear_indices=[0, 1, 2], angular_indices=[3, 4, 5])
    if kw.get("output") in ("twist", "pose"):
        base.update(action_dim=7, gripper_index=6)
    base.update(kw)
    return AdapterConfig(**base)


@pytest.mark.parametrize("change, expected", [
    (dict(output="bogus"), "output"),
    (dict(joint_mode="bogus"), "joint_mode"),
    (dict(output="joint_trajectory", joint_indices=[0, 1]), "joint_indices has 2"),
    (dict(output="joint_trajectory", joint_indices=[0, 1, 4]), "index 4 not in"),
    (dict(output="joint_trajectory", joint_indices=[0, 1, 3]), "mapped twice"),
    (dict(output="joint_trajectory", joint_names=["a", "a", "c"]), "distinct"),
    (dict(output="joint_trajectory", joint_lower_limits=[-1.0, 2.0, -1.0]), "lower < upper"),
    (dict(output="joint_trajectory", joint_upper_limits=[1.0]), "joint_upper_limits has 1"),
    (dict(output="twist", linear_indices=[0, 1]), "expected 3"),
    (dict(output="twist", gripper_index=7), "gripper_index 7"),
    (dict(output="pose", workspace_min=[0.0, 0.0, 2.0]), "workspace"),
    (dict(output="twist", max_linear_speed=-1.0), "max_linear_speed"),
    (dict(output="twist", linear_scale_m=math.nan), "finite"),
])
def test_bad_configs_are_refused_with_a_reason(change, expected):
    why = cfg(**{"output": "joint_trajectory", **change}).check()
    assert why and expected in why, why
    with pytest.raises(ValueError):
        CommandAdapter(cfg(**{"output": "joint_trajectory", **change}))


def test_twist_is_delta_times_scale_over_step_and_saturates():
    ad = CommandAdapter(cfg(output="twist", linear_scale_m=0.05, angular_scale_rad=0.5,
                            max_linear_speed=0.5, max_angular_speed=2.0))
    cmd, why = ad.command([0.1, -0.2, 0.0, 0.1, 0.0, -0.1, 1.0], P, P)
    assert not why and cmd.limited == ()
    np.testing.assert_allclose(cmd.linear, [0.1, -0.2, 0.0])         # 0.1 * 5 cm / 50 ms
    np.testing.assert_allclose(cmd.angular, [1.0, 0.0, -1.0])        # 0.1 * 0.5 rad / 50 ms
    assert cmd.gripper == 0.0                                          # +1 = closed
    cmd, _ = ad.command([0.9, 0.9, 0.0, 0.5, 0.0, 0.0, -1.0], P, P)
    assert set(cmd.limited) == {"linear_speed", "angular_speed"}
    assert np.linalg.norm(cmd.linear) == pytest.approx(0.5)
    np.testing.assert_allclose(cmd.linear / np.linalg.norm(cmd.linear), [2 ** -.5, 2 ** -.5, 0])
    np.testing.assert_allclose(cmd.angular, [2.0, 0.0, 0.0])
    assert cmd.gripper == 0.04
    # the step length is the chunk's period: a 0.1 s step halves the velocity
    cmd, _ = ad.command([0.1, 0, 0, 0, 0, 0, 1], 0.1, P)
    np.testing.assert_allclose(cmd.linear, [0.05, 0, 0])
    hold = ad.hold()
    assert hold.hold and not hold.linear.any() and not hold.angular.any() and hold.gripper == 0.0


def test_pose_integrates_from_measured_pose_and_clamps_to_the_workspace():
    ad = CommandAdapter(cfg(output="pose", workspace_min=[0.0, -1.0, 0.0],
                            workspace_max=[0.56, 1.0, 1.0], max_linear_speed=1.0,
                            max_angular_speed=5.0))
    assert ad.command([0.5] + [0] * 6, P, P)[0] is None                # no measured pose yet
    assert ad.hold() is None
    pose = (np.array([0.5, 0.0, 0.3]), np.array([0.0, 0.0, 0.0, 2.0]))  # unnormalized quat ok
    xs, yaws = [], []
    for _ in range(4):
        cmd, why = ad.command([0.5, 0, 0, 0, 0, 0.2, -1], P, P, pose=pose)
        assert not why
        xs.append(cmd.position[0])
        q = cmd.orientation
        yaws.append(2 * math.atan2(q[2], q[3]))
    np.testing.assert_allclose(xs, [0.525, 0.55, 0.56, 0.56])        # 0.5 m/s * 50 ms; box
    np.testing.assert_allclose(yaws, [0.1, 0.2, 0.3, 0.4])           # 2 rad/s * 50 ms
    assert "workspace" in cmd.limited
    hold = ad.hold()
    np.testing.assert_allclose(hold.position, cmd.position)
    np.testing.assert_allclose(hold.orientation, cmd.orientation)
    ad.reset()                       # after enable: start again from the measured pose
    cmd, _ = ad.command([0.0] * 7, P, P, pose=pose)
    np.testing.assert_allclose(cmd.position, [0.5, 0.0, 0.3])
    outside = (np.array([0.9, 0.0, 0.3]), np.array([0, 0, 0, 1.0]))
    ad.reset()
    cmd, why = ad.command([0.0] * 7, P, P, pose=outside)
    assert cmd is None and "outside the workspace" in why


def test_pose_rotation_is_applied_in_the_command_frame():
    ad = CommandAdapter(cfg(output="pose", max_angular_speed=0.0))
    start = quat_from_rotvec([0.0, math.pi / 2, 0.0])               # 90 deg about y
    cmd, _ = ad.command([0, 0, 0, 0, 0, 0.2, 0], P, P,
                        pose=(np.array([0.0, 0.0, 0.5]), start))
    expected = quat_multiply(quat_from_rotvec([0, 0, 0.1]), start)    # world-frame yaw first
    np.testing.assert_allclose(cmd.orientation, quat_normalize(expected), atol=1e-12)


def test_joint_absolute_rate_limits_from_measured_then_previous_target():
    ad = CommandAdapter(cfg(output="joint_trajectory", max_joint_velocity=2.0))
    cmd, why = ad.command([0.5, 0.0, -0.05, 1.0], P, P)
    assert cmd is None and "joint state" in why                       # no reference yet
    joints = {"a": 0.0, "b": 0.0, "c": 0.0, "other": 9.0}
    cmd, _ = ad.command([0.5, 0.0, -0.05, 1.0], P, P, joints=joints)
    np.testing.assert_allclose(cmd.positions, [0.1, 0.0, -0.05])       # 2 rad/s * 50 ms
    assert cmd.limited == ("joint_velocity",)
    cmd, _ = ad.command([0.5, 0.0, -0.05, 1.0], P, P, joints=joints)  # from the previous target
    np.testing.assert_allclose(cmd.positions, [0.2, 0.0, -0.05])
    np.testing.assert_allclose(ad.hold().positions, [0.2, 0.0, -0.05])


def test_joint_absolute_chunks_outside_limits_are_rejected():
    ad = CommandAdapter(cfg(output="joint_trajectory", joint_scale=2.0))
    assert ad.check_rows(np.array([[0.4, 0.0, 0.0, 1.0]] * 3)) is None
    why = ad.check_rows(np.array([[0.4, 0.0, 0.0, 1.0], [0.0, 0.6, 0.0, 1.0]]))
    assert "joint target 1.2 of b at step 1 outside the joint limits [-1, 1]" in why
    # other outputs are limited per tick, not rejected
    assert CommandAdapter(cfg(output="twist")).check_rows(np.full((2, 7), 0.9)) is None


def test_joint_delta_integrates_from_measured_state_and_clamps():
    ad = CommandAdapter(cfg(output="joint_trajectory", joint_mode="delta", joint_scale=0.5,
                            max_joint_velocity=0.0, gripper_index=-1, action_dim=3))
    cmd, why = ad.command([0.1, 0.2, 0.3], P, P)
    assert cmd is None and "joint state" in why
    joints = {"a": 0.3, "b": -0.2, "c": 0.95}
    cmd, _ = ad.command([0.1, 0.2, 0.3], P, P, joints=joints)
    np.testing.assert_allclose(cmd.positions, [0.35, -0.1, 1.0])       # c clamped to 1.0
    assert cmd.limited == ("joint_limits",) and cmd.gripper is None
    # a 20 ms tick of a 50 ms step applies 2/5 of the step's delta
    cmd, _ = ad.command([0.1, 0.2, 0.0], P, 0.02, joints=joints)
    np.testing.assert_allclose(cmd.positions, [0.32, -0.16, 0.95])


def test_final_guard_refuses_non_finite_and_out_of_bounds_commands():
    ad = CommandAdapter(cfg(output="twist"))
    cmd, why = ad.command([math.nan] + [0] * 6, P, P)
    assert cmd is None and "bad action" in why
    cmd, why = ad.command([0.1] * 6 + [0], math.inf, P)               # 0 * inf would be nan
    assert cmd is None or np.isfinite(cmd.values()).all()
    ok, _ = ad.command([0.0] * 7, P, P)
    bad = ok
    bad.linear = np.array([10.0, 0, 0])
    assert "max_linear_speed" in ad.check_command(bad, P)
    bad.linear = np.array([math.nan, 0, 0])
    assert "non-finite" in ad.check_command(bad, P)
    jt = CommandAdapter(cfg(output="joint_trajectory", max_joint_velocity=0.0))
    cmd, _ = jt.command([0.5, 0.5, 0.5, 0.0], P, P)
    cmd.positions = np.array([1.5, 0.0, 0.0])
    assert "joint limits" in jt.check_command(cmd, P)


def test_helpers():
    assert gripper_position(0.3, 0.08, 0.0, True) == 0.0
    assert gripper_position(-0.3, 0.08, 0.0, True) == 0.08
    assert gripper_position(0.0, 0.08, 0.0, False) == pytest.approx(0.04)
    assert gripper_position(5.0, 0.08, 0.0, False) == 0.0
    v, hit = limit_norm([3.0, 4.0, 0.0], 1.0)
    assert hit and np.allclose(v, [0.6, 0.8, 0])
    assert limit_norm([3.0, 4.0, 0.0], 0.0)[1] is False
    q = quat_from_rotvec([0, 0, math.pi])
    np.testing.assert_allclose(q, [0, 0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(quat_from_rotvec([0, 0, 0]), [0, 0, 0, 1])
    with pytest.raises(ValueError):
        quat_normalize([0, 0, 0, 0])
