"""Test-time-scaling workloads as synthetic traces: best-of-N, long chain-of-thought, tree search.

Each *task* (one problem) arrives on a Poisson process of ``rate`` tasks/s; ``n`` is the number
of requests (as in every synthetic spec: ``--num-requests`` caps it), so ``ceil(n / per_task)``
tasks are drawn and the last one may be cut short. KV sharing between the requests of a task is
expressed as prefix block ids (``Trace.prefix_blocks``, ``block`` tokens each, vLLM's 16 by
default), which drive the simulator's prefix cache as Mooncake ``hash_ids`` do.

* ``synthetic-best-of-n`` (:class:`BestOfNParams`): ``samples`` requests per task arrive
  together with one prompt (the same block ids), each generating ``output`` tokens (Kinetics'
  Best-of-N, arXiv 2506.05333 §2). The simulator caches a prompt's blocks when its prefill
  chunk is scheduled (vLLM v1's rule), so the samples admitted behind the first one, in the same
  step or later, hit its prompt. ``fork_s`` > 0 sends samples 2..N
  that many seconds after the first (an engine that prefills once, then forks: SGLang's
  ``fork``, vLLM's parallel sampling after the prompt is cached).
* ``synthetic-cot`` (:class:`CoTParams`): one request per task, a prompt of ``prompt`` tokens
  and a long generation drawn from a lognormal with mean ``output`` and coefficient of
  variation ``output_cv``, cut at ``max_output`` (the generation budget; Kinetics' Long-CoT
  runs cap it at 32K). The defaults are illustrative, not fitted to a measured trace.
* ``synthetic-tree`` (:class:`TreeParams`): ETS-style tree search (Hooper et al., "ETS:
  Efficient Tree Search for Inference-Time Scaling", 2025): ``depth`` levels of ``width``
  nodes; each node is a request generating ``step`` tokens after the root prompt and its
  ancestors' steps. After each level ``keep = max(1, round(retain * width))`` nodes survive
  pruning and share the ``width`` children of the next level as evenly as possible (node ``i``
  of the kept ones gets ``width // keep`` children, one more when ``i < width % keep``), so
  KV is shared along every path. Level ``d`` arrives ``d * level_s`` seconds after its task
  (a trace cannot wait for the previous level to finish: pick ``level_s`` near one level's
  generation time). A node's block ids cover its prompt *and* its generated step (its token
  stream), so the simulator caches the step's full blocks when the node finishes (generated
  tokens' KV, :meth:`kvsim.sim.scheduler.Scheduler.register_generated`, vLLM's caching of full
  generated blocks); its children, whose prompt is that stream, share the stream's full blocks.
  The block that straddles the end of a node's prompt is the node's own (siblings generate
  different tokens into it), as are the blocks after it.

Block ids: every id is a fresh integer unless shared as above; ``block`` tokens per id.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, model_validator

from kvsim.errors import TraceError
from kvsim.specbase import Float, number
from kvsim.traces.arrivals import poisson_arrivals
from kvsim.traces.pipeline import RawRequests
from kvsim.traces.sessions import BLOCK_TOKENS
from kvsim.traces.synthetic import Rate, Tokens, _Params

Samples = number(int, 1, 100_000, unit="samples")
Width = number(int, 1, 10_000, unit="nodes")
Depth = number(int, 1, 10_000, unit="levels")
BlockTokens = number(int, 1, 1_048_576, unit="tokens")
#: most prefix block ids a generated trace may hold (about 0.4 GB of Python ints)
MAX_BLOCK_IDS = 10_000_000


class _TaskParams(_Params):
    rate: Rate = Field(1.0, description="task arrival rate, tasks/s (Poisson)")
    prompt_tokens: Tokens = Field(512, alias="prompt", description="prompt tokens of a task")
    block: BlockTokens = Field(BLOCK_TOKENS, description="tokens per prefix block id")


class BestOfNParams(_TaskParams):
    """N samples of one prompt arriving together, sharing the prompt's KV."""

    samples: Samples = Field(8, alias="N", description="samples per task (best-of-N)")
    output_tokens: Tokens = Field(8192, alias="output", description="tokens generated per sample")
    fork_s: Float = Field(0.0, ge=0, le=1e6, description="seconds after the first sample that the others arrive")


class CoTParams(_TaskParams):
    """One long chain-of-thought generation per task, lognormal length cut at the budget."""

    output_tokens: Tokens = Field(8192, alias="output", description="mean generated tokens before the cut")
    output_cv: Float = Field(0.5, ge=0, le=10, description="CV of generated tokens (0: all equal)")
    max_output: Tokens = Field(32768, description="generation budget: longest output, tokens")


class TreeParams(_TaskParams):
    """ETS-style tree search: depth levels of width nodes, a retain fraction kept per level."""

    width: Width = Field(16, description="nodes per level")
    depth: Depth = Field(8, description="levels (reasoning steps)")
    step_tokens: Tokens = Field(256, alias="step", description="tokens generated per node")
    retain: Float = Field(0.25, gt=0, le=1, description="fraction of a level's nodes kept after pruning")
    level_s: Float = Field(1.0, ge=0, le=1e6, description="seconds between a task's levels")

    @model_validator(mode="after")
    def _size(self) -> TreeParams:
        if self.width * self.depth > 10_000_000:
            raise ValueError(f"width x depth = {self.width * self.depth} nodes per task exceeds 10,000,000")
        # each node lists the block ids of its prompt and step (its level's stream): one task holds
        # width x sum over levels of ceil((prompt + (d + 1) step) / block) ids, all built before any is kept
        ids = self.width * sum(stream_blocks(self, d) for d in range(self.depth))
        if ids > MAX_BLOCK_IDS:
            raise ValueError(f"one task of width {self.width} and depth {self.depth} lists {ids:,} prefix block ids, "
                             f"more than {MAX_BLOCK_IDS:,} (~0.4 GB): lower width, depth or step, or raise block")
        return self


def stream_blocks(p: TreeParams, d: int) -> int:
    """Block ids of a level-``d`` node's stream: its prompt (the root's and ``d`` steps) and its own step."""
    return -(-(p.prompt_tokens + (d + 1) * p.step_tokens) // p.block)


TTSParams = BestOfNParams | CoTParams | TreeParams


def per_task(params: TTSParams) -> int:
    """Requests per task."""
    if isinstance(params, BestOfNParams):
        return params.samples
    if isinstance(params, TreeParams):
        return params.width * params.depth
    return 1


def _ids(start: int, count: int) -> tuple[tuple[int, ...], int]:
    return tuple(range(start, start + count)), start + count


def lognormal_lengths(n: int, mean: float, cv: float, hi: int, rng: np.random.Generator) -> np.ndarray:
    """[n] int64 lengths ~ lognormal with the given mean and CV (sigma^2 = ln(1 + cv^2),
    mu = ln(mean) - sigma^2 / 2), rounded and clipped to [1, hi]; cv 0 gives ``mean``."""
    if cv == 0:
        x = np.full(n, float(mean))
    else:
        s2 = math.log1p(cv * cv)
        x = rng.lognormal(math.log(mean) - s2 / 2.0, math.sqrt(s2), n)
    return np.clip(np.rint(x), 1, hi).astype(np.int64)


def tree_children(width: int, keep: int) -> list[int]:
    """Children of each of the ``keep`` survivors so the next level has ``width`` nodes."""
    return [width // keep + (1 if i < width % keep else 0) for i in range(keep)]


def _tree(p: TreeParams, t0: float, next_id: int):
    """Requests of one tree task: (times, prompts, outputs, blocks), next free id. A node's ids cover
    its prompt and its step (``ceil((plen + step) / block)``): the full blocks of its prompt shared
    with its parent's stream (the root prompt's at level 0), then ids of its own."""
    B, P, s = p.block, p.prompt_tokens, p.step_tokens
    keep = max(1, round(p.retain * p.width))
    root, next_id = _ids(next_id, P // B)  # the root prompt's full blocks, shared by level 0
    level = [root] * p.width  # shared ids of each node's prompt (its full blocks) at the current level
    times, prompts, outputs, blocks = [], [], [], []
    for d in range(p.depth):
        plen = P + d * s
        stream = stream_blocks(p, d)  # blocks of a node's prompt and step
        nodes = []
        for shared in level:
            tail, next_id = _ids(next_id, stream - len(shared))
            nodes.append(shared + tail)
            times.append(t0 + d * p.level_s)
            prompts.append(plen)
            outputs.append(s)
        blocks += nodes
        if d + 1 == p.depth:
            break
        full = (plen + s) // B  # a child's prompt is its parent's stream: its full blocks are shared
        level = [ids[:full] for ids, n_child in zip(nodes[:keep], tree_children(p.width, keep)) for _ in range(n_child)]
    return times, prompts, outputs, blocks, next_id


def generate(params: TTSParams, rng: np.random.Generator) -> RawRequests:
    """Draw ``params.num_requests`` requests of ``ceil(n / per_task)`` tasks (module docstring)."""
    n, k = params.num_requests, per_task(params)
    tasks = -(-n // k)
    B, P = params.block, params.prompt_tokens
    longest = P + params.depth * params.step_tokens if isinstance(params, TreeParams) else P  # tree: ids cover the step
    held = (n if isinstance(params, TreeParams) else tasks) * -(-longest // B)  # ids held, an upper bound
    if held > MAX_BLOCK_IDS:
        raise TraceError(f"this trace would hold about {held:,} prefix block ids (more than {MAX_BLOCK_IDS:,}): "
                         f"give a larger block= (now {B}), shorter prompts or fewer requests")
    t_task = poisson_arrivals(tasks, params.rate, rng)
    if isinstance(params, TreeParams):
        times: list[float] = []
        prompts: list[int] = []
        outputs: list[int] = []
        blocks: list[tuple[int, ...]] = []
        next_id = 0
        for t0 in t_task.tolist():
            tt, pp, oo, bb, next_id = _tree(params, t0, next_id)
            times += tt
            prompts += pp
            outputs += oo
            blocks += bb
            if len(times) >= n:
                break
        t, prompt, output = np.asarray(times[:n]), np.asarray(prompts[:n], dtype=np.int64), np.asarray(outputs[:n], dtype=np.int64)
        blocks = blocks[:n]
    else:
        nb = -(-P // B)
        t = np.repeat(t_task, k)[:n]
        if isinstance(params, BestOfNParams) and params.fork_s > 0:
            t = t + np.where(np.arange(n) % k == 0, 0.0, params.fork_s)  # the rest fork after the first
        prompt = np.full(n, P, dtype=np.int64)
        if isinstance(params, BestOfNParams):
            output = np.full(n, params.output_tokens, dtype=np.int64)
        else:
            output = lognormal_lengths(n, params.output_tokens, params.output_cv, params.max_output, rng)
        per = [tuple(range(i * nb, (i + 1) * nb)) for i in range(tasks)]  # one tuple per task, shared
        blocks = [per[i // k] for i in range(n)]
    meta = {"tasks": tasks, "requests_per_task": k}
    return RawRequests(time_s=np.asarray(t, dtype=np.float64), prompt_tokens=prompt, output_tokens=output,
                       prefix_blocks=blocks, prefix_block_tokens=B, meta=meta)


def kv_sharing(prompt_tokens: np.ndarray, blocks, block_tokens: int) -> dict:
    """Prompt KV blocks the requests name in all (``total``) and distinct ones (``distinct``):
    ``total / distinct`` is how many times a shared prefix cache can reuse each block at most. Only
    the ids of a request's prompt count, ``ceil(prompt / block_tokens)`` (a tree node's ids go on
    over its generated step)."""
    named = [b[: -(-int(p) // block_tokens)] for p, b in zip(np.asarray(prompt_tokens).tolist(), blocks)]
    total = int(sum(len(b) for b in named))
    distinct = len({i for b in named for i in b})
    return {"total_blocks": total, "distinct_blocks": distinct,
            "reuse_factor": total / distinct if distinct else 0.0, "block_tokens": block_tokens}
