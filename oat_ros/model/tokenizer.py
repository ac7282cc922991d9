"""OAT action tokenizer: action chunk [B,T,7] <-> 8 ordered tokens.

Encoder: linear sample embedding + fixed sincos pos-emb, 8 learned registers appended,
pre-norm blocks (QK-norm attention, SwiGLU) with "causal register" attention, no-affine
LayerNorm + linear head -> FSQ. Decoder: FSQ codes -> latents (+sincos), slots >= K
replaced by a learned MASK token (after the pos-emb, so masked slots carry no position),
then a norm-first nn.TransformerDecoder whose queries are the sincos embeddings of the T
output steps (causal), no-affine LayerNorm + linear head, unnormalize.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .fsq import FSQ
from .normalizer import LinearNormalizer


@dataclass
class TokenizerConfig:
    sample_dim: int = 7
    sample_horizon: int = 32
    emb_dim: int = 256
    head_dim: int = 64
    enc_depth: int = 2
    enc_mlp_hidden: int = 682     # SwiGLU hidden = int(2 * 4E / 3)
    num_registers: int = 8
    dec_depth: int = 4
    dec_ff_dim: int = 1024        # 4E
    latent_horizon: int = 8
    levels: list = field(default_factory=lambda: [8, 5, 5, 5])

    @property
    def n_heads(self) -> int:
        return self.emb_dim // self.head_dim

    @property
    def vocab_size(self) -> int:
        n = 1
        for v in self.levels:
            n *= int(v)
        return n


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm without affine parameters, eps 1e-5, computed in fp32."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=1e-5).type_as(x)


class SinCosPosEmb(nn.Module):
    """Fixed 1-D sincos table stored as `posembs` [1, D, L] (loaded from the checkpoint)."""

    def __init__(self, dim: int, length: int):
        super().__init__()
        half = dim // 2
        omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float32) / half)
        angles = torch.arange(length, dtype=torch.float32)[None, :] * omega[:, None]
        self.register_buffer("posembs", torch.cat([angles.sin(), angles.cos()], 0)[None])

    def forward(self) -> torch.Tensor:
        return self.posembs.transpose(1, 2)  # [1, L, D]


class _SampleEmbedder(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.patch_proj = nn.Linear(in_dim, dim)

    def forward(self, x):
        return self.patch_proj(x)


class _LatentProj(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)

    def forward(self, x):
        return self.proj(x)


class _LinearHead(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, x):
        return self.proj(_layer_norm(x))


class _QKNormAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x, mask):
        B, N, D = x.shape
        split = lambda t: t.view(B, N, self.n_heads, D // self.n_heads).transpose(1, 2)
        q, k, v = split(self.wq(x)), split(self.wk(x)), split(self.wv(x))
        q, k = _layer_norm(q), _layer_norm(k)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, N, D))


class _SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)
        self.fc3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x):
        return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))


class _EncoderBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, hidden: int):
        super().__init__()
        self.attn = _QKNormAttention(dim, n_heads)
        self.mlp = _SwiGLU(dim, hidden)

    def forward(self, x, mask):
        x = x + self.attn(_layer_norm(x), mask)
        return x + self.mlp(_layer_norm(x))


class _Blocks(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class RegisterEncoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        E, T, R = cfg.emb_dim, cfg.sample_horizon, cfg.num_registers
        self.registers = nn.Parameter(torch.zeros(R, E))
        self.sample_emb = _SampleEmbedder(cfg.sample_dim, E)
        self.pos_emb = SinCosPosEmb(E, T)
        self.transformer = _Blocks(
            [_EncoderBlock(E, cfg.n_heads, cfg.enc_mlp_hidden) for _ in range(cfg.enc_depth)])
        self.head = _LinearHead(E, len(cfg.levels))
        self.n_samples, self.n_registers = T, R
        self.init_constants()

    def init_constants(self, device=None):
        # True = may attend. Samples see samples only; register i sees samples + registers <= i.
        T, R = self.n_samples, self.n_registers
        mask = torch.zeros(T + R, T + R, dtype=torch.bool, device=device)
        mask[:, :T] = True
        mask[T:, T:] = torch.ones(R, R, dtype=torch.bool, device=device).tril()
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized actions [B,T,7] -> pre-quantization latents [B,R,latent_dim]."""
        B, T, _ = x.shape
        x = self.sample_emb(x) + self.pos_emb()
        x = torch.cat([x, self.registers[None].expand(B, -1, -1)], dim=1)
        for block in self.transformer.blocks:
            x = block(x, self.attn_mask)
        return self.head(x[:, T:])


class _NestedDropout(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dropout_mask_token = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, keep_k: torch.Tensor) -> torch.Tensor:
        drop = torch.arange(x.shape[1], device=x.device)[None, :] >= keep_k[:, None]
        return torch.where(drop[..., None], self.dropout_mask_token.to(x.dtype), x)


class SinglePassDecoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        E, T = cfg.emb_dim, cfg.sample_horizon
        self.latent_horizon = cfg.latent_horizon
        self.latent_proj = _LatentProj(len(cfg.levels), E)
        self.latent_pos_emb = SinCosPosEmb(E, cfg.latent_horizon)
        self.sample_pos_emb = SinCosPosEmb(E, T)
        self.nested_dropout = _NestedDropout(E)
        layer = nn.TransformerDecoderLayer(
            d_model=E, nhead=cfg.n_heads, dim_feedforward=cfg.dec_ff_dim, dropout=0.0,
            activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers=cfg.dec_depth)
        self.head = _LinearHead(E, cfg.sample_dim)
        self.n_samples = T
        self.init_constants()

    def init_constants(self, device=None):
        T = self.n_samples
        causal = torch.full((T, T), float("-inf"), device=device).triu(1)
        self.register_buffer("causal_mask", causal, persistent=False)

    def forward(self, codes: torch.Tensor, keep_k: torch.Tensor) -> torch.Tensor:
        """FSQ codes [B,L,4] + keep_k [B] -> normalized actions [B,T,7]."""
        B = codes.shape[0]
        latents = self.latent_proj(codes) + self.latent_pos_emb()
        latents = self.nested_dropout(latents, keep_k)
        queries = self.sample_pos_emb().expand(B, -1, -1)
        y = self.decoder(tgt=queries, memory=latents, tgt_mask=self.causal_mask)
        return self.head(y)


class OATTokenizer(nn.Module):
    """State-dict layout = the original OATTok (`encoder.*`, `decoder.*`, `normalizer.*`)."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("_dummy_variable", torch.zeros(0))
        self.encoder = RegisterEncoder(cfg)
        self.decoder = SinglePassDecoder(cfg)
        self.quantizer = FSQ(cfg.levels)
        self.normalizer = LinearNormalizer({"action": cfg.sample_dim})
        self.encoder_dropped = False  # an inference-only export ships no encoder weights

    @property
    def action_normalizer(self):
        return self.normalizer["action"]

    def encode(self, actions: torch.Tensor):
        """Raw actions [B,T,7] -> (pre-quant latents, codes, ids)."""
        if self.encoder_dropped:
            raise InputError("this policy was exported inference-only: its tokenizer has no encoder "
                             "weights, so it can detokenize but not tokenize (train from the full export)")
        z = self.encoder(self.action_normalizer.normalize(actions))
        codes, ids = self.quantizer(z)
        return z, codes, ids

    @torch.no_grad()
    def tokenize(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw actions [B,T,7] -> token ids int64 [B,latent_horizon]."""
        return self.encode(actions)[2]

    def detokenize(self, ids: torch.Tensor, keep_k=None) -> torch.Tensor:
        """Ids [B,k] (k <= 8, may be right padded) -> raw actions [B,T,7].

        keep_k: None (= k), an int, or a LongTensor [B] of per-sample prefix lengths;
        slots >= keep_k[b] are replaced by the MASK token.
        """
        B, k = ids.shape
        L = self.cfg.latent_horizon
        if k > L:
            raise ValueError(f"detokenize: got {k} tokens, the tokenizer has {L} slots")
        if k < L:
            ids = torch.cat([ids, ids.new_zeros(B, L - k)], dim=1)
        if keep_k is None:
            keep_k = k
        if not torch.is_tensor(keep_k):
            keep_k = torch.full((B,), int(keep_k), dtype=torch.long, device=ids.device)
        keep_k = keep_k.to(ids.device)
        codes = self.quantizer.indices_to_codes(ids)
        return self.action_normalizer.unnormalize(self.decoder(codes, keep_k))

    def action_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Min/max raw action of the normalizer: its fitted input_stats, or (when those are
        not stored, all zero) the range that scale/offset map to [-1, 1]."""
        f = self.action_normalizer
        lo, hi = f.input_stats.min, f.input_stats.max
        if not bool((lo != 0).any() or (hi != 0).any()):
            a, b = (-1 - f.offset) / f.scale, (1 - f.offset) / f.scale
            lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        return lo.clone(), hi.clone()
