"""The memory estimator: exact parameter counts, estimates against measured peaks, and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from transformers import BertConfig, LlamaConfig, RobertaConfig

from tc_lib import memory
from tc_lib.errors import ConfigError
from tc_lib.methods import METHODS

# Hand-derived counts (total with a 3-class head where there is one; LoRA r=8 on the q and v
# projections: L·r·(d_in + d_out) per module; the trainable head peft adds to LoRA on encoders — as in
# training, BERT's pooler (h² + h) trains with the classifier). LLaMA: 2Vh + L(4h² + 3hi + 2h) + h untied;
# BERT: pooler 590,592 + 768·3+3 head; RoBERTa: no pooler, 592,899 head; MiniLM: pooler 147,840 + 1,155.
COUNTS = {  # model: (total, LoRA weights, head trained under LoRA)
    "open_llama_3b": (3_426_473_600, 26 * 8 * (6400 + 6400), 0),
    "llama-3.2-3b": (3_212_749_824, 28 * 8 * (3072 + 3072) + 28 * 8 * (3072 + 1024), 0),
    "bert-base-uncased": (109_482_240 + 2_307, 12 * 2 * 8 * (768 + 768), 590_592 + 2_307),
    "scibert_scivocab_uncased": (109_482_240 + (31_090 - 30_522) * 768 + 2_307, 12 * 2 * 8 * 1536, 590_592 + 2_307),
    "roberta-base": (124_645_632 - 590_592 + 592_899, 12 * 2 * 8 * 1536, 592_899),
    "minilm": (22_714_371, 6 * 2 * 8 * 768, 147_840 + 1_155),
}


@pytest.mark.parametrize("model", list(COUNTS))
@pytest.mark.slow
def test_exact_parameter_counts(model):
    total, lora_weights, lora_head = COUNTS[model]
    full = memory.estimate(model, method="full", batch_size=1, seq_len=8, mixed_precision="no")
    lora = memory.estimate(model, method="lora", batch_size=1, seq_len=8, mixed_precision="no")
    assert full.params_total == full.params_trainable == total
    assert lora.params_trainable == lora_weights + lora_head and lora.params_total == total + lora_weights


def test_mpnet_counts_with_eager_attention():
    # 30527·768 + 514·768 + 768·2 (embeddings) + 12 layers · 7,087,872 + 32·12 (relative bias) + 592,899 (head)
    expected = 30527 * 768 + 514 * 768 + 1536 + 12 * 7_087_872 + 384 + 592_899
    assert memory.estimate("mpnet", method="full", seq_len=8, attention="eager").params_total == expected
    with pytest.raises(ConfigError, match="mpnet.*scaled_dot_product_attention"):
        memory.estimate("mpnet", method="full", seq_len=8, attention="sdpa")


@pytest.mark.slow
def test_state_arithmetic():
    b = memory.estimate("open_llama_3b", method="full", batch_size=1, seq_len=64, mixed_precision="bf16",
                        optimizer="adamw")
    n = COUNTS["open_llama_3b"][0]
    assert b.weights == b.gradients == 4 * n and b.optimizer_states == 8 * n and b.optimizer_temporaries == 4 * n
    assert b.phases["optimizer step"] == b.weights + b.gradients + b.optimizer_states + b.optimizer_temporaries + b.inputs
    bf16 = memory.estimate("open_llama_3b", method="full", batch_size=1, seq_len=64, torch_dtype="bfloat16", mixed_precision="no",
                           optimizer="adamw_fused")
    assert bf16.weights == 2 * n and bf16.optimizer_states == 4 * n and bf16.optimizer_temporaries == 0
    lora = memory.estimate("open_llama_3b", method="lora", batch_size=1, seq_len=64, torch_dtype="bfloat16", mixed_precision="no")
    # peft keeps LoRA weights in fp32 on a bf16 base (autocast_adapter_dtype)
    assert lora.gradients == 4 * COUNTS["open_llama_3b"][1] and lora.weights == 2 * n + 4 * COUNTS["open_llama_3b"][1]
    eight = memory.estimate("open_llama_3b", method="full", batch_size=1, seq_len=64, optimizer="adamw_8bit")
    assert 2 * n < eight.optimizer_states < 2.05 * n


def test_accelerate_method_ignores_method_and_batch():
    n = COUNTS["open_llama_3b"][0]
    assert memory.accelerate_estimate("open_llama_3b", half_precision=True) == 8 * n  # 8 B/param
    assert memory.accelerate_estimate("open_llama_3b", half_precision=False) == 16 * n


def small_llama(**kw) -> LlamaConfig:
    return LlamaConfig(hidden_size=kw.get("h", 192), num_hidden_layers=kw.get("L", 3), intermediate_size=kw.get("i", 512),
                       num_attention_heads=kw.get("a", 6), num_key_value_heads=kw.get("kv", 6), vocab_size=1500,
                       max_position_embeddings=512, tie_word_embeddings=kw.get("tied", False))


def small_bert(roberta: bool = False) -> BertConfig:
    cls = RobertaConfig if roberta else BertConfig
    return cls(hidden_size=192, num_hidden_layers=3, intermediate_size=768, num_attention_heads=6, vocab_size=1500,
               max_position_embeddings=520, pad_token_id=1 if roberta else 0)


# (family, config maker, options, batch, seq): both families × full/lora/adapter × fp32/amp_bf16/bf16 ×
# sdpa/eager × checkpointing, plus step-bound shapes that exercise each optimizer's state arithmetic.
VALIDATION = [
    ("llama", small_llama, dict(method="full", mixed_precision="no"), 4, 96),
    ("llama", small_llama, dict(method="full", mixed_precision="bf16"), 4, 96),
    ("llama", small_llama, dict(method="full", torch_dtype="bfloat16", mixed_precision="no", attention="eager"), 4, 96),
    ("llama-gqa", lambda: small_llama(kv=2), dict(method="full", torch_dtype="bfloat16", mixed_precision="no"), 3, 128),
    ("llama-tied", lambda: small_llama(tied=True), dict(method="full", mixed_precision="bf16", attention="eager"), 2, 64),
    ("llama", small_llama, dict(method="lora", torch_dtype="bfloat16", mixed_precision="no"), 4, 96),
    ("llama", small_llama, dict(method="lora", mixed_precision="bf16", peft_target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")), 4, 96),
    ("llama", small_llama, dict(method="adapter", torch_dtype="bfloat16", mixed_precision="no"), 4, 96),
    # the practitioner's PEFT: bf16 base, fp32 trainable weights, bf16 autocast
    ("llama", small_llama, dict(method="lora", torch_dtype="bfloat16", mixed_precision="bf16"), 4, 96),
    ("llama", small_llama, dict(method="adapter", torch_dtype="bfloat16", mixed_precision="bf16"), 4, 96),
    ("llama", small_llama, dict(method="full", mixed_precision="bf16", gradient_checkpointing=True), 4, 96),
    ("llama", small_llama, dict(method="lora", torch_dtype="bfloat16", mixed_precision="no", gradient_checkpointing=True), 4, 96),
    ("bert", small_bert, dict(method="full", mixed_precision="no", attention="eager"), 4, 96),
    ("bert", small_bert, dict(method="full", mixed_precision="bf16"), 4, 96),
    ("bert", small_bert, dict(method="lora", mixed_precision="no"), 4, 96),
    ("bert", small_bert, dict(method="adapter", mixed_precision="no", adapter_config="double_seq_bn"), 4, 96),
    ("bert", small_bert, dict(method="adapter", torch_dtype="bfloat16", mixed_precision="no", attention="eager"), 4, 96),
    ("bert", small_bert, dict(method="full", mixed_precision="no", gradient_checkpointing=True), 4, 96),
    ("roberta", lambda: small_bert(roberta=True), dict(method="lora", mixed_precision="bf16", attention="eager"), 4, 96),
    ("llama-step", small_llama, dict(method="full", mixed_precision="no", optimizer="adamw_fused"), 1, 8),
    ("llama-step", small_llama, dict(method="full", torch_dtype="bfloat16", mixed_precision="no", optimizer="sgd_momentum"), 1, 8),
    ("bert-step", small_bert, dict(method="full", mixed_precision="no", optimizer="sgd"), 1, 8),
    ("bert-step", small_bert, dict(method="full", mixed_precision="no", optimizer="adamw"), 1, 8),
]


@pytest.mark.parametrize("family,make,options,batch,seq", VALIDATION,
                         ids=[f"{v[0]}-{'-'.join(str(x) for x in v[2].values())}" for v in VALIDATION])
def test_estimate_within_0_1_percent_of_measured_peak(family, make, options, batch, seq):
    config = make()
    estimate = memory.estimate(config, batch_size=batch, seq_len=seq, **options)
    measured = memory.measure_peak(config, estimate.setup)
    error = (estimate.peak - measured) / measured
    print(f"{family} {options}: estimate {estimate.peak} measured {measured} error {100 * error:+.3f}% "
          f"({estimate.peak_phase})")
    assert abs(error) <= 0.001  # largest seen: 0.064 %
    if family.endswith("-step"):  # tiny activations: the peak is where all gradients exist
        assert estimate.peak_phase == ("optimizer step" if options["optimizer"] == "adamw" else "backward")
        assert estimate.peak >= estimate.weights + estimate.optimizer_states + estimate.gradients


def test_setup_errors():
    with pytest.raises(ConfigError, match="mixed_precision must be one of no, bf16, fp16, got 'fp8'"):
        memory.estimate("minilm", mixed_precision="fp8")
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
        memory.estimate("minilm", batch_size=0)
    with pytest.raises(ConfigError, match="seq_len 4096 exceeds the model's max_position_embeddings 512"):
        memory.estimate("minilm", seq_len=4096)
    with pytest.raises(ConfigError, match="lora on minilm: field 'peft_target_modules': No modules were targeted"):
        memory.estimate("minilm", method="lora", peft_target_modules=["nope"], seq_len=8)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tc_lib", "memory", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_answers_both_3b_models():
    for model in ("open_llama_3b", "llama-3.2-3b"):
        out = _cli("--model", model, "--method", "full", "--batch-size", "1", "--seq-len", "2048",
                   "--torch-dtype", "float32", "--mixed-precision", "bf16", "--json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["params_total"] == COUNTS[model][0] and data["peak"] > 16 * COUNTS[model][0]
    out = _cli("--model", "open_llama_3b", "--compare", "--seq-len", "512")
    assert out.returncode == 0 and "saving vs full" in out.stdout and "accelerate estimate-memory" in out.stdout
    assert all(m in out.stdout.splitlines()[1] for m in ("full", "lora", "adapter"))


@pytest.mark.slow
def test_cli_bad_input(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"model_type": "llama", "hidden_size": 100, "num_attention_heads": 3,
                               "num_hidden_layers": 2, "intermediate_size": 64, "vocab_size": 100}))
    for args, pattern in [(("--model", "gpt-17b"), "not a shipped config"),
                          (("--model", str(bad)), "hidden_size 100 is not divisible by num_attention_heads 3"),
                          (("--batch-size", "0"), "--batch-size must be a positive integer"),
                          (("--seq-len", "-5"), "--seq-len must be a positive integer"),
                          (("validate", "--jobs", "0", "--out", str(tmp_path)), "--jobs must be a positive integer"),
                          (("--mixed-precision", "fp8"), "invalid choice: 'fp8'"),
                          (("--precision", "amp_bf16"), "--precision was split into --torch-dtype"),
                          (("--flash",), "unrecognized arguments: --flash")]:
        out = _cli(*args)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and pattern in lines[0], (args, out.stderr)


# ---------------------------------------------------------------- families and refusals


def _decoder(V, h, L, i, heads, kv, hd, *, tied, qkv_bias=False, qk_norm=False, fused=False) -> int:
    """Parameters of a LLaMA-style decoder, by hand: embeddings (+ an untied LM head), per layer the
    attention projections (q: h -> heads·hd, k and v: h -> kv·hd, o: heads·hd -> h), a gated MLP
    (3·h·i), two RMSNorms (2h), optional q/k biases and q/k norms (hd each), and the final norm."""
    q, k = heads * hd, kv * hd
    attn = h * q + 2 * h * k + q * h + (q + 2 * k if qkv_bias else 0) + (2 * hd if qk_norm else 0)
    per_layer = attn + 3 * h * i + 2 * h
    return V * h * (1 if tied else 2) + L * per_layer + h


FAMILIES = {  # shipped config: (hand-derived total, LoRA r=8 weights on the default targets)
    "qwen2.5-3b": (_decoder(151936, 2048, 36, 11008, 16, 2, 128, tied=True, qkv_bias=True),
                   36 * 8 * ((2048 + 2048) + (2048 + 256))),
    "qwen3-4b": (_decoder(151936, 2560, 36, 9728, 32, 8, 128, tied=True, qk_norm=True),
                 36 * 8 * ((2560 + 4096) + (2560 + 1024))),
    "mistral-7b": (_decoder(32000, 4096, 32, 14336, 32, 8, 128, tied=False), 32 * 8 * ((4096 + 4096) + (4096 + 1024))),
    "gemma-2b": (_decoder(256000, 2048, 18, 16384, 8, 1, 256, tied=True), 18 * 8 * ((2048 + 2048) + (2048 + 256))),
    # Phi-3 fuses q, k, v (one h -> 3h projection) and the gate/up projections: the same counts
    "phi-3-mini": (_decoder(32064, 3072, 32, 8192, 32, 32, 96, tied=False), 32 * 8 * (3072 + 3 * 3072)),
}


@pytest.mark.parametrize("model", list(FAMILIES))
@pytest.mark.slow
def test_added_decoder_families_counted_exactly(model):
    total, lora = FAMILIES[model]
    full = memory.estimate(model, method="full", seq_len=8, mixed_precision="no")
    peft = memory.estimate(model, method="lora", seq_len=8, mixed_precision="no")
    assert full.params_total == total and peft.params_trainable == lora
    assert full.logits_loss > 0  # estimated as a causal LM, with its LM head and token loss


def test_published_sizes_agree():
    assert FAMILIES["qwen2.5-3b"][0] == 3_085_938_688 and FAMILIES["phi-3-mini"][0] == 3_821_079_552
    assert FAMILIES["mistral-7b"][0] == 7_241_732_096


@pytest.mark.slow
def test_segments_add_up_to_the_peak_and_the_practitioners_row_is_its_own_replay():
    from tc_lib.memory import answer

    rows = answer.practice(models=("open_llama_3b",), shapes=((1, 2048),))
    for row in rows:
        assert sum(answer.segments(row["breakdown"]).values()) == row["peak"]
    lora = next(r for r in rows if r["method"] == "lora" and r["setting"].startswith("bf16 base") and not r["checkpointing"])
    replay = memory.estimate("open_llama_3b", method="lora", batch_size=1, seq_len=2048, torch_dtype="bfloat16",
                             mixed_precision="bf16", optimizer="adamw_fused")
    assert abs(lora["peak"] - replay.peak) <= 0.01 * replay.peak
    fp32 = next(r for r in rows if r["method"] == "lora" and r["setting"].startswith("fp32") and not r["checkpointing"])
    assert fp32["peak"] > 1.6 * lora["peak"]  # the fp32 base: frozen weights twice as large, plus their casts


@pytest.mark.slow
def test_records_built_in_parallel_equal_the_serial_estimates(memory_records):
    from tc_lib.memory import answer
    from tc_lib.memory.records import practice_rows, read_records

    data, problem = read_records(memory_records)
    assert problem is None and [r["model"] for r in data["practice"]] == ["open_llama_3b"] * 14 + ["llama-3.2-3b"] * 14
    serial = answer.practice(models=("open_llama_3b",), shapes=((1, 2048),))
    parallel = practice_rows(data)[:14]
    assert [r["breakdown"] for r in parallel] == [r["breakdown"] for r in serial]
    assert len(data["validation"]) == 6 and all(abs(r["error %"]) < 0.1 for r in data["validation"])


@pytest.mark.slow
def test_cli_plot_has_one_bar_per_setting(tmp_path):
    out = _cli("--model", "open_llama_3b", "--compare", "--seq-len", "128", "--plot", str(tmp_path / "m.svg"))
    assert out.returncode == 0, out.stderr
    svg = (tmp_path / "m.svg").read_text()
    bars = sorted(set(re.findall(r'id="bar-(\d+)-weights"', svg)), key=int)
    assert bars == [str(i) for i in range(len(METHODS))]  # one per method of the registry


@pytest.mark.slow
def test_cli_refuses_what_it_cannot_model(tmp_path):
    small = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
             "intermediate_size": 128, "vocab_size": 100, "tie_word_embeddings": False}
    (tmp_path / "bert_small.json").write_text(json.dumps(small))
    (tmp_path / "config.json").write_text(json.dumps({**small, "hidden_size": 256}))  # a neighbour, not read
    out = _cli("--model", str(tmp_path / "bert_small.json"), "--seq-len", "8", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["params_total"] == \
        _decoder(100, 64, 2, 128, 4, 4, 16, tied=False)
    cases = {
        "missing.json": ({k: v for k, v in small.items() if k != "hidden_size"}, "config field 'hidden_size' is missing"),
        "string.json": ({**small, "intermediate_size": "128"}, "config field 'intermediate_size' must be a positive "
                                                               "integer, got '128'"),
        "gpt2.json": ({**small, "model_type": "gpt2"}, "model_type 'gpt2' is not one the estimator models"),
        "notjson.json": (None, "not JSON"),
    }
    for name, (values, pattern) in cases.items():
        (tmp_path / name).write_text(json.dumps(values) if values is not None else "{oops")
        out = _cli("--model", str(tmp_path / name))
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and pattern in lines[0], (name, out.stderr)
    out = _cli("--model", "open_llama_3b", "--method", "lora", "--adapter-config", "double_seq_bn")
    assert out.returncode == 2 and "option(s) adapter_config do not apply to method 'lora'" in out.stderr
    started = time.monotonic()
    out = _cli("--model", "someone/not-a-model-xyz")
    assert out.returncode == 2 and "hub ids are looked up only with --online" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and time.monotonic() - started < 5
