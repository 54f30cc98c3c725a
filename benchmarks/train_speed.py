"""Training throughput: galwhisper's training modes vs the Hugging Face blog recipe (Seq2SeqTrainer).

Same model (the bundled Whisper base, as galwhisper converts it: `models.hf_dir("base")`), same
64 synthetic Galician clips (galwhisper.synthetic; 4 more as the validation split galwhisper
needs), batch size 8, same number of optimizer steps (6, --quick 3), 2 CPU cores. Each config
runs in its own fresh process, back to back, so peak memory (ru_maxrss) is per config.

  galwhisper: `galwhisper.train.train(make_config(mode=..., max_steps=6, batch_size=8, ...))` on
      features made by `prepare(..., cache_encoder=True)`, in modes full (precision auto, which is
      bf16 autocast on this AMX CPU), full at fp32 (separates the bf16 gain from the rest),
      freeze-encoder, cached-encoder and lora. Evaluation cannot be switched off (train() evaluates
      on start and at the last step), so it is made negligible (max_eval_samples=1,
      generation_max_tokens=8) and kept out of the timing (see below).
  recipe: the blog "Fine-Tune Whisper For Multilingual ASR with Transformers": WhisperFeatureExtractor
      features (80 x 3000, float32) + WhisperTokenizer labels of the same clips in a `Dataset`, the
      blog's DataCollatorSpeechSeq2SeqWithPadding, `Seq2SeqTrainer` full fine-tune, fp32
      (`use_cpu=True`; the blog's fp16 needs a GPU), no evaluation, no checkpoints. The blog also
      turns on gradient_checkpointing, which makes it slower; the baseline here leaves it off (the
      stronger baseline); `--with-gc` adds that variant as an extra row.

Timing: a TrainerCallback (added to whichever Trainer runs) stamps every on_step_end; a step's
time is the gap between consecutive stamps, so it covers data loading + collation, forward,
backward and the optimizer step, but not the evaluations/checkpoints that come after the last
step or before the first. Step 1 is warm-up and skipped: samples/s = 8 * (steps - 1) / (last
stamp - first stamp).

Run:  .venv/bin/python benchmarks/train_speed.py [--quick] [--with-gc]
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

BATCH = 8
N_TRAIN, N_VAL = 64, 4


def features_dir() -> tuple[Path, Path]:
    """The corpus and its prepared features (with cached encoder outputs), built once."""
    from galwhisper.prepare import PrepareConfig, prepare

    cache = _common.setup_env()
    corpus = _common.corpus(N_TRAIN, N_VAL)
    out = cache / f"train-features-{N_TRAIN}-{N_VAL}"
    t = time.perf_counter()
    prepare(PrepareConfig(source=f"cv:{corpus}", out_dir=out, cache_encoder=True, num_proc=2), progress=False)
    if time.perf_counter() - t > 5:
        print(f"[setup] prepared {out} (with encoder outputs) in {time.perf_counter() - t:.0f} s", flush=True)
    return corpus, out


class StepTimer:
    """A TrainerCallback (duck-typed) that records the time of every on_step_end."""

    def __init__(self, stamps: list[float]):
        self.stamps = stamps

    def __getattr__(self, name):  # every other callback event: nothing to do
        if name.startswith("on_"):
            return lambda *a, **kw: None
        raise AttributeError(name)

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())


def install_step_timer(stamps: list[float]) -> None:
    """Add a StepTimer to every Trainer created from now on (galwhisper's and the recipe's)."""
    import transformers

    original = transformers.Trainer.__init__

    def init(self, *a, **kw):
        original(self, *a, **kw)
        self.add_callback(StepTimer(stamps))

    transformers.Trainer.__init__ = init


def child_galwhisper(features: Path, mode: str, precision: str, steps: int) -> dict:
    import torch

    from galwhisper.train import make_config, train, resolve_precision

    torch.set_num_threads(_common.CORES)
    stamps: list[float] = []
    install_step_timer(stamps)
    out = Path(tempfile.mkdtemp(prefix=f"train-bench-{mode}-", dir=_common.setup_env()))
    try:
        config = make_config(features=str(features), out=str(out), mode=mode, precision=precision, max_steps=steps,
                             eval_steps=steps, batch_size=BATCH, eval_batch_size=1, max_eval_samples=1,
                             generation_max_tokens=8, warmup_steps=0, logging_steps=steps)
        t = time.perf_counter()
        summary = train(config, progress=False)
        total = time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"stamps": stamps, "total_s": total, "precision": resolve_precision(precision),
            "trainer_samples_per_second": summary.get("samples_per_second")}


def child_recipe(corpus: Path, steps: int, gradient_checkpointing: bool, bf16: bool) -> dict:
    from dataclasses import dataclass
    from typing import Any

    import torch
    from datasets import Dataset
    from transformers import (Seq2SeqTrainer, Seq2SeqTrainingArguments, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)
    from transformers.utils import logging as hf_logging

    from galwhisper import models
    from galwhisper.audio import load_audio

    hf_logging.set_verbosity_error()
    torch.set_num_threads(_common.CORES)
    stamps: list[float] = []
    install_step_timer(stamps)
    model_dir = models.hf_dir("base")
    feature_extractor = WhisperFeatureExtractor.from_pretrained(model_dir)
    tokenizer = WhisperTokenizer.from_pretrained(model_dir, language="Galician", task="transcribe")
    processor = WhisperProcessor.from_pretrained(model_dir, language="Galician", task="transcribe")
    rows = _common.cv_rows(corpus)[:N_TRAIN]
    data = {"input_features": [], "labels": []}
    for path, sentence in rows:  # the blog's prepare_dataset, on the same clips
        data["input_features"].append(feature_extractor(load_audio(path), sampling_rate=16000).input_features[0])
        data["labels"].append(tokenizer(sentence).input_ids)
    train_set = Dataset.from_dict(data)

    @dataclass
    class DataCollatorSpeechSeq2SeqWithPadding:  # verbatim from the blog
        processor: Any
        decoder_start_token_id: int

        def __call__(self, features):
            input_features = [{"input_features": feature["input_features"]} for feature in features]
            batch = self.processor.feature_extractor.pad(input_features, return_tensors="pt")
            label_features = [{"input_ids": feature["labels"]} for feature in features]
            labels_batch = self.processor.tokenizer.pad(label_features, return_tensors="pt")
            labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
            if (labels[:, 0] == self.decoder_start_token_id).all().cpu().item():
                labels = labels[:, 1:]
            batch["labels"] = labels
            return batch

    model = WhisperForConditionalGeneration.from_pretrained(model_dir)
    model.generation_config.language = "galician"
    model.generation_config.task = "transcribe"
    model.generation_config.forced_decoder_ids = None
    collator = DataCollatorSpeechSeq2SeqWithPadding(processor=processor, decoder_start_token_id=model.config.decoder_start_token_id)
    out = Path(tempfile.mkdtemp(prefix="train-bench-recipe-", dir=_common.setup_env()))
    try:
        args = Seq2SeqTrainingArguments(
            output_dir=str(out), per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
            learning_rate=1e-5, warmup_steps=0, max_steps=steps,
            fp16=False, bf16=bf16, use_cpu=True, eval_strategy="no", save_strategy="no", logging_steps=steps,
            report_to=[], dataloader_num_workers=0, seed=42, disable_tqdm=True,
            **({"gradient_checkpointing": True} if gradient_checkpointing else {}),
        )
        trainer = Seq2SeqTrainer(args=args, model=model, train_dataset=train_set, data_collator=collator,
                                 processing_class=processor.feature_extractor)
        t = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"stamps": stamps, "total_s": total, "precision": "bf16" if bf16 else "fp32"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 steps; full, cached-encoder and the recipe only (< 2 min)")
    parser.add_argument("--with-gc", action="store_true", help="also the recipe with gradient checkpointing, as in the blog")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--gc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _common.setup_env()
    if args.child:
        corpus, features = features_dir()
        if args.side == "galwhisper":
            result = child_galwhisper(features, args.mode, args.precision, args.steps)
        else:
            result = child_recipe(corpus, args.steps, args.gc, args.bf16)
        result["peak_rss_mb"] = _common.peak_rss_mb()
        return _common.emit(result)

    steps = 3 if args.quick else 6
    features_dir()  # built (and cached) before anything is timed
    from galwhisper import models

    models.hf_dir("base")
    configs = [("galwhisper full (auto precision)", ["--side", "galwhisper", "--mode", "full", "--precision", "auto"])]
    if not args.quick:
        configs += [("galwhisper full fp32", ["--side", "galwhisper", "--mode", "full", "--precision", "fp32"]),
                    ("galwhisper freeze-encoder", ["--side", "galwhisper", "--mode", "freeze-encoder"])]
    configs += [("galwhisper cached-encoder", ["--side", "galwhisper", "--mode", "cached-encoder"])]
    if not args.quick:
        configs += [("galwhisper lora", ["--side", "galwhisper", "--mode", "lora"])]
    configs += [("HF blog recipe (Seq2SeqTrainer fp32)", ["--side", "recipe"])]
    if models.cpu_has_bf16():  # the fair anchor here: the recipe with bf16=True, as the CPU has bf16
        configs += [("HF blog recipe (Seq2SeqTrainer bf16)", ["--side", "recipe", "--bf16"])]
    if args.with_gc:
        configs += [("HF blog recipe + gradient checkpointing", ["--side", "recipe", "--gc"])]
    print(f"{N_TRAIN} train clips, batch {BATCH}, {steps} steps per config (step 1 = warm-up, not counted); "
          f"machine: {_common.machine()}", flush=True)

    results = {}
    for label, child_args in configs:
        r = _common.run_child("train_speed.py", child_args + ["--steps", str(steps)], label, timeout=1200)
        stamps = r["stamps"]
        if len(stamps) != steps:
            raise SystemExit(f"{label}: expected {steps} step stamps, got {len(stamps)}")
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        r["step_s"] = sum(gaps) / len(gaps)
        r["samples_per_s"] = BATCH / r["step_s"]
        results[label] = r
        print(f"  done: {label}: {r['step_s']:.2f} s/step", flush=True)

    anchor = "HF blog recipe (Seq2SeqTrainer bf16)" if "HF blog recipe (Seq2SeqTrainer bf16)" in results \
        else "HF blog recipe (Seq2SeqTrainer fp32)"
    recipe = results[anchor]
    rows = [[label, r["precision"], f"{r['step_s']:.2f}", f"{r['samples_per_s']:.2f}",
             f"{r['samples_per_s'] / recipe['samples_per_s']:.2f}x", f"{r['peak_rss_mb']:.0f}", f"{r['total_s']:.0f}"]
            for label, r in results.items()]
    print()
    print(f"Training throughput, {datetime.date.today()}, machine: {_common.machine()}, batch {BATCH}, "
          f"{steps} steps (mean of steps 2..{steps})")
    print(_common.table(["config", "precision", "s/step", "samples/s", f"vs {anchor}", "peak MB", "train() s"], rows))
    print("(train() s: the whole train() call: evaluations on start and at the end, checkpoint, export; "
          "the recipe has none of those)")
    print()
    for label, target in (("galwhisper cached-encoder", 10.0), ("galwhisper full (auto precision)", 0.9)):
        ratio = results[label]["samples_per_s"] / recipe["samples_per_s"]
        print(f"ratio {label} / {anchor}: {ratio:.2f}x (target >= {target:g}x: {'met' if ratio >= target else 'NOT met'})")
    if "galwhisper full fp32" in results:
        full, fp32 = results["galwhisper full (auto precision)"], results["galwhisper full fp32"]
        print(f"bf16 gain (full auto / full fp32): {full['samples_per_s'] / fp32['samples_per_s']:.2f}x; "
              f"full fp32 / recipe: {fp32['samples_per_s'] / recipe['samples_per_s']:.2f}x")
    print(_common.quiet_summary())


if __name__ == "__main__":
    main()
