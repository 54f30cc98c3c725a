"""A run's model card (the Hugging Face hub's format) and publishing a run to the hub.

Every run's `best/` and `best-ct2/` get a README.md: YAML metadata (language, base model,
datasets, a `model-index` with the validation WER and, after `galwhisper evaluate --card RUN`,
the test results) and a body saying how the model was trained and on what. `galwhisper push
RUN --repo-id ID` uploads both folders in one commit (transformers files at the top, the
CTranslate2 export under `ctranslate2/`), so a failed upload leaves nothing half-sent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from galwhisper.errors import GalwhisperError, one_line
from galwhisper.files import read_json, write_text_atomic
from galwhisper.languages import language_name

CARD = "README.md"
HUB_ENDPOINT = "https://huggingface.co"


def _base_model(spec: str) -> str | None:
    """The hub id the run started from (the bundled base is openai/whisper-base)."""
    if spec == "base":
        return "openai/whisper-base"
    return spec if spec.count("/") == 1 and not Path(spec).exists() else None


def _results(card_data, task: str = "automatic-speech-recognition"):
    from huggingface_hub import EvalResult

    return [EvalResult(task_type=task, **result) for result in card_data]


def chosen_weights(summary: dict) -> str:
    """Which weights a finished run kept, as the CLI, the model card and the demo's report say it."""
    if summary.get("best_wer") is None:
        return f"no validation: the last weights (step {summary['steps']})"
    return f"best validation WER {100 * summary['best_wer']:.2f}% at step {summary['best_step']}"


def card_text(run_dir: Path, test_results: list[dict] | None = None) -> str:
    """The card of a finished run: its train.json and prepare.json, plus `test_results`
    (dataset_name, dataset_type, dataset_split, metric_type, metric_value, ...) if any."""
    from huggingface_hub import ModelCard, ModelCardData

    summary = read_json(run_dir / "train.json", "train.json")
    config = summary["config"]
    prepared = read_json(Path(summary["prepared"]["folder"]) / "prepare.json", "prepare.json") \
        if (Path(summary["prepared"]["folder"]) / "prepare.json").is_file() else {"source": "?", "splits": {}}
    sources = prepared.get("source", "?")
    synthetic = bool(summary.get("synthetic_data"))
    results = []
    if summary.get("best_wer") is not None:
        results.append(dict(dataset_name=f"{sources} (validation)", dataset_type="custom", dataset_split="validation",
                            metric_type="wer", metric_name="WER (Whisper-normalised)", metric_value=round(100 * summary["best_wer"], 2)))
    results += test_results or []
    data = ModelCardData(
        language=config["language"], license="apache-2.0", library_name="transformers", pipeline_tag="automatic-speech-recognition",
        base_model=_base_model(config["model"]), tags=["whisper", "galwhisper", *(["synthetic-data"] if synthetic else [])],
        metrics=["wer"], model_name=run_dir.name, eval_results=_results(results) or None,
    )  # fmt: skip
    splits = ", ".join(f"{k}: {v.get('clips', v)} clips" for k, v in prepared.get("splits", {}).items())
    body = f"""
# {run_dir.name}

Whisper fine-tuned for {language_name(config['language']).title()} ({config['language']}) with
[galwhisper](https://pypi.org/project/galwhisper/), from `{config['model']}`.

{"**Trained on synthetic speech** (espeak-ng voices reading Galician sentences): it shows the recipe works, not how the model does on real speakers." if synthetic else ""}

## Training

- data: `{sources}` ({splits})
- mode `{config['mode']}`, {summary['steps']} steps of batch {config['batch_size']}, learning rate {config['learning_rate']}
  ({config['lr_scheduler']}, {config['warmup_steps']} warm-up steps), precision {summary['precision']}, {summary.get('world_size', 1)} process(es)
- timestamped targets: {"yes, rate " + str(config.get('timestamp_rate')) if summary.get('timestamps') else "no"}
- weights kept: {chosen_weights(summary)}

## Use

```python
from faster_whisper import WhisperModel  # the CTranslate2 export, under ctranslate2/
model = WhisperModel("PATH/ctranslate2")
segments, info = model.transcribe("audio.mp3", language="{config['language']}")
```

or `galwhisper transcribe audio.mp3 --model PATH/ctranslate2`, or transformers'
`WhisperForConditionalGeneration.from_pretrained(PATH)`.
"""
    return str(ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body))


def write_card(run_dir: Path, test_results: list[dict] | None = None) -> Path:
    """Write the card into RUN/best and RUN/best-ct2 (each is what one engine loads)."""
    text = card_text(run_dir, test_results)
    for folder in ("best", "best-ct2"):
        if (run_dir / folder).is_dir():
            write_text_atomic(run_dir / folder / CARD, text)
    return run_dir / "best" / CARD


def add_test_results(run_dir: Path, results: list, data: str, split: str) -> Path:
    """`evaluate --card RUN`: the run's card again, with these evaluation results in its model-index
    (results of earlier --card calls on other data are kept)."""
    run_dir = Path(run_dir)
    if not (run_dir / "train.json").is_file():
        raise GalwhisperError(f"--card {run_dir}: not a finished galwhisper run (no train.json)")
    store = run_dir / "card-results.json"
    kept = json.loads(store.read_text()) if store.is_file() else []
    new = [dict(dataset_name=f"{data} ({split})", dataset_type="custom", dataset_split=split, metric_type=metric,
                metric_name=f"{metric.upper()} (Whisper-normalised), {r.name}", metric_value=round(100 * getattr(r.rates, metric), 2))
           for r in results for metric in ("wer", "cer")]
    kept = [k for k in kept if k["dataset_name"] != f"{data} ({split})"] + new
    write_text_atomic(store, json.dumps(kept, indent=2))
    return write_card(run_dir, kept)


def push(run_dir: Path, repo_id: str, private: bool = False) -> str:
    """Upload best/ and best-ct2/ (as ctranslate2/) in one commit; return the commit's URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from galwhisper.media import reachable

    run_dir = Path(run_dir)
    for folder in ("best", "best-ct2"):
        if not (run_dir / folder).is_dir():
            raise GalwhisperError(f"{run_dir}: has no {folder}/ (not a finished galwhisper run)")
    endpoint = os.environ.get("HF_ENDPOINT", HUB_ENDPOINT)
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not reachable(endpoint):
        raise GalwhisperError(f"{repo_id}: cannot reach the Hugging Face hub at {endpoint} (offline?); nothing was sent")
    if not (run_dir / "best" / CARD).is_file():
        write_card(run_dir)
    operations = [CommitOperationAdd(path_in_repo=str(f.relative_to(run_dir / "best")), path_or_fileobj=str(f))
                  for f in sorted((run_dir / "best").rglob("*")) if f.is_file()]
    operations += [CommitOperationAdd(path_in_repo=f"ctranslate2/{f.relative_to(run_dir / 'best-ct2')}", path_or_fileobj=str(f))
                   for f in sorted((run_dir / "best-ct2").rglob("*")) if f.is_file()]
    api = HfApi(endpoint=endpoint)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.create_commit(repo_id, operations, commit_message=f"galwhisper run {run_dir.name}")
    except Exception as exc:  # auth, permissions, network: the hub client raises many types
        raise GalwhisperError(f"{repo_id}: upload failed, nothing was committed ({type(exc).__name__}: {one_line(exc, 120)})") from None
    return commit.commit_url
