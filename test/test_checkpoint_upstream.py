"""Loading original OAT checkpoints: configs from cfg, restricted unpickling, every error."""
import os
import pickle

import pytest
import torch

from fixtures_oat import config_name, files, fixture_files, policy, ref  # noqa: F401
from oat_ros.checkpoint import load_policy, safe_unpickle
from oat_ros.checkpoint.upstream import (load_tail, load_upstream_policy, load_upstream_tokenizer,
                                         policy_from_payload, read_payload)
from oat_ros.errors import CheckpointError

EXPECTED = {
    "A": dict(cameras={"agentview_rgb": [128, 128, 3], "robot0_eye_in_hand_rgb": [128, 128, 3]},
              states={"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "task_uid": 1},
              crop_shape=[76, 76], horizon=32, n_action_steps=16, n_obs_steps=2, embed_dim=256,
              n_layers=4, n_heads=4, temperature=1.0, top_k=10, tok=(256, 64, 2, 4), tail=(4, 4)),
    "B": dict(cameras={"agentview_rgb": [96, 96, 3]},
              states={"robot0_eef_pos": 3, "robot0_gripper_qpos": 2, "task_uid": 1},
              crop_shape=[80, 80], horizon=16, n_action_steps=8, n_obs_steps=3, embed_dim=128,
              n_layers=2, n_heads=2, temperature=0.7, top_k=5, tok=(128, 32, 1, 2), tail=(4, 2)),
}


@pytest.fixture(scope="module")
def payload_b():
    return read_payload(fixture_files("B")["policy.ckpt"])


def test_config_read_from_cfg(policy, config_name):
    exp, c = EXPECTED[config_name], policy.cfg
    assert c.cameras == exp["cameras"] and list(c.cameras) == list(exp["cameras"])
    assert c.states == exp["states"] and list(c.states) == list(exp["states"])
    for k in ("crop_shape", "horizon", "n_action_steps", "n_obs_steps", "embed_dim", "n_layers",
              "n_heads", "temperature", "top_k"):
        assert getattr(c, k) == exp[k], k
    tok = c.tokenizer
    assert (tok.emb_dim, tok.head_dim, tok.enc_depth, tok.dec_depth) == exp["tok"]
    assert tok.levels == [8, 5, 5, 5] and c.vocab_size == 1001 and c.max_seq_len == 9
    assert (policy.tail_cfg.n_layers, policy.tail_cfg.n_heads) == exp["tail"]
    assert c.obs_feature_dim == 64 * len(exp["cameras"]) + sum(exp["states"].values())


def test_cfg_is_plain_python(payload_b):
    cfg = safe_unpickle.to_plain(payload_b["cfg"])
    assert isinstance(cfg["policy"]["shape_meta"]["obs"], dict)
    assert cfg["training"]["use_ema"] is True
    assert cfg["optimizer"]["betas"] == [0.9, 0.95]
    assert isinstance(payload_b["pickles"]["epoch"], bytes)


def test_tokenizer_heads_from_tokenizer_cfg(files, config_name):
    """The tokenizer checkpoint's cfg (when given) supplies head_dim; shapes alone give 4 heads."""
    pol = load_upstream_policy(files["policy.ckpt"], tokenizer_path=files["tokenizer.ckpt"])
    assert pol.cfg.tokenizer.head_dim == EXPECTED[config_name]["tok"][1]


def test_load_policy_dispatch_and_ema_default(files, ref):
    pol = load_policy(files["policy.ckpt"])
    assert not pol.training and pol.tail is None
    ids = pol.action_tokenizer.tokenize(torch.from_numpy(ref["in/action_chunks"]))
    assert torch.equal(ids, torch.from_numpy(ref["tok/token_ids"]))


# --- error cases ------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nope.ckpt"):
        load_upstream_policy(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="not found"):
        load_policy(tmp_path / "nope.ckpt")


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        load_policy(tmp_path)


def test_truncated_checkpoint(tmp_path):
    src = fixture_files("B")["policy.ckpt"]
    bad = tmp_path / "truncated.ckpt"
    with open(src, "rb") as f:
        bad.write_bytes(f.read(os.path.getsize(src) // 2))
    with pytest.raises(CheckpointError, match="truncated.ckpt.*(truncated|corrupt)"):
        load_upstream_policy(bad)


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "garbage.ckpt"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="garbage.ckpt.*corrupt"):
        load_upstream_policy(bad)


def test_plain_state_dict_is_foreign(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save({"model.tok_emb.weight": torch.zeros(3, 2)}, path)
    with pytest.raises(CheckpointError, match="sd.pt.*not an OAT workspace checkpoint"):
        load_upstream_policy(path)


class Foreign:  # pickled by reference as test_checkpoint_upstream.Foreign
    pass


def test_disallowed_global_needs_opt_in(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"cfg": {}, "state_dicts": {}, "x": os.system}, path)
    with pytest.raises(CheckpointError) as e:
        load_upstream_policy(path)
    msg = str(e.value)
    assert "evil.ckpt" in msg and "system" in msg
    assert "allow_unsafe_pickle=True" in msg and "--allow-unsafe-pickle" in msg


def test_opt_in_loads_foreign_globals_then_checks_format(tmp_path):
    path = tmp_path / "foreign.ckpt"
    torch.save({"thing": Foreign()}, path)
    with pytest.raises(CheckpointError, match="Foreign"):
        load_upstream_policy(path)
    with pytest.raises(CheckpointError, match="not an OAT workspace checkpoint"):
        load_upstream_policy(path, allow_unsafe_pickle=True)


def test_opt_in_on_real_checkpoint_without_omegaconf(files):
    try:
        import dill  # noqa: F401
        import omegaconf  # noqa: F401
    except ImportError:
        with pytest.raises(CheckpointError, match="(omegaconf|dill).*not installed"):
            load_upstream_policy(files["policy.ckpt"], allow_unsafe_pickle=True)
    else:
        pol = load_upstream_policy(files["policy.ckpt"], allow_unsafe_pickle=True)
        assert pol.cfg.embed_dim > 0


def test_unsafe_global_in_pickled_bytes_is_refused():
    data = pickle.dumps(os.system)
    with pytest.raises(safe_unpickle.UnsafeGlobalError, match="system"):
        safe_unpickle.loads(data)
    with pytest.raises(safe_unpickle.UnsafeGlobalError):
        safe_unpickle.loads(b"\x80\x02cdill._dill\n_load_type\nX\x08\x00\x00\x00functionq\x00\x85R.")


def test_tokenizer_checkpoint_as_policy(files):
    with pytest.raises(CheckpointError, match="tokenizer checkpoint"):
        load_upstream_policy(files["tokenizer.ckpt"])


def test_policy_checkpoint_as_tokenizer(files):
    with pytest.raises(CheckpointError, match="not a tokenizer checkpoint"):
        load_upstream_tokenizer(files["policy.ckpt"])


def _with_sd(payload, fn):
    sds = dict(payload["state_dicts"])
    sd = dict(sds["ema_model"])
    fn(sd)
    sds["ema_model"] = sd
    return {**payload, "state_dicts": sds}


def test_missing_key(payload_b):
    key = "model.blocks.1.mlp.c_fc.bias"
    bad = _with_sd(payload_b, lambda sd: sd.pop(key))
    with pytest.raises(CheckpointError, match=f"P.ckpt.*missing keys: {key}"):
        policy_from_payload(bad, "P.ckpt")


def test_unexpected_key(payload_b):
    bad = _with_sd(payload_b, lambda sd: sd.__setitem__("model.extra.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match="unexpected keys: model.extra.weight"):
        policy_from_payload(bad, "P.ckpt")


def test_shape_mismatch(payload_b):
    key = "model.ln_f.weight"
    bad = _with_sd(payload_b, lambda sd: sd.__setitem__(key, torch.zeros(7)))
    with pytest.raises(CheckpointError, match=rf"shape mismatch for {key}: expected \[128\], got \[7\]"):
        policy_from_payload(bad, "P.ckpt")


def test_missing_key_through_a_file(tmp_path, payload_b):
    """End to end through torch.save/load (cfg stored as a plain dict, state dict trimmed)."""
    key = "model.cond_pos_emb"
    sd = dict(payload_b["state_dicts"]["ema_model"])
    sd.pop(key)
    path = tmp_path / "missing_key.ckpt"
    torch.save({"cfg": safe_unpickle.to_plain(payload_b["cfg"]), "state_dicts": {"ema_model": sd}}, path)
    with pytest.raises(CheckpointError, match=f"missing_key.ckpt.*missing keys: {key}"):
        load_upstream_policy(path)


def test_missing_cfg_key(payload_b):
    cfg = safe_unpickle.to_plain(payload_b["cfg"])
    del cfg["policy"]["n_layers"]
    with pytest.raises(CheckpointError, match="policy.n_layers"):
        policy_from_payload({**payload_b, "cfg": cfg}, "P.ckpt")


def test_missing_ema_weights(payload_b):
    sds = {k: v for k, v in payload_b["state_dicts"].items() if k != "ema_model"}
    with pytest.raises(CheckpointError, match="ema_model"):
        policy_from_payload({**payload_b, "state_dicts": sds}, "P.ckpt")


# --- tail errors --------------------------------------------------------------------------

def _save_tail(tmp_path, name, edit):
    blob = torch.load(fixture_files("B")["blockwise_tail_P4.pt"], weights_only=True)
    blob["state_dict"] = dict(blob["state_dict"])
    edit(blob)
    path = tmp_path / name
    torch.save(blob, path)
    return path


def _fresh_policy_b():
    return load_upstream_policy(fixture_files("B")["policy.ckpt"])


def test_tail_of_other_config_does_not_fit():
    with pytest.raises(CheckpointError, match="tail d_model 256 does not fit.*embed_dim 128"):
        load_tail(fixture_files("A")["blockwise_tail_P4.pt"], _fresh_policy_b())


def test_tail_bad_vocab(tmp_path):
    path = _save_tail(tmp_path, "vocab.pt", lambda b: b["state_dict"].__setitem__(
        "head.weight", torch.zeros(1000, 128)))
    with pytest.raises(CheckpointError, match="vocab.pt.*vocab 1000"):
        load_tail(path, _fresh_policy_b())


def test_tail_missing_and_unexpected_keys(tmp_path):
    def edit(b):
        b["state_dict"]["extra"] = torch.zeros(1)
        del b["state_dict"]["blocks.0.mlp.c_fc.bias"]
    path = _save_tail(tmp_path, "keys.pt", edit)
    with pytest.raises(CheckpointError, match="missing keys: blocks.0.mlp.c_fc.bias.*unexpected keys: extra"):
        load_tail(path, _fresh_policy_b())


def test_tail_bad_prefix_len(tmp_path):
    path = _save_tail(tmp_path, "prefix.pt", lambda b: b.__setitem__("prefix_len", 3))
    with pytest.raises(CheckpointError, match="prefix_len 3"):
        load_tail(path, _fresh_policy_b())


def test_tail_foreign_files(tmp_path, files):
    with pytest.raises(CheckpointError, match="weights_only"):  # dill/omegaconf globals
        load_tail(files["tokenizer.ckpt"], _fresh_policy_b())
    path = tmp_path / "notail.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a Blockwise-OAT tail"):
        load_tail(path, _fresh_policy_b())
    with pytest.raises(CheckpointError, match="not found"):
        load_tail(tmp_path / "none.pt", _fresh_policy_b())
