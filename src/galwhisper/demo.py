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
from dataclasses import dataclass, field
from pathlib import Path

from galwhisper import options, plots
from galwhisper.errors import GalwhisperError, one_line
from galwhisper.evaluate import EvaluateConfig, ModelResult, evaluate, markdown_table
from galwhisper.files import write_json_atomic, write_text_atomic
from galwhisper.prepare import MARKER, PrepareConfig, prepare
from galwhisper.synthetic import SyntheticConfig
from galwhisper.train import make_config, train

TEST_SPLITS = ("test", "test_unseen")


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

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))
        for name in ("n_train", "n_validation", "n_test"):
            options.whole(name, getattr(self, name), optional=True)
        make_config(self.preset, **self.train_overrides)  # bad overrides are refused before any work


def run_demo(config: DemoConfig) -> dict:
    started = time.perf_counter()
    out = Path(config.out)
    if config.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def stage(name: str):
        print(f"\n=== demo: {name} ===", flush=True)
        timings[name] = time.perf_counter()

    def done(name: str):
        timings[name] = round(time.perf_counter() - timings[name], 1)

    train_config = make_config(config.preset, **config.train_overrides)
    cached = train_config.mode == "cached-encoder"

    stage("corpus + features")
    synthetic = SyntheticConfig(out_dir=out / "corpus", n_train=config.n_train, n_validation=config.n_validation,
                                n_test=config.n_test, seed=config.seed)
    features_dir = out / "features"
    prepared = prepare(PrepareConfig(source=f"synthetic:{synthetic.out_dir}", out_dir=features_dir,
                                     model=train_config.model, synthetic=synthetic, cache_encoder=cached))
    done("corpus + features")

    splits = TEST_SPLITS + tuple(config.extra_eval_splits)
    stage("zero-shot evaluation")
    before = {s: _evaluate_or_reuse(train_config.model, features_dir, s, out / "eval" / f"zero-shot-{s}") for s in splits}
    done("zero-shot evaluation")

    stage("fine-tuning")
    run_dir = out / "run"
    train_config = dataclasses.replace(train_config, features=str(features_dir), out=str(run_dir))
    summary = _train_or_reuse(train_config, run_dir, config.fresh)
    done("fine-tuning")

    stage("evaluation of the fine-tuned model")
    tuned = str(run_dir / "best-ct2")
    after = {}
    for s in splits:
        after[s] = _evaluate_or_reuse(tuned, features_dir, s, out / "eval" / f"fine-tuned-{s}")
    _side_by_side_plots(before, after, out)
    done("evaluation of the fine-tuned model")

    stage("transcribe with the exported model")
    clip = _first_test_clip(out / "corpus")
    proc = subprocess.run([sys.executable, "-m", "galwhisper.cli", "transcribe", str(clip["path"]), "--model", tuned],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise GalwhisperError(f"demo: galwhisper transcribe of {clip['path']} failed ({one_line(proc.stderr or proc.returncode)})")
    transcript = proc.stdout.strip()
    done("transcribe with the exported model")

    total = round(time.perf_counter() - started, 1)
    report = {
        "synthetic": True,
        "prepared": prepared["splits"],
        "before": {s: r.to_dict() for s, r in before.items()},
        "after": {s: r.to_dict() for s, r in after.items()},
        "train": summary,
        "transcribe_example": {"clip": str(clip["path"]), "reference": clip["sentence"], "hypothesis": transcript},
        "timings_seconds": timings,
        "total_seconds": total,
    }
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", render_report(report, before, after, run_dir, tuned))
    print_summary(report, out)
    return report


def _train_or_reuse(train_config, run_dir: Path, fresh: bool) -> dict:
    """Reuse a finished run with the same training settings; else train from scratch."""
    previous = run_dir / "train.json"
    if not fresh and previous.is_file() and (run_dir / "best-ct2" / "model.bin").is_file():
        summary = json.loads(previous.read_text())
        if summary.get("config") == json.loads(json.dumps(dataclasses.asdict(train_config), default=str)):
            print(f"demo: reusing the finished training in {run_dir} (same settings; --fresh to redo)")
            return summary
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return train(train_config)


def _evaluate_or_reuse(spec: str, features_dir: Path, split: str, out: Path) -> ModelResult:
    """Evaluate, or reuse the results of the same model on the same prepared split."""
    model_files = [p for p in (Path(spec) / "model.bin",) if p.is_file()]
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
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in report["timings_seconds"].items())
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
{t['samples_per_second'] or 0:.2f} samples/s. Best validation WER {100 * (t['best_wer'] or 0):.1f}% at step
{t['best_step']} (the checkpoint kept as `best/`).

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

Stage times: {timings}; total {report['total_seconds']:.0f} s.
"""


def print_summary(report: dict, out: Path) -> None:
    print("\n=== demo summary (synthetic Galician speech) ===")
    for s in report["before"]:
        b, a = report["before"][s]["wer"], report["after"][s]["wer"]
        print(f"{s:>12}: WER {100 * b:6.1f}% zero-shot -> {100 * a:6.1f}% fine-tuned")
    print(f"total {report['total_seconds'] / 60:.1f} min; report: {out / 'report.md'}")
    print(f"model: {out / 'run' / 'best-ct2'}  (galwhisper app --model {out / 'run' / 'best-ct2'})")
