"""LIBERO hdf5 demo layout (shared/design/libero-here.md §5): writer/reader round trip on
synthetic data, and one real recorded expert demo (small images) that has every §5 key and
attribute and replays to success from its recorded first state in a fresh env."""
import json
import os

import h5py
import numpy as np
import pytest

from sim_bridge.demo_writer import (DATA_ATTRS, DEMO_ATTRS, DEMO_KEYS, IMAGE_KEYS, OBS_KEYS,
                                    DemoWriter, Episode, missing_layout_keys, quat2axisangle,
                                    read_demo_file)

META = {"env_name": "Libero_Floor_Manipulation",
        "problem_info": json.dumps({"problem_name": "libero_floor_manipulation",
                                    "domain_name": "robosuite",
                                    "language_instruction": "pick the soup"}),
        "macros_image_convention": "opengl",
        "bddl_file_name": "/x/libero_object/pick_the_soup.bddl",
        "bddl_file_content": "(define (problem x))",
        "env_args": json.dumps({"type": 1, "env_name": "Libero_Floor_Manipulation",
                                "problem_name": "libero_floor_manipulation",
                                "bddl_file": "/x/libero_object/pick_the_soup.bddl",
                                "env_kwargs": {"control_freq": 20}})}


def _episode(T, seed, size=8):
    rng = np.random.default_rng(seed)
    ep = Episode(model_file="<mujoco/>", attrs={"init_state_index": seed})
    for t in range(T):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        ep.add_step(rng.uniform(-1, 1, 7), rng.normal(size=110), rng.normal(size=2),
                    rng.normal(size=7), rng.normal(size=3), q,
                    {"agentview_rgb": rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
                     "eye_in_hand_rgb": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)})
    return ep


def test_quat2axisangle_matches_robosuite_convention():
    # 90 degrees about z, xyzw
    q = np.array([0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    assert np.allclose(quat2axisangle(q), [0, 0, np.pi / 2])
    assert np.allclose(quat2axisangle([0, 0, 0, 1.0]), 0.0)


def test_layout_roundtrip(tmp_path):
    path = tmp_path / "pick_the_soup_demo.hdf5"
    eps = [_episode(5, 0), _episode(7, 1)]
    with DemoWriter(path, META) as w:
        for ep in eps:
            w.add(ep)
    assert missing_layout_keys(path) == []
    with h5py.File(path, "r") as f:
        data = f["data"]
        for k in DATA_ATTRS:
            assert k in data.attrs, k
        assert data.attrs["num_demos"] == 2 and data.attrs["total"] == 12
        assert sorted(data.keys()) == ["demo_0", "demo_1"]
        g = data["demo_1"]
        for k in DEMO_ATTRS:
            assert k in g.attrs, k
        assert g.attrs["num_samples"] == 7
        assert g["actions"].dtype == np.float64 and g["actions"].shape == (7, 7)
        assert g["states"].shape == (7, 110)
        assert g["robot_states"].shape == (7, 9)
        assert g["rewards"].dtype == np.uint8 and g["dones"].dtype == np.uint8
        assert g["obs/agentview_rgb"].dtype == np.uint8
        assert g["obs/agentview_rgb"].shape == (7, 8, 8, 3)
        assert g["obs/ee_states"].shape == (7, 6)
    demos = read_demo_file(path)
    assert [d["name"] for d in demos] == ["demo_0", "demo_1"]
    for d, ep in zip(demos, eps):
        arr = ep.arrays()
        for k in DEMO_KEYS:
            np.testing.assert_array_equal(d[k], arr[k])
        for k in OBS_KEYS + IMAGE_KEYS:
            np.testing.assert_array_equal(d[f"obs/{k}"], arr[f"obs/{k}"])
        assert list(d["rewards"]) == [0] * (len(ep) - 1) + [1]
        assert list(d["dones"]) == [0] * (len(ep) - 1) + [1]
        np.testing.assert_array_equal(d["attrs"]["init_state"], d["states"][0])
        # robot_states = gripper_qpos + eef_pos + eef_quat; ee_states = ee_pos + ee_ori
        np.testing.assert_array_equal(d["robot_states"][:, :2], d["obs/gripper_states"])
        np.testing.assert_array_equal(d["robot_states"][:, 2:5], d["obs/ee_pos"])
        np.testing.assert_array_equal(d["obs/ee_states"][:, 3:], d["obs/ee_ori"])
        np.testing.assert_allclose(d["obs/ee_ori"][0], quat2axisangle(d["robot_states"][0, 5:]))
        assert d["attrs"]["model_file"] == "<mujoco/>"
    fa = demos[0]["file_attrs"]
    assert fa["problem_info"]["language_instruction"] == "pick the soup"
    assert fa["env_args"]["type"] == 1
    assert os.path.basename(fa["bddl_file_name"]) == "pick_the_soup.bddl"
    # append mode continues the numbering
    with DemoWriter(path, mode="a") as w:
        assert w.add(_episode(3, 2)) == "demo_2"
    with h5py.File(path, "r") as f:
        assert f["data"].attrs["num_demos"] == 3 and f["data"].attrs["total"] == 15


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One expert demo of libero_object task 0 (init 0), 32x32 images, via the CLI."""
    pytest.importorskip("libero.libero")
    from sim_bridge.record_demos import main
    out = tmp_path_factory.mktemp("demos")
    args = ["--suite", "libero_object", "--tasks", "0", "--episodes-per-task", "1",
            "--init-states", "0", "--image-size", "32", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    files = [p for p in os.listdir(out) if p.endswith("_demo.hdf5")]
    assert files == ["pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5"]
    return out, os.path.join(out, files[0]), args


@pytest.mark.libero
def test_recorded_demo_has_the_libero_layout(recorded):
    out, path, args = recorded
    assert missing_layout_keys(path) == []
    demos = read_demo_file(path)
    assert len(demos) == 1
    d = demos[0]
    T = len(d["actions"])
    assert d["attrs"]["num_samples"] == T
    assert d["states"].shape == (T, 110)                      # libero_object state size
    assert d["obs/agentview_rgb"].shape == (T, 32, 32, 3)
    assert d["obs/eye_in_hand_rgb"].shape == (T, 32, 32, 3)
    assert d["obs/agentview_rgb"].std() > 5                   # real pictures, not blank
    assert d["rewards"][-1] == 1 and d["dones"][-1] == 1 and d["rewards"][:-1].sum() == 0
    assert "<mujoco" in d["attrs"]["model_file"]
    fa = d["file_attrs"]
    assert fa["num_demos"] == 1 and fa["total"] == T
    assert fa["macros_image_convention"] == "opengl"
    assert fa["problem_info"]["problem_name"] == "libero_floor_manipulation"
    assert fa["problem_info"]["language_instruction"]
    assert os.path.basename(fa["bddl_file_name"]) == \
        "pick_up_the_alphabet_soup_and_place_it_in_the_basket.bddl"
    assert fa["bddl_file_content"].lstrip().startswith("(define")
    assert fa["env_args"]["env_name"] == fa["env_name"]
    summary = json.load(open(os.path.join(out, "summary.json")))
    entry = summary["tasks"]["libero_object/0"]
    assert entry["successes"] == 1 and entry["demos"] == 1 and entry["mean_steps"] == T


@pytest.mark.libero
def test_recorded_demo_replays_to_success_in_a_fresh_env(recorded):
    from sim_bridge.libero_env import LiberoEnv
    from sim_bridge.record_demos import replay_demo
    _, path, _ = recorded
    d = read_demo_file(path)[0]
    le = LiberoEnv(cameras=())                                 # a new env, no renderer
    try:
        le.load("libero_object", 0)
        ok, step = replay_demo(le.env, d)
        assert ok and step == len(d["actions"]) - 1, (ok, step, len(d["actions"]))
        assert le.check_success()
    finally:
        le.close()


@pytest.mark.libero
def test_rerun_skips_complete_task(recorded):
    from sim_bridge.record_demos import main
    out, path, args = recorded
    mtime = os.path.getmtime(path)
    assert main(args) == 0
    assert os.path.getmtime(path) == mtime
    assert not any(p.endswith(".part") for p in os.listdir(out))
