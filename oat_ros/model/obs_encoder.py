"""Observation encoder (the original FusedObservationEncoder, eval path).

Per frame: each camera (shape_meta order) is normalized per channel on HWC, cropped
(centre crop by default; explicit top-left offsets reproduce the original's random crop),
run through its own VisualCore + ReLU -> 64 features; the state keys are normalized and
concatenated; output = cat(vision, state). Frames are independent, so `encode_frames`
works on a flat batch of frames and callers may cache the features of older frames.

State-dict layout (under `obs_encoder.`): `vision_encoder.encoder.obs_nets.<cam>.*`,
`vision_encoder.normalizer.*`, `state_encoder.normalizer.*`, `_dummy_variable`s.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .normalizer import LinearNormalizer
from .vision import VisualCore


def center_crop_offset(size: int, crop: int) -> int:
    """torchvision's centre-crop rounding: top = round((H - crop) / 2)."""
    return int(round((size - crop) / 2.0))


class _ObsNets(nn.Module):
    def __init__(self, cams, crop_hw, width: int = 64):
        super().__init__()
        self.obs_nets = nn.ModuleDict({c: VisualCore(crop_hw, width=width) for c in cams})


class RgbEncoder(nn.Module):
    def __init__(self, cams: dict[str, list], crop_hw, normalizer_fields: dict[str, int],
                 vision_width: int = 64):
        super().__init__()
        self.cams = dict(cams)
        self.crop_hw = tuple(crop_hw)
        self.register_buffer("_dummy_variable", torch.zeros(0))
        self.encoder = _ObsNets(list(cams), self.crop_hw, vision_width)
        self.normalizer = LinearNormalizer(normalizer_fields)

    def crop(self, x: torch.Tensor, cam: str, offsets=None) -> torch.Tensor:
        """x [N,3,H,W]; offsets None (centre) or LongTensor [N,2] of (top, left) per image."""
        ch, cw = self.crop_hw
        H, W = x.shape[-2:]
        if offsets is None:
            top, left = center_crop_offset(H, ch), center_crop_offset(W, cw)
            return x[:, :, top:top + ch, left:left + cw]
        offsets = [(int(t), int(l)) for t, l in offsets.tolist()]
        return torch.stack([img[:, t:t + ch, l:l + cw] for img, (t, l) in zip(x, offsets)])

    def forward(self, images: dict, crop_offsets: dict | None = None) -> torch.Tensor:
        feats = []
        for cam in self.cams:
            x = images[cam].to(torch.float32)
            x = self.normalizer[cam].normalize(x).permute(0, 3, 1, 2)  # HWC -> CHW
            x = self.crop(x, cam, None if crop_offsets is None else crop_offsets[cam])
            feats.append(F.relu(self.encoder.obs_nets[cam](x)))
        return torch.cat(feats, dim=-1)


class StateEncoder(nn.Module):
    """`ProjectionStateEncoder` with out_dim=None: normalized state keys, concatenated."""

    def __init__(self, keys: dict[str, int], normalizer_fields: dict[str, int]):
        super().__init__()
        self.keys = dict(keys)
        self.register_buffer("_dummy_variable", torch.zeros(0))
        self.normalizer = LinearNormalizer(normalizer_fields)

    def forward(self, states: dict) -> torch.Tensor:
        return torch.cat([self.normalizer[k].normalize(states[k].to(torch.float32))
                          for k in self.keys], dim=-1)


class ObsEncoder(nn.Module):
    def __init__(self, cams: dict[str, list], states: dict[str, int], crop_hw,
                 vision_normalizer_fields: dict[str, int], state_normalizer_fields: dict[str, int],
                 vision_width: int = 64):
        super().__init__()
        self.register_buffer("_dummy_variable", torch.zeros(0))
        self.vision_encoder = RgbEncoder(cams, crop_hw, vision_normalizer_fields, vision_width)
        self.state_encoder = StateEncoder(states, state_normalizer_fields)
        self.feature_dim = 64 * len(cams) + sum(states.values())

    def _check(self, images: dict, states: dict, lead: tuple):
        for cam, shape in self.vision_encoder.cams.items():
            if cam not in images:
                raise InputError(f"observation is missing camera '{cam}'")
            x = images[cam]
            if tuple(x.shape) != (*lead, *shape):
                raise InputError(f"camera '{cam}': expected shape {(*lead, *shape)} (HWC), "
                                 f"got {tuple(x.shape)}")
        for key, dim in self.state_encoder.keys.items():
            if key not in states:
                raise InputError(f"observation is missing state '{key}'")
            if tuple(states[key].shape) != (*lead, dim):
                raise InputError(f"state '{key}': expected shape {(*lead, dim)}, "
                                 f"got {tuple(states[key].shape)}")

    def encode_frames(self, images: dict, states: dict, crop_offsets: dict | None = None):
        """images {cam: [N,H,W,3]} (uint8 or float 0..255), states {key: [N,d]} -> [N,F].

        crop_offsets: optional {cam: LongTensor [N,2] (top, left)}; default centre crop.
        """
        n = next(iter(images.values())).shape[0] if images else next(iter(states.values())).shape[0]
        self._check(images, states, (n,))
        parts = []
        if self.vision_encoder.cams:
            parts.append(self.vision_encoder(images, crop_offsets))
        if self.state_encoder.keys:
            parts.append(self.state_encoder(states))
        return torch.cat(parts, dim=-1)

    def forward(self, obs: dict, crop_offsets: dict | None = None) -> torch.Tensor:
        """obs {key: [B,To,...]} -> features [B,To,F]. crop_offsets rows are b*To+t."""
        keys = list(self.vision_encoder.cams) + list(self.state_encoder.keys)
        for k in keys:
            if k not in obs:
                raise InputError(f"observation is missing key '{k}'")
        B, To = obs[keys[0]].shape[:2]
        flat = {k: obs[k].reshape(B * To, *obs[k].shape[2:]) for k in keys}
        images = {k: flat[k] for k in self.vision_encoder.cams}
        states = {k: flat[k] for k in self.state_encoder.keys}
        return self.encode_frames(images, states, crop_offsets).view(B, To, -1)
