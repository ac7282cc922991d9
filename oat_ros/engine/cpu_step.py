"""A lean single-token decoding step for the CPU.

At batch 1 on a CPU a decoding step is dominated by per-operator overhead, not arithmetic:
the generic `ARTransformer.step` keeps every shape static (attention over all cache slots
with a mask) so it can be captured in a CUDA graph, and pays ~50 small operators per layer
for it. Here the position is a Python int, attention is one `scaled_dot_product_attention`
over the filled cache slots only, the RMSNorms are single `F.rms_norm` calls, the weights
are pre-transposed once and every residual add is fused into its GEMM (`addmm`): about 15
operators per layer, same weights and the same maths (checked against the fixtures).

The weights are snapshotted (transposed copies) at construction: build a new CpuStep after
loading other weights into the model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class CpuStep:
    def __init__(self, model):
        self.model = model
        self.n_heads = model.n_heads
        self.head_dim = model.head_dim
        self.eps = model.ln_f.eps
        t = lambda w: w.detach().t().contiguous()  # [in, out]: x @ W^T as one mm/addmm, no transpose per call
        self.layers = [
            dict(ln_1=b.ln_1.weight, c_attn=t(b.attn.c_attn.weight), attn_proj=t(b.attn.c_proj.weight),
                 ln_2=b.ln_2.weight, q_proj=t(b.cross_attn.q_proj.weight), cross_proj=t(b.cross_attn.c_proj.weight),
                 ln_3=b.ln_3.weight, fc_w=t(b.mlp.c_fc.weight), fc_b=b.mlp.c_fc.bias,
                 proj_w=t(b.mlp.c_proj.weight), proj_b=b.mlp.c_proj.bias)
            for b in model.blocks]
        self.head = t(model.head.weight)

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, pos: int, cache, cross_kv):
        """ids [B] at position `pos` (int) -> (logits [B,V], hidden [B,d]); writes the cache."""
        m = self.model
        B, H, hd = ids.shape[0], self.n_heads, self.head_dim
        d = H * hd
        attend = F.scaled_dot_product_attention  # one query: no mask needed, reads filled slots only
        x = m.tok_emb.weight[ids] + m.tok_pos_emb[0, pos]
        for i, L in enumerate(self.layers):
            h = F.rms_norm(x, (d,), L["ln_1"], self.eps)
            q, k, v = torch.mm(h, L["c_attn"]).view(B, 3, H, 1, hd).unbind(1)
            cache.k[i, :B, :, pos:pos + 1] = k
            cache.v[i, :B, :, pos:pos + 1] = v
            y = attend(q, cache.k[i, :B, :, :pos + 1], cache.v[i, :B, :, :pos + 1]).reshape(B, d)
            x = torch.addmm(x, y, L["attn_proj"])                     # residual fused into the GEMM
            h = F.rms_norm(x, (d,), L["ln_2"], self.eps)
            q = torch.mm(h, L["q_proj"]).view(B, H, 1, hd)
            ck, cv = cross_kv[i]
            x = torch.addmm(x, attend(q, ck, cv).reshape(B, d), L["cross_proj"])
            h = F.rms_norm(x, (d,), L["ln_3"], self.eps)
            x = torch.addmm(x, F.gelu(torch.addmm(L["fc_b"], h, L["fc_w"])), L["proj_w"]).add_(L["proj_b"])
        hidden = F.rms_norm(x, (d,), m.ln_f.weight, self.eps)
        return torch.mm(hidden, self.head), hidden
