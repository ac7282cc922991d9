"""Scripted LIBERO expert (sim_bridge/expert.py): geometry helpers, and one real episode
without rendering (libero_object task 0, init state 0) that must reach check_success()."""
import math

import numpy as np
import pytest

from sim_bridge.expert import closest_yaw, narrowest_direction, rot_down, rotvec
from sim_bridge.record_demos import parse_index_list


def test_rot_down_is_a_rotation_pointing_down():
    for yaw in (0.0, 0.7, math.pi / 2, -2.0):
        r = rot_down(yaw)
        assert np.allclose(r @ r.T, np.eye(3))
        assert np.isclose(np.linalg.det(r), 1.0)
        assert np.allclose(r[:, 2], [0, 0, -1])                  # approach axis down
        assert np.isclose(math.atan2(r[1, 0], r[0, 0]), yaw)     # closing axis at yaw


def test_rotvec_roundtrip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        ang = rng.uniform(0.0, math.pi - 0.01)
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        r = np.eye(3) + math.sin(ang) * k + (1 - math.cos(ang)) * k @ k
        assert np.allclose(rotvec(r), axis * ang, atol=1e-6)
    assert np.allclose(rotvec(np.eye(3)), 0.0)
    assert np.isclose(np.linalg.norm(rotvec(rot_down(0.0) @ rot_down(math.pi).T)), math.pi)


def test_closest_yaw_and_narrowest_direction():
    assert np.isclose(closest_yaw(0.1, 3.0), 0.1 + math.pi)
    assert np.isclose(closest_yaw(0.1, 0.0), 0.1)
    # an 8 x 4 cm box rotated by 30 degrees: narrowest across its short side (120 deg)
    a = math.radians(30)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = np.array([[x, y] for x in (-0.04, 0.04) for y in (-0.02, 0.02)]) @ rot.T + [0.1, 0.2]
    ang, width, centre, length = narrowest_direction(pts, step_deg=1.0)
    assert np.isclose(width, 0.04, atol=1e-3)
    assert np.isclose(length, 0.08, atol=2e-3)
    assert np.isclose(math.degrees(ang) % 180, 120, atol=1.0)
    assert np.allclose(centre, [0.1, 0.2], atol=1e-6)


def test_parse_index_list():
    assert parse_index_list("0-4") == [0, 1, 2, 3, 4]
    assert parse_index_list("3,1-2,3", 10) == [3, 1, 2]
    assert parse_index_list("all", 3) == [0, 1, 2]
    with pytest.raises(ValueError):
        parse_index_list("5-50", 50)
    with pytest.raises(ValueError):
        parse_index_list("4-2")


@pytest.mark.libero
def test_expert_solves_libero_object_task0_without_rendering():
    pytest.importorskip("libero.libero")
    from sim_bridge.libero_env import LiberoEnv
    from sim_bridge.record_demos import run_expert

    le = LiberoEnv(cameras=())                      # ControlEnv, no renderer at all
    try:
        le.load("libero_object", 0)
        res = run_expert(le, init_state=0, max_steps=400)
        assert res["success"], res["log"][-5:]
        assert le.check_success()
        assert 60 < res["steps"] <= 280, res["steps"]   # within OpenVLA's libero_object budget
        assert res["actions"].shape == (res["steps"], 7)
        assert np.all(np.abs(res["actions"]) <= 1.0 + 1e-9)
        # the goal object is in the basket, as the BDDL goal says
        e = le.env.env
        assert e.parsed_problem["goal_state"] == [["in", "alphabet_soup_1",
                                                   "basket_1_contain_region"]]
        assert all(e._eval_predicate(g) for g in e.parsed_problem["goal_state"])
    finally:
        le.close()


def test_record_demos_cli_help(capsys):
    from sim_bridge.record_demos import main
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--suite", "--tasks", "--episodes-per-task", "--init-states", "--out",
                "--no-images", "--image-size", "--measure-only"):
        assert opt in out
    assert main(["--tasks", "99", "--out", "/nonexistent/x"]) == 2   # bad task index
