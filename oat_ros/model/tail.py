"""Blockwise-OAT parallel tail decoder: predicts the last 8-P tokens in one pass.

Memory = [tok_emb(z_1..P) + AR tok_pos_emb[1:1+P], prefix_cond_proj(h)] where h is the AR
ln_f output after z_P (the AR model's embedding tables are used, not copies). Queries =
tail_pos_emb (+ tok_emb(previous tail ids) when refining) + h. Blocks are the AR blocks
with bidirectional self-attention; `head` is not tied.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .transformer import MLP, CrossAttention, RMSNorm, SelfAttention


@dataclass
class TailConfig:
    prefix_len: int = 4
    n_tail: int = 4
    n_layers: int = 4
    n_heads: int = 4
    refine_iters: int = 1


class TailBlock(nn.Module):
    """The AR block with bidirectional self-attention (named `self_attn` in the tail)."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.ln_1 = RMSNorm(dim)
        self.self_attn = SelfAttention(dim, n_heads)
        self.ln_2 = RMSNorm(dim)
        self.cross_attn = CrossAttention(dim, n_heads)
        self.ln_3 = RMSNorm(dim)
        self.mlp = MLP(dim)

    def forward(self, x, memory):
        x = x + self.self_attn(self.ln_1(x), causal=False)
        x = x + self.cross_attn(self.ln_2(x), memory)
        return x + self.mlp(self.ln_3(x))


class ParallelTailDecoder(nn.Module):
    def __init__(self, vocab_size: int, dim: int, n_tail: int, n_layers: int, n_heads: int,
                 prefix_pos_offset: int = 1):
        super().__init__()
        self.n_tail, self.prefix_pos_offset = n_tail, prefix_pos_offset
        self.tail_pos_emb = nn.Parameter(torch.zeros(1, n_tail, dim))
        self.prefix_cond_proj = nn.Linear(dim, dim, bias=False)
        self.blocks = nn.ModuleList([TailBlock(dim, n_heads) for _ in range(n_layers)])
        self.ln_f = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)

    def forward(self, prefix_ids: torch.Tensor, prefix_hidden: torch.Tensor,
                tok_emb: nn.Embedding, tok_pos_emb: torch.Tensor, prev_tail_ids=None):
        """prefix_ids [B,P], prefix_hidden [B,d] -> tail logits [B,n_tail,V]."""
        P = prefix_ids.shape[1]
        o = self.prefix_pos_offset
        prefix = tok_emb(prefix_ids) + tok_pos_emb[:, o:o + P]
        memory = torch.cat([prefix, self.prefix_cond_proj(prefix_hidden)[:, None]], dim=1)
        q = self.tail_pos_emb
        if prev_tail_ids is not None:
            q = tok_emb(prev_tail_ids) + q
        x = q + prefix_hidden[:, None]
        for blk in self.blocks:
            x = blk(x, memory)
        return self.head(self.ln_f(x))
