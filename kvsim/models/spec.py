"""Pydantic model of a transformer spec, with derived parameter and KV counts.

Parameter counts follow SPECS.md F1: per layer, attention projections
``h*n_h*d + 2*h*n_kv*d + n_h*d*h`` (+ biases), MLP ``3*h*f`` (gated, SwiGLU) or ``2*h*f``
(OPT/GPT), MoE ``E*3*h*f_e + h*E`` (router); embeddings ``V*h``, LM head ``V*h`` unless tied.
Hybrid models (:class:`SSMSpec`): ``ssm.num_layers`` layers have a state-space mixer instead
of attention (its parameters in :meth:`SSMSpec.params_per_layer`); only the other
``attn_layers`` keep a KV cache.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from kvsim.errors import ConfigError
from kvsim.specbase import INT32_MAX, Bool, Strict, number

# Model dimensions and counts: whole numbers (not booleans) up to 2**31 - 1, so products such
# as vocab x hidden stay far inside int64.
Dim = number(int, 1, INT32_MAX)
Dim0 = number(int, 0, INT32_MAX)
#: layers: methods keep per-layer lists (MagicPIG's dense layers, PyramidKV's budgets), so a
#: typo of 2**31 layers must not allocate gigabytes (the largest models have ~130 layers)
Layers = number(int, 1, 10_000)


class MoESpec(Strict):
    num_experts: Dim = Field(description="routed experts per MoE layer")
    experts_per_token: Dim = Field(description="top-k routed experts per token")
    expert_intermediate_size: Dim
    num_shared_experts: Dim0 = Field(0, description="always-active experts (DeepSeekMoE)")
    shared_intermediate_size: Dim0 = Field(0, description="width of each shared expert")
    first_dense_layers: Dim0 = Field(0, description="leading layers with a dense MLP instead")
    dense_intermediate_size: Dim0 = Field(0, description="MLP width of the dense (non-MoE) layers")
    moe_layers: Dim | None = Field(
        None, description="how many layers are MoE when they are interleaved with dense ones (Llama-4 "
        "Maverick: every 2nd layer; Qwen-MoE decoder_sparse_step / mlp_only_layers); every other layer has "
        "a dense MLP of dense_intermediate_size. None: every layer after first_dense_layers. The cost "
        "model sums over layers, so only the count matters, not which layers")


class MLASpec(Strict):
    """Multi-head latent attention (DeepSeek-V2 §2.1): the cache holds c_KV and the RoPE key."""

    kv_lora_rank: Dim = Field(description="d_c, latent width cached per token per layer")
    qk_rope_head_dim: Dim = Field(description="d_h^R, decoupled RoPE key cached per token per layer")
    qk_nope_head_dim: Dim
    v_head_dim: Dim
    q_lora_rank: Dim | None = None


class SSMSpec(Strict):
    """State-space (Mamba) mixer layers of a hybrid model (Jamba, Zamba, Nemotron-H, Granite-4-H).

    Each of ``num_layers`` layers has a selective-SSM mixer in place of attention; its MLP / MoE
    is unchanged. Per sequence it keeps a constant recurrent state instead of a growing KV cache:

    * mamba1 (Gu & Dao 2023, Algorithm 2; HF ``MambaMixer`` / ``JambaMambaMixer``), inner width
      ``d_i = expand * h``: SSM state ``d_i * d_state`` + convolution state ``(d_conv - 1) * d_i``;
    * mamba2 (Dao & Gu 2024, SSD §7; HF ``Mamba2Mixer``), ``num_heads * head_dim = d_i``: SSM
      state ``num_heads * head_dim * d_state`` + convolution state ``(d_conv - 1) * conv_dim`` with
      ``conv_dim = d_i + 2 * n_groups * d_state``.
    """

    kind: Literal["mamba1", "mamba2"]
    num_layers: Layers = Field(description="layers whose mixer is this SSM; the model's other layers attend")
    d_state: Dim = Field(description="SSM state size N per channel (mamba1) or per head dim (mamba2)")
    d_conv: Dim = Field(4, description="causal depthwise convolution taps")
    expand: Dim = Field(2, description="inner width d_i = expand x hidden_size")
    dt_rank: Dim | None = Field(None, description="mamba1: rank of the time-step projection (default ceil(h/16))")
    num_heads: Dim | None = Field(None, description="mamba2: SSM heads")
    head_dim: Dim | None = Field(None, description="mamba2: channels per SSM head")
    n_groups: Dim = Field(1, description="mamba2: B/C groups")
    conv_bias: Bool = True
    proj_bias: Bool = False

    def d_inner(self, hidden: int) -> int:
        return self.expand * hidden

    def conv_channels(self, hidden: int) -> int:
        """Channels the convolution runs over (and keeps ``d_conv - 1`` past columns of)."""
        d_i = self.d_inner(hidden)
        return d_i if self.kind == "mamba1" else d_i + 2 * self.n_groups * self.d_state

    def state_elements_per_layer(self, hidden: int) -> int:
        """Recurrent-state elements one sequence keeps per SSM layer (class docstring).

        Jamba-v0.1 (mamba1, h 4096, expand 2, N 16, 4 taps): 8192 x 16 + 3 x 8192 = 155,648."""
        d_i = self.d_inner(hidden)
        return d_i * self.d_state + (self.d_conv - 1) * self.conv_channels(hidden)

    def params_per_layer(self, hidden: int) -> int:
        """Parameters of one SSM mixer (norms inside the mixer not counted: < 0.01 %).

        mamba1: in_proj ``h x 2 d_i``, conv ``d_i x d_conv`` (+ bias), x_proj ``d_i x (r + 2N)``,
        dt_proj ``r x d_i + d_i``, ``A_log`` ``d_i x N``, ``D`` ``d_i``, out_proj ``d_i x h``.
        mamba2: in_proj ``h x (d_i + conv_dim + heads)``, conv ``conv_dim x d_conv`` (+ bias),
        ``dt_bias``/``A_log``/``D`` one per head, gated norm ``d_i``, out_proj ``d_i x h``.
        Projection biases (``proj_bias``) add their output widths."""
        h, d_i, n = hidden, self.d_inner(hidden), self.d_state
        conv = self.conv_channels(hidden)
        conv_p = conv * self.d_conv + (conv if self.conv_bias else 0)
        bias = self.proj_bias
        if self.kind == "mamba1":
            r = self.dt_rank or -(-h // 16)
            in_w = 2 * d_i
            return (h * in_w + (in_w if bias else 0) + conv_p + d_i * (r + 2 * n) + r * d_i + d_i
                    + d_i * n + d_i + d_i * h + (h if bias else 0))
        in_w = d_i + conv + self.num_heads
        return h * in_w + (in_w if bias else 0) + conv_p + 3 * self.num_heads + d_i + d_i * h + (h if bias else 0)

    def in_proj_width(self, hidden: int) -> int:
        """Output width of the input projection (activations written per token)."""
        d_i = self.d_inner(hidden)
        return 2 * d_i if self.kind == "mamba1" else d_i + self.conv_channels(hidden) + self.num_heads

    def scan_flops_per_token(self, hidden: int) -> int:
        """FLOPs per token of the convolution and the recurrent scan of one layer [DERIVED].

        Per state element the step ``s = exp(dt A) s + dt B x`` and the read-out ``y += C s`` are
        ~6 FLOPs (exp, 3 for the update, 2 for the read-out; Mamba §3.3: O(B L D N) work); the
        convolution is ``2 d_conv`` FLOPs per channel. The SSD chunked form of prefill adds
        intra-chunk matmuls that this does not count."""
        d_i = self.d_inner(hidden)
        return 6 * d_i * self.d_state + 2 * self.d_conv * self.conv_channels(hidden)

    @model_validator(mode="after")
    def _check(self) -> "SSMSpec":
        if self.kind == "mamba2":
            if self.num_heads is None or self.head_dim is None:
                raise ValueError("ssm kind mamba2 needs num_heads and head_dim")
            if self.dt_rank is not None:
                raise ValueError("ssm dt_rank is a mamba1 field (mamba2 has one time step per head)")
        elif self.num_heads is not None or self.head_dim is not None:
            raise ValueError("ssm num_heads/head_dim are mamba2 fields (mamba1 has one state per channel)")
        return self


class ModelSpec(Strict):
    kind: Literal["model"] = "model"
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    aliases: list[str] = []
    hf_id: str = ""
    architecture: str
    num_layers: Layers
    hidden_size: Dim
    num_heads: Dim = Field(description="query heads")
    num_kv_heads: Dim = Field(description="KV heads (MHA: = num_heads; MLA: 1 latent 'head')")
    head_dim: Dim
    intermediate_size: Dim0 = Field(description="dense MLP width (0 if every layer is MoE)")
    vocab_size: Dim
    max_context_tokens: Dim
    mlp_gated: Bool = Field(True, description="SwiGLU (3 matrices) vs plain 2-matrix MLP (OPT)")
    tie_word_embeddings: Bool = False
    attention_bias: Bool = False
    sliding_window: Dim | None = Field(
        None, description="tokens a windowed layer attends to (sliding-window or chunked local attention)")
    sliding_window_layers: Dim | None = Field(
        None, description="how many layers use sliding_window (hybrid layouts: Gemma-2 1 in 2, Gemma-3 5 in "
        "6, Llama-4 3 in 4 chunked); the rest attend to the whole context. None: every layer. Recorded "
        "for the layout; pricing treats every layer as full attention (see ModelSpec.windowed_layers)")
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    ssm: SSMSpec | None = Field(None, description="hybrid models: the layers with a state-space mixer instead of attention")
    published_params: number(float, 0, 1e15, lo_open=True) | None = Field(None, description="total params as published, for checks")
    source: str
    notes: str = ""
    config_note: str = Field("", description="what a user should know about the file this spec was read from "
                             "(a Hugging Face config key that looks misspelled)")
    weight_quantization: Literal["fp8", "int8", "fp4", "int4", "int2"] | None = Field(
        None, description="dtype of the checkpoint's quantized weights (a Hugging Face config's "
        "quantization_config): --weight-dtype auto uses it")
    quantization_note: str = Field(
        "", description="the checkpoint's quantization_config as read, for the deployment's notes: its method, "
        "or that kvsim does not understand it (then weights are priced in --weight-dtype)")

    @model_validator(mode="after")
    def _check(self) -> "ModelSpec":
        if self.mla is None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.moe is None and self.intermediate_size == 0:
            raise ValueError("intermediate_size must be > 0 for a dense model")
        if self.sliding_window_layers is not None:
            if self.sliding_window is None:
                raise ValueError("sliding_window_layers needs sliding_window")
            if self.sliding_window_layers > self.num_layers:
                raise ValueError(f"sliding_window_layers ({self.sliding_window_layers}) must be <= "
                                 f"num_layers ({self.num_layers})")
        if self.ssm is not None:
            if self.ssm.num_layers >= self.num_layers:
                raise ValueError(f"ssm.num_layers ({self.ssm.num_layers}) must be < num_layers ({self.num_layers}): "
                                 "a hybrid model keeps at least one attention layer")
            if self.ssm.kind == "mamba2" and self.ssm.num_heads * self.ssm.head_dim != self.ssm.d_inner(self.hidden_size):
                raise ValueError(f"ssm num_heads x head_dim ({self.ssm.num_heads} x {self.ssm.head_dim}) must equal "
                                 f"expand x hidden_size ({self.ssm.d_inner(self.hidden_size)})")
            if self.sliding_window_layers is not None and self.sliding_window_layers > self.attn_layers:
                raise ValueError(f"sliding_window_layers ({self.sliding_window_layers}) must be <= the "
                                 f"{self.attn_layers} attention layers")
        if self.moe is not None:
            free = self.num_layers - self.moe.first_dense_layers
            if self.moe.moe_layers is not None and self.moe.moe_layers > free:
                raise ValueError(f"moe.moe_layers ({self.moe.moe_layers}) must be <= num_layers - "
                                 f"moe.first_dense_layers ({free})")
            if self.moe.experts_per_token > self.moe.num_experts:
                raise ValueError(f"moe.experts_per_token ({self.moe.experts_per_token}) must be <= "
                                 f"moe.num_experts ({self.moe.num_experts})")
            if self.moe.first_dense_layers > self.num_layers:
                raise ValueError(f"moe.first_dense_layers ({self.moe.first_dense_layers}) must be <= "
                                 f"num_layers ({self.num_layers})")
        return self

    def check_tensor_parallel(self, tp: int) -> None:
        """Raise ConfigError unless ``tp`` GPUs can split this model's attention evenly.

        Megatron-style TP gives each GPU ``num_heads / tp`` query heads, so ``tp`` must divide
        ``num_heads``; KV heads are split when ``tp`` divides ``num_kv_heads`` and replicated
        when ``num_kv_heads`` divides ``tp`` (vLLM's rule for GQA). MLA caches one latent per
        token, replicated on every GPU. Hybrid models: ``tp`` divides the SSM heads (mamba2) or
        inner channels (mamba1), and a mamba2's B/C groups (or there is one group, replicated;
        its per-GPU copy of ``2 N`` conv channels is not added, < 0.2 % of the state)."""
        if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
            raise ConfigError(f"--tp must be a whole number >= 1, got {tp!r}")
        if self.num_heads % tp:
            raise ConfigError(
                f"--tp {tp} does not divide the {self.num_heads} attention heads of {self.name} "
                f"({self.num_heads / tp:.2f} per GPU); use a tp that divides {self.num_heads}"
            )
        if self.ssm is not None:
            units, what = ((self.ssm.num_heads, "SSM heads") if self.ssm.kind == "mamba2"
                           else (self.ssm.d_inner(self.hidden_size), "SSM inner channels"))
            if units % tp:
                raise ConfigError(f"--tp {tp} does not divide the {units} {what} of {self.name}")
            g = self.ssm.n_groups
            if self.ssm.kind == "mamba2" and g % tp and g != 1:  # vLLM MambaMixer2's rule (one group is replicated)
                raise ConfigError(f"--tp {tp} does not divide the {g} SSM groups of {self.name} "
                                  f"(vLLM splits B/C groups over tp or replicates a single group)")
        kv = self.num_kv_heads
        if self.mla is None and kv % tp and tp % kv:
            raise ConfigError(
                f"--tp {tp} cannot split or replicate the {kv} KV heads of {self.name}: "
                f"tp must divide {kv} or be a multiple of it"
            )

    # ----- derived counts (elements, not bytes) -----
    @property
    def attn_layers(self) -> int:
        """Layers that attend and keep a KV cache (all of them unless the model is a hybrid)."""
        return self.num_layers - (self.ssm.num_layers if self.ssm is not None else 0)

    @property
    def ssm_layers(self) -> int:
        return 0 if self.ssm is None else self.ssm.num_layers

    @property
    def ssm_state_elements_per_seq(self) -> int:
        """Recurrent-state elements one sequence keeps over all SSM layers (0 without any)."""
        return 0 if self.ssm is None else self.ssm.num_layers * self.ssm.state_elements_per_layer(self.hidden_size)

    @property
    def mixer_params(self) -> int:
        """Attention projections of the attention layers plus the SSM mixers of the others."""
        p = self.attn_layers * self.attn_params_per_layer
        if self.ssm is not None:
            p += self.ssm.num_layers * self.ssm.params_per_layer(self.hidden_size)
        return p

    @property
    def q_head_dim(self) -> int:
        """Query/key head dim used in QK^T (MLA: nope + rope)."""
        if self.mla:
            return self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim
        return self.head_dim

    @property
    def kv_elements_per_token_per_layer(self) -> int:
        """Cached elements per token per layer at full precision.

        Dense/GQA/MQA: ``2 * n_kv * d`` (K and V). MLA: ``d_c + d_h^R`` (DeepSeek-V2 Table 1).
        """
        if self.mla:
            return self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    @property
    def attn_params_per_layer(self) -> int:
        h, d = self.hidden_size, self.head_dim
        if self.mla:
            m = self.mla
            qd = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank:
                q = h * m.q_lora_rank + m.q_lora_rank * self.num_heads * qd
            else:
                q = h * self.num_heads * qd
            kv_a = h * (m.kv_lora_rank + m.qk_rope_head_dim)
            kv_b = m.kv_lora_rank * self.num_heads * (m.qk_nope_head_dim + m.v_head_dim)
            o = self.num_heads * m.v_head_dim * h
            return q + kv_a + kv_b + o
        p = h * self.num_heads * d + 2 * h * self.num_kv_heads * d + self.num_heads * d * h
        if self.attention_bias:
            p += (self.num_heads + 2 * self.num_kv_heads) * d
        return p

    def replicated_attn_params_per_gpu(self, tp: int) -> float:
        """Attention weights each of ``tp`` GPUs holds beyond its ``1 / tp`` share of
        :attr:`attn_params_per_layer` (all attention layers), as vLLM lays them out:

        * GQA/MQA with ``tp > num_kv_heads``: ``QKVParallelLinear`` gives every rank one whole KV head,
          replicating each head's K and V projections (and biases) on ``tp / num_kv_heads`` ranks:
          ``(2 h d [+ 2 d]) (1 - n_kv / tp)`` per layer. MQA (h 2048, d 128, 24 layers) at tp 8:
          24 x 524,288 x 0.875 = 11,010,048.
        * MLA: the down-projections ``q_a_proj`` (``h r_q``, with a q LoRA) and ``kv_a_proj_with_mqa``
          (``h (d_c + d_R)``) are replicated on every rank (``ReplicatedLinear`` / ``disable_tp``,
          vllm/model_executor/models/deepseek_v2.py): ``(h r_q + h (d_c + d_R)) (1 - 1 / tp)`` per layer.
        """
        if tp <= 1:
            return 0.0
        h = self.hidden_size
        if self.mla is not None:
            m = self.mla
            per_layer = h * (m.q_lora_rank or 0) + h * (m.kv_lora_rank + m.qk_rope_head_dim)
            return self.attn_layers * per_layer * (1.0 - 1.0 / tp)
        if tp <= self.num_kv_heads:
            return 0.0
        d = self.head_dim
        per_head = 2 * h * d + (2 * d if self.attention_bias else 0)  # one KV head's K and V projections
        return self.attn_layers * per_head * (1.0 - self.num_kv_heads / tp)

    def _mlp_params(self, width: int) -> int:
        return (3 if self.mlp_gated else 2) * self.hidden_size * width

    @property
    def windowed_layers(self) -> int:
        """Layers with a sliding / chunked window (0 without one).

        Pricing treats every layer as full attention: KV residency and decode reads of windowed
        layers are upper bounds (a window of W caps a layer's KV at ~W tokens in engines that free
        blocks outside it, vLLM V1's hybrid KV cache manager). Prefill FLOPs likewise count the
        whole causal triangle on windowed layers."""
        if self.sliding_window is None:
            return 0
        return self.attn_layers if self.sliding_window_layers is None else self.sliding_window_layers

    @property
    def num_moe_layers(self) -> int:
        if self.moe is None:
            return 0
        if self.moe.moe_layers is not None:
            return self.moe.moe_layers
        return self.num_layers - self.moe.first_dense_layers

    @property
    def num_dense_mlp_layers(self) -> int:
        """Layers with a dense MLP (all of them for a dense model)."""
        return self.num_layers - self.num_moe_layers

    @property
    def dense_mlp_params_per_layer(self) -> int:
        """MLP params of a dense layer (for MoE models: the leading dense layers)."""
        if self.moe is None:
            return self._mlp_params(self.intermediate_size)
        return self._mlp_params(self.moe.dense_intermediate_size or self.intermediate_size)

    @property
    def expert_params(self) -> int:
        """Params of one routed expert (0 for dense models)."""
        return 0 if self.moe is None else self._mlp_params(self.moe.expert_intermediate_size)

    @property
    def shared_expert_params_per_layer(self) -> int:
        if self.moe is None:
            return 0
        return self.moe.num_shared_experts * self._mlp_params(self.moe.shared_intermediate_size)

    @property
    def router_params_per_layer(self) -> int:
        return 0 if self.moe is None else self.hidden_size * self.moe.num_experts

    @property
    def norm_params(self) -> int:
        return (2 * self.num_layers + 1) * self.hidden_size

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        """All stored parameters (embeddings, LM head unless tied, norms, every expert)."""
        L = self.num_layers
        p = self.mixer_params + self.norm_params + self.embedding_params
        if not self.tie_word_embeddings:
            p += self.lm_head_params
        if self.moe is None:
            p += L * self.dense_mlp_params_per_layer
        else:
            p += self.num_dense_mlp_layers * self.dense_mlp_params_per_layer
            p += self.num_moe_layers * (
                self.moe.num_experts * self.expert_params
                + self.shared_expert_params_per_layer
                + self.router_params_per_layer
            )
        return p

    @property
    def active_params_per_token(self) -> int:
        """Params a token multiplies by (top-k experts only); excludes the embedding lookup."""
        L = self.num_layers
        p = self.mixer_params + self.lm_head_params
        if self.moe is None:
            return p + L * self.dense_mlp_params_per_layer
        p += self.num_dense_mlp_layers * self.dense_mlp_params_per_layer
        p += self.num_moe_layers * (
            self.moe.experts_per_token * self.expert_params
            + self.shared_expert_params_per_layer
            + self.router_params_per_layer
        )
        return p
