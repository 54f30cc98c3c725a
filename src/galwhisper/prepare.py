"""Corpus source -> Whisper features on disk, ready for training and evaluation.

Layout of a prepared folder:
    prepare.json        model, feature settings, counts per split, every skipped clip and why
    SPLIT/              a `datasets` folder (save_to_disk) with columns
                        id, sentence, seconds, input_features (frames x n_mels, float16,
                        unpadded: see features.py), labels (token ids), and with
                        --cache-encoder also encoder_outputs (1500 x d_model, float16)

Each split is written into a temp folder and renamed into place with a marker that records
the settings and a digest of the split's rows (ids, sentences, and each audio file's size and
modification time), so an interrupted run never leaves a split that a later run takes as
complete, a second run with the same settings and data reuses every finished split, and a
changed source is prepared again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from galwhisper import features, models, options
from galwhisper.audio import SAMPLE_RATE, load_audio
from galwhisper.data import Row, iter_rows, parse_source
from galwhisper.errors import GalwhisperError, bars_disabled
from galwhisper.files import check_name, check_output_dir, inside, read_json, write_json_atomic
from galwhisper.languages import DEFAULT_LANGUAGE, language_code

FORMAT_VERSION = 2
MARKER = "galwhisper-split.json"
TASKS = ("transcribe", "translate")


@dataclass(frozen=True)
class PrepareConfig:
    source: str
    out_dir: Path
    model: str = models.DEFAULT_MODEL
    language: str = DEFAULT_LANGUAGE
    task: str = "transcribe"
    splits: tuple[str, ...] | None = None  # None: every split the source has
    max_per_split: int | None = None  # take only the first N rows of each split
    min_seconds: float = 0.2
    max_seconds: float = features.MAX_SECONDS
    max_label_tokens: int = features.MAX_TARGET_TOKENS
    num_proc: int = 2
    cache_encoder: bool = False
    audio_column: str = "audio"  # hf: sources
    text_column: str | None = None
    streaming: bool = False
    synthetic: object | None = field(default=None, repr=False)  # a SyntheticConfig for `synthetic`

    def __post_init__(self):
        parse_source(self.source)  # a malformed source is refused here, before any work
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        object.__setattr__(self, "language", language_code(self.language))
        options.one_of("task", self.task, TASKS)
        if self.splits is not None:
            object.__setattr__(self, "splits", tuple(check_name(s, "--splits") for s in self.splits))
        options.whole("max_per_split", self.max_per_split, optional=True)
        options.number("min_seconds", self.min_seconds, strict=False)
        options.number("max_seconds", self.max_seconds, maximum=features.MAX_SECONDS)
        if self.min_seconds >= self.max_seconds:
            raise options.refuse("min_seconds", self.min_seconds, f"must be below --max-seconds {self.max_seconds:g}")
        options.whole("max_label_tokens", self.max_label_tokens, minimum=8, maximum=features.MAX_TARGET_TOKENS)
        options.whole("num_proc", self.num_proc, maximum=64)

    def key(self, model_info: dict) -> dict:
        """Everything the prepared features depend on (not where they go or how fast)."""
        skip = ("out_dir", "num_proc", "splits", "synthetic")
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        if self.synthetic is not None:
            settings["synthetic"] = {k: str(v) for k, v in dataclasses.asdict(self.synthetic).items() if k not in ("out_dir", "num_workers")}
        return json.loads(json.dumps({"format_version": FORMAT_VERSION, "settings": settings, "model": model_info}, default=str))


@dataclass
class SplitReport:
    split: str
    kept: int = 0
    seconds: float = 0.0
    skipped: list[dict] = field(default_factory=list)
    reused: bool = False


# ---------------------------------------------------------------------------------------------


def model_info(spec: str) -> dict:
    """What features and labels depend on: mel bins and the text vocabulary."""
    from transformers import WhisperTokenizerFast

    folder = models.hf_dir(spec)
    if isinstance(folder, Path):
        config = json.loads((folder / "config.json").read_text())
    else:  # a hub id, online
        from transformers import WhisperConfig

        config = WhisperConfig.from_pretrained(folder).to_dict()
    tokenizer = WhisperTokenizerFast.from_pretrained(str(folder))
    # The text and control tokens by content (timestamps excluded: their count varies by how
    # the tokenizer was saved): robust to how tokenizer.json is written.
    vocab = sorted((t, i) for t, i in tokenizer.get_vocab().items() if not _is_timestamp(t))
    return {
        "family": "whisper",
        "spec": spec,
        "n_mels": config["num_mel_bins"],
        "d_model": config["d_model"],
        "vocab_sha256": hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16],
    }


def _is_timestamp(token: str) -> bool:
    return token.startswith("<|") and token.endswith("|>") and token[2:-2].replace(".", "", 1).isdigit()


def prepare(config: PrepareConfig, progress: bool = True) -> dict:
    """Prepare every split of config.source into config.out_dir; return the prepare.json data."""
    out = check_output_dir(config.out_dir, "--out")
    started = time.perf_counter()
    info = model_info(config.model)
    key = config.key(info)
    rows_by_split = _rows_by_split(config)
    if not rows_by_split:
        raise GalwhisperError(f"{config.source}: no rows found" + (f" for splits {list(config.splits)}" if config.splits else ""))

    keys = {split: {**key, "rows_sha256": _rows_digest(rows)} for split, rows in rows_by_split.items()}
    reports = {split: _reuse(out / split, keys[split]) for split in rows_by_split}
    for split, report in reports.items():
        if report is not None:
            print(f"prepare: {split}: reusing {report.kept} prepared clips in {out / split} (same settings and data)")
    todo = [split for split, report in reports.items() if report is None]
    if todo:
        # One pool for all splits: each worker loads the tokenizer once.
        tokenizer_dir = str(models.hf_dir(config.model))
        with ProcessPoolExecutor(max(1, config.num_proc), initializer=_init_worker, initargs=(tokenizer_dir,)) as pool:
            for split in todo:
                reports[split] = _prepare_split(split, rows_by_split[split], out, keys[split], config, info, pool, progress)
    reports = list(reports.values())

    if sum(r.kept for r in reports) == 0:
        reasons = sorted({s["reason"] for r in reports for s in r.skipped})
        raise GalwhisperError(f"{config.source}: no usable clips left after filtering ({'; '.join(reasons)[:200]})")
    summary = {
        **key,
        "source": config.source,
        "language": config.language,
        "task": config.task,
        "cache_encoder": config.cache_encoder,
        "splits": {r.split: {"clips": r.kept, "seconds": round(r.seconds, 2), "skipped": len(r.skipped)} for r in reports},
        "skipped": [s for r in reports for s in r.skipped],
        "elapsed_seconds": round(time.perf_counter() - started, 2),
    }
    write_json_atomic(out / "prepare.json", summary)
    return summary


def _rows_by_split(config: PrepareConfig) -> dict[str, list[Row]]:
    """The source's rows grouped by split, each split name checked before it becomes a folder."""
    rows_by_split: dict[str, list[Row]] = {}
    for row in iter_rows(
        parse_source(config.source),
        config.splits,
        audio_column=config.audio_column,
        text_column=config.text_column,
        streaming=config.streaming,
        synthetic_config=config.synthetic,
    ):
        if row.split not in rows_by_split:
            check_name(row.split, f"{config.source}: split")
        rows_by_split.setdefault(row.split, []).append(row)
    if config.max_per_split:
        rows_by_split = {split: rows[: config.max_per_split] for split, rows in rows_by_split.items()}
    return rows_by_split


def _rows_digest(rows: list[Row]) -> str:
    """What a split's features depend on in the data: ids, sentences, audio (size + mtime, or bytes)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(f"{row.id}\0{row.sentence}\0{_audio_fingerprint(row.audio)}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _audio_fingerprint(audio) -> str:
    if isinstance(audio, str):
        try:
            stat = os.stat(audio)
        except OSError:
            return f"{audio}:missing"
        return f"{audio}:{stat.st_size}:{stat.st_mtime_ns}"
    data = audio.tobytes() if isinstance(audio, np.ndarray) else bytes(audio)
    return hashlib.sha1(data).hexdigest()


def load_prepared(folder: str | os.PathLike) -> dict:
    """prepare.json of a prepared folder, or a one-line error saying what is wrong."""
    path = Path(folder) / "prepare.json"
    if not path.is_file():
        raise GalwhisperError(f"{folder}: not a prepared folder (no prepare.json; run galwhisper prepare)")
    prepared = read_json(path, "prepare.json")
    if not isinstance(prepared.get("model"), dict) or not isinstance(prepared.get("splits"), dict):
        raise GalwhisperError(f"{path}: not written by galwhisper prepare (no model or splits); run prepare again")
    return prepared


def check_compatible(prepared: dict, spec: str, folder: str | os.PathLike) -> None:
    """Refuse features prepared for another model (mel bins, tokenizer)."""
    mine, theirs = model_info(spec), prepared["model"]
    for name in ("n_mels", "vocab_sha256"):
        if mine[name] != theirs.get(name):
            raise GalwhisperError(
                f"{folder}: prepared for model {theirs.get('spec')} ({name} {theirs.get(name)}), "
                f"not for {spec} ({name} {mine[name]}); run prepare again with --model {spec}"
            )


def load_split(folder: str | os.PathLike, split: str):
    from datasets import load_from_disk

    path = Path(folder) / check_name(split, "--split")
    if not (path / MARKER).is_file():
        available = sorted(p.name for p in Path(folder).iterdir() if (p / MARKER).is_file())
        raise GalwhisperError(f"{folder}: has no prepared split '{split}' (has: {', '.join(available) or 'none'})")
    # numpy format: a 1500 x 512 encoder output as one array, not 768k Python floats.
    return load_from_disk(str(path)).with_format("numpy")


# ---------------------------------------------------------------------------------------------
# One split


def _reuse(folder: Path, key: dict) -> SplitReport | None:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("key") != key:
        return None
    return SplitReport(marker["split"], marker["kept"], marker["seconds"], marker["skipped"], reused=True)


def _prepare_split(split, rows, out: Path, key, config: PrepareConfig, info: dict, pool, progress: bool) -> SplitReport:
    from datasets import Array2D, Dataset, Features, Sequence, Value
    from datasets.utils.logging import disable_progress_bar
    from tqdm.auto import tqdm

    disable_progress_bar()  # one bar per split is ours; datasets' save bars are noise

    report = SplitReport(split)
    kept: list[dict] = []
    work = dict(
        n_mels=info["n_mels"],
        language=config.language,
        task=config.task,
        min_seconds=config.min_seconds,
        max_seconds=config.max_seconds,
        max_label_tokens=config.max_label_tokens,
    )
    with tqdm(total=len(rows), desc=f"prepare {split}", unit="clip", disable=bars_disabled(progress)) as bar:
        for row, result in zip(rows, pool.map(_featurize, rows, [work] * len(rows), chunksize=4)):
            if isinstance(result, str):
                report.skipped.append({"split": split, "id": row.id, "audio": _name(row.audio), "reason": result})
            else:
                kept.append(result)
                report.seconds += result["seconds"]
            bar.update(1)
    report.kept = len(kept)
    if report.skipped:
        print(f"prepare: {split}: skipped {len(report.skipped)} of {len(rows)} clips (reasons in prepare.json)")

    columns = {
        "id": Value("string"),
        "sentence": Value("string"),
        "seconds": Value("float32"),
        "input_features": Array2D(shape=(None, info["n_mels"]), dtype="float16"),
        "labels": Sequence(Value("int32")),
    }
    final = inside(out, out / split)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{split}-", dir=out))
    try:
        dataset = Dataset.from_list(kept, features=Features(columns)) if kept else Dataset.from_dict(
            {k: [] for k in columns}, features=Features(columns)
        )
        if config.cache_encoder and kept:
            dataset = _add_encoder_outputs(dataset, config.model, info, progress, split)
        dataset.save_to_disk(str(tmp / "data"))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp / "data", final)
        marker = {"key": key, "split": split, "kept": report.kept, "seconds": report.seconds, "skipped": report.skipped}
        write_json_atomic(final / MARKER, marker)  # last: marks the split complete
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


_TOKENIZER = None


def _init_worker(tokenizer_dir: str) -> None:
    global _TOKENIZER
    _die_with_parent()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import WhisperTokenizerFast

    _TOKENIZER = WhisperTokenizerFast.from_pretrained(tokenizer_dir)


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies (a SIGKILLed prepare left its
    workers running, ~220 MB each); elsewhere the pool's own shutdown is all there is."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _featurize(row: Row, work: dict) -> dict | str:
    """Features and labels of one row, or the reason it is skipped."""
    sentence = (row.sentence or "").strip()
    if not sentence:
        return "empty sentence"
    try:
        audio = load_audio(row.audio)
    except GalwhisperError as exc:
        return str(exc)
    seconds = len(audio) / SAMPLE_RATE
    if seconds < work["min_seconds"]:
        return f"too short ({seconds:.2f} s < {work['min_seconds']} s)"
    if seconds > work["max_seconds"]:
        return f"too long ({seconds:.1f} s > {work['max_seconds']} s)"
    labels = features.label_ids(_TOKENIZER, sentence, work["language"], work["task"])
    if len(labels) > work["max_label_tokens"]:
        return f"label too long ({len(labels)} tokens > {work['max_label_tokens']})"
    mel = features.log_mel(audio, work["n_mels"])
    return {
        "id": row.id,
        "sentence": sentence,
        "seconds": seconds,
        "input_features": mel.T.astype(np.float16),  # (frames, n_mels): datasets allows a free first dim
        "labels": labels,
    }


def _add_encoder_outputs(dataset, spec: str, info: dict, progress: bool, split: str):
    """Run the frozen encoder once per clip and store its output (float16)."""
    import torch
    from datasets import Array2D

    model, _ = models.load_hf(spec)
    encoder = model.model.encoder.eval()
    positions = model.config.max_source_positions

    def encode(batch):
        mels = [np.asarray(m, dtype=np.float32).T for m in batch["input_features"]]
        with torch.inference_mode():
            hidden = encoder(torch.from_numpy(features.stack_inputs(mels))).last_hidden_state
        return {"encoder_outputs": hidden.to(torch.float16).numpy()}

    new_features = dataset.features.copy()
    new_features["encoder_outputs"] = Array2D(shape=(positions, info["d_model"]), dtype="float16")
    return dataset.map(encode, batched=True, batch_size=8, features=new_features, desc=f"encode {split}")


def _name(audio) -> str:
    return audio if isinstance(audio, str) else f"<{type(audio).__name__}>"
