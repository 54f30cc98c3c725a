"""The main job: synthetic Galician corpus -> features -> zero-shot WER -> fine-tune -> WER -> report.

Calls the stages in order through their public functions and writes RUN_DIR/report.md. Each
stage reuses what an earlier run already built (same settings) unless `fresh` is set.
The corpus is synthetic (espeak-ng voices), and the report says so.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from galwhisper import models, options, plots
from galwhisper.card import add_test_results, chosen_weights
from galwhisper.errors import GalwhisperError, one_line
from galwhisper.evaluate import EvaluateConfig, ModelResult, choose_engine, evaluate, markdown_table
from galwhisper.files import write_json_atomic, write_text_atomic
from galwhisper.prepare import MARKER, PrepareConfig, prepare
from galwhisper.synthetic import SyntheticConfig
from galwhisper.train import make_config, train

TEST_SPLITS = ("test", "test_unseen")
# The fine-tuned model's evaluation of the same clips, as a share of the zero-shot one, by engine.
# torch: the zero-shot base loops to its clip's token budget, a fine-tuned model writes short
# transcripts: 82 s against 94 and 103 s (AMD EPYC with avx512_bf16, 2 cores, bf16; 95 against 118 s
# before greedy steps left the CPU flash kernel, when the loops cost more).
# CTranslate2: the encoder on 30-s windows is nearly all of it and costs the same for both models:
# 171.7 s against 174.3 s (AMD EPYC with AVX2 only, 2 cores, int8); 0.8 there overran the demo by 27 s.
FINE_TUNED_EVAL_SHARE = {"torch": 0.85, "ct2": 1.0}
FIXED_SECONDS = 10.0  # checkpoint, CTranslate2 export, report, the final transcribe: ~5 s measured


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("runs/demo")
    n_train: int | None = None  # sentences; None: the whole built-in corpus
    n_validation: int | None = None
    n_test: int | None = None
    preset: str = "cpu-base"
    train_overrides: dict = field(default_factory=dict)  # e.g. {"max_steps": 4} for a quick run
    extra_eval_splits: tuple[str, ...] = ()  # e.g. ("train",) to check memorisation
    fresh: bool = False
    seed: int = 0
    pack: bool = True  # pack the training clips into 30-s windows with their times (see prepare.py)
    # Full windows and few single clips: each step's 30-s encoder pass holds ~25 s of speech. Against
    # 20-28 s windows + 10% singles (half the examples' encoder input was padding), in the same 23
    # steps: validation WER 24.3% vs 27.9%, test 22.9% vs 25.9% (2 seeds; benchmarks/README.md).
    pack_seconds: float = 29.0
    pack_min_seconds: float = 26.0
    pack_singles: float = 0.05  # some clips alone, as test clips come: short speech, long padding
    cache_encoder_layers: int | None = None  # with a cached-encoder preset: the bottom layers cached
    # The whole demo's wall time: fine-tuning gets what the stages before it leave, minus the final
    # evaluation's time (measured by the zero-shot one). Unless max_steps or max_minutes is given.
    minutes: float = 9.5

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))
        for name in ("n_train", "n_validation", "n_test"):
            options.whole(name, getattr(self, name), optional=True)
        options.number("minutes", self.minutes)
        make_config(self.preset, **demo_training(self.train_overrides))  # bad overrides are refused before any work


def demo_training(overrides: dict) -> dict:
    """The preset's settings as the demo trains: without validation (unless the overrides ask for
    it), since the demo tests the last weights on its test splits right after; a validation would
    have one candidate to choose from and cost ~30 s of training on 2 cores."""
    return {"validate": False, **overrides}


class StageClock:
    """Wall time of each stage, in order, as the report and demo.json give them."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        print(f"\n=== demo: {name} ===", flush=True)
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 1)

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self._started, 1)


def run_demo(config: DemoConfig) -> dict:
    out = Path(config.out)
    if config.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock()
    train_config = make_config(config.preset, **demo_training(config.train_overrides))

    with clock.stage("corpus + features"):
        synthetic = SyntheticConfig(out_dir=out / "corpus", n_train=config.n_train, n_validation=config.n_validation,
                                    n_test=config.n_test, seed=config.seed)
        features_dir = out / "features"
        prepared = prepare(PrepareConfig(
            source=f"synthetic:{synthetic.out_dir}", out_dir=features_dir, model=train_config.model, synthetic=synthetic,
            cache_encoder=train_config.mode == "cached-encoder", cache_encoder_layers=config.cache_encoder_layers,
            pack=config.pack, pack_seconds=config.pack_seconds, pack_min_seconds=config.pack_min_seconds,
            pack_singles=config.pack_singles,
        ))  # fmt: skip

    splits = TEST_SPLITS + tuple(config.extra_eval_splits)
    evaluated = sum(prepared["splits"].get(s, {}).get("clips", 0) for s in splits)
    with clock.stage("zero-shot evaluation"):
        before = {s: _evaluate_or_reuse(train_config.model, features_dir, s, out / "eval" / f"zero-shot-{s}") for s in splits}

    with clock.stage("fine-tuning"):
        run_dir = out / "run"
        train_config = dataclasses.replace(train_config, features=str(features_dir), out=str(run_dir))
        summary = _train_or_reuse(train_config, run_dir, config.fresh, lambda: training_minutes(config, train_config, clock, evaluated))

    tuned = str(run_dir / "best-ct2")
    with clock.stage("evaluation of the fine-tuned model"):
        # The transformers folder: what the torch engine loads as it is (CTranslate2 exports it once).
        after = {s: _evaluate_or_reuse(str(run_dir / "best"), features_dir, s, out / "eval" / f"fine-tuned-{s}") for s in splits}
        for split in TEST_SPLITS:  # the model card gets the measured WERs
            add_test_results(run_dir, [after[split]], str(features_dir), split)
        _side_by_side_plots(before, after, out)

    with clock.stage("transcribe with the exported model"):
        clip = _first_test_clip(out / "corpus")
        proc = subprocess.run([sys.executable, "-m", "galwhisper.cli", "transcribe", str(clip["path"]), "--model", tuned],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise GalwhisperError(f"demo: galwhisper transcribe of {clip['path']} failed ({one_line(proc.stderr or proc.returncode)})")
        transcript = proc.stdout.strip()

    report = {
        "synthetic": True,
        "machine": models.machine(),
        "prepared": prepared["splits"],
        "before": {s: r.to_dict() for s, r in before.items()},
        "after": {s: r.to_dict() for s, r in after.items()},
        "train": summary,
        "transcribe_example": {"clip": str(clip["path"]), "reference": clip["sentence"], "hypothesis": transcript},
        "timings_seconds": clock.seconds,
        "total_seconds": clock.total,
    }
    write_json_atomic(out / "report.json", report)
    write_json_atomic(out / "demo.json", demo_summary(report, out, run_dir))
    write_text_atomic(out / "report.md", render_report(report, before, after, run_dir, tuned))
    print_summary(report, out)
    return report


def demo_summary(report: dict, out: Path, run_dir: Path) -> dict:
    """demo.json, for scripts: WER/CER per split before and after, stage times, where things are."""
    rates = ("wer", "cer", "wer_raw", "cer_raw", "utterances")
    return {
        "synthetic": True,
        "machine": report["machine"],
        "splits": {s: {"before": {k: report["before"][s][k] for k in rates}, "after": {k: report["after"][s][k] for k in rates}}
                   for s in report["before"]},
        "stage_seconds": report["timings_seconds"],
        "total_seconds": report["total_seconds"],
        "train": {k: report["train"].get(k) for k in ("steps", "best_step", "best_wer", "train_seconds", "precision", "timestamps")},
        "paths": {"report": str(out / "report.md"), "model_ct2": str(run_dir / "best-ct2"), "model_transformers": str(run_dir / "best"),
                  "features": str(out / "features"), "corpus": str(out / "corpus")},
    }


def training_minutes(config: DemoConfig, train_config, clock: StageClock, evaluated_clips: int) -> float | None:
    """The fine-tuning's time budget, from what this machine measured so far: the demo's minutes
    minus the stages done and those still to come, estimated from the zero-shot evaluation's
    time. None when the steps are given (or the preset has no budget)."""
    if {"max_steps", "max_minutes"} & set(config.train_overrides) or train_config.max_minutes is None:
        return None
    zero_shot = clock.seconds.get("zero-shot evaluation", 60.0)
    validation = (train_config.max_eval_samples or 0) if train_config.validate else 0
    evaluation = FINE_TUNED_EVAL_SHARE[choose_engine(EvaluateConfig.engine)] * zero_shot  # the fine-tuned model on the same clips
    to_come = evaluation + evaluation * min(1.0, validation / max(evaluated_clips, 1)) + FIXED_SECONDS  # + the training's last validation
    left = config.minutes * 60 - clock.total - to_come
    return round(max(1.0, left / 60), 2)


def _train_or_reuse(train_config, run_dir: Path, fresh: bool, budget) -> dict:
    """Reuse a finished run with the same training settings (its time budget aside: that depends
    on how fast the stages before it ran); else train from scratch, within `budget()` minutes."""
    previous = run_dir / "train.json"
    settings = lambda config: {k: v for k, v in json.loads(json.dumps(config, default=str)).items() if k != "max_minutes"}  # noqa: E731
    if not fresh and previous.is_file() and (run_dir / "best-ct2" / "model.bin").is_file():
        summary = json.loads(previous.read_text())
        if settings(summary.get("config", {})) == settings(dataclasses.asdict(train_config)):
            print(f"demo: reusing the finished training in {run_dir} (same settings; --fresh to redo)")
            return summary
    if run_dir.exists():
        shutil.rmtree(run_dir)
    minutes = budget()
    if minutes is not None:
        print(f"demo: fine-tuning gets {minutes:g} minutes of training: what the demo's time has left")
    return train(dataclasses.replace(train_config, max_minutes=minutes) if minutes is not None else train_config)


def _evaluate_or_reuse(spec: str, features_dir: Path, split: str, out: Path) -> ModelResult:
    """Evaluate, or reuse the results of the same model on the same prepared split."""
    model_files = [p for p in (Path(spec) / "model.bin", Path(spec) / "model.safetensors") if p.is_file()]
    key = {
        "model": spec,
        "model_mtime": [p.stat().st_mtime_ns for p in model_files],
        "prepared_mtime": (features_dir / split / MARKER).stat().st_mtime_ns,
    }
    key_file, results = out / "demo-key.json", out / "results.json"
    if key_file.is_file() and results.is_file() and json.loads(key_file.read_text()) == key:
        print(f"demo: reusing the evaluation of {spec} on {split} in {out}")
        return ModelResult.from_dict(json.loads(results.read_text())["models"][0])
    result = evaluate(EvaluateConfig(models=[spec], data=str(features_dir), split=split, out=str(out)))[0]
    write_json_atomic(key_file, key)
    return result


def _first_test_clip(corpus: Path) -> dict:
    import csv

    with open(corpus / "test.tsv", newline="", encoding="utf-8") as f:
        row = next(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return {"path": corpus / "clips" / row["path"], "sentence": row["sentence"]}


def _side_by_side_plots(before: dict, after: dict, out: Path) -> None:
    splits = list(before)
    plots.grouped_bars(out / "wer.png", splits,
                       {"zero-shot whisper-base": [100 * before[s].rates.wer for s in splits],
                        "fine-tuned": [100 * after[s].rates.wer for s in splits]},
                       title="Synthetic Galician (espeak-ng voices): WER before and after",
                       ylabel="WER % (Whisper-normalised)")


def render_report(report: dict, before: dict[str, ModelResult], after: dict[str, ModelResult], run_dir: Path, tuned: str) -> str:
    t = report["train"]
    rows = []
    for s in before:
        b, a = before[s].rates, after[s].rates
        rows.append(f"| {s} | {before[s].rates.utterances} | {100 * b.wer:.1f} | {100 * a.wer:.1f} | "
                    f"{100 * b.cer:.1f} | {100 * a.cer:.1f} | {100 * b.wer_raw:.1f} | {100 * a.wer_raw:.1f} |")
    history = (run_dir / "history.md").read_text() if (run_dir / "history.md").is_file() else "(no history)"
    splits = ", ".join(f"{k}: {v['clips']} clips ({v['seconds'] / 60:.1f} min)" for k, v in report["prepared"].items())
    example = report["transcribe_example"]
    timings = "\n".join(f"| {k} | {v:.0f} |" for k, v in report["timings_seconds"].items())
    return f"""# galwhisper demo report

**The data is synthetic.** Every clip is an original Galician sentence from galwhisper's built-in
list, spoken by espeak-ng's Portuguese and Spanish voices (speed, pitch, noise and gain varied).
`test_unseen` holds the test sentences again in a voice that training never heard. WER on
synthetic speech says how well the recipe adapts Whisper, not how it will do on real Galician
speakers: for that, prepare a real corpus (e.g. `--source cv:cv-corpus-XX/gl`) and evaluate there.

Data: {splits}.

## WER and CER before and after fine-tuning (Whisper-normalised unless "raw"; %)

| split | utterances | WER before | WER after | CER before | CER after | raw WER before | raw WER after |
|---|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

![WER before and after](wer.png)

Full tables:

{chr(10).join(f"- {s}:{chr(10)}{chr(10)}{markdown_table([before[s], after[s]])}" for s in before)}

Per-utterance errors (worst first): `eval/*/utterances-*.tsv`.

## Training

Preset `{t['config'].get('preset')}`: model `{t['config']['model']}`, mode `{t['config']['mode']}`,
{t['steps']} steps of batch {t['config']['batch_size']}, learning rate {t['config']['learning_rate']},
precision {t['precision']} on {t['device']}; {t['train_seconds']:.0f} s of training,
{t['samples_per_second'] or 0:.2f} samples/s. Kept as `best/`: {chosen_weights(t)}.

{history}
![training curves](run/curves.png)

## Try it

`galwhisper transcribe` with the exported CTranslate2 model on `{Path(example['clip']).name}`:

- reference: {example['reference']}
- galwhisper: {example['hypothesis']}

```bash
galwhisper transcribe my_recording.wav --model {tuned}
galwhisper app --model {tuned} base      # http://127.0.0.1:7860
```

## Stage times ({report['machine']})

| stage | seconds |
|---|---:|
{timings}
| **total** | **{report['total_seconds']:.0f}** |
"""


def print_summary(report: dict, out: Path) -> None:
    print("\n=== demo summary (synthetic Galician speech) ===")
    for s in report["before"]:
        b, a = report["before"][s]["wer"], report["after"][s]["wer"]
        print(f"{s:>12}: WER {100 * b:6.1f}% zero-shot -> {100 * a:6.1f}% fine-tuned")
    print(f"total {report['total_seconds'] / 60:.1f} min; report: {out / 'report.md'}")
    print(f"model: {out / 'run' / 'best-ct2'}  (galwhisper app --model {out / 'run' / 'best-ct2'})")
