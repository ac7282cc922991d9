"""AR policy and Blockwise tail training: a tiny policy overfits a tiny dataset, runs resume
exactly, and the native exports load with oat_ros.checkpoint.load_policy and run in the Engine."""
import json

import numpy as np
import pytest
import torch
import yaml

from oat_ros.checkpoint import load_policy
from oat_ros.engine.engine import Engine
from oat_ros.engine.settings import DecodeSettings
from oat_ros.train import libero_tasks
from oat_ros.train import policy_train, tail_train, tokenizer_train
from oat_ros.train.synthetic import make_episodes, write_libero_hdf5
from oat_ros.train.tokenizer_io import load_tokenizer

torch.set_num_threads(1)
UID = 12


def _common(out, *extra):
    return ["--out", str(out), "--preset", "tiny", "--threads", "1", "--no-progress", *extra]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """3 fake episodes (16x16 cameras) in the LIBERO layout + a tokenizer trained on them."""
    d = tmp_path_factory.mktemp("poldata")
    pairs = make_episodes(3, T=(24, 24), image_size=16, seed=3, task_uid=UID)
    data = d / "demo.hdf5"
    write_libero_hdf5(data, [r for r, _ in pairs], libero_tasks.task_of_uid(UID)[1], "synthetic task")
    (d / "states_only.yaml").write_text(yaml.safe_dump(
        {"model": {"cameras": []}, "val_fraction": 0.0}))
    (d / "camera.yaml").write_text(yaml.safe_dump(
        {"model": {"image_size": 16, "crop": 14}, "val_fraction": 0.0, "ema": True}))
    assert tokenizer_train.main(["--data", str(data), *_common(d / "tok", "--steps", "150",
                                                                "--val-fraction", "0")]) == 0
    return d, data


def _policy_args(work, out, config, *extra):
    d, data = work
    return ["--data", str(data), "--tokenizer", str(d / "tok"), "--config", str(d / config),
            *_common(out, *extra)]


def test_tiny_policy_overfits_tiny_dataset(work, tmp_path):
    """States-only tiny policy (72 windows): teacher-forced CE from ln(1000)~6.9 to < 0.6 in
    300 steps. (The ResNet18 per camera makes every step ~40x slower; the camera path is
    covered below with a few steps.)"""
    out = tmp_path / "pol"
    assert policy_train.main(_policy_args(work, out, "states_only.yaml", "--steps", "300",
                                          "--batch-size", "32", "--lr", "3e-3", "--schedule", "constant",
                                          "--log-every", "50")) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[0] > 3.0 and losses[-1] < 0.6, losses
    metrics = json.loads((out / "metrics.json").read_text())     # evaluated on the training windows
    assert metrics["val_ce"] < 0.6 and metrics["val_token_acc"] > 0.8, metrics

    policy = load_policy(out / "export")
    assert policy.cfg.cameras == {} and list(policy.cfg.states) == [
        "robot0_eef_pos", "robot0_gripper_qpos", "task_uid"]
    engine = Engine(policy, use_cuda_graphs=False)
    r = engine.predict(engine.dummy_observation(2), DecodeSettings(max_tokens=8))
    assert r.actions.shape == (2, 16, 7) and r.tokens_generated == 8


def test_policy_resume_is_exact(work, tmp_path):
    args = ("--steps", "8", "--batch-size", "8", "--save-every", "2", "--log-every", "2")
    assert policy_train.main(_policy_args(work, tmp_path / "a", "states_only.yaml", *args)) == 0
    assert policy_train.main(_policy_args(work, tmp_path / "b", "states_only.yaml", *args,
                                          "--stop-after-steps", "4")) == 0
    assert not (tmp_path / "b" / "export").exists()
    assert policy_train.main(_policy_args(work, tmp_path / "b", "states_only.yaml", *args)) == 0
    a = load_policy(tmp_path / "a" / "export").state_dict()
    b = load_policy(tmp_path / "b" / "export").state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def camera_policy(work, tmp_path_factory):
    out = tmp_path_factory.mktemp("campol") / "pol"
    assert policy_train.main(_policy_args(work, out, "camera.yaml", "--steps", "3", "--batch-size", "4",
                                          "--eval-samples", "8")) == 0
    return out


def test_camera_policy_export_loads_and_predicts(work, camera_policy):
    policy = load_policy(camera_policy / "export")
    cfg = policy.cfg
    assert cfg.cameras == {"agentview_rgb": [16, 16, 3]} and cfg.crop_shape == [14, 14]
    assert cfg.n_obs_steps == 2 and cfg.horizon == 16 and cfg.n_action_steps == 8
    # fitted normalizers went into the export (images per channel, states, tokenizer action)
    norm = json.loads((camera_policy / "normalizer.json").read_text())
    vis = policy.obs_encoder.vision_encoder.normalizer["agentview_rgb"]
    np.testing.assert_allclose(vis.scale.numpy(), norm["agentview_rgb"]["scale"], atol=1e-6)
    st = policy.obs_encoder.state_encoder.normalizer["task_uid"]
    assert float(st.input_stats.min) == UID and float(st.scale) == 1.0     # constant: scale 1
    tok = load_tokenizer(work[0] / "tok" / "tokenizer")
    for k, v in tok.state_dict().items():
        assert torch.equal(policy.action_tokenizer.state_dict()[k], v), k    # frozen tokenizer
    src = yaml.safe_load((camera_policy / "export" / "config.yaml").read_text())["source"]
    assert src["ema"] is True and src["step"] == 3

    engine = Engine(policy, use_cuda_graphs=False)
    obs = engine.dummy_observation(1)
    r = engine.predict(obs, DecodeSettings(max_tokens=8))
    assert r.actions.shape == (1, 16, 7) and r.actions.dtype == np.float32
    r4 = engine.predict(obs, DecodeSettings(max_tokens=4))
    assert r4.tokens_generated == 4 and r4.actions.shape == (1, 16, 7)


def test_tail_training_with_frozen_policy(work, camera_policy, tmp_path):
    d, data = work
    out = tmp_path / "tail"
    assert tail_train.main(["--data", str(data), "--policy", str(camera_policy / "export"),
                            *_common(out, "--steps", "30", "--batch-size", "16", "--log-every", "10",
                                     "--lr", "3e-3")]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0]
    policy = load_policy(out / "export")
    assert policy.tail is not None and policy.tail_cfg.prefix_len == 4 and policy.tail_cfg.n_tail == 4
    base = load_policy(camera_policy / "export").state_dict()
    for k, v in base.items():                                   # the policy stayed frozen
        assert torch.equal(policy.state_dict()[k], v), k
    engine = Engine(policy, use_cuda_graphs=False)
    obs = engine.dummy_observation(1)
    r = engine.predict(obs, DecodeSettings(mode="blockwise", prefix_len=4))
    assert r.used_tail and r.actions.shape == (1, 16, 7) and r.tokens_generated == 8
    # the tail alone, in the Blockwise-OAT .pt format, attaches to the plain policy export
    again = load_policy(camera_policy / "export", tail_path=out / "blockwise_tail_P4.pt")
    for k, v in policy.tail.state_dict().items():
        assert torch.equal(again.tail.state_dict()[k], v), k
    blob = torch.load(out / "blockwise_tail_P4.pt", weights_only=True)
    assert blob["prefix_len"] == 4 and blob["tail_layers"] == policy.tail_cfg.n_layers


def test_teacher_forcing_matches_kv_cache_decoding():
    """The training forward (whole sequence, BOS-shifted) gives the logits and the
    prefix_hidden that the node's KV-cache decoding computes for the same tokens."""
    from dataclasses import replace
    from oat_ros.model.policy import OATPolicy
    from oat_ros.train.common import gpt_init
    from oat_ros.train.presets import get_preset, policy_config, tokenizer_config
    m = replace(get_preset("tiny").model, cameras=[])
    cfg = policy_config(m, {}, {"robot0_eef_pos": 3, "task_uid": 1}, tokenizer_config(m))
    torch.manual_seed(0)
    policy = OATPolicy(cfg)
    gpt_init(policy.model)
    policy.model.tie_weights()
    policy.eval()
    obs = {"robot0_eef_pos": torch.randn(3, 2, 3), "task_uid": torch.full((3, 2, 1), 12.0)}
    feats = policy.encode_obs(obs)
    tokens, step_logits = policy.generate(feats, 8, temperature=0.0)
    with torch.no_grad():
        logits = policy_train.teacher_forcing_logits(policy, obs, tokens)
        memory = policy.model.encode_memory(feats)
        for P in (1, 4, 7):
            h = tail_train.prefix_hidden(policy, memory, tokens, P)
            hg = policy.generate(feats, P, temperature=0.0, return_hidden=True)[2]
            torch.testing.assert_close(h, hg, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, step_logits, atol=1e-5, rtol=1e-5)
    offs = policy_train.random_crop_offsets(
        OATPolicy(policy_config(replace(m, image_size=16, crop=14), {"cam": [16, 16, 3]}, {},
                                tokenizer_config(m))), 5, np.random.default_rng(0))
    assert offs["cam"].shape == (10, 2) and offs["cam"].min() >= 0 and offs["cam"].max() <= 2


def test_ema_averages_shared_tensors_once():
    """Tied / duplicated tensors (AR head = tok_emb, robomimic backbone = nets.0) must carry the
    EMA value in the export, not the raw weight of whichever alias loads last."""
    from torch import nn
    from oat_ros.train.common import EMA

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(4, 3)
            self.head = nn.Linear(3, 4, bias=False)
            self.head.weight = self.emb.weight
            self.trunk = nn.Linear(3, 3)
            self.alias = nn.Sequential(self.trunk)
            self.frozen = nn.Linear(3, 3)
            self.frozen.requires_grad_(False)

    torch.manual_seed(0)
    m = Tied()
    ema = EMA(m, power=1.0, max_decay=0.5)
    assert set(ema.alias) == {"head.weight", "alias.0.weight", "alias.0.bias"}
    w0 = m.emb.weight.detach().clone()
    t0 = m.trunk.weight.detach().clone()
    ema.update(m)                                  # decay 0: shadow = current
    with torch.no_grad():
        m.emb.weight.add_(1.0)
        m.trunk.weight.add_(1.0)
        m.frozen.weight.add_(1.0)
    ema.update(m)                                  # decay 0.5
    out = Tied()
    ema.copy_to(out)
    torch.testing.assert_close(out.emb.weight, w0 + 0.5)
    torch.testing.assert_close(out.head.weight, w0 + 0.5)
    torch.testing.assert_close(out.alias[0].weight, t0 + 0.5)
    torch.testing.assert_close(out.frozen.weight, m.frozen.weight)   # frozen: copied verbatim
