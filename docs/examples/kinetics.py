"""Kinetics' central finding with kvsim's cost path: see docs/examples/kinetics.md.

Run from the repository root: ``python docs/examples/kinetics.py`` (about 10 s). Prints four tables:
attention's share of a long CoT's eFLOPs by model and generation length; kvsim vs Kinetics Eq. 4;
a Best-of-N task with and without the shared prompt read; the longest generation each model
affords within an eFLOPs budget, dense vs sparse (Quest) attention.
"""

from __future__ import annotations

from kvsim.costmodel.deployment import build_deployment
from kvsim.methods import make_method
from kvsim.pricing.tts import TTSTask, affordable_gen_tokens, kinetics_eq4, linear_per_token, task_cost

MODELS = ["qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b"]
GENS = [1024, 4096, 16384, 32768]
SPARSE = "quest:token_budget=1024,dense_layers=0"  # block (page) top-k, every layer sparse
PROMPT = 128  # a short AIME-style problem statement


def deps():
    return {m: build_deployment("b200", m, weight_dtype="fp8") for m in MODELS}  # I = 4.5e15 / 8e12 = 562.5


def share_table(ds) -> None:
    print("1. attention share of a long CoT's decode eFLOPs (dense; N=1, prompt 128; B200, I=562.5)")
    print(f"{'model':<12}" + "".join(f"{g // 1024:>8}K" for g in GENS) + f"{'attn/linear @32K':>18}")
    for m, d in ds.items():
        cs = [task_cost(d, make_method("full", d), TTSTask(samples=1, prompt_tokens=PROMPT, gen_tokens=g)) for g in GENS]
        print(f"{m:<12}" + "".join(f"{c.attention_share * 100:>8.1f}%" for c in cs) + f"{cs[-1].attention_to_linear:>17.0f}x")


def eq4_table(ds) -> None:
    print("\n2. kvsim's cost path vs Kinetics Eq. 4 (N=1, prompt 128, gen 32K)")
    print(f"{'model':<12}{'attn kvsim':>12}{'attn Eq.4':>12}{'off':>8}{'lin FLOPs/2P':>14}{'lin eFLOPs/2P':>15}")
    for m, d in ds.items():
        c = task_cost(d, make_method("full", d), TTSTask(samples=1, prompt_tokens=PROMPT, gen_tokens=32768))
        mod = d.model
        D = mod.kv_elements_per_token_per_layer * mod.num_layers
        k = kinetics_eq4(mod.active_params_per_token, mod.num_heads / mod.num_kv_heads, D, PROMPT, 32768, 1,
                         c.intensity_flops_per_byte)
        att = k["attn_compute"] + k["kv_access"]
        flops_tok = float(linear_per_token(d).total("flops"))
        two_p = 2.0 * mod.active_params_per_token
        print(f"{m:<12}{c.attention_eflops:>12.3e}{att:>12.3e}{(c.attention_eflops / att - 1) * 100:>7.2f}%"
              f"{flops_tok / two_p:>14.4f}{c.linear_eflops / (k['linear']):>15.3f}")


def best_of_n_table(ds) -> None:
    print("\n3. Best-of-32, prompt 4K, gen 8K (dense): the prompt's KV read once per step vs per sample")
    print(f"{'model':<12}{'shared':>12}{'per sample':>12}{'saved':>8}{'attn share':>12}")
    for m, d in ds.items():
        full = make_method("full", d)
        t = TTSTask(samples=32, prompt_tokens=4096, gen_tokens=8192)
        a, b = task_cost(d, full, t), task_cost(d, full, t.model_copy(update={"shared_prompt": False}))
        print(f"{m:<12}{a.total_eflops:>12.3e}{b.total_eflops:>12.3e}{(1 - a.total_eflops / b.total_eflops) * 100:>7.1f}%"
              f"{a.attention_share * 100:>11.1f}%")


def budget_table(ds) -> None:
    budgets = [1e15, 1e16, 3e16]
    print("\n4. longest generation (tokens, N=1) within an eFLOPs budget: dense | Quest top-1024 pages-of-16")
    print(f"{'model':<12}" + "".join(f"{b:>22.0e}" for b in budgets))
    for m, d in ds.items():
        cells = []
        for b in budgets:
            g = [affordable_gen_tokens(d, make_method(x, d), TTSTask(prompt_tokens=PROMPT), b) for x in ("full", SPARSE)]
            cells.append(f"{g[0]:>10,} | {g[1]:>9,}")
        print(f"{m:<12}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    ds = deps()
    share_table(ds)
    eq4_table(ds)
    best_of_n_table(ds)
    budget_table(ds)
