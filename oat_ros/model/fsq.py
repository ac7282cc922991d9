"""Finite scalar quantization (FSQ) as used by the OAT tokenizer.

Levels [8,5,5,5] give 1000 codes. All maths is float32 (the original disables autocast);
`torch.round` rounds half to even. Index = sum_i (code_i*hw_i + hw_i) * basis_i with
dim 0 least significant (basis [1,8,40,200]).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class FSQ(nn.Module):
    def __init__(self, levels=(8, 5, 5, 5), eps: float = 1e-3):
        super().__init__()
        self.levels_list = [int(v) for v in levels]
        self.eps = eps
        self.init_constants()

    def init_constants(self, device=None):
        """(Re)create the non-persistent buffers (also after `to_empty`)."""
        n = len(self.levels_list)
        basis = [math.prod(self.levels_list[:i]) for i in range(n)]
        self.register_buffer("levels", torch.tensor(self.levels_list, dtype=torch.int32,
                                                    device=device), persistent=False)
        self.register_buffer("basis", torch.tensor(basis, dtype=torch.int32, device=device),
                             persistent=False)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels_list)

    @property
    def dim(self) -> int:
        return len(self.levels_list)

    def _half_width(self) -> torch.Tensor:
        return self.levels // 2

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        half_l = (self.levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = (offset / half_l).atanh()
        return (z + shift).tanh() * half_l - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Continuous latents [..., 4] -> codes in [-1, 1] [..., 4]."""
        return torch.round(self.bound(z.float())) / self._half_width()

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        hw = self._half_width()
        return (((codes * hw) + hw) * self.basis).sum(dim=-1).to(torch.int32).long()

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Ids [...] -> codes [..., 4]. Out-of-range ids wrap (BOS=1000 decodes like 0)."""
        hw = self._half_width()
        level_idx = (indices[..., None] // self.basis) % self.levels
        return (level_idx - hw) / hw

    def forward(self, z: torch.Tensor):
        codes = self.quantize(z)
        return codes, self.codes_to_indices(codes)
