"""sim_bridge without the simulator: task uids, episode plans, parameter validation."""
import pytest

from sim_bridge.episodes import EpisodeSpec, build_plan, parse_episode_entry, successor
from sim_bridge.libero_env import SUITE_MAX_STEPS, camera_name, task_from_uid, task_uid

BASE = dict(suite="libero_object", task_index=0, init_state_index=0, seed=0, max_steps=0,
            episodes=[], task_indices=[], init_states=[], num_episodes=0)


def test_task_uids_cover_the_five_standard_suites():
    assert [task_uid(s, 0) for s in ("libero_spatial", "libero_object", "libero_goal",
                                     "libero_10", "libero_90")] == [0, 10, 20, 30, 40]
    assert task_uid("libero_90", 89) == 129
    for uid in range(130):
        assert task_uid(*task_from_uid(uid)) == uid
    for bad in (("libero_object", 10), ("libero_90", 90), ("libero_100", 0)):
        with pytest.raises(ValueError):
            task_uid(*bad)
    with pytest.raises(ValueError):
        task_from_uid(130)


def test_camera_names():
    assert camera_name("eye_in_hand") == "robot0_eye_in_hand"
    assert camera_name("agentview") == "agentview"
    with pytest.raises(ValueError):
        camera_name("frontview")


PLANS = {
    "single": ({}, [("libero_object", 0, 0, 0, 280)]),
    "max_steps_and_seeded": (dict(init_state_index=-1, seed=7, max_steps=12, num_episodes=2),
                             [("libero_object", 0, -1, 7, 12), ("libero_object", 0, -1, 8, 12)]),
    "tasks_x_inits": (dict(task_indices=[1, 2], init_states=[3, 4]),
                      [("libero_object", 1, 3, 0, 280), ("libero_object", 1, 4, 0, 280),
                       ("libero_object", 2, 3, 0, 280), ("libero_object", 2, 4, 0, 280)]),
    "num_episodes_walks_inits": (dict(init_state_index=48, num_episodes=3),
                                 [("libero_object", 0, 48, 0, 280),
                                  ("libero_object", 0, 49, 0, 280),
                                  ("libero_object", 0, 0, 0, 280)]),
    "num_episodes_cycles_init_states": (dict(init_states=[5], num_episodes=2),
                                        [("libero_object", 0, 5, 0, 280)] * 2),
    "episodes_list_wins": (dict(episodes=["libero_goal:3:4", "2:1", "6"], init_state_index=9,
                                task_indices=[5]),
                           [("libero_goal", 3, 4, 0, 300), ("libero_object", 2, 1, 0, 280),
                            ("libero_object", 6, 9, 0, 280)]),
}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_build_plan(name):
    overrides, expected = PLANS[name]
    assert build_plan(dict(BASE, **overrides)) == [EpisodeSpec(*e) for e in expected]


@pytest.mark.parametrize("overrides, fragment", [
    (dict(suite="bogus"), "suite 'bogus'"),
    (dict(task_index=10), "task_index 10 not in [0, 9]"),
    (dict(init_state_index=50), "init_state_index 50"),
    (dict(max_steps=-1), "max_steps -1"),
    (dict(task_indices=[0, 12]), "task_index 12"),
    (dict(init_states=[-2]), "init_state_index -2"),
    (dict(episodes=["a:b"]), "episode entry 'a:b'"),
    (dict(episodes=["libero_90:90:0"]), "task_index 90"),
    (dict(num_episodes=-1), "num_episodes -1"),
])
def test_build_plan_rejects(overrides, fragment):
    with pytest.raises(ValueError) as err:
        build_plan(dict(BASE, **overrides))
    assert fragment in str(err.value)


def test_successor_and_suite_defaults():
    spec = EpisodeSpec("libero_10", 3, 49, 0, 520)
    assert successor(spec) == spec._replace(init_state_index=0)
    seeded = spec._replace(init_state_index=-1, seed=1000)
    assert successor(seeded) == seeded._replace(seed=1001)
    assert SUITE_MAX_STEPS == {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300,
                               "libero_10": 520, "libero_90": 400}
    assert parse_episode_entry("libero_90:89:49", "libero_object", 0) == ("libero_90", 89, 49)


def test_check_parameters():
    from sim_bridge.bridge_node import PARAMETERS, check_parameters
    good = {name: default for name, (default, _d, _ro) in PARAMETERS.items()}
    assert check_parameters(good) is None
    bad = {
        "clock_mode": "fast", "merge_rule": "mean", "late_policy": "wait", "cameras": ["front"],
        "settle_steps": -1, "obs_history_steps": 0, "camera_rate_hz": 0.0,
        "n_action_steps": -2, "hold_grace_s": -0.1, "chunk_timeout_s": 0.0,
        "task_index": 99, "suite": "libero_100", "task_indices": ["a"],
    }
    for name, value in bad.items():
        reason = check_parameters(dict(good, **{name: value}))
        assert reason and (name in reason or str(value) in reason), (name, reason)
