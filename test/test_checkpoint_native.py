"""Native (safetensors + YAML) export: bit-exact round trip, CLI, errors."""
import pytest
import torch
import yaml

from fixtures_oat import config_name, fixture_files, obs, policy, ref  # noqa: F401
from oat_ros.checkpoint import load_native, load_policy, save_native
from oat_ros.checkpoint.cli import main as export_main
from oat_ros.errors import CheckpointError


@pytest.fixture(scope="session")
def exported(policy, tmp_path_factory, config_name):
    out = tmp_path_factory.mktemp(f"native_{config_name}")
    save_native(policy, out)
    return out


def test_round_trip_tensors_bit_exact(policy, exported):
    loaded = load_native(exported)
    a, b = policy.state_dict(), loaded.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert loaded.cfg == policy.cfg and loaded.tail_cfg == policy.tail_cfg
    # tying / aliasing is restored, not duplicated
    assert loaded.model.head.weight is loaded.model.tok_emb.weight
    cam = next(iter(loaded.cfg.cameras))
    core = loaded.obs_encoder.vision_encoder.encoder.obs_nets[cam]
    assert core.nets[0] is core.backbone and core.nets[1] is core.pool


def test_round_trip_outputs_identical(policy, exported, obs):
    loaded = load_policy(exported)  # dispatch on the directory
    for fn in (lambda p: p.predict_action(obs, K=8),
               lambda p: p.predict_action_blockwise(obs, prefix_len=4, refine_iters=2)):
        x, y = fn(policy), fn(loaded)
        for k in ("action_pred", "tokens"):
            assert torch.equal(x[k], y[k]), k


def test_aliases_stored_once(exported, policy):
    from safetensors import safe_open
    doc = yaml.safe_load((exported / "config.yaml").read_text())
    with safe_open(str(exported / "model.safetensors"), "pt") as f:
        stored = set(f.keys())
    assert doc["aliases"]["model.head.weight"] == "model.tok_emb.weight"
    assert not stored & set(doc["aliases"])
    assert stored | set(doc["aliases"]) == set(policy.state_dict())
    assert any(".nets.0.nets." in k for k in doc["aliases"])


def test_native_errors(exported, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_native(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((exported / "model.safetensors").read_bytes()[:1000])
    doc = yaml.safe_load((exported / "config.yaml").read_text())
    (bad / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_native(bad)
    (bad / "config.yaml").write_text(yaml.safe_dump({**doc, "format": "other"}))
    with pytest.raises(CheckpointError, match="format"):
        load_native(bad)


def test_native_config_that_does_not_fit_weights(exported, tmp_path):
    doc = yaml.safe_load((exported / "config.yaml").read_text())
    doc["policy"]["n_layers"] += 1
    d = tmp_path / "wrong"
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (d / "model.safetensors").symlink_to(exported / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing keys: model.blocks"):
        load_native(d)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        export_main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--policy", "--tail", "--out", "--allow-unsafe-pickle"):
        assert flag in out


def test_cli_export(tmp_path, capsys):
    files = fixture_files("B")
    out = tmp_path / "exp"
    rc = export_main(["--policy", str(files["policy.ckpt"]), "--tail",
                      str(files["blockwise_tail_P4.pt"]), "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "model.safetensors" in text and "load time: input" in text
    assert load_native(out).tail_cfg.prefix_len == 4


def test_cli_error_exit_code(tmp_path, capsys):
    rc = export_main(["--policy", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "missing.ckpt" in capsys.readouterr().err


def test_half_storage_halves_the_file_and_loads_as_float32(policy, exported, tmp_path):
    half = tmp_path / "half"
    save_native(policy, half, storage="float16")
    full_size = (exported / "model.safetensors").stat().st_size
    assert (half / "model.safetensors").stat().st_size < 0.6 * full_size
    loaded = load_native(half)
    a, b = policy.state_dict(), loaded.state_dict()
    params = dict(policy.named_parameters(remove_duplicate=False))
    for k in a:
        assert b[k].dtype == a[k].dtype, k
        if k in params:   # parameters rounded to float16, buffers (normalizers) exact
            torch.testing.assert_close(b[k], a[k].half().float(), rtol=0, atol=0)
        else:
            assert torch.equal(a[k], b[k]), k
    assert yaml.safe_load((half / "config.yaml").read_text())["storage_dtype"] == "float16"


def test_cli_half_from_a_native_export(exported, tmp_path, capsys):
    out = tmp_path / "half_cli"
    assert export_main(["--policy", str(exported), "--storage", "float16", "--out", str(out)]) == 0
    assert load_native(out).cfg == load_native(exported).cfg


def test_narrow_vision_trunk_round_trips(tmp_path):
    """vision_width (ResNet18 base channels) is part of the config: 16 -> 16-32-64-128."""
    from dataclasses import replace
    from oat_ros.model.policy import OATPolicy
    from oat_ros.train.presets import PRESETS, policy_config, tokenizer_config
    m = replace(PRESETS["tiny"]().model, vision_width=16)
    cfg = policy_config(m, {c: [24, 24, 3] for c in m.cameras},
                        {"robot0_eef_pos": 3, "robot0_gripper_qpos": 2, "task_uid": 1}, tokenizer_config(m))
    pol = OATPolicy(cfg).eval()
    core = pol.obs_encoder.vision_encoder.encoder.obs_nets[m.cameras[0]]
    assert core.backbone.nets[0].out_channels == 16 and core.pool.nets.in_channels == 128
    save_native(pol, tmp_path / "narrow")
    loaded = load_native(tmp_path / "narrow")
    assert loaded.cfg.vision_width == 16
    for k, v in pol.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with pytest.raises(Exception, match="vision_width"):
        OATPolicy(replace(cfg, vision_width=24))


def test_int8_inference_only_export(policy, exported, obs, tmp_path):
    """int8 weights (per-row scale) without the tokenizer encoder: a quarter of the file, the same
    buffers, weights within half a quantization step, and decoding works; tokenizing refuses."""
    small = tmp_path / "int8"
    save_native(policy, small, storage="int8", inference_only=True)
    assert (small / "model.safetensors").stat().st_size < 0.3 * (exported / "model.safetensors").stat().st_size
    loaded = load_native(small)
    a, b = policy.state_dict(), loaded.state_dict()
    params = dict(policy.named_parameters(remove_duplicate=False))
    for k in a:
        assert b[k].dtype == a[k].dtype and b[k].shape == a[k].shape, k
        if k.startswith("action_tokenizer.encoder."):
            assert not b[k].any(), k                      # not shipped
        elif k in params and a[k].dim() >= 2:
            rows = a[k].reshape(a[k].shape[0], -1)
            step = rows.abs().amax(dim=1, keepdim=True) / 127
            err = (b[k].reshape(rows.shape) - rows).abs()
            assert (err <= 0.57 * step).all(), k          # half a step + float16 scale rounding
        elif k not in params:
            assert torch.equal(a[k], b[k]), k             # buffers exact
    out = loaded.predict_action(obs, K=8)["action_pred"]
    assert torch.isfinite(out).all() and out.shape == policy.predict_action(obs, K=8)["action_pred"].shape
    with pytest.raises(Exception, match="inference-only"):
        loaded.action_tokenizer.tokenize(torch.zeros(1, loaded.cfg.horizon, loaded.cfg.action_dim))
