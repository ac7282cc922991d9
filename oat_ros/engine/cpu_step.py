"""A lean single-token decoding step for the CPU.

At batch 1 on a CPU a decoding step is dominated by per-operator overhead, not arithmetic:
the generic `ARTransformer.step` keeps every shape static (attention over all cache slots
with a mask) so it can be captured in a CUDA graph, and pays ~50 small operators per layer
for it. Here the position is a Python int, attention reads only the filled cache slots, the
RMSNorms are single `F.rms_norm` calls and the linears with a bias are `addmm`s: about 20
operators per layer, same weights and the same maths (checked against the fixtures).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class CpuStep:
    def __init__(self, model):
        self.model = model
        self.n_heads = model.n_heads
        self.head_dim = model.head_dim
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.eps = model.ln_f.eps
        self.layers = [
            dict(ln_1=b.ln_1.weight, c_attn=b.attn.c_attn.weight, attn_proj=b.attn.c_proj.weight,
                 ln_2=b.ln_2.weight, q_proj=b.cross_attn.q_proj.weight, cross_proj=b.cross_attn.c_proj.weight,
                 ln_3=b.ln_3.weight, fc_w=b.mlp.c_fc.weight, fc_b=b.mlp.c_fc.bias,
                 proj_w=b.mlp.c_proj.weight, proj_b=b.mlp.c_proj.bias)
            for b in model.blocks]

    def _attend(self, q, k, v):
        """q [B,H,1,hd], k/v [B,H,T,hd] -> [B, H*hd]."""
        w = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)
        y = torch.matmul(w, v)
        return y.reshape(y.shape[0], -1)

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, pos: int, cache, cross_kv):
        """ids [B] at position `pos` (int) -> (logits [B,V], hidden [B,d]); writes the cache."""
        m = self.model
        B, H, hd = ids.shape[0], self.n_heads, self.head_dim
        d = H * hd
        x = m.tok_emb.weight[ids] + m.tok_pos_emb[0, pos]
        for i, L in enumerate(self.layers):
            h = F.rms_norm(x, (d,), L["ln_1"], self.eps)
            q, k, v = F.linear(h, L["c_attn"]).view(B, 3, H, 1, hd).unbind(1)
            cache.k[i, :B, :, pos:pos + 1] = k
            cache.v[i, :B, :, pos:pos + 1] = v
            y = self._attend(q, cache.k[i, :B, :, :pos + 1], cache.v[i, :B, :, :pos + 1])
            x = x + F.linear(y, L["attn_proj"])
            h = F.rms_norm(x, (d,), L["ln_2"], self.eps)
            q = F.linear(h, L["q_proj"]).view(B, H, 1, hd)
            ck, cv = cross_kv[i]
            x = x + F.linear(self._attend(q, ck, cv), L["cross_proj"])
            h = F.rms_norm(x, (d,), L["ln_3"], self.eps)
            x = x + torch.addmm(L["proj_b"], F.gelu(torch.addmm(L["fc_b"], h, L["fc_w"].t())), L["proj_w"].t())
        hidden = F.rms_norm(x, (d,), m.ln_f.weight, self.eps)
        return F.linear(hidden, m.head.weight), hidden
