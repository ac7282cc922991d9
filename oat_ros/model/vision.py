"""Per-camera visual core of the original robomimic (0.2.0) encoder.

ResNet18 trunk (torchvision layout, every BatchNorm replaced by GroupNorm(C//16, C))
-> SpatialSoftmax(32 keypoints) -> flatten -> Linear(64, 64); ReLU is applied by the caller
(robomimic's `feature_activation`).

robomimic registers the trunk twice (`backbone` and `nets.0`) and the spatial softmax twice
(`pool` and `nets.1`): the same modules under two names, so the state dict holds every
trunk tensor under both keys. `VisualCore` keeps that layout, so original state dicts load
with strict key checking.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(channels // 16, channels)


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = _group_norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = _group_norm(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), _group_norm(out_ch))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet18Trunk(nn.Module):
    """`nets` = [conv1, bn1, relu, maxpool, layer1..layer4] -> [N, 8*width, H/32, W/32].

    width = 64 is torchvision's ResNet18 (the original); a smaller width (a multiple of 16)
    keeps the layout with width/64 of the channels, ~(width/64)^2 of the weights and FLOPs."""

    def __init__(self, in_channels: int = 3, width: int = 64):
        super().__init__()
        layers = [nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), _group_norm(width),
                  nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        ch = width
        for out_ch, stride in ((width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)):
            layers.append(nn.Sequential(BasicBlock(ch, out_ch, stride), BasicBlock(out_ch, out_ch)))
            ch = out_ch
        self.nets = nn.Sequential(*layers)

    def forward(self, x):
        return self.nets(x)


def trunk_output_hw(h: int, w: int) -> tuple[int, int]:
    for _ in range(5):  # conv1 (s2), maxpool (s2), layer2..4 (s2)
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return h, w


class SpatialSoftmax(nn.Module):
    """1x1 conv to keypoint maps, softmax over positions, expected (x, y) per keypoint."""

    def __init__(self, in_channels: int, h: int, w: int, num_kp: int = 32):
        super().__init__()
        self.num_kp = num_kp
        self.nets = nn.Conv2d(in_channels, num_kp, 1)
        # grids as np.meshgrid(linspace(-1,1,W), linspace(-1,1,H)) (overwritten by the checkpoint)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, dtype=torch.float64),
                                torch.linspace(-1, 1, w, dtype=torch.float64), indexing="ij")
        self.register_buffer("temperature", torch.ones(1))
        self.register_buffer("pos_x", xs.reshape(1, h * w).float())
        self.register_buffer("pos_y", ys.reshape(1, h * w).float())

    def forward(self, x):
        x = self.nets(x)
        x = x.reshape(-1, x.shape[2] * x.shape[3])
        attn = F.softmax(x / self.temperature, dim=-1)
        ex = torch.sum(self.pos_x * attn, dim=1, keepdim=True)
        ey = torch.sum(self.pos_y * attn, dim=1, keepdim=True)
        return torch.cat([ex, ey], 1).view(-1, self.num_kp, 2)


class VisualCore(nn.Module):
    def __init__(self, crop_hw: tuple[int, int], num_kp: int = 32, feature_dim: int = 64, width: int = 64):
        super().__init__()
        self.backbone = ResNet18Trunk(width=width)
        self.pool = SpatialSoftmax(8 * width, *trunk_output_hw(*crop_hw), num_kp=num_kp)
        self.nets = nn.Sequential(self.backbone, self.pool, nn.Flatten(1),
                                  nn.Linear(2 * num_kp, feature_dim))

    def forward(self, x):
        """Normalized, cropped images [N,3,h,w] -> features [N,64] (before the ReLU)."""
        return self.nets(x)
