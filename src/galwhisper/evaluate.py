"""Models x test data -> WER/CER tables, JSON, a bar chart and per-utterance errors.

Every model is evaluated from the *prepared* features, so evaluation sees exactly the features
training used, on one engine for all models (`--engine`, see `choose_engine`): CTranslate2
through faster-whisper's WhisperModel (loaded by `models.load_whisper` as `transcribe` loads it;
transformers folders are exported once and cached), or transformers' generate in bf16. Data is a
prepared folder, or any `prepare` source, prepared on the fly into a cache folder (a manifest
without splits is evaluated whole, as split "all").

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
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galwhisper import features, metrics, models, options, plots
from galwhisper.errors import GalwhisperError
from galwhisper.files import cache_root, check_name, check_output_dir, check_output_file, safe_name, write_json_atomic, write_text_atomic
from galwhisper.languages import DEFAULT_LANGUAGE, language_code
from galwhisper.prepare import TASKS, PrepareConfig, check_compatible, load_prepared, load_split, prepare


ENGINES = ("auto", "ct2", "torch")


@dataclass(frozen=True)
class EvaluateConfig:
    models: tuple[str, ...]
    data: str
    split: str = "test"
    language: str = DEFAULT_LANGUAGE
    task: str = "transcribe"
    out: str | None = None  # folder for table, JSON, PNG, TSVs
    json_path: str | None = None
    beam_size: int = 1
    batch_size: int = 16
    max_new_tokens: int = features.MAX_NEW_TOKENS  # upper cap; features.token_budget cuts loops by clip length
    compute_type: str = "int8"  # ct2 engine
    engine: str = "auto"  # ct2 | torch | auto: torch in bf16 where the hardware has bf16, else ct2
    max_utterances: int | None = None
    card: str | None = None  # a run folder whose model card gets these results

    def __post_init__(self):
        object.__setattr__(self, "models", tuple(self.models or ()))
        if not self.models:
            raise GalwhisperError("evaluate: give at least one --model")
        object.__setattr__(self, "language", language_code(self.language))
        options.one_of("task", self.task, TASKS)
        check_name(self.split, "--split")
        options.whole("beam_size", self.beam_size, maximum=32)
        options.whole("batch_size", self.batch_size, maximum=1024)
        options.whole("max_new_tokens", self.max_new_tokens, maximum=features.MAX_NEW_TOKENS)
        options.one_of("compute_type", self.compute_type, models.COMPUTE_TYPES)
        options.one_of("engine", self.engine, ENGINES)
        options.whole("max_utterances", self.max_utterances, optional=True)


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


def prepared_folder(data: str, model: str = models.DEFAULT_MODEL, language: str = DEFAULT_LANGUAGE) -> Path:
    """A prepared folder for `data`: itself, or a cached preparation of a source."""
    if Path(data).is_dir() and (Path(data) / "prepare.json").is_file():
        return Path(data)
    if ":" not in data and data != "synthetic":
        raise GalwhisperError(f"{data}: neither a prepared folder nor a data source (cv:DIR, manifest:FILE, ...)")
    key = hashlib.sha1(f"{data}|{model}|{language}".encode()).hexdigest()[:12]
    folder = cache_root() / "prepared" / key
    prepare(PrepareConfig(source=data, out_dir=folder, model=model, language=language))
    return folder


def choose_engine(engine: str) -> str:
    """auto: transformers in bf16 where the hardware runs bf16, else CTranslate2 int8. Per clip
    (benchmarks/eval_speed.py): ~0.19 s against ~0.6 s on an Intel Xeon with AMX; on an AMD EPYC
    with avx512_bf16 but no AMX the two are within 10% (0.65 vs 0.71 s fine-tuned, 0.75 vs 0.70 s
    for the zero-shot base, whose loops run long in torch's slower decoder)."""
    if engine != "auto":
        return engine
    return "torch" if models.bf16_available() else "ct2"


def transcribe_prepared(spec: str, dataset, config: EvaluateConfig) -> tuple[list[str], float]:
    """Greedy/beam decoding of prepared features with the chosen engine, batched; (texts, seconds)."""
    if choose_engine(config.engine) == "torch":
        return _transcribe_torch(spec, dataset, config)
    return _transcribe_ct2(spec, dataset, config)


def _transcribe_ct2(spec: str, dataset, config: EvaluateConfig) -> tuple[list[str], float]:
    import ctranslate2
    from faster_whisper.tokenizer import Tokenizer

    whisper = models.load_whisper(spec, config.compute_type)
    tokenizer = Tokenizer(whisper.hf_tokenizer, whisper.model.is_multilingual, task=config.task, language=config.language)
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    started, texts = time.perf_counter(), [""] * len(dataset)
    for indices, inputs, budget in _feature_batches(dataset, config.batch_size, config.max_new_tokens):
        results = whisper.model.generate(ctranslate2.StorageView.from_array(inputs), [prompt] * len(indices),
                                         beam_size=config.beam_size, max_length=budget + len(prompt), suppress_blank=True)
        for index, result in zip(indices, results):
            texts[index] = tokenizer.decode(result.sequences_ids[0]).strip()
    return texts, time.perf_counter() - started


def _transcribe_torch(spec: str, dataset, config: EvaluateConfig) -> tuple[list[str], float]:
    import torch

    # Weights in bf16, not fp32 under autocast: nothing is trained here, and skipping autocast's
    # casts made evaluation 7-11% faster (AMD EPYC; test split: the demo's model 0.5 points of WER
    # apart, 82/87 transcripts identical).
    dtype = torch.bfloat16 if models.bf16_available() else None
    model, processor = models.load_hf(spec, dtype=dtype)
    model.to(models.torch_device())
    model.generation_config.forced_decoder_ids = None
    started = time.perf_counter()
    texts = generate_texts(model, processor.tokenizer, dataset, config.language, config.task, config.batch_size,
                           config.max_new_tokens, beam_size=config.beam_size)
    return texts, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# Decoding prepared features: CTranslate2, or transformers' generate (validation during training too)


def _feature_batches(dataset, batch_size: int, max_new_tokens: int):
    """(row indices, their log-mels stacked for the encoder, the batch's token budget) for each
    batch of prepared clips of similar length: what both engines decode."""
    for indices in features.length_batches(dataset["seconds"], batch_size):
        rows = dataset[indices]
        mels = [np.asarray(m, dtype=np.float32).T for m in rows["input_features"]]
        yield indices, features.stack_inputs(mels), features.token_budget(float(np.max(rows["seconds"])), max_new_tokens)


DECODING_ATTENTION = "galwhisper_decoding"


def decoding_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """Transformers' SDPA attention, except for one query against unmasked keys on the CPU (each
    greedy step's cross-attention over the 1500 encoder frames, and its self-attention): there
    PyTorch's CPU flash kernel took 11.9 ms a call and matmul + softmax 2.1 ms (bf16, batch 16,
    AMD EPYC), ~60 ms of each ~100-ms decoding step of Whisper base."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1 or attention_mask is not None or query.device.type != "cpu" or module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    scores = torch.matmul(query, key.transpose(2, 3)) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    return torch.matmul(torch.softmax(scores, dim=-1), value).transpose(1, 2).contiguous(), None


def _use_decoding_attention(model) -> str:
    """Switch `model` to decoding_attention; return the implementation it had."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(DECODING_ATTENTION, decoding_attention)
    AttentionMaskInterface.register(DECODING_ATTENTION, sdpa_mask)  # masks as SDPA takes them
    previous = model.config._attn_implementation
    if previous == "sdpa":
        model.set_attn_implementation(DECODING_ATTENTION)
    return previous


def generate_texts(model, tokenizer, dataset, language: str, task: str, batch_size: int = 16,
                   max_new_tokens: int = 128, autocast_dtype=None, beam_size: int = 1) -> list[str]:
    import torch
    from transformers.utils import logging as hf_logging

    model.eval()
    attention = _use_decoding_attention(model)
    device = next(model.parameters()).device
    texts = [""] * len(dataset)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # generate() advises on max_length and masks once per batch: noise here
    try:
        for indices, inputs, budget in _feature_batches(dataset, batch_size, max_new_tokens):
            with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                                        enabled=autocast_dtype is not None):
                # use_cache: training switches the KV cache off, and without it every decoding
                # step re-ran the encoder (~10x slower evaluations).
                ids = model.generate(input_features=torch.from_numpy(inputs).to(device, model.dtype), language=language, task=task,
                                     num_beams=beam_size, max_new_tokens=budget, use_cache=True)
            for index, text in zip(indices, tokenizer.batch_decode(ids, skip_special_tokens=True)):
                texts[index] = text.strip()
    finally:
        hf_logging.set_verbosity(verbosity)
        model.set_attn_implementation(attention)  # training goes on with its own
    return texts


def evaluate(config: EvaluateConfig, progress: bool = True) -> list[ModelResult]:
    # Where results go is checked before any work, so a late failure loses nothing.
    if config.out:
        check_output_dir(config.out, "--out")
    if config.json_path:
        check_output_file(config.json_path, "--json")
    if config.card and not (Path(config.card) / "train.json").is_file():
        raise GalwhisperError(f"--card {config.card}: not a finished galwhisper run (no train.json)")
    specs = [models.resolve(spec) for spec in config.models]  # a bad --model fails before any work
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
    for ref in specs:
        check_compatible(prepared, ref.spec, folder)
        if progress:
            print(f"evaluate: {ref.name} on {split} ({len(dataset)} utterances)...", flush=True)
        hypotheses, elapsed = transcribe_prepared(ref.spec, dataset, config)
        results.append(ModelResult(ref.name, ref.spec, metrics.error_rates(references, hypotheses),
                                   audio_seconds, elapsed, hypotheses))
    if config.out:
        write_reports(results, references, [str(i) for i in dataset["id"]], config, prepared, split)
    if config.json_path:
        write_json_atomic(Path(config.json_path), to_json(results, config, prepared, split))
    if config.card:
        from galwhisper.card import add_test_results

        add_test_results(Path(config.card), results, config.data, split)
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
    write_text_atomic(out / "results.md", markdown_table(results))
    write_json_atomic(out / "results.json", to_json(results, config, prepared, split))
    plot_wer(results, out / "wer.png", title=f"{config.data} / {split}")
    for index, r in enumerate(results, start=1):
        rows = []
        for uid, ref, hyp in zip(ids, references, r.hypotheses):
            errors, words = metrics.utterance_errors(ref, hyp)
            rows.append((errors / max(words, 1), errors, uid, ref, hyp))
        rows.sort(key=lambda row: (-row[0], -row[1], row[2]))  # worst first
        path = out / f"utterances-{index}-{safe_name(r.name, 'model', 60)}.tsv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(["id", "wer", "errors", "reference", "hypothesis"])
            writer.writerows([(uid, f"{rate:.3f}", err, ref, hyp) for rate, err, uid, ref, hyp in rows])


def plot_wer(results: list[ModelResult], path: Path, title: str = "") -> None:
    plots.grouped_bars(path, [r.name for r in results],
                       {"WER": [100 * r.rates.wer for r in results], "CER": [100 * r.rates.cer for r in results]},
                       title=title, ylabel="% (Whisper-normalised)")
