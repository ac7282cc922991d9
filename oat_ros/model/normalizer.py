"""Per-key linear normalizer with the original `LinearNormalizer` state-dict layout.

Keys: `params_dict.<field>.{scale, offset, input_stats.{min,max,mean,std}}`, float32 [dim].
normalize: `x * scale + offset` over the last dim; unnormalize: `(x - offset) / scale`.
"""
from __future__ import annotations

import torch
from torch import nn

STAT_NAMES = ("min", "max", "mean", "std")


class _Stats(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        for name in STAT_NAMES:
            self.register_buffer(name, torch.zeros(dim))


class FieldNormalizer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("offset", torch.zeros(dim))
        self.input_stats = _Stats(dim)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.offset) / self.scale


class LinearNormalizer(nn.Module):
    def __init__(self, fields: dict[str, int]):
        super().__init__()
        self.params_dict = nn.ModuleDict({k: FieldNormalizer(d) for k, d in fields.items()})

    def __getitem__(self, key: str) -> FieldNormalizer:
        return self.params_dict[key]

    @property
    def fields(self) -> dict[str, int]:
        return {k: int(m.scale.shape[0]) for k, m in self.params_dict.items()}


def normalizer_fields(state_dict: dict, prefix: str) -> dict[str, int]:
    """Field names and dims of a normalizer stored under `prefix` (e.g. 'x.normalizer.')."""
    head = prefix + "params_dict."
    fields = {}
    for key, value in state_dict.items():
        if key.startswith(head) and key.endswith(".scale"):
            name = key[len(head):-len(".scale")]
            if "." not in name:
                fields[name] = int(value.shape[0])
    return fields
