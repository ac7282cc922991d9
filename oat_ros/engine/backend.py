"""Torch decoding backend: static buffers for one batch size, one observation at a time.

Everything a decoding step touches is allocated once (gpt-fast style): the self-attention
KV cache, the cross-attention K/V of the observation, the token buffer, the next input id
and the position. One step = one fixed-shape function of those buffers, so on CUDA it is
captured once in a CUDA graph and replayed per token with no host synchronization. The
blockwise "hidden" step (ln_f output after z_P) is an ordinary step whose token is discarded.
"""
from __future__ import annotations

import torch

from oat_ros.engine.cpu_step import CpuStep
from oat_ros.model.sampling import select_tokens, select_tokens_device


class TorchDecodeBackend:
    def __init__(self, policy, batch: int, device: torch.device, use_cuda_graphs: bool = True,
                 compile_step: bool = False):
        model = policy.model
        self.policy, self.model, self.batch, self.device = policy, model, batch, device
        self.n_tokens = policy.cfg.n_tokens
        self.bos = policy.bos_id
        self.has_tail = policy.tail is not None
        self.tail_prefix_len = policy.tail_cfg.prefix_len if self.has_tail else None
        self.deferred = device.type == "cuda"
        self.use_graphs = use_cuda_graphs and self.deferred
        p = model.tok_emb.weight
        self.cache = model.new_cache(batch)
        H, hd, To = model.n_heads, model.head_dim, policy.cfg.n_obs_steps
        self.cross = [(torch.zeros(batch, H, To, hd, device=device, dtype=p.dtype),
                       torch.zeros(batch, H, To, hd, device=device, dtype=p.dtype))
                      for _ in range(model.n_layers)]
        self.tokens = torch.zeros(batch, self.n_tokens, dtype=torch.long, device=device)
        self.ids = torch.full((batch,), self.bos, dtype=torch.long, device=device)
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        self.hidden = torch.zeros(batch, model.dim, device=device, dtype=p.dtype)
        self.temperature = torch.ones((), device=device)
        self._sampling = (0.0, 0, None)  # temperature, top_k, generator of the current chunk
        self._graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        # CPU: either the lean eager step, or the static-shape step compiled by torch.compile
        # (inductor fuses the small ops; ~1.8x faster per token, ~20 s compile at warm-up,
        # cached on disk by inductor for the next start).
        self._step_fn = model.step
        self._cpu_step = None
        if device.type == "cpu":
            if compile_step:
                # cpp_wrapper: the generated kernels are called from C++, not from a Python
                # wrapper (per-kernel Python overhead is most of a small model's step)
                self._step_fn = torch.compile(model.step, fullgraph=True, dynamic=False,
                                              options={"cpp_wrapper": True})
            else:
                self._cpu_step = CpuStep(model)
        self._cpu_pos = 0
        self._events: list[tuple] = []  # (key, start event, end event) since the last sync

    # --- per observation ----------------------------------------------------------------

    @torch.inference_mode()
    def begin(self, memory: torch.Tensor, temperature: float, top_k: int, seed: int):
        """Load one observation's cross K/V, reset the position and the input to BOS.

        seed >= 0 makes the chunk's sampling reproducible. On CUDA the default generator is
        reseeded (graph replays read its state), elsewhere a private torch.Generator is used."""
        generator = None
        if seed >= 0:
            if self.deferred:
                torch.cuda.manual_seed(seed)
            else:
                generator = torch.Generator(device=self.device)
                generator.manual_seed(seed)
        for (k_buf, v_buf), (k, v) in zip(self.cross, self.model.cross_kv(memory)):
            k_buf.copy_(k)
            v_buf.copy_(v)
        self.ids.fill_(self.bos)
        self.pos.zero_()
        self._cpu_pos = 0
        self.temperature.fill_(max(temperature, 1e-6))
        self._sampling = (float(temperature), int(top_k), generator)

    # --- one step -----------------------------------------------------------------------

    def _select(self, logits):
        temperature, top_k, generator = self._sampling
        if temperature <= 0:
            return select_tokens(logits, 0.0)
        if self.deferred:  # exponential race: no host sync, graph-capturable
            return select_tokens_device(logits * (temperature / self.temperature), temperature,
                                        top_k or None, generator)
        return select_tokens(logits, temperature, top_k or None, generator)

    def _step_body(self):
        logits, hidden = self._step_fn(self.ids, self.pos, self.cache, self.cross)
        new = self._select(logits)
        self.tokens.index_copy_(1, self.pos.clamp(max=self.n_tokens - 1).view(1), new[:, None])
        self.ids.copy_(new)
        self.hidden.copy_(hidden)
        self.pos.add_(1)

    def _graph_key(self):
        temperature, top_k, _ = self._sampling
        return ("step", temperature > 0, top_k)

    def _cpu_step_body(self):
        """CPU: the lean step with a Python-int position (see cpu_step.py)."""
        pos = self._cpu_pos
        logits, hidden = self._cpu_step(self.ids, pos, self.cache, self.cross)
        new = self._select(logits)
        self.tokens[:, min(pos, self.n_tokens - 1)] = new
        self.ids.copy_(new)
        self.hidden.copy_(hidden)
        self._cpu_pos = pos + 1

    @torch.inference_mode()
    def _run_step(self):
        if self._cpu_step is not None:
            self._cpu_step_body()
            return
        if not self.use_graphs:
            self._step_body()
            return
        key = self._graph_key()
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._capture(self._step_body)
            self._graphs[key] = graph
        graph.replay()

    def _capture(self, fn):
        """Capture fn in a CUDA graph (after side-stream warm-up runs, as PyTorch requires);
        the buffers fn reads and writes are restored so capture has no visible effect."""
        saved = [t.clone() for t in (self.ids, self.pos, self.tokens, self.hidden, self.cache.k, self.cache.v)]
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        for t, s in zip((self.ids, self.pos, self.tokens, self.hidden, self.cache.k, self.cache.v), saved):
            t.copy_(s)
        return graph

    def timed(self, key, fn):
        """Run fn and time it with CUDA events (read after sync(), no host wait now)."""
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        self._events.append((key, start, end))

    # --- the anytime-decoding backend interface (oat_ros.engine.anytime) ------------------

    def ar_step(self, k: int):
        """Decode token k (the buffers already hold position k and the previous token)."""
        self._run_step()

    @torch.inference_mode()
    def tail(self, prefix_len: int, refine_iters: int):
        self._run_step()  # hidden state after z_P (its token is overwritten by the tail)
        temperature, top_k, generator = self._sampling
        prefix = self.tokens[:, :prefix_len]
        tail_ids, _ = self.policy.tail_tokens(
            prefix, self.hidden, refine_iters, temperature, top_k or None, generator,
            select=select_tokens_device if (self.deferred and temperature > 0) else select_tokens)
        self.tokens[:, prefix_len:] = tail_ids

    def sync(self):
        if self.deferred:
            torch.cuda.synchronize(self.device)

    def measured_times(self):
        out = [(key, start.elapsed_time(end) / 1e3) for key, start, end in self._events]
        self._events.clear()
        return out
