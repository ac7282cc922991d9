"""DecodeSettings: the one value that travels from the node's parameters to the engine.

It is immutable: a parameter change builds a new value and swaps it in between two chunks,
so a chunk never sees half of a change.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from oat_ros.errors import ConfigError

MODES = ("ar", "blockwise")
DEADLINE_REFERENCES = ("capture", "request")
MAX_TOKENS = 8


@dataclass(frozen=True)
class DecodeSettings:
    mode: str = "ar"                   # "ar" or "blockwise"
    max_tokens: int = MAX_TOKENS       # K: tokens to decode in ar mode (1..8)
    prefix_len: int = 4                # P: autoregressive prefix of blockwise mode (1..8)
    refine_iters: int = 1              # r: tail passes in blockwise mode (>= 1)
    deadline_ms: float = 0.0           # 0 = no deadline
    deadline_reference: str = "capture"  # deadline measured from the observation's capture or the request
    temperature: float = 0.0           # 0 = greedy
    top_k: int = 0                     # 0 = off
    seed: int = -1                     # -1 = unseeded
    min_tokens: int = 1                # tokens always decoded, even if the deadline is already lost

    def __post_init__(self):
        self.validate()

    def validate(self):
        def bad(name, why):
            raise ConfigError(f"decode setting '{name}' = {getattr(self, name)!r}: {why}")
        if self.mode not in MODES:
            bad("mode", f"expected one of {MODES}")
        if not 1 <= self.max_tokens <= MAX_TOKENS:
            bad("max_tokens", f"expected 1..{MAX_TOKENS}")
        if not 1 <= self.prefix_len <= MAX_TOKENS:
            bad("prefix_len", f"expected 1..{MAX_TOKENS}")
        if not 1 <= self.refine_iters <= 8:
            bad("refine_iters", "expected 1..8")
        if not self.deadline_ms >= 0:
            bad("deadline_ms", "expected >= 0 (0 = no deadline)")
        if self.deadline_reference not in DEADLINE_REFERENCES:
            bad("deadline_reference", f"expected one of {DEADLINE_REFERENCES}")
        if not self.temperature >= 0:
            bad("temperature", "expected >= 0 (0 = greedy)")
        if not 0 <= self.top_k <= 1000:
            bad("top_k", "expected 0..1000 (0 = off)")
        if not 1 <= self.min_tokens <= MAX_TOKENS:
            bad("min_tokens", f"expected 1..{MAX_TOKENS}")

    @property
    def tokens_requested(self) -> int:
        """Tokens the chunk should have if time allows (blockwise always yields all 8)."""
        return MAX_TOKENS if self.mode == "blockwise" else self.max_tokens

    def with_(self, **changes) -> "DecodeSettings":
        return replace(self, **changes)
