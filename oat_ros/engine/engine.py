"""The decoding engine: observation in, action chunk out, within a deadline.

    engine = Engine(policy, device="cpu")
    engine.warmup()                                   # every shape once; fills the cost model
    result = engine.predict(obs, DecodeSettings(mode="ar", max_tokens=8, deadline_ms=40),
                            elapsed_s=age_of_observation)

Stages: encode (images + states -> features -> memory -> cross-attention K/V), decode
(anytime token loop, oat_ros.engine.anytime), detokenize (tokens + MASK -> 32-step chunk).
Frames of the observation history are encoded once: with n_obs_steps = 2 the older frame
was the newest frame of the previous chunk, so its features come from a small cache keyed by
the caller's frame id (e.g. the capture stamp) and only the new frame runs the ResNets.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from oat_ros.engine.anytime import DecodeOutcome, anytime_decode, finish_key, publish_key
from oat_ros.engine.backend import TorchDecodeBackend
from oat_ros.engine.deadline import CostModel, Deadline
from oat_ros.engine.settings import MAX_TOKENS, DecodeSettings
from oat_ros.errors import InputError


@dataclass
class Observation:
    """Model inputs for a batch: images {camera key: uint8 [B,To,H,W,3]} and states
    {state key: float [B,To,d]}; frame_ids[b][t] identifies frame t of sample b (same id =>
    same content) so its features can be reused across chunks; None disables the cache."""

    images: dict
    states: dict
    frame_ids: list | None = None

    @property
    def batch(self) -> int:
        first = next(iter(self.images.values()), None)
        return (first if first is not None else next(iter(self.states.values()))).shape[0]


@dataclass
class ChunkResult:
    actions: np.ndarray               # [B, horizon, action_dim] float32, unnormalized
    tokens: np.ndarray                # [B, 8] int64; -1 where MASK was used
    tokens_generated: int
    tokens_requested: int
    mode: str                         # what ran ("ar" after a blockwise fallback)
    used_tail: bool
    truncated: bool
    deadline_met: bool
    encode_ms: float
    decode_ms: float
    detokenize_ms: float
    total_ms: float
    frames_encoded: int               # frames that ran the vision encoder (others were cached)
    budget_left_ms: float             # deadline budget left when decoding started (inf: no deadline)
    notes: list = field(default_factory=list)


class FrameFeatureCache:
    """Features of recently encoded frames, least recently used evicted first."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()

    def get(self, key):
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key, value):
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


class Engine:
    def __init__(self, policy, device: str = "cpu", max_batch: int = 8, use_cuda_graphs: bool = True,
                 compile_step: bool = False, cost_quantile: float = 0.999, cost_margin_ms: float = 0.2,
                 clock=time.perf_counter):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device '{device}' requested but CUDA is not available")
        self.policy = policy.to(self.device).eval()
        # Conv weights in channels-last: images arrive HWC, so the permuted input already is
        # channels-last and oneDNN/cuDNN take their fast path (~2x for the ResNets on CPU).
        policy.obs_encoder.vision_encoder.encoder.to(memory_format=torch.channels_last)
        self.cfg = policy.cfg
        self.max_batch = max_batch
        self.use_cuda_graphs = use_cuda_graphs
        self.compile_step = compile_step
        self.clock = clock
        self.costs = CostModel(quantile=cost_quantile, margin_s=cost_margin_ms / 1e3)
        self.frame_cache = FrameFeatureCache(capacity=4 * max_batch * self.cfg.n_obs_steps)
        self._backends: dict[int, TorchDecodeBackend] = {}
        low, high = policy.action_bounds()
        self.action_low = low.detach().cpu().numpy().astype(np.float32)
        self.action_high = high.detach().cpu().numpy().astype(np.float32)

    @property
    def has_tail(self) -> bool:
        return self.policy.tail is not None

    def backend(self, batch: int) -> TorchDecodeBackend:
        if not 1 <= batch <= self.max_batch:
            raise InputError(f"batch size {batch} outside 1..{self.max_batch} (engine max_batch)")
        if batch not in self._backends:
            self._backends[batch] = TorchDecodeBackend(self.policy, batch, self.device, self.use_cuda_graphs,
                                                       self.compile_step)
        return self._backends[batch]

    # --- stages -------------------------------------------------------------------------

    def _to_device(self, array, dtype=None):
        t = torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
        return t.to(self.device, dtype=dtype, non_blocking=True)

    def _check(self, obs: Observation):
        To = self.cfg.n_obs_steps
        for cam, (h, w, c) in self.cfg.cameras.items():
            img = obs.images.get(cam)
            if img is None:
                raise InputError(f"observation is missing camera '{cam}' (policy cameras: {list(self.cfg.cameras)})")
            if tuple(img.shape[1:]) != (To, h, w, c):
                raise InputError(f"camera '{cam}': expected [B,{To},{h},{w},{c}], got {list(img.shape)}")
        for key, dim in self.cfg.states.items():
            st = obs.states.get(key)
            if st is None:
                raise InputError(f"observation is missing state '{key}' (policy states: {list(self.cfg.states)})")
            if tuple(st.shape[1:]) != (To, dim):
                raise InputError(f"state '{key}': expected [B,{To},{dim}], got {list(st.shape)}")
            if not np.all(np.isfinite(np.asarray(st))):
                raise InputError(f"state '{key}' contains NaN or inf")

    @torch.inference_mode()
    def encode(self, obs: Observation) -> tuple[torch.Tensor, int]:
        """Observation -> features [B,To,F], encoding only frames not already cached."""
        B, To = obs.batch, self.cfg.n_obs_steps
        ids = [(b, t, obs.frame_ids[b][t] if obs.frame_ids else None) for b in range(B) for t in range(To)]
        cached = {i: self.frame_cache.get(fid) for i, (_, _, fid) in enumerate(ids) if fid is not None}
        todo = [i for i in range(len(ids)) if cached.get(i) is None]
        feats = [None] * len(ids)
        if todo:
            rows_b = [ids[i][0] for i in todo]
            rows_t = [ids[i][1] for i in todo]
            images = {cam: self._to_device(np.asarray(obs.images[cam])[rows_b, rows_t]) for cam in self.cfg.cameras}
            states = {key: self._to_device(np.asarray(obs.states[key], dtype=np.float32)[rows_b, rows_t])
                      for key in self.cfg.states}
            new = self.policy.encode_frames(images, states)
            for j, i in enumerate(todo):
                feats[i] = new[j]
                if ids[i][2] is not None:
                    self.frame_cache.put(ids[i][2], new[j])
        for i, f in cached.items():
            if f is not None:
                feats[i] = f
        return torch.stack(feats).view(B, To, -1), len(todo)

    @torch.inference_mode()
    def detokenize(self, backend: TorchDecodeBackend, n_tokens: int) -> torch.Tensor:
        tokens = backend.tokens[:, :n_tokens]
        return self.policy.action_tokenizer.detokenize(tokens, n_tokens)

    # --- one chunk ----------------------------------------------------------------------

    def _timer(self):
        """Stage timer: CUDA events on GPU (device time, honest for async work), else the clock."""
        if self.device.type == "cuda":
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return self.clock()

    def _elapsed_ms(self, start, end) -> float:
        if self.device.type == "cuda":
            return start.elapsed_time(end)
        return (end - start) * 1e3

    @torch.inference_mode()
    def predict(self, obs: Observation, settings: DecodeSettings, elapsed_s: float = 0.0) -> ChunkResult:
        """One chunk. elapsed_s: time already spent since the deadline's reference instant
        (the observation's capture, or the request) when this call starts."""
        t_call = self.clock()
        deadline = Deadline.from_budget(settings.deadline_ms, elapsed_s, self.clock)
        self._check(obs)
        backend = self.backend(obs.batch)

        t0 = self._timer()
        features, n_encoded = self.encode(obs)
        memory = self.policy.model.encode_memory(features)
        top_k = settings.top_k
        backend.begin(memory, settings.temperature, top_k, settings.seed)
        t1 = self._timer()
        if self.device.type == "cuda":
            t1.synchronize()  # the deadline rule starts from the true end of encoding
        budget_left_ms = deadline.remaining() * 1e3
        outcome: DecodeOutcome = anytime_decode(backend, settings, deadline, self.costs, self.clock)
        t2 = self._timer()
        t_detok = self.clock()
        action_pred = self.detokenize(backend, outcome.tokens)
        actions = action_pred.float().cpu().numpy()  # waits for the device
        t3 = self._timer()
        if self.device.type != "cuda":
            self.costs.observe(finish_key(obs.batch), self.clock() - t_detok)
        else:
            self.costs.observe(finish_key(obs.batch), self._elapsed_ms(t2, t3) / 1e3)
        tokens = backend.tokens.cpu().numpy().copy()
        tokens[:, outcome.tokens:] = -1
        return ChunkResult(
            actions=actions, tokens=tokens, tokens_generated=outcome.tokens,
            tokens_requested=settings.tokens_requested, mode=outcome.mode, used_tail=outcome.used_tail,
            truncated=outcome.truncated, deadline_met=deadline.met(),
            encode_ms=self._elapsed_ms(t0, t1), decode_ms=self._elapsed_ms(t1, t2),
            detokenize_ms=self._elapsed_ms(t2, t3), total_ms=(self.clock() - t_call) * 1e3,
            frames_encoded=n_encoded, budget_left_ms=budget_left_ms, notes=outcome.notes)

    def observe_publish_cost(self, batch: int, seconds: float):
        """The caller (node) reports what publishing cost, so the rule reserves time for it."""
        self.costs.observe(publish_key(batch), seconds, track_speed=False)

    # --- warm-up ------------------------------------------------------------------------

    def dummy_observation(self, batch: int = 1, seed: int = 0) -> Observation:
        rng = np.random.default_rng(seed)
        To = self.cfg.n_obs_steps
        images = {cam: rng.integers(0, 256, (batch, To, *shape), dtype=np.uint8)
                  for cam, shape in self.cfg.cameras.items()}
        states = {key: rng.standard_normal((batch, To, dim)).astype(np.float32)
                  for key, dim in self.cfg.states.items()}
        return Observation(images, states)

    def warmup(self, batch_sizes=(1,), settings: list[DecodeSettings] | None = None, repeats: int = 5) -> dict:
        """Run every shape that will be used (each batch size, both modes, every token position,
        greedy and sampled) so the first real chunk is not slow and the cost model is filled."""
        if settings is None:
            settings = [DecodeSettings(mode="ar", max_tokens=MAX_TOKENS),
                        DecodeSettings(mode="ar", max_tokens=MAX_TOKENS, temperature=1.0, top_k=10, seed=0)]
            if self.has_tail:
                P = self.policy.tail_cfg.prefix_len
                settings += [DecodeSettings(mode="blockwise", prefix_len=P),
                             DecodeSettings(mode="blockwise", prefix_len=P, temperature=1.0, top_k=10, seed=0)]
        t0 = time.perf_counter()
        for batch in batch_sizes:
            obs = self.dummy_observation(batch)
            for s in settings:
                for _ in range(repeats):
                    self.predict(obs, s.with_(deadline_ms=0.0))
        return {"seconds": time.perf_counter() - t0, "costs_ms": self.costs.summary_ms(),
                "cost_factors": self.costs.factors()}
