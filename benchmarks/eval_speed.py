"""Evaluation engines side by side: CTranslate2 int8 vs transformers (torch) in bf16.

The same prepared clips (the synthetic corpus' test split: 87 clips of ~3.5 s, each padded to the
encoder's 30-s window), the same model, greedy decoding, `galwhisper.evaluate.transcribe_prepared`
with engine "ct2" (compute type int8) and "torch" (bf16 autocast where the hardware has bf16,
else fp32), each in its own process; the third row is the torch engine with every greedy step's
attention through PyTorch's CPU flash kernel (what `evaluate.decoding_attention` replaces). Printed: seconds, seconds per clip, WER of each engine, and how
many transcripts are identical to CTranslate2's. `evaluate --engine auto` picks torch in bf16 where
the hardware has bf16 (the first row this script prints tells whether that wins here).

Run:  .venv/bin/python benchmarks/eval_speed.py [--quick] [--model SPEC]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def features() -> Path:
    from galwhisper.prepare import PrepareConfig, prepare
    from galwhisper.synthetic import SyntheticConfig

    cache = _common.setup_env()
    corpus = SyntheticConfig(out_dir=cache / "demo-corpus", num_workers=_common.CORES)
    out = cache / "eval-features"
    prepare(PrepareConfig(source=f"synthetic:{corpus.out_dir}", out_dir=out, synthetic=corpus, splits=("test",)), progress=False)
    return out


def child(model: str, engine: str, limit: int) -> dict:
    import torch

    from galwhisper import evaluate, metrics
    from galwhisper.prepare import load_split

    torch.set_num_threads(_common.CORES)
    dataset = load_split(features(), "test")
    dataset = dataset.select(range(min(limit, len(dataset))))
    if engine == "torch-flash":  # greedy steps through PyTorch's CPU flash kernel, as before 2026-12-08
        evaluate._use_decoding_attention = lambda model: model.config._attn_implementation
        engine = "torch"
    config = evaluate.EvaluateConfig(models=(model,), data="unused", split="test", engine=engine)
    evaluate.transcribe_prepared(model, dataset.select(range(2)), config)  # warm-up: load, first batch
    started = time.perf_counter()
    texts, _ = evaluate.transcribe_prepared(model, dataset, config)
    seconds = time.perf_counter() - started
    rates = metrics.error_rates([str(s) for s in dataset["sentence"]], texts)
    return {"seconds": seconds, "clips": len(dataset), "wer": rates.wer, "texts": texts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 clips instead of the whole test split")
    parser.add_argument("--model", default="base", help="a model spec (default: the bundled base, zero-shot)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    _common.setup_env()
    if args.child:
        return _common.emit(child(args.model, args.engine, args.limit))

    from galwhisper import models

    features()
    limit = 32 if args.quick else 1000
    torch_label = "torch bf16" if models.bf16_available() else "torch fp32 (no bf16 here)"
    configs = [("ct2 int8", "ct2"), (torch_label, "torch"), (f"{torch_label}, flash steps", "torch-flash")]
    results = {}
    for label, engine in configs:
        results[label] = _common.run_child("eval_speed.py", ["--model", args.model, "--engine", engine, "--limit", str(limit)], label)
        print(f"  done: {label}: {results[label]['seconds']:.1f} s", flush=True)
    anchor = results["ct2 int8"]
    rows = []
    for label, r in results.items():
        same = sum(a == b for a, b in zip(r["texts"], anchor["texts"]))
        rows.append([label, r["clips"], f"{r['seconds']:.1f}", f"{r['seconds'] / r['clips']:.3f}",
                     f"{anchor['seconds'] / r['seconds']:.2f}x", f"{100 * r['wer']:.1f}", f"{same}/{r['clips']}"])
    print()
    print(f"Evaluation engines, {datetime.date.today()}, model {args.model}, machine: {_common.machine()}, "
          f"bf16 available: {models.bf16_available()}")
    print(_common.table(["engine", "clips", "seconds", "s/clip", "vs ct2 int8", "WER %", "same text as ct2"], rows))
    fastest = min(results, key=lambda k: results[k]["seconds"])
    print(f"fastest here: {fastest}; evaluate --engine auto picks "
          f"{'torch bf16' if models.bf16_available() else 'ct2 int8'} on this machine")
    print(_common.quiet_summary())


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
