"""Token selection from logits.

BOS is the last vocabulary entry (id 1000 for FSQ [8,5,5,5]). Greedy: argmax over the
codes only (BOS is never chosen unless allow_bos). Sampling:
logits / temperature, top-k (values below the k-th largest -> -inf, ties kept, as the
original), softmax, then either
* `select_tokens`: one `torch.multinomial(probs, 1)` per call (the original's RNG use), or
* `select_tokens_device`: the exponential race argmax(probs / Exp(1)) -- a sample of
  `probs` that stays on the device (no host sync, graph-capturable noise draw).
The original OAT never masks BOS; pass allow_bos=True to reproduce it.
"""
from __future__ import annotations

import torch



def _filtered_logits(logits: torch.Tensor, temperature: float, top_k, allow_bos: bool):
    logits = logits / temperature
    if not allow_bos:
        logits[:, -1] = float("-inf")  # `logits` is a fresh tensor here
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(int(top_k), logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


def greedy(logits: torch.Tensor, allow_bos: bool = False) -> torch.Tensor:
    if not allow_bos:
        logits = logits[:, :-1]
    return torch.argmax(logits, dim=-1)


def select_tokens(logits: torch.Tensor, temperature: float = 0.0, top_k=None,
                  generator: torch.Generator | None = None, allow_bos: bool = False):
    """Logits [B,V] -> ids [B] int64. temperature <= 0 is greedy; top_k None/0 = no top-k."""
    if temperature is None or temperature <= 0:
        return greedy(logits, allow_bos)
    probs = torch.softmax(_filtered_logits(logits, temperature, top_k, allow_bos), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def select_tokens_device(logits: torch.Tensor, temperature: float = 0.0, top_k=None,
                         generator: torch.Generator | None = None, allow_bos: bool = False):
    """As select_tokens, but sampling by the exponential race (no host synchronisation)."""
    if temperature is None or temperature <= 0:
        return greedy(logits, allow_bos)
    probs = torch.softmax(_filtered_logits(logits, temperature, top_k, allow_bos), dim=-1)
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return torch.argmax(probs / noise, dim=-1)


def make_generator(seed: int | None, device="cpu") -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
