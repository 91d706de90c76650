"""A real torch serving loop: a Llama-shaped model with random weights, continuous batching,
a preallocated per-sequence KV cache, wall-clock TTFT and token times (imports torch).

Semantics (the same as :mod:`kvsim.sim.replica` with whole-prompt prefill):

* iteration-level scheduling: each step prefills the whole prompts of the requests admitted
  this step (FCFS, while fewer than ``max_num_seqs`` run) and decodes one token for every
  running sequence, in one forward pass over the concatenated tokens (weights read once);
* the step that prefills a prompt emits the request's first token; each later step emits one
  token per running sequence; a request leaves after ``output_tokens`` tokens;
* arrivals during a step join the next step; an idle engine waits for the next arrival.

The kernels are :mod:`kvsim.validate.torch_ops`, the code the microbenchmarks time: GEMMs
``x @ W`` (fused QKV and gate/up), RMSNorm, rotary, SwiGLU, causal SDPA per prompt, decode
attention one SDPA call per sequence over its cache slice, LM head on the last position of
each sequence, greedy sampling.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from kvsim.models import ModelSpec
from kvsim.validate.torch_ops import (
    decode_attention_loop,
    layer_elementwise,
    rms_norm,
    rotary,
    rotary_tables,
    sdpa,
    silu_mul,
)


class TinyLlama:
    """Random-weight Llama (SwiGLU, GQA, RoPE) with a KV cache of ``max_seqs`` slots."""

    def __init__(self, m: ModelSpec, *, dtype=torch.float32, max_seqs: int = 8, max_len: int = 512, seed: int = 0,
                 theta: float = 1e4):
        g = torch.Generator().manual_seed(seed)
        h, d, nh, nkv, f, V, L = m.hidden_size, m.head_dim, m.num_heads, m.num_kv_heads, m.intermediate_size, m.vocab_size, m.num_layers
        self.m, self.dtype, self.theta = m, dtype, theta

        def w(*shape, std=0.02):
            return (torch.randn(*shape, generator=g) * std).to(dtype)

        self.emb = w(V, h)
        self.layers = [{"w_in": torch.ones(h, dtype=dtype), "w_post": torch.ones(h, dtype=dtype),
                        "qkv": w(h, (nh + 2 * nkv) * d), "o": w(nh * d, h), "gu": w(h, 2 * f), "down": w(f, h)}
                       for _ in range(L)]
        self.w_final = torch.ones(h, dtype=dtype)
        self.lm_head = w(h, V)
        self.k_cache = torch.zeros(L, max_seqs, nkv, max_len, d, dtype=dtype)
        self.v_cache = torch.zeros(L, max_seqs, nkv, max_len, d, dtype=dtype)
        self.max_len = max_len

    @torch.inference_mode()
    def step(self, prefill: list[tuple[int, list[int]]], decode: list[tuple[int, int, int]]) -> list[int]:
        """One engine step. ``prefill``: (slot, prompt ids); ``decode``: (slot, last token, ctx)
        with ``ctx`` tokens already cached. Returns the next token of each sequence (prefill first)."""
        m = self.m
        nh, nkv, d = m.num_heads, m.num_kv_heads, m.head_dim
        ids, pos = [], []
        for _, toks in prefill:
            ids += toks
            pos += range(len(toks))
        for _, tok, ctx in decode:
            ids.append(tok)
            pos.append(ctx)
        T = len(ids)
        n_pref = T - len(decode)
        x = self.emb[torch.tensor(ids)]  # [T, h]
        cos, sin = rotary_tables(torch.tensor(pos), d, self.theta, self.dtype)
        d_slots = torch.tensor([s for s, _, _ in decode], dtype=torch.long)
        d_pos = torch.tensor([c for _, _, c in decode], dtype=torch.long)
        for li, lw in enumerate(self.layers):
            hdn = rms_norm(x, lw["w_in"])
            qkv = hdn @ lw["qkv"]
            q = qkv[:, : nh * d].view(T, nh, d)
            k = qkv[:, nh * d: (nh + nkv) * d].view(T, nkv, d)
            v = qkv[:, (nh + nkv) * d:].view(T, nkv, d)
            q, k = rotary(q, cos, sin), rotary(k, cos, sin)
            kc, vc = self.k_cache[li], self.v_cache[li]
            outs = []
            o = 0
            for slot, toks in prefill:  # causal attention over the prompt, cache write
                n = len(toks)
                kt, vt = k[o:o + n].transpose(0, 1), v[o:o + n].transpose(0, 1)  # [nkv, n, d]
                kc[slot, :, :n] = kt
                vc[slot, :, :n] = vt
                outs.append(sdpa(q[o:o + n].transpose(0, 1).unsqueeze(0), kt.unsqueeze(0), vt.unsqueeze(0), causal=True)
                            .squeeze(0).transpose(0, 1).reshape(n, nh * d))
                o += n
            if decode:
                kc[d_slots, :, d_pos] = k[n_pref:]
                vc[d_slots, :, d_pos] = v[n_pref:]
                qd = q[n_pref:].unsqueeze(2)  # [B, nh, 1, d]
                ks = [kc[s, :, : c + 1] for s, _, c in decode]
                vs = [vc[s, :, : c + 1] for s, _, c in decode]
                outs.append(decode_attention_loop(qd, ks, vs).reshape(len(decode), nh * d))
            attn = torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]
            x = x + attn @ lw["o"]
            hdn = rms_norm(x, lw["w_post"])
            x = x + silu_mul(hdn @ lw["gu"]) @ lw["down"]
        last = []
        o = 0
        for _, toks in prefill:
            o += len(toks)
            last.append(o - 1)
        last += range(n_pref, T)
        logits = rms_norm(x[torch.tensor(last)], self.w_final) @ self.lm_head  # [S, V]
        return logits.argmax(-1).tolist()


_ = layer_elementwise  # the microbenchmark runs the same ops (norms, rotary, adds, SwiGLU) in this order


@dataclass
class StepRecord:
    start_s: float
    end_s: float
    decode_ctx: list[int]  # tokens cached per decoding sequence before the step
    prefill: list[int]  # prompt tokens of each request prefilled this step


@dataclass
class LoopResult:
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    token_times: list[list[float]]
    steps: list[StepRecord] = field(default_factory=list)
    wall_s: float = 0.0


def warm_up(model: TinyLlama, prompt: int = 64, steps: int = 3) -> None:
    """A few prefill and decode steps so that allocator and thread pools are warm."""
    toks = list(range(1, prompt + 1))
    for _ in range(steps):
        model.step([(0, toks), (1, toks[: prompt // 2])], [])
        model.step([], [(0, 5, prompt), (1, 7, prompt // 2)])


def serve(model: TinyLlama, arrival_s, prompt_tokens, output_tokens, *, max_num_seqs: int = 8, seed: int = 0,
          log=None) -> LoopResult:
    """Replay requests in wall-clock time (arrivals relative to the loop's start)."""
    rng = np.random.default_rng(seed)
    arrival = np.asarray(arrival_s, dtype=float)
    prompts = [rng.integers(1, model.m.vocab_size, int(p)).tolist() for p in prompt_tokens]
    outputs = [int(o) for o in output_tokens]
    N = len(arrival)
    times: list[list[float]] = [[] for _ in range(N)]
    free = list(range(max_num_seqs))[::-1]
    waiting: deque[int] = deque()
    running: dict[int, list] = {}  # req -> [slot, last token, ctx, emitted]
    steps: list[StepRecord] = []
    nxt, done = 0, 0
    t0 = time.perf_counter()
    while done < N:
        now = time.perf_counter() - t0
        while nxt < N and arrival[nxt] <= now:
            waiting.append(nxt)
            nxt += 1
        if not waiting and not running:
            _sleep_until(t0 + arrival[nxt])
            continue
        admitted = []
        while waiting and len(running) + len(admitted) < max_num_seqs:
            admitted.append(waiting.popleft())
        dec = list(running.items())
        slots = {i: free.pop() for i in admitted}
        toks = model.step([(slots[i], prompts[i]) for i in admitted], [(s, t, c) for _, (s, t, c, _) in dec])
        end = time.perf_counter() - t0
        steps.append(StepRecord(now, end, [c for _, (_, _, c, _) in dec], [len(prompts[i]) for i in admitted]))
        for j, i in enumerate(admitted):
            times[i].append(end)
            if outputs[i] <= 1:
                free.append(slots[i])
                done += 1
            else:
                running[i] = [slots[i], toks[j], len(prompts[i]), 1]
        for j, (i, st) in enumerate(dec):
            times[i].append(end)
            st[1], st[2], st[3] = toks[len(admitted) + j], st[2] + 1, st[3] + 1
            if st[3] >= outputs[i]:
                free.append(st[0])
                del running[i]
                done += 1
        if log is not None and len(steps) % 50 == 0:
            log(f"  step {len(steps)}: {done}/{N} done, {len(running)} running, {len(waiting)} waiting, t={end:.1f}s")
    return LoopResult(arrival, np.asarray(prompt_tokens), np.asarray(output_tokens), times, steps, time.perf_counter() - t0)


def _sleep_until(t: float) -> None:
    """Sleep, then spin the last 0.5 ms (time.sleep overshoots by ~0.1 ms)."""
    while True:
        left = t - time.perf_counter()
        if left <= 0:
            return
        if left > 1e-3:
            time.sleep(left - 5e-4)
