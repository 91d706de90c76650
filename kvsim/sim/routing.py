"""The prefix-aware router's picture of what each replica has cached: SGLang's cache-aware
routing policy on prefix block ids.

SGLang's router (sgl-router, ``cache_aware`` policy) keeps an approximate radix tree per worker of
the prompts it has sent there. For a request it finds the worker whose tree matches the longest
prefix; if the matched share of the prompt exceeds ``cache_threshold`` (default 0.5) the request
goes there, otherwise to the worker with the smallest tree (the least cached); and when the load
is imbalanced (the busiest worker's outstanding requests exceed the idlest's by more than
``balance_abs`` *and* by a factor ``balance_rel``) to the least loaded. The chosen worker's tree
takes the request's prompt.

Here a prompt is its prefix block ids (Mooncake ``hash_ids``, session and shared-prefix ids:
each id names its whole prefix, so a replica's tree is the set of ids routed to it and a match
is the count of leading ids in that set). Nothing is evicted (SGLang's tree evicts by size
over time; kvsim's replicas' own prefix caches do evict, the router's picture does not).
Before 2026-12-02 kvsim routed on a hash of the first block only: a first block that most
requests share (a system prompt) sent them all to one replica (Mooncake conversation, 4
replicas: 301 of 600 requests on one, fewer cached tokens than round-robin).
"""

from __future__ import annotations

CACHE_THRESHOLD = 0.5  # sgl-router's default cache_threshold


def route(router: str, i: int, loads: list[int], trace, trees: "PrefixTrees", balance_abs: int,
          balance_rel: float) -> int:
    """The replica for request ``i`` of ``trace`` (:mod:`kvsim.plan.cluster` routers; the cluster
    and its reference both call this): ``loads`` outstanding requests per replica; ``trees`` the
    prefix-aware router's record of what it sent where."""
    n = len(loads)
    if router == "round-robin":
        return i % n
    least = min(range(n), key=lambda k: (loads[k], k))
    blocks = trace.prefix_blocks[i] if trace.prefix_blocks is not None else ()
    if router == "least-outstanding" or not blocks:
        return least
    return trees.choose(blocks, loads, least, balance_abs, balance_rel)


class PrefixTrees:
    """Prefix block ids routed to each of ``n`` replicas, and the cache-aware choice."""

    def __init__(self, n: int) -> None:
        self.ids: list[set] = [set() for _ in range(n)]

    def choose(self, blocks, loads: list[int], least: int, balance_abs: int, balance_rel: float) -> int:
        """Replica for a request with prefix ids ``blocks`` (non-empty); ``loads``: outstanding
        requests per replica, ``least`` the least loaded (lowest index on ties). Records the choice."""
        hi, lo = max(loads), loads[least]
        if hi - lo > balance_abs and hi > balance_rel * lo:
            k = least
        else:
            k, best = 0, -1
            for r, seen in enumerate(self.ids):  # longest leading match, lowest index on ties
                matched = 0
                for b in blocks:
                    if b not in seen:
                        break
                    matched += 1
                if matched > best:
                    k, best = r, matched
            if best <= CACHE_THRESHOLD * len(blocks):
                k = min(range(len(self.ids)), key=lambda r: (len(self.ids[r]), r))  # the least cached
        self.ids[k].update(blocks)
        return k
