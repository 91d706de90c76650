"""What users write and read: dtype spellings in any case, rejected requests explained."""

import pytest

from kvsim.costmodel.deployment import build_deployment
from kvsim.costmodel.dtypes import canonical_dtype
from kvsim.errors import KvsimError


@pytest.mark.parametrize("written, meant", [("BF16", "bf16"), ("bfloat16", "bf16"), ("Float16", "fp16"), ("half", "fp16"),
                                            ("fp8_e4m3", "fp8"), ("FP8_E5M2", "fp8"), (" int8 ", "int8"), ("AUTO", "auto")])
def test_spellings(written, meant):
    assert canonical_dtype(written) == meant


def test_deployment_takes_them_and_still_refuses_unknown_names():
    """Llama-3.1-8B KV per token: 32 layers x 2 x 8 KV heads x 128 x 2 B = 131,072 B (bf16), 65,536 (fp8)."""
    a = build_deployment("a100", "llama-3.1-8b", weight_dtype="BFLOAT16", kv_dtype="fp8_e4m3")
    assert (a.weight_dtype, a.kv_dtype) == ("bf16", "fp8")
    m = a.model
    assert m.num_layers * 2 * m.num_kv_heads * m.head_dim * a.kvb == 65_536  # 1 byte per fp8 element
    with pytest.raises(KvsimError, match="--kv-dtype bfloat17: unknown"):
        build_deployment("a100", "llama-3.1-8b", kv_dtype="bfloat17")
    with pytest.raises(KvsimError, match="unknown dtype 'bfloat17'"):
        build_deployment("a100", "llama-3.1-8b", weight_dtype="bfloat17")


def test_rejected_requests_are_explained_in_the_notes():
    """Prompts of 200,000 tokens on Llama-3.1-8B (131,072-token context): every request is rejected
    at arrival, and the summary's notes say how many, why and what would admit them (the table
    showed '0 / 3 (max_context: 3)' and dashes, exit 0, with no hint)."""
    from kvsim.methods import make_method
    from kvsim.sim.inputs import rejection_note
    from kvsim.sim.replica import SimConfig, simulate
    from kvsim.traces import load_trace

    dep = build_deployment("a100", "llama-3.1-8b")
    tr = load_trace("synthetic-fixed:n=3,prompt=200000", seed=0)
    res = simulate(dep, make_method("full", dep), tr, SimConfig())
    note = rejection_note({"max_context": 3}, 3, 131_072)
    assert note.startswith("3 of 3 requests rejected (all of them): max_context: 3 (prompt + output beyond the "
                           "model's 131,072-token context")
    assert note in res.summary["notes"]
    assert rejection_note({}, 3, 131_072) is None
    assert rejection_note({"gpu_memory": 1, "max_context": 1}, 5, 8).startswith("2 of 5 requests rejected: gpu_memory: 1")


def test_method_parameters_in_any_case_and_unknown_ones_listed():
    """KIVI:BITS=4 is kivi:bits=4 and magicpig:k=10,l=150 is magicpig:K=10,L=150 (names in any case,
    as method names are); an unknown parameter lists the known ones; a whole-object check reads
    'method kivi: <message>' with no '(top level)'."""
    from kvsim.methods import make_method

    dep = build_deployment("a100", "llama-3.1-8b")
    assert make_method("KIVI:BITS=4", dep).params.bits == 4
    mp = make_method("magicpig:k=10,l=150", dep).params
    assert (mp.K, mp.L) == (10, 150)
    with pytest.raises(KvsimError, match=r"method kivi: foo: .*unknown field \(known: bits, group, residual\)"):
        make_method("kivi:foo=4", dep)
    with pytest.raises(KvsimError, match=r"^method kivi: bits must divide 32"):
        make_method("kivi:bits=3", dep)


def test_a_method_or_reuse_key_given_twice_is_an_error():
    """kivi:bits=2,bits=4 ran with bits=4 and cacheblend:tier=host,tier=gpu with the GPU tier, silently;
    --kv-offload, --tts and --expert-offload already refused a repeated key (user audit)."""
    from kvsim.methods import make_method, parse_method_spec
    from kvsim.pricing.reuse.answer import parse_reuse_spec

    dep = build_deployment("a100", "llama-3.1-8b")
    with pytest.raises(KvsimError, match="bits given twice"):
        make_method("kivi:bits=2,bits=4", dep)
    with pytest.raises(KvsimError, match="BITS given twice"):  # (names are matched in any case)
        parse_method_spec("kivi:bits=2,BITS=4")
    with pytest.raises(KvsimError, match="tier given twice"):
        parse_reuse_spec("cacheblend:tier=host,tier=gpu")
    assert make_method("kivi:bits=2,group=64", dep).params.bits == 2


def test_a_method_parameter_error_names_the_method_first():
    """Every method's parameter errors read 'method X: field: ...'; duoattention's read 'duoattention
    retrieval_ratio must ...' (user audit)."""
    from kvsim.methods import make_method

    dep = build_deployment("a100", "llama-3.1-8b")
    with pytest.raises(KvsimError, match=r"^method duoattention: retrieval_ratio must be in \[0, 1\] or auto, got 1.2$"):
        make_method("duoattention:retrieval_ratio=1.2", dep)
