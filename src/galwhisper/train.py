"""Fine-tune Whisper on prepared features: presets, modes, periodic WER, best checkpoint, resume.

The loop is transformers' Trainer (checkpoints with optimizer, scheduler, RNG and data position;
TensorBoard; data parallel under `accelerate launch` / `torchrun`). galwhisper adds:
  - validation WER with `generate` at every evaluation, and the best checkpoint chosen by it;
  - training modes: full, freeze-encoder, cached-encoder (the encoder layers whose output
    `prepare --cache-encoder[-layers K]` stored are frozen and skipped; the layers above them,
    if any, and the decoder train), lora (peft, merged on export);
  - timestamped targets: a sample whose segment times are known is trained on its timed label
    with probability `timestamp_rate`, else on its <|notimestamps|> label, so that timestamps
    survive fine-tuning; a model trained so records it (galwhisper.json, config.json);
  - checkpoints marked complete only after they are fully written, so a killed run resumes from
    its last whole checkpoint;
  - RUN_DIR/best (transformers), best-ct2 (CTranslate2), each with a model card (README.md),
    history.csv/.md, curves.png, train.json.

`train(config)` reads top to bottom: load the splits, build the model for the mode, the
training arguments, the trainer, train, export, write the run summary.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galwhisper import convert, features, metrics, models, options, plots
from galwhisper.card import write_card
from galwhisper.errors import GalwhisperError, bars_on
from galwhisper.features import MAX_NEW_TOKENS
from galwhisper.files import atomic_dir, check_output_dir, write_json_atomic, write_text_atomic
from galwhisper.languages import DEFAULT_LANGUAGE, language_code
from galwhisper.evaluate import generate_texts
from galwhisper.prepare import TASKS, check_compatible, load_prepared, load_split

MODES = ("full", "freeze-encoder", "cached-encoder", "lora")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
COMPLETE = "galwhisper-complete"  # marker written last into each finished checkpoint


def _schedulers() -> tuple[str, ...]:
    from transformers import SchedulerType

    return tuple(s.value for s in SchedulerType)


@dataclass(frozen=True)
class TrainConfig:
    features: str = ""
    out: str = ""
    model: str = models.DEFAULT_MODEL
    mode: str = "full"
    language: str = DEFAULT_LANGUAGE
    task: str = "transcribe"
    max_steps: int = 1000
    max_minutes: float | None = None  # a wall-time budget: the steps that fit it, as measured here (at most max_steps)
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
    precision: str = "auto"  # see choose_precision
    early_stopping: int | None = None  # evaluations without improvement before stopping
    eval_on_start: bool = True  # a step-0 point on the curves (zero-shot validation WER)
    max_eval_samples: int | None = None
    # False: no validation at all, the last weights are the result; for a caller that tests them
    # right after (the demo: with one candidate a validation chooses nothing, and costs ~3 steps).
    validate: bool = True
    generation_max_tokens: int = MAX_NEW_TOKENS  # upper cap; features.token_budget cuts loops by clip length
    logging_steps: int = 10
    lora_rank: int = 32
    timestamp_rate: float = 0.0  # share of timed samples trained with timestamp tokens (distil-whisper: 0.2)
    resume: bool = False
    seed: int = 42
    preset: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "language", language_code(self.language))
        options.one_of("task", self.task, TASKS)
        options.one_of("mode", self.mode, MODES)
        options.one_of("precision", self.precision, PRECISIONS)
        options.one_of("lr_scheduler", self.lr_scheduler, _schedulers())
        for name in ("max_steps", "eval_steps", "batch_size", "eval_batch_size", "grad_accum", "logging_steps", "lora_rank"):
            options.whole(name, getattr(self, name))
        for name in ("save_steps", "early_stopping", "max_eval_samples"):
            options.whole(name, getattr(self, name), optional=True)
        options.whole("warmup_steps", self.warmup_steps, minimum=0)
        options.whole("generation_max_tokens", self.generation_max_tokens, maximum=MAX_NEW_TOKENS)
        options.whole("seed", self.seed, minimum=0)
        options.number("learning_rate", self.learning_rate)
        options.number("weight_decay", self.weight_decay, strict=False, maximum=1.0)
        options.number("timestamp_rate", self.timestamp_rate, strict=False, maximum=1.0)
        options.number("max_minutes", self.max_minutes, optional=True)
        if self.early_stopping and not self.validate:
            raise options.refuse("early_stopping", self.early_stopping, "it counts validations, and --no-validation turns them off")
        if self.max_minutes is not None and self.lr_scheduler != "linear":
            raise options.refuse("lr_scheduler", self.lr_scheduler, "a time budget (--max-minutes) uses the linear schedule")


# The original study's two runs, and one that finishes on 2 CPU cores in a few minutes.
PRESETS: dict[str, dict] = {
    "model1": dict(model="openai/whisper-small", max_steps=1000, eval_steps=250, learning_rate=1e-5,
                   lr_scheduler="linear", warmup_steps=100, batch_size=16),
    "model2": dict(model="openai/whisper-medium", max_steps=500, eval_steps=250, learning_rate=1e-5,
                   lr_scheduler="cosine", weight_decay=0.001, warmup_steps=50, batch_size=16),
    # As the Nós project trained proxectonos/whisper-large-v3-turbo-gl (lr 1e-5, 800 warm-up steps,
    # effective batch 16, best by validation WER); they ran 53,630 steps over 171,619 utterances.
    "turbo": dict(model="openai/whisper-large-v3-turbo", max_steps=53630, eval_steps=1000, learning_rate=1e-5,
                  lr_scheduler="linear", warmup_steps=800, batch_size=16),
    # Chosen by benchmarks/wer_per_minute.py (validation WER after 3 minutes of training, AMD EPYC,
    # 2 cores): the whole model on packed windows (prepare --pack) 34.5%, against 51.2% on
    # single clips, 55.5% with the bottom 4 encoder layers cached and 56.9% decoder-only; lr 2e-4
    # (1e-4 learnt slower in the same minutes, 3e-4 and 4e-4 worse), batch 8 (batches of 4 and 2
    # were within the seed's spread of up to 8 points: benchmarks/README.md). Timestamped
    # targets for 20% of the timed samples, as distil-whisper trains. Meant to run under a time
    # budget (6 minutes; the demo sets it from what the machine measured), so max_steps is only a
    # ceiling. The demo measures zero-shot WER itself: no step-0 evaluation.
    "cpu-base": dict(model="base", mode="full", max_steps=120, max_minutes=6.0, eval_steps=40, learning_rate=2e-4,
                     lr_scheduler="linear", warmup_steps=3, batch_size=8, eval_batch_size=16,
                     logging_steps=4, max_eval_samples=32, eval_on_start=False, timestamp_rate=0.2),
}  # fmt: skip


def make_config(preset: str | None = None, **overrides) -> TrainConfig:
    """A preset's settings with every given (non-None) option on top."""
    base: dict = {}
    if preset:
        if preset not in PRESETS:
            raise GalwhisperError(f"--preset {preset}: unknown preset (one of {', '.join(PRESETS)})")
        base = dict(PRESETS[preset], preset=preset)
    base.update(options.given(overrides))
    return TrainConfig(**base)


# ---------------------------------------------------------------------------------------------
# Data


class Collator:
    """Pads mels to 3000 frames and labels with -100; teacher-forced decoder inputs.

    A sample with a timed label is trained on it with probability `timestamp_rate`. The prompt
    (<|gl|><|transcribe|>[<|notimestamps|>]) is fed but not scored: at inference it is forced,
    so learning to predict it would only spend gradient. In cached-encoder mode the encoder's
    input is the cached hidden state instead of the mels.
    """

    def __init__(self, prompt_length: int, no_timestamps_id: int, pad_id: int, cached_encoder: bool,
                 timestamp_rate: float = 0.0, seed: int = 0):
        self.prompt_length, self.no_timestamps_id, self.pad_id = prompt_length, no_timestamps_id, pad_id
        self.cached_encoder, self.timestamp_rate = cached_encoder, timestamp_rate
        self.rng = np.random.default_rng(seed)

    def _label(self, row: dict) -> np.ndarray:
        timed = row.get("timed_labels")
        if self.timestamp_rate and timed is not None and len(timed) and self.rng.random() < self.timestamp_rate:
            return np.asarray(timed, dtype=np.int64)
        return np.asarray(row["labels"], dtype=np.int64)

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        sequences = [self._label(r) for r in rows]
        width = max(len(s) for s in sequences) - 1
        decoder_input = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        labels = np.full((len(rows), width), -100, dtype=np.int64)
        for i, seq in enumerate(sequences):
            decoder_input[i, : len(seq) - 1] = seq[:-1]
            labels[i, : len(seq) - 1] = seq[1:]
            # The prompt ends at <|notimestamps|>, or one token earlier in a timed label.
            prompt = self.prompt_length if seq[self.prompt_length - 1] == self.no_timestamps_id else self.prompt_length - 1
            labels[i, : prompt - 1] = -100
        batch = {"decoder_input_ids": torch.from_numpy(decoder_input), "labels": torch.from_numpy(labels)}
        if self.cached_encoder:
            batch["input_features"] = torch.from_numpy(np.stack([np.asarray(r["encoder_hidden"], dtype=np.float32) for r in rows]))
        else:
            mels = [np.asarray(r["input_features"], dtype=np.float32).T for r in rows]
            batch["input_features"] = torch.from_numpy(features.stack_inputs(mels))
        return batch


@dataclass
class Splits:
    prepared: dict
    train: object  # datasets.Dataset
    validation: object  # for WER (generate)
    validation_loss: object  # for the loss (the same rows, with the columns the mode uses)


def load_splits(config: TrainConfig) -> Splits:
    """The prepared train and validation splits, checked against the model and the mode."""
    prepared = load_prepared(config.features)
    check_compatible(prepared, config.model, config.features)
    train_set = load_split(config.features, "train")
    eval_set = load_split(config.features, "validation") if config.validate else None  # --no-validation: none needed
    if eval_set is not None and config.max_eval_samples:
        eval_set = eval_set.select(range(min(config.max_eval_samples, len(eval_set))))
    without_cache = lambda d: d if d is None else d.remove_columns([c for c in ("encoder_hidden",) if c in d.column_names])  # noqa: E731
    if config.mode != "cached-encoder":
        return Splits(prepared, without_cache(train_set), eval_set, without_cache(eval_set))
    if any(d is not None and "encoder_hidden" not in d.column_names for d in (train_set, eval_set)):
        raise GalwhisperError(f"{config.features}: has no cached encoder outputs; run prepare with --cache-encoder")
    cached_with = prepared.get("settings", {}).get("model")
    if cached_with != config.model:
        raise GalwhisperError(f"{config.features}: encoder outputs were cached with {cached_with}, not {config.model}")
    return Splits(prepared, train_set, eval_set, eval_set)


# ---------------------------------------------------------------------------------------------
# Model, precision, arguments


def choose_precision(requested: str, cuda: bool, cuda_bf16: bool, cpu_bf16: bool) -> str:
    """The precision a run uses. auto: bf16 on GPUs that have it (Ampere and newer), fp16 with
    loss scaling on older GPUs (T4, V100), bf16 autocast on CPUs with bf16 instructions, else
    fp32. An explicit choice is kept, except fp16 without a GPU, which is refused."""
    if requested == "fp16" and not cuda:
        raise GalwhisperError("--precision fp16: needs a CUDA GPU; use bf16 or fp32 on CPU")
    if requested != "auto":
        return requested
    if cuda:
        return "bf16" if cuda_bf16 else "fp16"
    return "bf16" if cpu_bf16 else "fp32"


def resolve_precision(requested: str) -> str:
    """choose_precision for this machine."""
    import torch

    cuda = torch.cuda.is_available()
    return choose_precision(requested, cuda, cuda and torch.cuda.is_bf16_supported(), models.cpu_has_bf16())


def build_model(config: TrainConfig, cached_layers: int | None = None):
    """(model to train, processor): loaded, set up for generation, and wrapped for the mode.
    cached_layers: in cached-encoder mode, how many bottom encoder layers the features cache."""
    model, processor = models.load_hf(config.model)
    model.generation_config.language, model.generation_config.task = config.language, config.task
    model.generation_config.forced_decoder_ids = None
    model.config.use_cache = False  # training; generate() turns the cache back on
    if config.gradient_checkpointing:  # trades ~30% more compute for much less activation memory
        model.gradient_checkpointing_enable()
    if config.mode == "freeze-encoder":
        model.model.encoder.requires_grad_(False)
    elif config.mode == "cached-encoder":
        from galwhisper.trainer import train_above_cache

        train_above_cache(model, model.config.encoder_layers if cached_layers is None else cached_layers)
    elif config.mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, lora_dropout=0.05,
                          target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"])
        model = get_peft_model(model, lora)
    return model, processor


def training_arguments(config: TrainConfig, run_dir: Path, precision: str, progress: bool):
    import torch
    from transformers import TrainingArguments

    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")  # read by the TensorBoard callback
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        eval_strategy="steps" if config.validate else "no",
        eval_steps=config.eval_steps,
        eval_on_start=config.eval_on_start and config.validate,  # train() turns it off when resuming
        save_strategy="steps",
        save_steps=config.save_steps or config.eval_steps,
        save_total_limit=None,  # rotation is ours, after the completeness marker
        load_best_model_at_end=config.validate,
        metric_for_best_model="wer",
        greater_is_better=False,
        logging_steps=config.logging_steps,
        report_to=["tensorboard"],
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        # torchrun / accelerate launch on CPUs: processes talk through gloo (NCCL needs GPUs).
        ddp_backend="gloo" if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        seed=config.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=not bars_on(progress),
        label_names=["labels"],
    )


# ---------------------------------------------------------------------------------------------
# Training


def validation_wer(config: TrainConfig, dataset, tokenizer, autocast_dtype):
    """A function of the model: its WER/CER on the validation split, decoded with generate.
    Under torchrun each process decodes its own contiguous share and all see the same result."""
    references = [str(s) for s in dataset["sentence"]]

    def wer_of(model) -> dict:
        world, rank = distributed()
        part = dataset.shard(world, rank, contiguous=True) if world > 1 else dataset
        texts = generate_texts(model, tokenizer, part, config.language, config.task, config.eval_batch_size,
                               config.generation_max_tokens, autocast_dtype)
        if world > 1:
            import torch.distributed as dist

            shares: list = [None] * world
            dist.all_gather_object(shares, texts)
            texts = [text for share in shares for text in share]
        rates = metrics.error_rates(references, texts)
        return {"wer": rates.wer, "wer_raw": rates.wer_raw, "cer": rates.cer}

    return wer_of


def distributed() -> tuple[int, int]:
    """(world size, rank) of this process: (1, 0) unless under torchrun / accelerate launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def train(config: TrainConfig, progress: bool = True) -> dict:
    """Run (or resume) a training; return train.json's content. Under torchrun every process
    trains; the first one alone writes the run folder's results, once all have finished."""
    import torch
    from transformers import EarlyStoppingCallback
    from transformers.utils import logging as hf_logging

    from galwhisper.trainer import CheckpointMarker, FinalEvaluation, GalwhisperTrainer, TimeBudget

    hf_logging.set_verbosity_error()  # generate()'s per-batch advice is noise in a training log
    if not config.features or not config.out:
        raise GalwhisperError("train: needs --features (a prepared folder) and --out (a run folder)")
    started = time.perf_counter()
    splits = load_splits(config)
    run_dir = check_output_dir(config.out, "--out")
    precision = resolve_precision(config.precision)
    args = training_arguments(config, run_dir, precision, progress)  # starts the process group, if any
    with args.main_process_first(desc="run folder"):  # the first process cleans up, the others then see it clean
        resume_from = prepare_run_dir(run_dir, config.resume)
    args.eval_on_start = args.eval_on_start and resume_from is None

    model, processor = build_model(config, splits.prepared.get("cache_encoder_layers"))
    tokenizer = processor.tokenizer
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    prompt = features.prompt_ids(tokenizer, config.language, config.task)
    timed = config.timestamp_rate > 0 and "timed_labels" in splits.train.column_names and any(map(len, splits.train["timed_labels"]))
    callbacks = [CheckpointMarker(), FinalEvaluation()]
    if config.early_stopping:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping))
    trainer = GalwhisperTrainer(
        model=model,
        args=args,
        train_dataset=splits.train,
        eval_dataset=splits.validation_loss,
        data_collator=Collator(len(prompt), prompt[-1], tokenizer.pad_token_id, config.mode == "cached-encoder",
                               config.timestamp_rate if timed else 0.0, config.seed),
        callbacks=callbacks,
        wer_of=validation_wer(config, splits.validation, tokenizer, autocast_dtype) if config.validate else None,
        budget=TimeBudget(config.max_minutes, config.warmup_steps) if config.max_minutes else None,
    )
    train_started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.perf_counter() - train_started

    history = history_rows(trainer.state.log_history)
    summary = run_summary(config, splits, trainer, history, precision, resume_from, result.metrics,
                          train_seconds, time.perf_counter() - started)
    summary.update(timestamps=timed, world_size=args.world_size)
    if args.process_index == 0:
        export_run(trainer.model, processor, run_dir, {"timestamps": timed, "timestamp_rate": config.timestamp_rate if timed else 0.0})
        write_history(history, run_dir)
        plot_curves(history, run_dir / "curves.png", title=f"{config.model} ({config.mode})")
        write_json_atomic(run_dir / "train.json", summary)
        write_card(run_dir)
    trainer.accelerator.wait_for_everyone()  # no process returns before the run folder is complete
    return summary


def export_run(model, processor, run_dir: Path, trained: dict) -> None:
    """RUN/best: a normal transformers folder (LoRA merged); RUN/best-ct2: its CTranslate2 export.
    Both record how the model was trained (`trained`, e.g. whether with timestamps) in
    galwhisper.json, which transcription reads; best/config.json carries it too."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.config.galwhisper = trained
    with atomic_dir(run_dir / "best") as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        processor.feature_extractor.save_pretrained(tmp)
        write_json_atomic(tmp / models.TRAINED_FILE, trained)
    convert.export_ct2(run_dir / "best", run_dir / "best-ct2")  # copies galwhisper.json along


def run_summary(config: TrainConfig, splits: Splits, trainer, history: list[dict], precision: str,
                resume_from: Path | None, train_metrics: dict, train_seconds: float, total_seconds: float) -> dict:
    best_row = min((r for r in history if r.get("wer") is not None), key=lambda r: r["wer"], default=None)
    return {
        "config": dataclasses.asdict(config),
        "precision": precision,
        "device": str(trainer.args.device),
        "prepared": {"folder": str(config.features), "splits": splits.prepared["splits"]},
        "train_samples": len(splits.train),
        "steps": trainer.state.global_step,
        "best_step": best_row["step"] if best_row else None,
        "best_wer": best_row["wer"] if best_row else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(total_seconds, 1),
        "samples_per_second": train_metrics.get("train_samples_per_second"),
        "peak_memory_mb": _peak_memory_mb(),
        "resumed_from": str(resume_from) if resume_from else None,
        "synthetic_data": "synthetic" in str(splits.prepared.get("source", "")),
    }


# ---------------------------------------------------------------------------------------------
# Run folder, checkpoints


def prepare_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (None: a fresh run); removes half-written checkpoints."""
    checkpoints = run_dir / "checkpoints"
    existing = sorted(checkpoints.glob("checkpoint-*")) if checkpoints.is_dir() else []
    for folder in existing:
        if not (folder / COMPLETE).is_file():
            shutil.rmtree(folder, ignore_errors=True)  # died while being written
    last = last_complete(checkpoints)
    if resume:
        if last is None:
            print(f"train: nothing to resume in {run_dir}; starting from scratch")
        return last
    if last is not None:
        raise GalwhisperError(f"{run_dir}: already has checkpoints; pass --resume to continue it, or choose another --out")
    return None


def _step_of(folder: Path) -> int:
    return int(folder.name.rsplit("-", 1)[-1])


def last_complete(checkpoints: Path) -> Path | None:
    done = [f for f in checkpoints.glob("checkpoint-*") if (f / COMPLETE).is_file()] if checkpoints.is_dir() else []
    return max(done, key=_step_of, default=None)


def rotate(checkpoints: Path, best: str | None, keep: int = 1) -> None:
    """Keep the newest complete checkpoint(s) and the best one; delete the rest."""
    done = sorted((f for f in checkpoints.glob("checkpoint-*") if (f / COMPLETE).is_file()), key=_step_of)
    protected = {f.resolve() for f in done[-keep:]} | ({Path(best).resolve()} if best else set())
    for folder in done:
        if folder.resolve() not in protected:
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
    validated = any(row["eval_loss"] is not None for row in history)
    for row in history:
        last_loss = row["train_loss"] if row["train_loss"] is not None else last_loss
        if row["eval_loss"] is not None or not validated:  # without validation: the training loss alone
            lines.append(f"| {row['step']} | {_fmt(last_loss)} | {_fmt(row['eval_loss'])} | "
                         f"{_fmt(row['wer'], 100, 2)} | {_fmt(row['wer_raw'], 100, 2)} |")
    write_text_atomic(run_dir / "history.md", "\n".join(lines) + "\n")


def _fmt(value, scale: float = 1.0, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * scale:.{digits}f}"


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    train_points = [(r["step"], r["train_loss"]) for r in history if r["train_loss"] is not None]
    evals = [r for r in history if r["eval_loss"] is not None]
    with plots.figure(path, ncols=2, size=(11, 4), title=title) as (ax_loss, ax_wer):
        if train_points:
            ax_loss.plot(*zip(*train_points), label="training loss")
        if evals:
            steps = [r["step"] for r in evals]
            ax_loss.plot(steps, [r["eval_loss"] for r in evals], "o-", label="validation loss")
            ax_wer.plot(steps, [100 * (r["wer"] or 0) for r in evals], "o-", label="WER (normalised)")
            ax_wer.plot(steps, [100 * (r["wer_raw"] or 0) for r in evals], "s--", label="WER (raw)")
        ax_loss.set(xlabel="step", ylabel="loss", title="Loss")
        ax_wer.set(xlabel="step", ylabel="WER (%)", title="Validation WER")


def _peak_memory_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
