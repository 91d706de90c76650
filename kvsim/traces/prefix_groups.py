"""Shared prompt prefixes named by a trace's columns: ``--columns ...,prefix=COL,prefix_tokens=COL``.

Rows with the same ``prefix`` value begin with the same tokens (a system prompt, a shared
document, a few-shot header), ``prefix_tokens`` of them in that row; an empty ``prefix`` shares
nothing. The shared tokens are cut into blocks of :data:`~kvsim.traces.sessions.BLOCK_TOKENS`
(16, vLLM's default KV block); block ``j`` of group ``g`` gets one id, shared by every row of
``g`` whose ``prefix_tokens`` covers it whole. Only whole blocks are named: the block holding a
prefix's last tokens and the row's own first ones differs from row to row, as vLLM's block
hashes (which chain every token of the block and the blocks before it) do. Two rows of a group
with different ``prefix_tokens`` share the shorter one's whole blocks.

The ids become ``Trace.prefix_blocks`` (16-token blocks), so the simulator's prefix cache lets a
row reuse the blocks of its group that an earlier row computed (vLLM v1 caches them when their
prefill chunk is scheduled). A ``prefix_tokens`` above the row's prompt is a bad row
(``bad_token_count``); one above :data:`~kvsim.traces.sessions.MAX_STREAM_TOKENS` names that
many tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvsim.traces.sessions import BLOCK_TOKENS, MAX_STREAM_TOKENS


def prefix_group_blocks(groups: Sequence, prefix_tokens: Sequence[int], usable: Sequence[bool] | None = None,
                        block_tokens: int = BLOCK_TOKENS) -> tuple[list[tuple[int, ...]], dict]:
    """Block ids per row and what was found.

    ``groups``: [N] group key per row (None: no shared prefix); ``prefix_tokens``: [N] shared tokens
    of each row (at most its prompt); ``usable``: [N] rows that will be simulated (others get no ids).
    Returns ``(blocks, stats)``: ``blocks[i]`` = ids of the ``prefix_tokens[i] // block_tokens`` whole
    shared blocks of row ``i``; ``stats`` = ``{"groups", "rows", "shared_blocks", "block_tokens"}``.
    """
    ids: dict = {}  # (group, block index) -> id
    blocks: list[tuple[int, ...]] = []
    rows = 0
    for i, (g, n) in enumerate(zip(groups, prefix_tokens)):
        if g is None or (usable is not None and not usable[i]):
            blocks.append(())
            continue
        rows += 1
        out = []
        for j in range(min(int(n), MAX_STREAM_TOKENS) // block_tokens):
            out.append(ids.setdefault((g, j), len(ids)))
        blocks.append(tuple(out))
    n_groups = len({g for g, _ in ids})
    return blocks, {"groups": n_groups, "rows": rows, "shared_blocks": len(ids), "block_tokens": block_tokens}


def describe(stats: dict) -> str:
    """``"3 shared prefixes over 50 requests (500 distinct 16-token blocks)"``."""
    return (f"{stats['groups']:,} shared prefix{'' if stats['groups'] == 1 else 'es'} over {stats['rows']:,} "
            f"request{'' if stats['rows'] == 1 else 's'} ({stats['shared_blocks']:,} distinct "
            f"{stats['block_tokens']}-token blocks)")
