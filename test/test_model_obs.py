"""Observation encoder: normalizers, crops, ResNet18-GN + SpatialSoftmax, state concat."""
import pytest
import torch

from fixtures_oat import assert_close, config_name, obs, policy, ref, t  # noqa: F401
from oat_ros.errors import InputError
from oat_ros.model.obs_encoder import center_crop_offset


def test_center_crop_offset_rounding():
    assert center_crop_offset(128, 76) == 26
    assert center_crop_offset(96, 80) == 8
    assert center_crop_offset(85, 76) == 4  # round(4.5) = 4 (torchvision uses python round)


def test_image_normalizer(policy, ref):
    cam = next(iter(policy.cfg.cameras))
    norm = policy.obs_encoder.vision_encoder.normalizer[cam]
    assert_close(norm.normalize(t(ref[f"in/{cam}"]).float()), ref["obs/normalized_first_cam"])


def test_features_center_crop(policy, obs, ref):
    with torch.no_grad():
        f = policy.encode_obs(obs)
    assert f.shape == ref["obs/features_centercrop"].shape
    assert_close(f, ref["obs/features_centercrop"])
    n_state = sum(policy.cfg.states.values())
    assert_close(f[..., -n_state:], ref["obs/state_part"])


def test_features_recorded_random_crop(policy, obs, ref):
    offsets = t(ref["obs/randcrop_offsets_hw"])
    crop = {cam: offsets[i] for i, cam in enumerate(policy.cfg.cameras)}
    with torch.no_grad():
        assert_close(policy.encode_obs(obs, crop), ref["obs/features_randcrop_seed777"])


def test_encode_frames_per_frame_equals_batched(policy, obs, ref):
    """Frames are independent: encoding the newest frame alone reuses the older features."""
    B, To = next(iter(obs.values())).shape[:2]
    with torch.no_grad():
        per_t = []
        for ti in range(To):
            images = {c: obs[c][:, ti] for c in policy.cfg.cameras}
            states = {k: obs[k][:, ti] for k in policy.cfg.states}
            per_t.append(policy.encode_frames(images, states))
    assert_close(torch.stack(per_t, 1), ref["obs/features_centercrop"])


def test_uint8_and_float_images_agree(policy, obs):
    as_float = {k: v.float() for k, v in obs.items()}
    with torch.no_grad():
        torch.testing.assert_close(policy.encode_obs(obs), policy.encode_obs(as_float), rtol=0, atol=0)


def test_bad_observations_raise_input_error(policy, obs):
    cam = next(iter(policy.cfg.cameras))
    missing = {k: v for k, v in obs.items() if k != cam}
    with pytest.raises(InputError, match=cam):
        policy.encode_obs(missing)
    bad = dict(obs)
    bad[cam] = obs[cam][..., :2, :, :]  # wrong H
    with pytest.raises(InputError, match="expected shape"):
        policy.encode_obs(bad)
