"""Non-prefix KV reuse and KV streaming (issue 14 items 3-4), priced through the one step model.

* :mod:`.blend`: CacheBlend (chunk KVs reused at any position, a fraction recomputed per layer,
  loading of layer l+1 pipelined with recomputing layer l) against full recompute and prefix caching.
* :mod:`.stream`: CacheGen (encoded KV streamed over a link, decoded per chunk, pipelined)
  against recomputation, choosing the faster.
* :mod:`.pipeline`: the two-stage pipeline both use.
"""
