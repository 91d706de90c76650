"""ShareGPT-format conversations as multi-turn sessions.

Format (``ShareGPT_V3_unfiltered_cleaned_split.json`` of anon8231489123/ShareGPT_Vicuna_unfiltered,
the file ``vllm bench serve --dataset-name sharegpt`` reads): a JSON array (or JSONL, one per
line) of ``{"id": "QWJhYvA_0", "conversations": [{"from": "human", "value": "..."},
{"from": "gpt", "value": "..."}, ...]}``. Also accepted: ``messages`` for ``conversations``,
``role``/``content`` for ``from``/``value``. Roles: ``human``/``user`` and ``system`` are
prompt text; ``gpt``/``assistant``/``chatgpt``/``bard``/``bing``/``model`` are replies.

Requests: every reply that has at least one message before it in its conversation is one
request: prompt = the tokens of *all* earlier messages (the history a chat client sends),
output = the reply's tokens. Chat-template tokens are not counted. Entries whose ids differ
only by a ``_<n>`` suffix (FastChat's ``split_long_conversation`` chunks, e.g. ``hRPPgZT_0``,
``hRPPgZT_11``) are one conversation, joined in file order. A conversation is a session
(:mod:`kvsim.traces.sessions`): a later turn reuses the earlier turns' prompt blocks.

Token counts: with ``tokenizer`` (a local ``tokenizer.json``) and the optional ``tokenizers``
package, exact counts (``encode(text, add_special_tokens=False)``); otherwise the approximation
``ceil(characters / 4)`` (about 4 characters per token for English text with GPT-style BPE
tokenizers), which the trace's notice and ``meta["token_counts"]`` state.

The file has no arrival times: ``--arrivals`` gives them (requests in file order: the turns
of a conversation follow each other, not the previous reply).
"""

from __future__ import annotations

import re
from pathlib import Path

from kvsim.errors import TraceError
from kvsim.traces.badrows import BadRow, BadRows
from kvsim.traces.base import Trace
from kvsim.traces.pipeline import LoadOptions
from kvsim.traces.tabular import Table, finish
from kvsim.traces.values import json_lines, load_json

USER_ROLES = frozenset({"human", "user", "system"})
REPLY_ROLES = frozenset({"gpt", "assistant", "chatgpt", "bard", "bing", "model"})
CHARS_PER_TOKEN = 4  # approximation without a tokenizer
_CHUNK = re.compile(r"^(.*)_\d+$")


def looks_like_sharegpt(obj) -> bool:
    """An entry with a ``conversations`` or ``messages`` list."""
    return isinstance(obj, dict) and isinstance(obj.get("conversations", obj.get("messages")), list)


def approx_tokens(text: str) -> int:
    """``ceil(len(text) / 4)``: characters (code points) / 4, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


def _messages(entry) -> list[tuple[bool, str]]:
    """``[(is_reply, text)]`` of one entry; BadRow ``bad_conversation``/``unparseable`` otherwise."""
    if not isinstance(entry, dict):
        raise BadRow("unparseable", f"expected a JSON object with 'conversations', got {type(entry).__name__}")
    msgs = entry.get("conversations", entry.get("messages"))
    if not isinstance(msgs, list):
        raise BadRow("bad_conversation", "expected a list under 'conversations' (or 'messages')")
    out = []
    for j, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise BadRow("bad_conversation", f"message {j} is not an object")
        role = m.get("from", m.get("role"))
        text = m.get("value", m.get("content"))
        if not isinstance(role, str) or role.strip().lower() not in USER_ROLES | REPLY_ROLES:
            raise BadRow("bad_conversation", f"message {j}: 'from' must be one of human, gpt, user, assistant, system "
                                             f"(got {role!r})"[:200])
        if not isinstance(text, str):
            raise BadRow("bad_conversation", f"message {j}: 'value' must be text, got {type(text).__name__}")
        out.append((role.strip().lower() in REPLY_ROLES, text))
    return out


def _counter(tokenizer: Path | None):
    """``(count(texts) -> list[int], description, exact)``."""
    if tokenizer is None:
        return (lambda texts: [approx_tokens(t) for t in texts],
                f"approximate: ceil(characters / {CHARS_PER_TOKEN})", False)
    tokenizer = Path(tokenizer).expanduser()
    if not tokenizer.is_file():
        raise TraceError(f"--tokenizer {tokenizer}: file not found (a local tokenizer.json)")
    try:
        # lazy: optional package, only for exact ShareGPT token counts
        from tokenizers import Tokenizer
    except ImportError:
        raise TraceError("--tokenizer needs the optional package 'tokenizers' (pip install tokenizers); "
                         "without --tokenizer, token counts are approximated as ceil(characters / 4)") from None
    try:
        tok = Tokenizer.from_file(str(tokenizer))
    except Exception as err:  # the Rust library raises its own exception type
        raise TraceError(f"--tokenizer {tokenizer}: not a tokenizers JSON file ({str(err).splitlines()[0][:200]})") from None

    def count(texts: list[str]) -> list[int]:
        return [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]

    return count, f"exact: tokenizer {tokenizer.name}", True


def read_sharegpt(path: Path, opts: LoadOptions, data: list | None = None) -> Trace:
    """Load ShareGPT conversations (JSON array or JSONL) as a multi-turn trace."""
    path = Path(path)
    count, how, exact = _counter(opts.tokenizer)
    bad = BadRows(opts.strict)
    if data is None and path.name.endswith((".jsonl", ".jsonl.gz")):
        entries = [(f"{path}:{line}", v) for line, v in json_lines(path)]
    else:
        data = load_json(path) if data is None else data
        if not isinstance(data, list):
            raise TraceError(f"{path}: expected a JSON array of conversations, got {type(data).__name__}")
        entries = [(f"{path}: conversation {i}", v) for i, v in enumerate(data, start=1)]
    conversations: dict[str, list[tuple[bool, str]]] = {}
    for where, entry in entries:
        try:
            if isinstance(entry, BadRow):
                raise entry
            msgs = _messages(entry)
        except BadRow as b:
            bad.add_row(b, where)
            continue
        ident = entry.get("id")
        ident = str(ident) if ident is not None else where
        m = _CHUNK.match(ident)
        conversations.setdefault(m.group(1) if m else ident, []).extend(msgs)
    texts = [text for msgs in conversations.values() for _, text in msgs]
    counts = iter(count(texts)) if texts else iter(())
    table = Table(has_arrival=False, has_session=True)
    n_messages = 0
    for key, msgs in conversations.items():
        before = 0
        for j, (is_reply, _) in enumerate(msgs):
            n = next(counts)
            n_messages += 1
            if is_reply and j > 0:
                table.add(0.0, before, n, key)
            before += n
    notes = [] if exact else [f"token counts are approximate (ceil(characters / {CHARS_PER_TOKEN})); "
                              "give --tokenizer PATH/tokenizer.json (optional package tokenizers) for exact counts"]
    meta = {"token_counts": how, "conversations": len(conversations), "messages": n_messages}
    return finish(path, table, opts, bad, fmt="sharegpt", arrival_label="ShareGPT has no arrival times",
                  notes=notes, meta=meta)
