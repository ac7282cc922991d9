"""Autoregressive token model of OAT (decoder-only with cross-attention to the observation).

Memory: `encoder(cond_emb(cond) + cond_pos_emb)` with encoder = Linear -> Mish -> Linear,
one memory token per observed frame. Tokens: `tok_emb(ids) + tok_pos_emb` (BOS at 0).
Block: x += SA(RMSNorm x) (causal); x += CA(RMSNorm x, memory) (memory not normalized);
x += MLP(RMSNorm x) (GELU). `head` is tied to `tok_emb`.

Two ways to run it:
* `forward(ids, memory)`: the whole sequence at once (teacher forcing, naive reference);
* `step(ids, pos, cache, cross_kv)`: one token against a static, preallocated KV cache.
  Every shape is fixed (attention spans all `max_len` cache slots, masked by `slot <= pos`)
  and `pos` may be a 0-dim device tensor, so a step can be captured in a CUDA graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    B, T, D = x.shape
    return x.view(B, T, n_heads, D // n_heads).transpose(1, 2)


def _merge(y: torch.Tensor) -> torch.Tensor:
    B, H, T, hd = y.shape
    return y.transpose(1, 2).reshape(B, T, H * hd)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.c_attn = nn.Linear(dim, 3 * dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=False)

    def qkv(self, x):
        q, k, v = self.c_attn(x).split(x.shape[-1], dim=2)
        return _heads(q, self.n_heads), _heads(k, self.n_heads), _heads(v, self.n_heads)

    def forward(self, x, causal: bool = True):
        q, k, v = self.qkv(x)
        return self.c_proj(_merge(F.scaled_dot_product_attention(q, k, v, is_causal=causal)))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.kv_proj = nn.Linear(dim, 2 * dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=False)

    def kv(self, memory):
        k, v = self.kv_proj(memory).split(memory.shape[-1], dim=2)
        return _heads(k, self.n_heads), _heads(v, self.n_heads)

    def forward(self, x, memory=None, kv=None):
        k, v = self.kv(memory) if kv is None else kv
        q = _heads(self.q_proj(x), self.n_heads)
        return self.c_proj(_merge(F.scaled_dot_product_attention(q, k, v)))


class MLP(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim)
        self.c_proj = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.ln_1 = RMSNorm(dim)
        self.attn = SelfAttention(dim, n_heads)
        self.ln_2 = RMSNorm(dim)
        self.cross_attn = CrossAttention(dim, n_heads)
        self.ln_3 = RMSNorm(dim)
        self.mlp = MLP(dim)

    def forward(self, x, memory):
        x = x + self.attn(self.ln_1(x))
        x = x + self.cross_attn(self.ln_2(x), memory)
        return x + self.mlp(self.ln_3(x))


class KVCache:
    """Preallocated self-attention cache k, v: [n_layers, max_batch, H, max_len, hd].

    Allocate once for the largest batch; a step with batch B uses the first B rows. Slots
    are overwritten position by position, so no reset is needed between sequences.
    """

    def __init__(self, n_layers: int, max_batch: int, n_heads: int, head_dim: int,
                 max_len: int = 9, device=None, dtype=torch.float32):
        shape = (n_layers, max_batch, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.slots = torch.arange(max_len, device=device)
        self.max_batch, self.max_len = max_batch, max_len


class ARTransformer(nn.Module):
    def __init__(self, vocab_size: int = 1001, max_seq_len: int = 9, cond_dim: int = 138,
                 n_obs_steps: int = 2, n_layers: int = 4, n_heads: int = 4, dim: int = 256):
        super().__init__()
        self.vocab_size, self.max_seq_len = vocab_size, max_seq_len
        self.n_layers, self.n_heads, self.dim = n_layers, n_heads, dim
        self.register_buffer("_dummy_variable", torch.zeros(0))
        self.tok_pos_emb = nn.Parameter(torch.zeros(1, max_seq_len, dim))
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, n_obs_steps, dim))
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.cond_emb = nn.Linear(cond_dim, dim)
        self.encoder = nn.Sequential(nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))
        self.blocks = nn.ModuleList([Block(dim, n_heads) for _ in range(n_layers)])
        self.ln_f = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self):
        self.head.weight = self.tok_emb.weight

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def encode_memory(self, cond: torch.Tensor) -> torch.Tensor:
        """Observation features [B,To,F] -> memory [B,To,d]."""
        if cond.shape[1] > self.cond_pos_emb.shape[1]:
            raise InputError(f"{cond.shape[1]} observation frames, the model takes at most "
                             f"{self.cond_pos_emb.shape[1]} (n_obs_steps)")
        return self.encoder(self.cond_emb(cond) + self.cond_pos_emb[:, :cond.shape[1]])

    def cross_kv(self, memory: torch.Tensor) -> list:
        """Per-layer cross-attention (k, v) [B,H,To,hd], computed once per observation."""
        return [blk.cross_attn.kv(memory) for blk in self.blocks]

    def new_cache(self, max_batch: int, device=None, dtype=None) -> KVCache:
        p = self.tok_emb.weight
        return KVCache(self.n_layers, max_batch, self.n_heads, self.head_dim, self.max_seq_len,
                       device=p.device if device is None else device,
                       dtype=p.dtype if dtype is None else dtype)

    def forward(self, ids: torch.Tensor, memory: torch.Tensor, return_hidden: bool = False):
        """Ids [B,T] (BOS first), memory [B,To,d] -> logits [B,T,V] (and ln_f output)."""
        T = ids.shape[1]
        x = self.tok_emb(ids) + self.tok_pos_emb[:, :T]
        for blk in self.blocks:
            x = blk(x, memory)
        h = self.ln_f(x)
        return (self.head(h), h) if return_hidden else self.head(h)

    def step(self, ids: torch.Tensor, pos, cache: KVCache, cross_kv: list):
        """One decoding step: ids [B] at position `pos` -> (logits [B,V], hidden [B,d]).

        pos: int or 0-dim long tensor on the model's device (graph-capturable).
        """
        B = ids.shape[0]
        pos_t = torch.as_tensor(pos, device=cache.slots.device).reshape(1)
        x = self.tok_emb(ids)[:, None] + self.tok_pos_emb[0].index_select(0, pos_t)[None]
        mask = (cache.slots <= pos_t)[None, None, None, :]  # [1,1,1,max_len]
        for i, blk in enumerate(self.blocks):
            q, k, v = blk.attn.qkv(blk.ln_1(x))
            kc, vc = cache.k[i, :B], cache.v[i, :B]
            kc.index_copy_(2, pos_t, k)
            vc.index_copy_(2, pos_t, v)
            y = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask)
            x = x + blk.attn.c_proj(_merge(y))
            x = x + blk.cross_attn(blk.ln_2(x), kv=cross_kv[i])
            x = x + blk.mlp(blk.ln_3(x))
        h = self.ln_f(x)[:, 0]
        return self.head(h), h
