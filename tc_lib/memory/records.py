"""Memory records: `python -m tc_lib memory validate` computes the practitioners' table (estimates,
~1 min on a 2-core CPU) and the CPU validation (a measured training step on small LLaMA- and BERT-shaped
models) once, and writes <out>/memory.json; the report only reads that file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from .answer import MODELS, SHAPES
from .estimate import Breakdown, accelerate_estimate, estimate
from .setup import Setup

FILE_NAME = "memory.json"
SCHEMA = 2  # 2: the calibration ledger (tc_lib.memory.ledger)


def validation_rows() -> list[dict[str, Any]]:
    """Estimate vs measured peak (CPU, live storages) on small LLaMA- and BERT-shaped models."""
    from transformers import BertConfig, LlamaConfig

    from .measure import measure_peak

    llama = LlamaConfig(hidden_size=256, num_hidden_layers=4, intermediate_size=688, num_attention_heads=4,
                        vocab_size=2000, max_position_embeddings=1024, tie_word_embeddings=False)
    bert = BertConfig(hidden_size=256, num_hidden_layers=4, intermediate_size=1024, num_attention_heads=4,
                      vocab_size=2000, max_position_embeddings=1024)
    cases = [("LLaMA", llama, dict(method="full", mixed_precision="bf16")),
             ("LLaMA", llama, dict(method="lora", torch_dtype="bfloat16", mixed_precision="no")),
             ("LLaMA", llama, dict(method="full", torch_dtype="bfloat16", mixed_precision="no", attention="eager",
                                   gradient_checkpointing=True)),
             ("BERT", bert, dict(method="full", mixed_precision="no", attention="eager")),
             ("BERT", bert, dict(method="adapter", mixed_precision="bf16")),
             ("BERT", bert, dict(method="lora", mixed_precision="no", gradient_checkpointing=True))]
    rows = []
    for family, config, options in cases:
        b = estimate(config, batch_size=4, seq_len=128, **options)
        measured = measure_peak(config, b.setup)
        s = b.setup
        rows.append({"family": family, "method": s.method, "weights": s.torch_dtype, "autocast": s.mixed_precision,
                     "attention": s.attention, "checkpointing": s.gradient_checkpointing, "phase": b.peak_phase,
                     "estimate MiB": b.peak / 2**20, "measured MiB": measured / 2**20,
                     "error %": 100 * (b.peak - measured) / measured})
    return rows


def _practice_rows(models: tuple[str, ...], shapes: tuple[tuple[int, int], ...]) -> list[dict[str, Any]]:
    from .answer import practice

    return [{**{k: v for k, v in r.items() if k != "breakdown"}, "breakdown": r["breakdown"].to_dict()}
            for r in practice(models, shapes)]


def build_records(*, models: Sequence[str] = MODELS, shapes: Sequence[tuple[int, int]] = SHAPES,
                  jobs: int = 1) -> dict[str, Any]:
    """The practitioners' rows for `models` × `shapes` (the report needs open_llama_3b at 1×2048), the
    foreach-AdamW and `accelerate estimate-memory` comparisons, the measured validation and the
    calibration ledger (published CUDA figures beside the estimate). With
    jobs > 1 each model's estimates run in a process of their own (the estimates are deterministic)."""
    from ..results import environment, now
    from .ledger import ledger_rows

    if jobs > 1 and len(models) > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            parts = [pool.submit(_practice_rows, (model,), tuple(shapes)) for model in models]
            validation, ledger = pool.submit(validation_rows), pool.submit(ledger_rows)
            rows = [row for part in parts for row in part.result()]
            validation, ledger = validation.result(), ledger.result()
    else:
        rows, validation, ledger = _practice_rows(tuple(models), tuple(shapes)), validation_rows(), ledger_rows()
    foreach = estimate("open_llama_3b", method="full", batch_size=1, seq_len=2048, optimizer="adamw")
    return {"schema": SCHEMA, "created_at": now(), "environment": dataclasses.asdict(environment()), "practice": rows,
            "foreach_full_peak": foreach.peak,
            "accelerate_estimate": accelerate_estimate("open_llama_3b", half_precision=True),
            "validation": validation, "ledger": ledger}


def write_records(out_dir: Path, **kwargs: Any) -> Path:
    from ..results import write_json_atomic

    path = Path(out_dir) / FILE_NAME
    write_json_atomic(path, build_records(**kwargs))
    return path


def read_records(out_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(records, None), or (None, why they cannot be used) — absent, torn or of another schema."""
    path = Path(out_dir) / FILE_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path}: not written yet (run `python -m tc_lib memory validate`)"
    except (OSError, ValueError) as err:
        return None, f"{path}: unreadable ({str(err).splitlines()[0]}); run `python -m tc_lib memory validate`"
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return None, f"{path}: not a memory record of schema {SCHEMA}; run `python -m tc_lib memory validate`"
    return data, None


def breakdown_from_dict(d: dict[str, Any]) -> Breakdown:
    names = {f.name for f in dataclasses.fields(Breakdown)} - {"setup"}
    return Breakdown(setup=Setup(**d["setup"]), **{k: d[k] for k in names})


def practice_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored practitioners' rows with their Breakdown objects rebuilt."""
    return [{**r, "breakdown": breakdown_from_dict(r["breakdown"])} for r in data["practice"]]
