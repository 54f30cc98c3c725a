"""Fine-tune Whisper on prepared features: presets, modes, periodic WER, best checkpoint, resume.

The loop is transformers' Trainer (checkpoints with optimizer, scheduler, RNG and data position;
TensorBoard; data parallel under `accelerate launch` / `torchrun`). galwhisper adds:
  - validation WER with `generate` at every evaluation, and the best checkpoint chosen by it;
  - training modes: full, freeze-encoder, cached-encoder (decoder trained from encoder outputs
    stored by `prepare --cache-encoder`), lora (peft, merged on export);
  - checkpoints marked complete only after they are fully written, so a killed run resumes from
    its last whole checkpoint;
  - RUN_DIR/best (transformers), best-ct2 (CTranslate2), history.csv/.md, curves.png, train.json.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galwhisper import features, metrics, models
from galwhisper.errors import GalwhisperError
from galwhisper.prepare import check_compatible, load_prepared, load_split

MODES = ("full", "freeze-encoder", "cached-encoder", "lora")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
COMPLETE = "galwhisper-complete"  # marker written last into each finished checkpoint


@dataclass
class TrainConfig:
    features: str = ""
    out: str = ""
    model: str = models.DEFAULT_MODEL
    mode: str = "full"
    language: str = "gl"
    task: str = "transcribe"
    max_steps: int = 1000
    eval_steps: int = 250
    save_steps: int | None = None  # default: eval_steps (the best checkpoint must be saved)
    learning_rate: float = 1e-5
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    warmup_steps: int = 50
    batch_size: int = 16
    eval_batch_size: int = 16
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    precision: str = "auto"  # bf16 where the hardware has it (CUDA, or CPUs with AMX/AVX512-BF16)
    early_stopping: int | None = None  # evaluations without improvement before stopping
    eval_on_start: bool = True  # a step-0 point on the curves (zero-shot validation WER)
    max_eval_samples: int | None = None
    generation_max_tokens: int = 440  # upper cap; features.token_budget cuts loops by clip length
    logging_steps: int = 10
    lora_rank: int = 32
    resume: bool = False
    seed: int = 42
    preset: str | None = None


# The original study's two runs, and one that finishes on 2 CPU cores in a few minutes.
PRESETS: dict[str, dict] = {
    "model1": dict(model="openai/whisper-small", max_steps=1000, eval_steps=250, learning_rate=1e-5,
                   lr_scheduler="linear", warmup_steps=100, batch_size=16),
    "model2": dict(model="openai/whisper-medium", max_steps=500, eval_steps=250, learning_rate=1e-5,
                   lr_scheduler="cosine", weight_decay=0.001, warmup_steps=50, batch_size=16),
    # Measured on synthetic voices: only training that adapts the encoder generalises, and bf16
    # autocast (AMX) made a full step 2-3.5x cheaper than fp32 on these CPUs; see benchmarks/
    # The demo measures zero-shot WER itself, so no step-0 evaluation here.
    "cpu-base": dict(model="base", mode="full", max_steps=60, eval_steps=30, learning_rate=1e-4,
                     lr_scheduler="linear", warmup_steps=5, batch_size=8, eval_batch_size=16,
                     logging_steps=5, max_eval_samples=32, eval_on_start=False),
}  # fmt: skip


def make_config(preset: str | None = None, **overrides) -> TrainConfig:
    """A preset's settings with every given (non-None) option on top."""
    base: dict = {}
    if preset:
        if preset not in PRESETS:
            raise GalwhisperError(f"{preset}: unknown preset (one of {', '.join(PRESETS)})")
        base = dict(PRESETS[preset], preset=preset)
    base.update({k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig(**base)
    if config.mode not in MODES:
        raise GalwhisperError(f"{config.mode}: unknown training mode (one of {', '.join(MODES)})")
    if config.precision not in PRECISIONS:
        raise GalwhisperError(f"{config.precision}: unknown precision (one of {', '.join(PRECISIONS)})")
    return config


# ---------------------------------------------------------------------------------------------
# Data


class Collator:
    """Pads mels to 3000 frames and labels with -100; teacher-forced decoder inputs.

    The prompt (<|gl|><|transcribe|><|notimestamps|>) is fed but not scored: at inference it is
    forced, so learning to predict it would only spend gradient.
    """

    def __init__(self, prompt_length: int, pad_id: int, cached_encoder: bool):
        self.prompt_length, self.pad_id, self.cached_encoder = prompt_length, pad_id, cached_encoder

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        sequences = [np.asarray(r["labels"], dtype=np.int64) for r in rows]
        width = max(len(s) for s in sequences) - 1
        decoder_input = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        labels = np.full((len(rows), width), -100, dtype=np.int64)
        for i, seq in enumerate(sequences):
            decoder_input[i, : len(seq) - 1] = seq[:-1]
            labels[i, : len(seq) - 1] = seq[1:]
            labels[i, : self.prompt_length - 1] = -100
        batch = {"decoder_input_ids": torch.from_numpy(decoder_input), "labels": torch.from_numpy(labels)}
        if self.cached_encoder:
            hidden = np.stack([np.asarray(r["encoder_outputs"], dtype=np.float32) for r in rows])
            batch["encoder_outputs"] = (torch.from_numpy(hidden),)
        else:
            mels = [np.asarray(r["input_features"], dtype=np.float32).T for r in rows]
            batch["input_features"] = torch.from_numpy(features.stack_inputs(mels))
        return batch


# ---------------------------------------------------------------------------------------------
# WER on a prepared split with generate (used at every evaluation and by tests)


def generate_texts(model, tokenizer, dataset, language: str, task: str, batch_size: int = 16,
                   max_new_tokens: int = 128, autocast_dtype=None) -> list[str]:
    import torch

    model.eval()
    device = next(model.parameters()).device
    texts: list[str] = []
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start : start + batch_size]
        mels = [np.asarray(m, dtype=np.float32).T for m in batch["input_features"]]
        inputs = torch.from_numpy(features.stack_inputs(mels)).to(device)
        budget = features.token_budget(float(np.max(batch["seconds"])), max_new_tokens)
        with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                                    enabled=autocast_dtype is not None):
            # use_cache: training switches the KV cache off, and without it every decoding step
            # re-ran the encoder (~10x slower evaluations).
            ids = model.generate(input_features=inputs, language=language, task=task, num_beams=1,
                                 max_new_tokens=budget, use_cache=True)
        texts += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [t.strip() for t in texts]


# ---------------------------------------------------------------------------------------------
# Training


def resolve_precision(precision: str) -> str:
    import torch

    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if _cpu_has_bf16() else "fp32"


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


def train(config: TrainConfig, progress: bool = True) -> dict:
    """Run (or resume) a training; return train.json's content."""
    import torch
    from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # generate()'s per-batch advice is noise in a training log
    started = time.perf_counter()
    run_dir = Path(config.out)
    checkpoints = run_dir / "checkpoints"
    prepared = load_prepared(config.features)
    check_compatible(prepared, config.model, config.features)
    cached = config.mode == "cached-encoder"
    train_set = load_split(config.features, "train")
    eval_set = load_split(config.features, "validation")
    if config.max_eval_samples:
        eval_set = eval_set.select(range(min(config.max_eval_samples, len(eval_set))))
    if cached:
        if "encoder_outputs" not in train_set.column_names:
            raise GalwhisperError(f"{config.features}: has no cached encoder outputs; run prepare with --cache-encoder")
        if prepared["settings"]["model"] != config.model:
            raise GalwhisperError(f"{config.features}: encoder outputs were cached with {prepared['settings']['model']}, not {config.model}")
    else:
        train_set = train_set.remove_columns([c for c in ("encoder_outputs",) if c in train_set.column_names])
    eval_loss_set = eval_set if cached else eval_set.remove_columns([c for c in ("encoder_outputs",) if c in eval_set.column_names])

    resume_from = _prepare_run_dir(run_dir, checkpoints, config.resume)
    precision = resolve_precision(config.precision)
    use_cpu = not torch.cuda.is_available()
    if precision == "fp16" and use_cpu:
        raise GalwhisperError("--precision fp16: needs a CUDA GPU; use bf16 or fp32 on CPU")

    model, processor = models.load_hf(config.model)
    tokenizer = processor.tokenizer
    model.generation_config.language, model.generation_config.task = config.language, config.task
    model.generation_config.forced_decoder_ids = None
    model.config.use_cache = False  # training; generate() turns the cache back on
    if config.gradient_checkpointing:  # trades ~30% more compute for much less activation memory
        model.gradient_checkpointing_enable()
    model = _apply_mode(model, config)
    prompt_length = len(features.prompt_ids(tokenizer, config.language, config.task))
    collator = Collator(prompt_length, tokenizer.pad_token_id, cached)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    args = TrainingArguments(
        output_dir=str(checkpoints),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        eval_on_start=config.eval_on_start and not resume_from,
        save_strategy="steps",
        save_steps=config.save_steps or config.eval_steps,
        save_total_limit=None,  # rotation is ours, after the completeness marker
        load_best_model_at_end=True,
        metric_for_best_model="wer",
        greater_is_better=False,
        logging_steps=config.logging_steps,
        report_to=["tensorboard"],
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=use_cpu,
        seed=config.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
        label_names=["labels"],
    )

    def compute_wer() -> dict:
        texts = generate_texts(model, tokenizer, eval_set, config.language, config.task, config.eval_batch_size,
                               config.generation_max_tokens, autocast_dtype)
        rates = metrics.error_rates([str(s) for s in eval_set["sentence"]], texts)
        return {"wer": rates.wer, "wer_raw": rates.wer_raw, "cer": rates.cer}

    class GalwhisperTrainer(Trainer):
        def evaluation_loop(self, *a, **kw):
            output = super().evaluation_loop(*a, **kw)
            prefix = kw.get("metric_key_prefix", a[4] if len(a) > 4 else "eval")
            output.metrics.update({f"{prefix}_{k}": v for k, v in compute_wer().items()})
            return output

        def training_step(self, *a, **kw):
            loss = super().training_step(*a, **kw)
            if not torch.isfinite(loss).all():
                last = _last_complete(checkpoints)
                raise GalwhisperError(
                    f"training loss became {loss.item()} at step {self.state.global_step + 1}; stopped. "
                    f"Last good checkpoint: {last or 'none'}. Lower --learning-rate or use --precision fp32"
                )
            return loss

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            (folder / COMPLETE).write_text(str(self.state.global_step))
            _rotate(Path(self.args.output_dir), self.state.best_model_checkpoint)

    class FinalEvaluation(TrainerCallback):
        """Evaluate and save at the last step too, so the final weights compete for best."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_evaluate = control.should_save = True
            return control

    callbacks = [FinalEvaluation()]
    if config.early_stopping:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping))
    trainer = GalwhisperTrainer(
        model=model, args=args, train_dataset=train_set, eval_dataset=eval_loss_set,
        data_collator=collator, callbacks=callbacks,
    )
    train_started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.perf_counter() - train_started

    history = history_rows(trainer.state.log_history)
    best = Path(run_dir / "best")
    _save_best(trainer.model, processor, config, best)
    models.export_ct2(best, run_dir / "best-ct2")
    write_history(history, run_dir)
    plot_curves(history, run_dir / "curves.png", title=f"{config.model} ({config.mode})")
    best_row = min((r for r in history if r.get("wer") is not None), key=lambda r: r["wer"], default=None)
    summary = {
        "config": dataclasses.asdict(config),
        "precision": precision,
        "device": "cuda" if not use_cpu else "cpu",
        "prepared": {"folder": str(config.features), "splits": prepared["splits"]},
        "train_samples": len(train_set),
        "steps": trainer.state.global_step,
        "best_step": best_row["step"] if best_row else None,
        "best_wer": best_row["wer"] if best_row else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "peak_memory_mb": _peak_memory_mb(),
        "resumed_from": str(resume_from) if resume_from else None,
        "synthetic_data": "synthetic" in str(prepared.get("source", "")),
    }
    _write_json(run_dir / "train.json", summary)
    return summary


def _apply_mode(model, config: TrainConfig):
    """The model to train: frozen encoder, or wrapped with LoRA adapters, or as it is."""
    if config.mode in ("freeze-encoder", "cached-encoder"):
        model.model.encoder.requires_grad_(False)
    elif config.mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, lora_dropout=0.05,
                          target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"])
        return get_peft_model(model, lora)
    return model


def _save_best(model, processor, config: TrainConfig, folder: Path) -> None:
    """A normal transformers folder (LoRA merged) with processor and generation config."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.use_cache = True
    with models.atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        processor.feature_extractor.save_pretrained(tmp)


# ---------------------------------------------------------------------------------------------
# Run folder, checkpoints


def _prepare_run_dir(run_dir: Path, checkpoints: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (None: a fresh run); removes half-written checkpoints."""
    existing = sorted(checkpoints.glob("checkpoint-*")) if checkpoints.is_dir() else []
    for folder in existing:
        if not (folder / COMPLETE).is_file():
            shutil.rmtree(folder, ignore_errors=True)  # died while being written
    last = _last_complete(checkpoints)
    if resume:
        if last is None:
            print(f"train: nothing to resume in {run_dir}; starting from scratch")
        return last
    if last is not None:
        raise GalwhisperError(f"{run_dir}: already has checkpoints; pass --resume to continue it, or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


def _step_of(folder: Path) -> int:
    return int(folder.name.rsplit("-", 1)[-1])


def _last_complete(checkpoints: Path) -> Path | None:
    done = [f for f in checkpoints.glob("checkpoint-*") if (f / COMPLETE).is_file()] if checkpoints.is_dir() else []
    return max(done, key=_step_of, default=None)


def _rotate(checkpoints: Path, best: str | None, keep: int = 1) -> None:
    """Keep the newest complete checkpoint(s) and the best one; delete the rest."""
    done = sorted((f for f in checkpoints.glob("checkpoint-*") if (f / COMPLETE).is_file()), key=_step_of)
    protected = set(done[-keep:]) | ({Path(best).resolve()} if best else set())
    for folder in done:
        if folder not in protected and folder.resolve() not in protected:
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# History, tables and curves


def history_rows(log_history: list[dict]) -> list[dict]:
    """One row per step with a training loss and/or an evaluation, in step order."""
    rows: dict[int, dict] = {}
    for entry in log_history:
        step = int(entry.get("step", 0))
        row = rows.setdefault(step, {"step": step, "train_loss": None, "eval_loss": None, "wer": None, "wer_raw": None})
        if "loss" in entry:
            row["train_loss"] = entry["loss"]
        if "eval_loss" in entry:
            row.update(eval_loss=entry["eval_loss"], wer=entry.get("eval_wer"), wer_raw=entry.get("eval_wer_raw"))
    return [rows[s] for s in sorted(rows) if any(rows[s][k] is not None for k in ("train_loss", "eval_loss"))]


def write_history(history: list[dict], run_dir: Path) -> None:
    columns = ["step", "train_loss", "eval_loss", "wer", "wer_raw"]
    with open(run_dir / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    # Like the original study's table: one row per evaluation, with the last training loss.
    last_loss, lines = None, ["| Step | Training Loss | Validation Loss | WER (%) | WER raw (%) |", "|---:|---:|---:|---:|---:|"]
    for row in history:
        last_loss = row["train_loss"] if row["train_loss"] is not None else last_loss
        if row["eval_loss"] is not None:
            lines.append(f"| {row['step']} | {_fmt(last_loss)} | {_fmt(row['eval_loss'])} | "
                         f"{_fmt(row['wer'], 100, 2)} | {_fmt(row['wer_raw'], 100, 2)} |")
    (run_dir / "history.md").write_text("\n".join(lines) + "\n")


def _fmt(value, scale: float = 1.0, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * scale:.{digits}f}"


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_wer) = plt.subplots(1, 2, figsize=(11, 4))
    train = [(r["step"], r["train_loss"]) for r in history if r["train_loss"] is not None]
    evals = [r for r in history if r["eval_loss"] is not None]
    if train:
        ax_loss.plot(*zip(*train), label="training loss")
    if evals:
        ax_loss.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="validation loss")
        ax_wer.plot([r["step"] for r in evals], [100 * (r["wer"] or 0) for r in evals], "o-", label="WER (normalised)")
        ax_wer.plot([r["step"] for r in evals], [100 * (r["wer_raw"] or 0) for r in evals], "s--", label="WER (raw)")
    ax_loss.set(xlabel="step", ylabel="loss", title="Loss")
    ax_wer.set(xlabel="step", ylabel="WER (%)", title="Validation WER")
    for ax in (ax_loss, ax_wer):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _peak_memory_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _write_json(path: Path, data: dict) -> None:
    models.write_text_atomic(path, json.dumps(data, indent=2, default=str))
