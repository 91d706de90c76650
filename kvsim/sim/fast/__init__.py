"""The simulator's fast layer: exact tabulated step prices, an array decode batch, and
fast-forwarded runs of decode steps. It plugs into :class:`kvsim.sim.replica.ReplicaSim`
through :class:`FastPath` and never re-implements a scheduling rule (the scheduler decides
every step it does not fast-forward) nor roofline's rule (its tables are work, priced by
:mod:`kvsim.costmodel.roofline`). ``tests/test_sim_reference.py`` checks it against
:mod:`kvsim.sim.reference`, an independent plain simulator.
"""

from __future__ import annotations

import numpy as np

from kvsim.costmodel.roofline import Roofline
from kvsim.sim.fast.batch import DecodeBatch
from kvsim.sim.fast.decode_run import DecodeRun, DecodeRunner, NextDecodeStep
from kvsim.sim.fast.pricer import StepPricer
from kvsim.sim.fast.work_ledger import WorkLedger
from kvsim.sim.kv_cache import KVLayout, LayoutBlocks

__all__ = ["DecodeBatch", "DecodeRun", "DecodeRunner", "FastPath", "NextDecodeStep", "RowBlocks", "StepPricer"]


class RowBlocks(LayoutBlocks):
    """Block counts from the pricer's per-request rows where they exist (prompt-aware methods),
    else from the layout: the same numbers, without calling the method per request."""

    def __init__(self, layout: KVLayout, pricer: StepPricer) -> None:
        super().__init__(layout)
        self.pricer = pricer

    def request_blocks(self, n_tokens: int, n_prompt: int, req_id: int) -> tuple[int, int]:
        got = self.pricer.row_blocks(req_id, n_tokens)
        return got if got is not None else self.layout.blocks1(n_tokens, n_prompt)

    def batch_blocks(self, n_tokens: np.ndarray, n_prompt: np.ndarray, req_ids: np.ndarray) -> tuple[int, int]:
        return self.pricer.rows_blocks_sum(req_ids, n_tokens)


class FastPath:
    """Pricer, block counter and decode-run flags of one replica.

    Args:
        step_model: the :class:`kvsim.pricing.step.StepModel` to reproduce (tests may pass a
            stand-in with its ``time_s``: then every step is priced by calling it).
        layout: the replica's KV layout.
        prompt, output: ``[N]`` effective prompt and output tokens (rejected requests: output 1).
        prefix_caching: prefix caching is on (decode runs then stop at finishes).
    """

    def __init__(self, step_model, layout: KVLayout, system, max_num_seqs: int, prompt: np.ndarray,
                 output: np.ndarray, *, prefix_caching: bool) -> None:
        lay = layout
        # per-sequence blocks after a decode step at ctx (summed over the batch with the price)
        extra = np.stack([np.append(lay.gpu_blocks[1:], lay.gpu_blocks[-1]),
                          np.append(lay.host_blocks[1:], lay.host_blocks[-1])], axis=1).astype(np.float64)
        extra_fn = (lambda ctx, p: lay.blocks(ctx + 1, p)) if lay.prompt_aware else None
        self.pricer = StepPricer(step_model, lay.max_tokens, max_num_seqs, extra=extra,
                                 extra_fn=extra_fn, roofline=Roofline(system), prompt=prompt, output=output)
        pr = self.pricer
        self.rows = pr.decode_mode == "rows"  # per-request rows: the pricer needs request ids
        self.blocks = RowBlocks(lay, pr) if (self.rows and lay.prompt_aware) else LayoutBlocks(lay)
        self.pass_prompts = lay.prompt_aware or pr.mode == "exact"  # (pr.prompt_aware: the same trait)
        self.through_finishes = pr.masked_ok and not prefix_caching

    def new_batch(self, max_num_seqs: int) -> DecodeBatch:
        return DecodeBatch(max_num_seqs, self.blocks, WorkLedger(self.pricer) if self.pricer.masked_ok else None)

    def decode_runner(self, sched, uses_host: bool, tbt_sink) -> DecodeRunner:
        return DecodeRunner(sched, self.pricer, pass_prompts=self.pass_prompts, pass_rids=self.rows,
                            through_finishes=self.through_finishes, uses_host=uses_host, tbt_sink=tbt_sink)

    def step_time(self, out, batch, next_step: NextDecodeStep | None) -> float:
        """Seconds of a scheduled step (``out``: a SchedulerOutput); ``next_step``: the decode
        price a run already computed for this batch, if still valid."""
        pf = out.prefill
        if len(pf) == 1:
            new, cached = (pf[0][1],), (pf[0][2],)
        else:
            new, cached = tuple(p[1] for p in pf), tuple(p[2] for p in pf)
        pr = self.pricer
        if out.num_decode and next_step is not None and next_step.matches(batch):
            if pr.mode == "fast" and not pr.joint_mixed:  # the run's decode price is all it needs: pass B
                return pr.step_time(out.num_decode, new, cached, out.n_sampled, decode_dt=next_step.dt_s)
            return pr.step_time(out.decode_ctx, new, cached, out.n_sampled, decode_dt=next_step.dt_s,
                                decode_prompt=batch.prompts() if self.pass_prompts else None,
                                rid=batch.rids() if self.rows else None, decode_sums=next_step.sums)
        return pr.step_time(out.decode_ctx, new, cached, out.n_sampled,
                            decode_prompt=batch.prompts() if self.pass_prompts else None,
                            rid=batch.rids() if self.rows else None)

    def release(self, req_id: int) -> None:
        """Request ``req_id`` will not decode again."""
        self.pricer.release(req_id)

    def ensure_rows(self, req_id: int) -> None:
        if self.rows:
            self.pricer.ensure_rows(req_id)

    def swap_time(self, nbytes: float) -> float:
        return self.pricer.swap_time(nbytes)
