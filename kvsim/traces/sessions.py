"""Multi-turn sessions as prefix blocks: a later turn reuses the KV of the turns before it.

A session (BurstGPT_3 ``Session ID``, a ShareGPT conversation, a generic file's
``session`` column) is one growing token stream. Every prompt of a turn is taken to hold
the session's history, as a chat client sends it: BurstGPT_3's ``Request tokens`` already
do (in the bundled slice 188 of 259 follow-up turns have ``Request tokens`` >= the previous
turn's request + response tokens), and the ShareGPT reader builds its prompts so.

The stream is cut into blocks of :data:`BLOCK_TOKENS` tokens (vLLM's default KV block
size); block j of a stream gets one id, shared by every turn whose prompt covers it. So
the simulator's prefix cache (``sim/scheduler.py``: full prompt blocks are registered when their
prefill chunk is scheduled, looked up at admission) lets turn k reuse the full blocks of turn k-1's prompt.

Continuation rule (a turn's prompt never says which earlier tokens it kept): a turn whose
prompt is at least as long as the session's previous prompt continues the stream (the
previous prompt is its prefix); a shorter prompt means the client cut the history (a
context window, an edited message), so the session starts a new stream and reuses nothing.
Turn k's own blocks beyond the previous prompt get new ids.

Replies (when the reader passes ``output``): a turn's ids name its prompt *and* its output,
``ceil((prompt + output) / 16)`` blocks, so the simulator caches the full blocks of the reply
when the turn finishes (vLLM caches full blocks of generated tokens; rule 3b of
:mod:`kvsim.sim.reference`), and the next turn reuses them when its prompt holds the whole
previous turn (``prompt >= previous prompt + previous output``: the history was resent with the
reply). A turn that continues the stream but is shorter than that (the reply was not resent in
full) keeps only the previous prompt's full blocks: the block holding the previous prompt's end
and the reply's start gets a new id, as do the blocks after it. Without ``output`` the ids name
prompts only and a reply is never reused (reuse underestimated by at most the previous output).

Rows that will be dropped (0 prompt or 0 output tokens) neither continue nor cut a stream, and
neither do prompts above :data:`MAX_STREAM_TOKENS` (no model serves them, and their block ids
alone would take gigabytes: a 2**31-token prompt is 134M ids); ``stats["too_long"]`` counts them.
A reply that would take a turn past that cap is not named (the turn's ids name its prompt only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLOCK_TOKENS = 16  # tokens per prefix block: vLLM's default --block-size
#: longest prompt given prefix blocks: 2**24 = 16.8M tokens, above every shipped model's context
#: (Llama-4-Scout's 10M the longest); at 16 tokens a block, 1M ids (~40 MB of Python ints) per turn
MAX_STREAM_TOKENS = 2**24


def session_blocks(
    sessions: Sequence, prompt: np.ndarray, time_s: np.ndarray, usable: np.ndarray | None = None,
    block_tokens: int = BLOCK_TOKENS, output: np.ndarray | None = None,
) -> tuple[list[tuple[int, ...]], dict]:
    """Prefix block ids per row and what was found.

    Parameters
    ----------
    sessions : [N] session key per row (hashable); None or "" = not part of a session.
    prompt : [N] int prompt tokens; time_s : [N] arrival, rows are visited in stable time order.
    usable : [N] bool rows that will be simulated (others get no blocks and leave streams as they are).
    block_tokens : tokens per block.
    output : [N] int output tokens, or None: with it the ids also name each turn's reply (module docstring).

    Returns
    -------
    (blocks, stats): blocks[i] = ids of the ceil(prompt[i] / block_tokens) blocks of row i's
    prompt, ceil((prompt[i] + output[i]) / block_tokens) with ``output`` (``()`` outside sessions); stats = ``{"sessions", "turns", "continued", "restarted"}``
    (turns in sessions; follow-up turns that continued or restarted their stream).
    """
    n = len(prompt)
    blocks: list[tuple[int, ...]] = [()] * n
    streams: dict = {}  # session -> [ids of the stream's blocks, previous prompt, previous prompt + output tokens]
    next_id = 0
    turns = continued = restarted = too_long = 0
    for i in np.argsort(time_s, kind="stable").tolist():
        key = sessions[i]
        if key is None or key == "" or key == b"" or (usable is not None and not usable[i]):
            continue
        p = int(prompt[i])
        if p > MAX_STREAM_TOKENS:
            too_long += 1
            continue
        total = p + (int(output[i]) if output is not None else 0)  # tokens the turn's ids name
        if total > MAX_STREAM_TOKENS:  # a reply too long to name (its ids alone): the prompt only
            total = p
        need = -(-total // block_tokens)
        turns += 1
        state = streams.get(key)
        if state is None or p < state[1]:
            if state is not None:
                restarted += 1
            state = streams[key] = [[], 0, 0]
        else:
            continued += 1
            if p < state[2]:  # the previous reply was not resent whole: keep the previous prompt's full blocks
                del state[0][state[1] // block_tokens:]
        ids = state[0]
        if len(ids) < need:
            ids.extend(range(next_id, next_id + need - len(ids)))
            next_id = ids[-1] + 1
        blocks[i] = tuple(ids[:need])
        state[1], state[2] = p, total
    stats = {"sessions": len(streams), "turns": turns, "continued": continued, "restarted": restarted,
             "block_tokens": block_tokens, "too_long": too_long}
    return blocks, stats


def describe(stats: dict) -> str:
    """``"136 sessions, 393 turns (242 continue their session, 15 restart it), 16-token blocks"``."""
    plural = "" if stats["sessions"] == 1 else "s"
    text = (f"{stats['sessions']} session{plural}, {stats['turns']} turns ({stats['continued']} continue their session, "
            f"{stats['restarted']} restart it), {stats['block_tokens']}-token prefix blocks")
    if stats.get("too_long"):
        text += f"; {stats['too_long']:,} turns above {MAX_STREAM_TOKENS:,} prompt tokens left out of sessions"
    return text
