"""OATPolicy: observation encoder + AR token model + tokenizer (+ optional blockwise tail).

State-dict layout = the original OATPolicy (`obs_encoder.*`, `model.*`, `action_tokenizer.*`,
`_dummy_variable`); an attached tail lives under `tail.*`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from .empty import empty_module
from .obs_encoder import ObsEncoder
from .sampling import select_tokens
from .tail import ParallelTailDecoder, TailConfig
from .tokenizer import OATTokenizer, TokenizerConfig
from .transformer import ARTransformer


@dataclass
class PolicyConfig:
    cameras: dict = field(default_factory=dict)      # rgb key -> [H, W, 3], shape_meta order
    states: dict = field(default_factory=dict)       # state key -> dim, shape_meta order
    crop_shape: list = field(default_factory=lambda: [76, 76])
    vision_width: int = 64                           # ResNet18 base channels (64 = the original)
    action_dim: int = 7
    horizon: int = 32
    n_action_steps: int = 16
    n_obs_steps: int = 2
    embed_dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    vocab_size: int = 1001
    max_seq_len: int = 9
    temperature: float = 1.0
    top_k: int | None = 10
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    vision_normalizer_fields: dict = field(default_factory=dict)
    state_normalizer_fields: dict = field(default_factory=dict)
    task: dict = field(default_factory=dict)         # task name, env runner info (informational)

    @property
    def obs_feature_dim(self) -> int:
        return 64 * len(self.cameras) + sum(self.states.values())

    @property
    def n_tokens(self) -> int:
        return self.tokenizer.latent_horizon

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PolicyConfig":
        d = dict(d)
        d["tokenizer"] = TokenizerConfig(**d.get("tokenizer", {}))
        return cls(**d)

    def validate(self):
        tok = self.tokenizer
        if tok.vocab_size + 1 != self.vocab_size:
            raise ConfigError(f"tokenizer has {tok.vocab_size} codes but the AR vocab is "
                              f"{self.vocab_size} (expected codes + 1 BOS)")
        if tok.sample_horizon != self.horizon or tok.sample_dim != self.action_dim:
            raise ConfigError(f"tokenizer decodes [{tok.sample_horizon}, {tok.sample_dim}] "
                              f"but the policy horizon/action dim is [{self.horizon}, {self.action_dim}]")
        if self.max_seq_len != tok.latent_horizon + 1:
            raise ConfigError(f"AR max_seq_len {self.max_seq_len} != latent_horizon + 1")
        if self.embed_dim % self.n_heads:
            raise ConfigError(f"embed_dim {self.embed_dim} not divisible by n_heads {self.n_heads}")
        if self.vision_width < 16 or self.vision_width % 16:
            raise ConfigError(f"vision_width {self.vision_width} must be a positive multiple of 16 "
                              f"(GroupNorm uses channels // 16 groups)")
        if not 0 < self.n_action_steps <= self.horizon:
            raise ConfigError(f"n_action_steps {self.n_action_steps} not in 1..horizon")


class OATPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig, tail_cfg: TailConfig | None = None):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.register_buffer("_dummy_variable", torch.zeros(0))
        self.obs_encoder = ObsEncoder(cfg.cameras, cfg.states, cfg.crop_shape,
                                      cfg.vision_normalizer_fields, cfg.state_normalizer_fields,
                                      cfg.vision_width)
        self.model = ARTransformer(cfg.vocab_size, cfg.max_seq_len, cfg.obs_feature_dim,
                                   cfg.n_obs_steps, cfg.n_layers, cfg.n_heads, cfg.embed_dim)
        self.action_tokenizer = OATTokenizer(cfg.tokenizer)
        self.tail_cfg = None
        self.tail = None
        if tail_cfg is not None:
            self.attach_tail(ParallelTailDecoder(cfg.vocab_size, cfg.embed_dim, tail_cfg.n_tail,
                                                 tail_cfg.n_layers, tail_cfg.n_heads), tail_cfg)

    @property
    def bos_id(self) -> int:
        return self.cfg.vocab_size - 1

    @classmethod
    def empty(cls, cfg: PolicyConfig, tail_cfg: TailConfig | None = None, device="cpu"):
        """Allocate without random initialisation (weights are garbage until loaded)."""
        return empty_module(lambda: cls(cfg, tail_cfg), device)

    def attach_tail(self, tail: ParallelTailDecoder, tail_cfg: TailConfig):
        if tail_cfg.prefix_len + tail_cfg.n_tail != self.cfg.n_tokens:
            raise ConfigError(f"tail: prefix_len {tail_cfg.prefix_len} + n_tail {tail_cfg.n_tail} "
                              f"!= {self.cfg.n_tokens} tokens")
        self.tail, self.tail_cfg = tail, tail_cfg

    # --- stages -------------------------------------------------------------------------

    def encode_obs(self, obs: dict, crop_offsets: dict | None = None) -> torch.Tensor:
        """obs {key: [B,To,...]} -> features [B,To,F] (centre crop unless offsets given)."""
        return self.obs_encoder(obs, crop_offsets)

    def encode_frames(self, images: dict, states: dict, crop_offsets: dict | None = None):
        """Per-frame features: images {cam: [N,H,W,3]}, states {key: [N,d]} -> [N,F]."""
        return self.obs_encoder.encode_frames(images, states, crop_offsets)

    def action_bounds(self):
        """(min, max) raw action [7] implied by the tokenizer's action normalizer."""
        return self.action_tokenizer.action_bounds()

    def _sampling_args(self, temperature, top_k):
        if temperature is None:
            temperature = self.cfg.temperature
        if top_k is None and temperature and temperature > 0:
            top_k = self.cfg.top_k
        return temperature, top_k

    @torch.no_grad()
    def generate(self, features: torch.Tensor, K: int = 8, temperature: float | None = 0.0,
                 top_k=None, generator=None, allow_bos: bool = False, select=select_tokens,
                 return_hidden: bool = False):
        """Features [B,To,F] -> (tokens [B,K], step_logits [B,K,V]) with the KV-cache step API.

        temperature None -> cfg value (top_k None -> cfg value when sampling). With
        return_hidden, also the ln_f output at position K (after z_K), [B,d].
        """
        if not 1 <= K <= self.cfg.n_tokens:
            raise ConfigError(f"K must be in 1..{self.cfg.n_tokens}, got {K}")
        temperature, top_k = self._sampling_args(temperature, top_k)
        B = features.shape[0]
        memory = self.model.encode_memory(features)
        cross = self.model.cross_kv(memory)
        cache = self.model.new_cache(B)
        ids = torch.full((B,), self.bos_id, dtype=torch.long, device=features.device)
        tokens, logits_all = [], []
        for pos in range(K):
            logits, _ = self.model.step(ids, pos, cache, cross)
            ids = select(logits, temperature, top_k, generator, allow_bos)
            tokens.append(ids)
            logits_all.append(logits)
        out = torch.stack(tokens, 1), torch.stack(logits_all, 1)
        if return_hidden:
            _, hidden = self.model.step(ids, K, cache, cross)
            out = out + (hidden,)
        return out

    def generate_prefix(self, features, P: int, temperature=0.0, top_k=None, generator=None,
                        allow_bos: bool = False):
        """(prefix tokens [B,P], step logits [B,P,V], prefix_hidden [B,d])."""
        return self.generate(features, P, temperature, top_k, generator, allow_bos,
                             return_hidden=True)

    def decode_actions(self, tokens: torch.Tensor, keep_k=None) -> dict:
        action_pred = self.action_tokenizer.detokenize(tokens, keep_k)
        return {"action": action_pred[:, :self.cfg.n_action_steps], "action_pred": action_pred}

    # --- end to end ---------------------------------------------------------------------

    @torch.no_grad()
    def predict_action(self, obs: dict, K: int = 8, temperature: float | None = 0.0, top_k=None,
                       generator=None, allow_bos: bool = False, crop_offsets=None) -> dict:
        """obs {key: [B,To,...]} -> {'action' [B,n_action_steps,7], 'action_pred' [B,H,7],
        'tokens' [B,K], 'step_logits' [B,K,V]}. Default greedy (temperature 0)."""
        features = self.encode_obs(obs, crop_offsets)
        tokens, logits = self.generate(features, K, temperature, top_k, generator, allow_bos)
        return {**self.decode_actions(tokens), "tokens": tokens, "step_logits": logits}

    @torch.no_grad()
    def tail_tokens(self, prefix: torch.Tensor, prefix_hidden: torch.Tensor, refine_iters: int = 1,
                    temperature: float = 0.0, top_k=None, generator=None, allow_bos: bool = False,
                    select=select_tokens):
        """Run the tail r times -> (tail ids [B,n_tail], logits of the last pass [B,n_tail,V])."""
        if self.tail is None:
            raise ConfigError("blockwise decoding needs a tail decoder (none is loaded)")
        if prefix.shape[1] != self.tail_cfg.prefix_len:
            raise ConfigError(f"the tail was trained for prefix_len {self.tail_cfg.prefix_len}, "
                              f"got {prefix.shape[1]}")
        prev = None
        for _ in range(max(1, int(refine_iters))):
            logits = self.tail(prefix, prefix_hidden, self.model.tok_emb, self.model.tok_pos_emb, prev)
            B, N, V = logits.shape
            prev = select(logits.reshape(B * N, V), temperature, top_k, generator,
                          allow_bos).view(B, N)
        return prev, logits

    @torch.no_grad()
    def predict_action_blockwise(self, obs: dict, prefix_len: int | None = None,
                                 refine_iters: int | None = None, temperature: float | None = 0.0,
                                 top_k=None, generator=None, allow_bos: bool = False,
                                 crop_offsets=None) -> dict:
        if self.tail is None:
            raise ConfigError("blockwise decoding needs a tail decoder (none is loaded)")
        P = self.tail_cfg.prefix_len if prefix_len is None else prefix_len
        r = self.tail_cfg.refine_iters if refine_iters is None else refine_iters
        temperature, top_k = self._sampling_args(temperature, top_k)
        features = self.encode_obs(obs, crop_offsets)
        prefix, _, hidden = self.generate_prefix(features, P, temperature, top_k, generator, allow_bos)
        tail, tail_logits = self.tail_tokens(prefix, hidden, r, temperature, top_k, generator, allow_bos)
        tokens = torch.cat([prefix, tail], dim=1)
        return {**self.decode_actions(tokens), "tokens": tokens, "prefix_tokens": prefix,
                "prefix_hidden": hidden, "tail_tokens": tail, "tail_logits": tail_logits}
