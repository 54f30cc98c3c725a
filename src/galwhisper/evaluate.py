"""Models x test data -> WER/CER tables, JSON, a bar chart and per-utterance errors.

Every model is evaluated on the fast engine (CTranslate2; transformers folders are exported
once and cached) from the *prepared* features, so evaluation sees exactly the features
training used. Data is a prepared folder, or any `prepare` source, prepared on the fly into
a cache folder (a manifest without splits is evaluated whole, as split "all").

JSON schema (rates are fractions: 0.263 means 26.3%):
    {"data": str, "split": str, "language": str, "synthetic": bool,
     "models": [{"name", "spec", "wer", "cer", "wer_raw", "cer_raw", "substitutions",
                 "deletions", "insertions", "reference_words", "utterances",
                 "audio_seconds", "elapsed_seconds", "real_time_factor"}, ...]}
in the order the models were given.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galwhisper import metrics, models
from galwhisper.errors import GalwhisperError
from galwhisper.prepare import PrepareConfig, check_compatible, load_prepared, load_split, prepare


@dataclass
class EvaluateConfig:
    models: list[str]
    data: str
    split: str = "test"
    language: str = "gl"
    task: str = "transcribe"
    out: str | None = None  # folder for table, JSON, PNG, TSVs
    json_path: str | None = None
    beam_size: int = 1
    batch_size: int = 16
    max_new_tokens: int = 440  # upper cap; features.token_budget cuts loops by clip length
    compute_type: str = "int8"
    max_utterances: int | None = None


@dataclass
class ModelResult:
    name: str
    spec: str
    rates: metrics.ErrorRates
    audio_seconds: float
    elapsed_seconds: float
    hypotheses: list[str]

    @classmethod
    def from_dict(cls, d: dict) -> "ModelResult":
        """Back from to_dict() (without the hypotheses, which live in the per-utterance TSV)."""
        fields = metrics.ErrorRates.__dataclass_fields__
        rates = metrics.ErrorRates(**{k: d[k] for k in fields})
        return cls(d["name"], d["spec"], rates, d["audio_seconds"], d["elapsed_seconds"], [])

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "spec": self.spec,
            **self.rates.to_dict(),
            "audio_seconds": round(self.audio_seconds, 2),
            "elapsed_seconds": round(self.elapsed_seconds, 2),
            "real_time_factor": round(self.elapsed_seconds / self.audio_seconds, 4) if self.audio_seconds else None,
        }


def prepared_folder(data: str, model: str = models.DEFAULT_MODEL, language: str = "gl") -> Path:
    """A prepared folder for `data`: itself, or a cached preparation of a source."""
    if Path(data).is_dir() and (Path(data) / "prepare.json").is_file():
        return Path(data)
    if ":" not in data and data != "synthetic":
        raise GalwhisperError(f"{data}: neither a prepared folder nor a data source (cv:DIR, manifest:FILE, ...)")
    key = hashlib.sha1(f"{data}|{model}|{language}".encode()).hexdigest()[:12]
    folder = models.cache_root() / "prepared" / key
    prepare(PrepareConfig(source=data, out_dir=folder, model=model, language=language))
    return folder


def transcribe_prepared(spec: str, dataset, config: EvaluateConfig) -> tuple[list[str], float]:
    """Greedy/beam decoding of prepared features with CTranslate2, batched."""
    import ctranslate2
    from transformers import WhisperTokenizerFast

    from galwhisper import features

    folder = models.ct2_dir(spec)
    threads = os.cpu_count() or 1
    model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type=config.compute_type, intra_threads=threads)
    tokenizer = WhisperTokenizerFast.from_pretrained(str(folder)) if (folder / "tokenizer_config.json").is_file() else None
    tokenizer = tokenizer or _ct2_tokenizer(folder)
    prompt = features.prompt_ids(tokenizer, config.language, config.task)
    started, texts = time.perf_counter(), []
    for start in range(0, len(dataset), config.batch_size):
        rows = dataset[start : start + config.batch_size]
        mels = [np.asarray(m, dtype=np.float32).T for m in rows["input_features"]]
        batch = ctranslate2.StorageView.from_array(features.stack_inputs(mels))
        budget = features.token_budget(float(np.max(rows["seconds"])), config.max_new_tokens)
        results = model.generate(batch, [prompt] * len(mels), beam_size=config.beam_size,
                                 max_length=budget + len(prompt), suppress_blank=True)
        texts += [tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True).strip() for r in results]
    return texts, time.perf_counter() - started


def _ct2_tokenizer(folder: Path):
    from tokenizers import Tokenizer

    class _Plain:  # a CT2 folder has tokenizer.json only: enough to decode and find the prompt
        def __init__(self, tok):
            self.tok, self.unk_token_id, self.eos_token_id = tok, None, tok.token_to_id("<|endoftext|>")

        def convert_tokens_to_ids(self, tokens):
            return [self.tok.token_to_id(t) for t in tokens]

        def decode(self, ids, skip_special_tokens=True):
            return self.tok.decode([i for i in ids if i < self.eos_token_id] if skip_special_tokens else ids)

    return _Plain(Tokenizer.from_file(str(folder / "tokenizer.json")))


def evaluate(config: EvaluateConfig, progress: bool = True) -> list[ModelResult]:
    if not config.models:
        raise GalwhisperError("evaluate: give at least one --model")
    folder = prepared_folder(config.data, config.models[0], config.language)
    prepared = load_prepared(folder)
    split = config.split if (folder / config.split).is_dir() else ("all" if (folder / "all").is_dir() else config.split)
    dataset = load_split(folder, split)
    if config.max_utterances:
        dataset = dataset.select(range(min(config.max_utterances, len(dataset))))
    if len(dataset) == 0:
        raise GalwhisperError(f"{config.data}: split '{split}' has no utterances")
    references = [str(s) for s in dataset["sentence"]]
    audio_seconds = float(np.sum(dataset["seconds"]))
    results = []
    for spec in config.models:
        check_compatible(prepared, spec, folder)
        if progress:
            print(f"evaluate: {models.resolve(spec).name} on {split} ({len(dataset)} utterances)...", flush=True)
        hypotheses, elapsed = transcribe_prepared(spec, dataset, config)
        results.append(ModelResult(models.resolve(spec).name, spec, metrics.error_rates(references, hypotheses),
                                   audio_seconds, elapsed, hypotheses))
    if config.out:
        write_reports(results, references, [str(i) for i in dataset["id"]], config, prepared, split)
    if config.json_path:
        models.write_text_atomic(Path(config.json_path), json.dumps(to_json(results, config, prepared, split), indent=2, ensure_ascii=False))
    return results


# ---------------------------------------------------------------------------------------------
# Reports


def to_json(results: list[ModelResult], config: EvaluateConfig, prepared: dict, split: str) -> dict:
    return {
        "data": config.data,
        "split": split,
        "language": config.language,
        "synthetic": "synthetic" in str(prepared.get("source", "")),
        "models": [r.to_dict() for r in results],
    }


def markdown_table(results: list[ModelResult]) -> str:
    lines = [
        "| Model | WER (%) | CER (%) | WER raw (%) | CER raw (%) | S / D / I | Utterances | RTF |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        x = r.rates
        rtf = r.elapsed_seconds / r.audio_seconds if r.audio_seconds else 0
        lines.append(f"| {r.name} | {100 * x.wer:.2f} | {100 * x.cer:.2f} | {100 * x.wer_raw:.2f} | {100 * x.cer_raw:.2f} | "
                     f"{x.substitutions} / {x.deletions} / {x.insertions} | {x.utterances} | {rtf:.3f} |")
    return "\n".join(lines) + "\n"


def write_reports(results, references, ids, config: EvaluateConfig, prepared: dict, split: str) -> None:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    models.write_text_atomic(out / "results.md", markdown_table(results))
    models.write_text_atomic(out / "results.json", json.dumps(to_json(results, config, prepared, split), indent=2, ensure_ascii=False))
    plot_wer(results, out / "wer.png", title=f"{config.data} / {split}")
    for index, r in enumerate(results, start=1):
        rows = []
        for uid, ref, hyp in zip(ids, references, r.hypotheses):
            errors, words = metrics.utterance_errors(ref, hyp)
            rows.append((errors / max(words, 1), errors, uid, ref, hyp))
        rows.sort(key=lambda row: (-row[0], -row[1], row[2]))  # worst first
        path = out / f"utterances-{index}-{_slug(r.name)}.tsv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(["id", "wer", "errors", "reference", "hypothesis"])
            writer.writerows([(uid, f"{rate:.3f}", err, ref, hyp) for rate, err, uid, ref, hyp in rows])


def plot_wer(results: list[ModelResult], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in results]
    x = np.arange(len(results))
    fig, ax = plt.subplots(figsize=(max(5, 2.2 * len(results)), 4))
    ax.bar(x - 0.2, [100 * r.rates.wer for r in results], 0.4, label="WER")
    ax.bar(x + 0.2, [100 * r.rates.cer for r in results], 0.4, label="CER")
    for i, r in enumerate(results):
        ax.text(i - 0.2, 100 * r.rates.wer, f"{100 * r.rates.wer:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=10, fontsize=8)
    ax.set(ylabel="% (Whisper-normalised)", title=title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-")[:60]
