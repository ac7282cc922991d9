"""Training data path: LIBERO/robomimic hdf5 reader, windows, normalizer fitting, task uids."""
import json

import h5py
import numpy as np
import pytest
import torch

from oat_ros.errors import InputError
from oat_ros.train import libero_tasks
from oat_ros.train.demos import (DemoSet, Windows, axisangle2quat, fit_image_limits, fit_limits,
                                 fit_normalizers, load_demos, load_stats, main as demos_main,
                                 read_hdf5, split_episodes)
from oat_ros.model.normalizer import FieldNormalizer

torch.set_num_threads(1)

TASK = "pick_up_the_ketchup_and_place_it_in_the_basket"   # libero_object


def _episode(rng, T, H=8):
    return {
        "actions": rng.uniform(-1, 1, (T, 7)),
        "agentview": rng.integers(0, 256, (T, H, H, 3), dtype=np.uint8),     # upright
        "hand": rng.integers(0, 256, (T, H, H, 3), dtype=np.uint8),
        "ee_pos": rng.normal(size=(T, 3)),
        "ee_ori": rng.normal(size=(T, 3)),
        "gripper": rng.normal(size=(T, 2)) * 0.04,
        "joints": rng.normal(size=(T, 7)),
    }


def _write_libero(path, eps, bddl=f"chiliocosm/bddl_files/libero_object/{TASK}.bddl"):
    """The LIBERO layout of libero-here.md §5, written with h5py only."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_name"] = "Libero_Floor_Manipulation"
        data.attrs["problem_info"] = json.dumps({"problem_name": "libero_floor_manipulation",
                                                 "domain_name": "robosuite",
                                                 "language_instruction": "pick up the ketchup"})
        data.attrs["macros_image_convention"] = "opengl"
        data.attrs["bddl_file_name"] = bddl
        data.attrs["num_demos"] = len(eps)
        # demo_10 before demo_2 lexically: the reader must order numerically
        for i, e in zip([0, 2, 10][:len(eps)], eps):
            g = data.create_group(f"demo_{i}")
            T = len(e["actions"])
            g.attrs["num_samples"] = T
            g.create_dataset("actions", data=e["actions"])
            g.create_dataset("states", data=np.zeros((T, 5)))
            g.create_dataset("robot_states", data=np.zeros((T, 9)))
            g.create_dataset("rewards", data=np.zeros(T, np.uint8))
            g.create_dataset("dones", data=np.zeros(T, np.uint8))
            o = g.create_group("obs")
            o.create_dataset("agentview_rgb", data=e["agentview"][:, ::-1])       # raw: upside down
            o.create_dataset("eye_in_hand_rgb", data=e["hand"][:, ::-1])
            o.create_dataset("ee_pos", data=e["ee_pos"])
            o.create_dataset("ee_ori", data=e["ee_ori"])
            o.create_dataset("ee_states", data=np.concatenate([e["ee_pos"], e["ee_ori"]], 1))
            o.create_dataset("gripper_states", data=e["gripper"])
            o.create_dataset("joint_states", data=e["joints"])


def test_axisangle2quat_matches_robosuite():
    q = axisangle2quat(np.array([[0.0, 0.0, np.pi / 2], [0.0, 0.0, 0.0], [np.pi, 0.0, 0.0]]))
    s = np.sqrt(0.5)
    np.testing.assert_allclose(q, [[0, 0, s, s], [0, 0, 0, 1], [1, 0, 0, 0]], atol=1e-12)
    v = np.random.default_rng(0).normal(size=(50, 3))
    np.testing.assert_allclose(np.linalg.norm(axisangle2quat(v), axis=1), 1.0, atol=1e-12)


def test_libero_hdf5_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    eps = [_episode(rng, T) for T in (5, 7, 6)]
    path = tmp_path / f"{TASK}_demo.hdf5"
    _write_libero(path, eps)
    got = read_hdf5(path)
    assert len(got) == 3
    for e, g in zip(eps, got):
        np.testing.assert_array_equal(g.images["agentview_rgb"], e["agentview"])          # upright
        np.testing.assert_array_equal(g.images["robot0_eye_in_hand_rgb"], e["hand"])
        np.testing.assert_allclose(g.actions, e["actions"], rtol=1e-6)
        np.testing.assert_allclose(g.states["robot0_eef_pos"], e["ee_pos"], rtol=1e-6)
        np.testing.assert_allclose(g.states["robot0_eef_quat"], axisangle2quat(e["ee_ori"]), atol=1e-6)
        np.testing.assert_allclose(g.states["robot0_gripper_qpos"], e["gripper"], rtol=1e-6)
        np.testing.assert_allclose(g.states["robot0_joint_pos"], e["joints"], rtol=1e-6)
        assert g.task_uid == 10 + libero_tasks.SUITES["libero_object"].index(TASK)
        np.testing.assert_array_equal(g.states["task_uid"], np.full((len(e["actions"]), 1), g.task_uid))
        assert g.task_name == TASK and g.language == "pick up the ketchup"
        assert g.images["agentview_rgb"].dtype == np.uint8
        assert g.states["robot0_eef_quat"].dtype == np.float32
    assert [g.source.rsplit(":", 1)[1] for g in got] == ["demo_0", "demo_2", "demo_10"]

    # concatenated set, resize on load, cache round trip
    ds = load_demos([tmp_path], image_size=4)
    assert ds.n_episodes == 3 and ds.n_steps == 18
    assert ds.cameras == {"agentview_rgb": [4, 4, 3], "robot0_eye_in_hand_rgb": [4, 4, 3]}
    np.testing.assert_array_equal(ds.episode_ends, [5, 12, 18])
    cache = tmp_path / "cache.npz"
    assert demos_main(["--data", str(path), "--image-size", "4", "--out", str(cache)]) == 0
    back = DemoSet.load(cache)
    for c in ds.images:
        np.testing.assert_array_equal(back.images[c], ds.images[c])
    for k in ds.states:
        np.testing.assert_array_equal(back.states[k], ds.states[k])
    np.testing.assert_array_equal(back.actions, ds.actions)
    assert back.task_names == ds.task_names
    sel = load_demos([cache], cameras=["agentview_rgb"], states=["robot0_eef_pos"])
    assert list(sel.images) == ["agentview_rgb"] and list(sel.states) == ["robot0_eef_pos"]


def test_robomimic_layout_and_task_uid_override(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "lift.hdf5"
    T = 4
    img = rng.integers(0, 256, (T, 6, 6, 3), dtype=np.uint8)
    quat = rng.normal(size=(T, 4))
    with h5py.File(path, "w") as f:
        g = f.create_group("data/demo_0")
        f["data"].attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1})
        g.create_dataset("actions", data=rng.normal(size=(T, 7)))
        g.create_dataset("obs/agentview_image", data=img[:, ::-1])
        g.create_dataset("obs/robot0_eye_in_hand_image", data=img[:, ::-1])
        g.create_dataset("obs/robot0_eef_pos", data=rng.normal(size=(T, 3)))
        g.create_dataset("obs/robot0_eef_quat", data=quat)
        g.create_dataset("obs/robot0_gripper_qpos", data=rng.normal(size=(T, 2)))
    with pytest.raises(InputError, match="task uid"):
        read_hdf5(path, states=("robot0_eef_pos", "task_uid"))
    ds = load_demos([path], states=["robot0_eef_quat", "task_uid"], task_uids=["lift*=77"])
    np.testing.assert_array_equal(ds.images["agentview_rgb"], img)
    np.testing.assert_allclose(ds.states["robot0_eef_quat"], quat, rtol=1e-6)   # already xyzw
    assert ds.episode_task_uid.tolist() == [77] and ds.states["task_uid"][0, 0] == 77.0
    assert load_demos([path], states=["task_uid"], task_uids=["5"]).episode_task_uid.tolist() == [5]


def test_task_table():
    assert libero_tasks.N_TASKS == 130 and len(libero_tasks.TASK_UIDS) == 130
    assert libero_tasks.SUITE_OFFSETS == {"libero_spatial": 0, "libero_object": 10, "libero_goal": 20,
                                          "libero_10": 30, "libero_90": 40}
    assert libero_tasks.task_uid("pick_up_the_alphabet_soup_and_place_it_in_the_basket") == 10
    assert libero_tasks.task_of_uid(30)[0] == "libero_10"
    assert libero_tasks.task_name_from_bddl("a/b/open_the_middle_drawer_of_the_cabinet.bddl") == \
        "open_the_middle_drawer_of_the_cabinet"


def test_windows_pad_like_oat():
    T = [3, 5]
    ds = DemoSet(images={}, states={"s": np.arange(8, dtype=np.float32)[:, None]},
                 actions=np.arange(8, dtype=np.float32)[:, None].repeat(7, 1),
                 episode_ends=np.cumsum(T), episode_task_uid=np.array([0, 0]))
    w = Windows(ds, n_obs_steps=2, horizon=4)
    assert len(w) == 8
    obs, act = w.indices(np.arange(8))
    assert obs.tolist() == [[0, 0], [0, 1], [1, 2], [3, 3], [3, 4], [4, 5], [5, 6], [6, 7]]
    assert act.tolist()[:3] == [[0, 1, 2, 2], [1, 2, 2, 2], [2, 2, 2, 2]]
    assert act.tolist()[3] == [3, 4, 5, 6] and act.tolist()[7] == [7, 7, 7, 7]
    b = w.batch([4])
    assert b["states"]["s"].shape == (1, 2, 1) and b["actions"].shape == (1, 4, 7)
    w2 = Windows(ds, 2, 4, episodes=[1])
    assert len(w2) == 5 and w2.indices([0])[0].tolist() == [[3, 3]]


def test_split_is_seeded_and_disjoint():
    ds = DemoSet(images={}, states={}, actions=np.zeros((20, 7), np.float32),
                 episode_ends=np.arange(2, 21, 2), episode_task_uid=np.array([0] * 5 + [1] * 5))
    tr, va = split_episodes(ds, 0.2, seed=3)
    tr2, va2 = split_episodes(ds, 0.2, seed=3)
    assert tr.tolist() == tr2.tolist() and va.tolist() == va2.tolist()
    assert len(va) == 2 and not set(tr) & set(va) and len(tr) + len(va) == 10
    assert {int(ds.episode_task_uid[e]) for e in va} == {0, 1}            # one per task


def test_fit_limits_like_linear_normalizer():
    x = np.array([[0.0, 5.0, 1.0], [2.0, 5.0, 3.0], [4.0, 5.0, 2.0]])
    st = fit_limits(x)
    f = FieldNormalizer(3)
    load_stats(f, st)
    y = f.normalize(torch.tensor(x, dtype=torch.float32))
    np.testing.assert_allclose(y[:, 0], [-1, 0, 1], atol=1e-6)
    np.testing.assert_allclose(y[:, 2], [-1, 1, 0], atol=1e-6)
    np.testing.assert_allclose(y[:, 1], 0.0, atol=1e-6)        # constant dim: scale 1, centred
    assert st["scale"][1] == 1.0
    np.testing.assert_allclose(st["min"], [0, 5, 1]) and np.testing.assert_allclose(st["max"], [4, 5, 3])
    np.testing.assert_allclose(f.unnormalize(y), x, atol=1e-5)

    img = np.zeros((2, 2, 2, 3), np.uint8)
    img[0, 0, 0] = [255, 10, 0]
    img[1, 1, 1] = [0, 200, 7]
    st = fit_image_limits(img, chunk=1)
    np.testing.assert_array_equal(st["min"], [0, 0, 0])
    np.testing.assert_array_equal(st["max"], [255, 200, 7])
    np.testing.assert_allclose(st["scale"], [2 / 255, 2 / 200, 2 / 7], rtol=1e-6)
    np.testing.assert_allclose(st["mean"], img.reshape(-1, 3).mean(0), rtol=1e-6)
    np.testing.assert_allclose(st["std"], img.reshape(-1, 3).std(0, ddof=1), rtol=1e-5)

    ds = DemoSet(images={"cam": img}, states={"s": np.array([[1.0], [3.0]], np.float32)},
                 actions=np.array([[0.0] * 7, [1.0] * 7], np.float32), episode_ends=np.array([1, 2]),
                 episode_task_uid=np.array([0, 0]))
    all_stats = fit_normalizers(ds)
    assert set(all_stats) == {"action", "cam", "s"}
    assert fit_normalizers(ds, episodes=[1])["s"]["min"].tolist() == [3.0]
