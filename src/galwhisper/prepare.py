"""Corpus source -> Whisper features on disk, ready for training and evaluation.

Layout of a prepared folder:
    prepare.json        model, feature settings, counts per split, every skipped clip and why
    SPLIT/              a `datasets` folder (save_to_disk) with columns
                        id, sentence, seconds, clips (how many source clips the example
                        holds), input_features (frames x n_mels, float16, unpadded: see
                        features.py), labels (token ids, <|notimestamps|>), timed_labels
                        (the same text with timestamp tokens, where the source knows when
                        it is spoken; else empty), and with --cache-encoder also
                        encoder_hidden (1500 x d_model, float16: the encoder's state after
                        its bottom --cache-encoder-layers layers)

With --pack, the train split holds 30-s windows packed with several clips (pauses between
them, their times known), as Whisper was pre-trained, plus a share of the single clips: each
training step then pays the encoder's 30-s input for many seconds of speech, not ~4.

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
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from galwhisper import features, models, options
from galwhisper.audio import SAMPLE_RATE, join_with_pauses, load_audio
from galwhisper.commonvoice import CV_TRAIN
from galwhisper.data import Row, iter_rows, parse_source
from galwhisper.errors import GalwhisperError, bars_disabled
from galwhisper.files import check_name, check_output_dir, inside, read_json, write_json_atomic
from galwhisper.languages import DEFAULT_LANGUAGE, language_code

FORMAT_VERSION = 3
MARKER = "galwhisper-split.json"
TASKS = ("transcribe", "translate")
CACHED_SPLITS = ("train", "validation")  # what cached-encoder training reads; tests are decoded from mels


@dataclass(frozen=True)
class PrepareConfig:
    source: str | tuple[str, ...]  # one source, or several whose splits are merged
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
    cache_encoder_layers: int | None = None  # None: all (the encoder's output); K: the bottom K
    pack: bool = False  # the train split: pack clips into windows of up to pack_seconds
    pack_seconds: float = 28.0  # a window's length is drawn from [pack_min_seconds, this]
    pack_min_seconds: float = 10.0
    pack_singles: float = 0.25  # share of single clips kept beside the packed windows
    seed: int = 0
    audio_column: str = "audio"  # hf: sources
    text_column: str | None = None
    streaming: bool = False
    cv_train: str = "train"  # Common Voice: "validated" trains on validated.tsv minus dev and test
    max_per_source: int | None = None  # take at most N rows of each split from each source
    synthetic: object | None = field(default=None, repr=False)  # a SyntheticConfig for `synthetic`

    def __post_init__(self):
        sources = (self.source,) if isinstance(self.source, str) else tuple(self.source or ())
        if not sources:
            raise GalwhisperError("prepare: give at least one --source")
        for spec in sources:
            parse_source(spec)  # a malformed source is refused here, before any work
        object.__setattr__(self, "source", sources)
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
        options.whole("cache_encoder_layers", self.cache_encoder_layers, optional=True)
        if self.cache_encoder_layers is not None and not self.cache_encoder:
            object.__setattr__(self, "cache_encoder", True)  # giving the layers asks for the cache
        options.number("pack_seconds", self.pack_seconds, maximum=features.MAX_SECONDS - 1)
        options.number("pack_min_seconds", self.pack_min_seconds, maximum=self.pack_seconds)
        options.number("pack_singles", self.pack_singles, strict=False, maximum=1.0)
        options.whole("seed", self.seed, minimum=0)
        options.one_of("cv_train", self.cv_train, CV_TRAIN)
        options.whole("max_per_source", self.max_per_source, optional=True)

    @property
    def label(self) -> str:
        return ", ".join(self.source)

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
    examples: int = 0  # rows in the saved split: packed windows + single clips
    kept_by_source: dict[str, int] = field(default_factory=dict)


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
        "encoder_layers": config["encoder_layers"],
        "vocab_sha256": hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16],
    }


def _is_timestamp(token: str) -> bool:
    return token.startswith("<|") and token.endswith("|>") and token[2:-2].replace(".", "", 1).isdigit()


def prepare(config: PrepareConfig, progress: bool = True) -> dict:
    """Prepare every split of the sources into config.out_dir; return the prepare.json data."""
    out = check_output_dir(config.out_dir, "--out")
    started = time.perf_counter()
    info = model_info(config.model)
    key = config.key(info)
    rows_by_split = _rows_by_split(config)
    if not rows_by_split:
        raise GalwhisperError(f"{config.label}: no rows found" + (f" for splits {list(config.splits)}" if config.splits else ""))

    keys = {split: {**key, "rows_sha256": _rows_digest(rows)} for split, rows in rows_by_split.items()}
    reports = {split: _reuse(out / split, keys[split]) for split in rows_by_split}
    for split, report in reports.items():
        if report is not None:
            print(f"prepare: {split}: reusing {report.kept} prepared clips in {out / split} (same settings and data)")
    todo = [split for split, report in reports.items() if report is None]
    if todo:
        # One pool for all splits: each worker loads the tokenizer once. Spawned, not forked: a
        # process with threads at work (a web server, torch's pools: the test suite after the app
        # tests) forked workers that hung on a lock no thread of theirs would release.
        tokenizer_dir = str(models.hf_dir(config.model))
        with ProcessPoolExecutor(max(1, config.num_proc), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(tokenizer_dir, os.getpid())) as pool:
            for split in todo:
                reports[split] = _prepare_split(split, rows_by_split[split], out, keys[split], config, info, pool, progress)
    reports = list(reports.values())

    if sum(r.kept for r in reports) == 0:
        reasons = sorted({s["reason"] for r in reports for s in r.skipped})
        raise GalwhisperError(f"{config.label}: no usable clips left after filtering ({'; '.join(reasons)[:200]})")
    summary = {
        **key,
        "source": config.label,
        "sources": _per_source(config, reports),
        "language": config.language,
        "task": config.task,
        "cache_encoder": config.cache_encoder,
        "cache_encoder_layers": cached_layers(config, info) if config.cache_encoder else None,
        "pack": config.pack,
        "splits": {r.split: {"clips": r.kept, "seconds": round(r.seconds, 2), "skipped": len(r.skipped),
                             "examples": r.examples} for r in reports},
        "skipped": [s for r in reports for s in r.skipped],
        "elapsed_seconds": round(time.perf_counter() - started, 2),
    }
    write_json_atomic(out / "prepare.json", summary)
    return summary


def _rows_by_split(config: PrepareConfig) -> dict[str, list[Row]]:
    """The sources' rows merged by split, each split name checked before it becomes a folder.
    With several sources, ids are prefixed by the source's number (1:..., 2:...) to stay unique."""
    rows_by_split: dict[str, list[Row]] = {}
    for number, spec in enumerate(config.source, start=1):
        taken: dict[str, int] = {}
        for row in iter_rows(
            parse_source(spec),
            config.splits,
            audio_column=config.audio_column,
            text_column=config.text_column,
            streaming=config.streaming,
            synthetic_config=config.synthetic,
            cv_train=config.cv_train,
            language=config.language,
        ):
            if config.max_per_source and taken.get(row.split, 0) >= config.max_per_source:
                continue
            taken[row.split] = taken.get(row.split, 0) + 1
            if row.split not in rows_by_split:
                check_name(row.split, f"{spec}: split")
            row.source = spec
            if len(config.source) > 1:
                row.id = f"{number}:{row.id}"
            rows_by_split.setdefault(row.split, []).append(row)
    if config.max_per_split:
        rows_by_split = {split: rows[: config.max_per_split] for split, rows in rows_by_split.items()}
    return rows_by_split


def _per_source(config: PrepareConfig, reports: list[SplitReport]) -> list[dict]:
    """Counts of kept and skipped clips per source and split, for prepare.json."""
    summary = []
    for spec in config.source:
        splits = {}
        for report in reports:
            kept = report.kept_by_source.get(spec, 0)
            skipped = sum(1 for s in report.skipped if s.get("source") == spec)
            if kept or skipped:
                splits[report.split] = {"clips": kept, "skipped": skipped}
        summary.append({"source": spec, "splits": splits})
    return summary


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
    return SplitReport(marker["split"], marker["kept"], marker["seconds"], marker["skipped"], reused=True,
                       examples=marker.get("examples", marker["kept"]), kept_by_source=marker.get("kept_by_source", {}))


def _prepare_split(split, rows, out: Path, key, config: PrepareConfig, info: dict, pool, progress: bool) -> SplitReport:
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # one bar per split is ours; datasets' save bars are noise
    report = SplitReport(split)
    work = dict(
        n_mels=info["n_mels"],
        language=config.language,
        task=config.task,
        min_seconds=config.min_seconds,
        max_seconds=config.max_seconds,
        max_label_tokens=config.max_label_tokens,
    )
    singles = _featurize_all(pool, _featurize, [(row,) for row in rows], work, f"prepare {split}", "clip", progress)
    kept, kept_rows = [], []
    for row, result in zip(rows, singles):
        if isinstance(result, str):
            report.skipped.append({"split": split, "source": row.source, "id": row.id, "audio": _name(row.audio), "reason": result})
        else:
            kept.append(result)
            kept_rows.append(row)
            report.seconds += result["seconds"]
            report.kept_by_source[row.source] = report.kept_by_source.get(row.source, 0) + 1
    report.kept = len(kept)
    if report.skipped:
        print(f"prepare: {split}: skipped {len(report.skipped)} of {len(rows)} clips (reasons in prepare.json)")
    if config.pack and split == "train" and kept:
        kept = _packed(kept, kept_rows, config, work, pool, progress)

    columns = _columns(info["n_mels"])
    final = inside(out, out / split)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{split}-", dir=out))
    try:
        dataset = Dataset.from_list(kept, features=columns) if kept else Dataset.from_dict({k: [] for k in columns}, features=columns)
        if config.cache_encoder and kept and split in CACHED_SPLITS:
            dataset = _add_encoder_states(dataset, config.model, cached_layers(config, info), info, split)
        dataset.save_to_disk(str(tmp / "data"))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp / "data", final)
        report.examples = len(dataset)
        marker = {"key": key, "split": split, "kept": report.kept, "seconds": report.seconds, "skipped": report.skipped,
                  "examples": report.examples, "kept_by_source": report.kept_by_source}
        write_json_atomic(final / MARKER, marker)  # last: marks the split complete
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _columns(n_mels: int):
    from datasets import Array2D, Features, Sequence, Value

    return Features({
        "id": Value("string"),
        "sentence": Value("string"),
        "seconds": Value("float32"),
        "clips": Value("int32"),
        "input_features": Array2D(shape=(None, n_mels), dtype="float16"),
        "labels": Sequence(Value("int32")),
        "timed_labels": Sequence(Value("int32")),
    })  # fmt: skip


def _featurize_all(pool, function, jobs: list[tuple], work: dict, desc: str, unit: str, progress: bool) -> list:
    """function(*job, work) for every job on the pool, in order, with a progress bar."""
    from tqdm.auto import tqdm

    results = []
    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=bars_disabled(progress)) as bar:
        for result in pool.map(function, *zip(*jobs), [work] * len(jobs), chunksize=4):
            results.append(result)
            bar.update(1)
    return results


# ---------------------------------------------------------------------------------------------
# Packing


def cached_layers(config: PrepareConfig, info: dict) -> int:
    """How many bottom encoder layers the cache holds (all of them unless told)."""
    layers = info["encoder_layers"]
    if config.cache_encoder_layers is not None and config.cache_encoder_layers > layers:
        raise options.refuse("cache_encoder_layers", config.cache_encoder_layers, f"the model has {layers} encoder layers")
    return layers if config.cache_encoder_layers is None else config.cache_encoder_layers


def plan_packs(seconds: list[float], text_tokens: list[int], config: PrepareConfig) -> list[list[tuple[int, float]]]:
    """Windows of clips: lists of (clip index, pause before it in seconds), in a seeded random
    order. Each window's length is drawn from [pack_min_seconds, pack_seconds] and its label
    (text plus two timestamp tokens per clip) fits the decoder."""
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(seconds))
    budget = config.max_label_tokens - 8  # prompt and <|endoftext|>
    windows, current, length, tokens = [], [], 0.0, 0
    target = rng.uniform(config.pack_min_seconds, config.pack_seconds)
    for index in order:
        pause = float(rng.uniform(0.2, 0.8)) if current else float(rng.uniform(0.0, 0.5))
        needed = pause + seconds[index]
        if current and (length + needed > target or tokens + text_tokens[index] + 2 > budget):
            windows.append(current)
            current, length, tokens = [], 0.0, 0
            target = rng.uniform(config.pack_min_seconds, config.pack_seconds)
            pause = float(rng.uniform(0.0, 0.5))
            needed = pause + seconds[index]
        if needed > config.pack_seconds:
            continue  # a clip longer than any window stays a single clip
        current.append((int(index), pause))
        length += needed
        tokens += text_tokens[index] + 2
    if current:
        windows.append(current)
    return [w for w in windows if len(w) > 1]


def _packed(kept: list[dict], rows: list[Row], config: PrepareConfig, work: dict, pool, progress: bool) -> list[dict]:
    """The packed windows of the kept clips, plus a seeded share (pack_singles) of the clips alone."""
    prompt = 4 if config.language else 3
    windows = plan_packs([k["seconds"] for k in kept], [len(k["labels"]) - prompt - 1 for k in kept], config)
    jobs = [([rows[i] for i, _ in window], [pause for _, pause in window]) for window in windows]
    packed = [p for p in _featurize_all(pool, _featurize_pack, jobs, work, "pack train", "window", progress) if not isinstance(p, str)]
    rng = np.random.default_rng(config.seed + 1)
    singles = [kept[i] for i in sorted(rng.choice(len(kept), round(config.pack_singles * len(kept)), replace=False))]
    print(f"prepare: train: {len(packed)} packed windows of {sum(p['clips'] for p in packed)} clips "
          f"({sum(p['seconds'] for p in packed) / 60:.1f} min) + {len(singles)} single clips")
    return packed + singles


# ---------------------------------------------------------------------------------------------
# Workers


_TOKENIZER = None


def _init_worker(tokenizer_dir: str, parent: int) -> None:
    global _TOKENIZER
    _die_with_parent(parent)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import WhisperTokenizerFast

    _TOKENIZER = WhisperTokenizerFast.from_pretrained(tokenizer_dir)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this worker when its parent (the prepare process, pid `parent`) dies: a
    SIGKILLed prepare left its workers running, ~220 MB each. Elsewhere the pool's own shutdown
    is all there is."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect (a spawned
        os._exit(1)  # worker imports for a second or more before it gets here)


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
    return _example(row.id, sentence, audio, labels, _timed(row.segments, seconds, work), 1, work)


def _featurize_pack(rows: list[Row], pauses: list[float], work: dict) -> dict | str:
    """One window: the rows' audio joined with the given pauses; its segments, where every row's
    are known, shifted to their place in the window."""
    try:
        clips = [load_audio(row.audio) for row in rows]
    except GalwhisperError as exc:
        return str(exc)
    audio, starts = join_with_pauses(clips, pauses)
    segments = None
    if all(row.segments for row in rows):
        segments = [(at + start, at + end, text) for row, at in zip(rows, starts) for start, end, text in row.segments]
    sentence = " ".join(row.sentence.strip() for row in rows)
    labels = features.label_ids(_TOKENIZER, sentence, work["language"], work["task"])
    window_id = "+".join(row.id for row in rows)[:200]
    return _example(window_id, sentence, audio, labels, _timed(segments, len(audio) / SAMPLE_RATE, work), len(rows), work)


def _timed(segments, seconds: float, work: dict) -> list[int]:
    """Timestamped labels for known segments that fit the window and the decoder; else []."""
    if not segments or segments[-1][1] > min(seconds, features.MAX_SECONDS) + 0.05:
        return []
    ids = features.timed_label_ids(_TOKENIZER, segments, work["language"], work["task"])
    return ids if len(ids) <= work["max_label_tokens"] else []


def _example(example_id: str, sentence: str, audio: np.ndarray, labels: list[int], timed: list[int], clips: int,
             work: dict) -> dict:
    return {
        "id": example_id,
        "sentence": sentence,
        "seconds": len(audio) / SAMPLE_RATE,
        "clips": clips,
        "input_features": features.log_mel(audio, work["n_mels"]).T.astype(np.float16),  # (frames, n_mels)
        "labels": labels,
        "timed_labels": timed,
    }


def _add_encoder_states(dataset, spec: str, layers: int, info: dict, split: str):
    """Run the frozen bottom `layers` encoder layers once per example and store their output."""
    import torch
    from datasets import Array2D

    model = _encoder_model(spec)
    encoder = model.model.encoder.eval()

    def encode(batch):
        mels = [np.asarray(m, dtype=np.float32).T for m in batch["input_features"]]
        with torch.inference_mode():
            hidden = features.encoder_states(encoder, torch.from_numpy(features.stack_inputs(mels)), layers)
        return {"encoder_hidden": hidden.to(torch.float16).numpy()}

    new_features = dataset.features.copy()
    new_features["encoder_hidden"] = Array2D(shape=(model.config.max_source_positions, info["d_model"]), dtype="float16")
    return dataset.map(encode, batched=True, batch_size=8, features=new_features, desc=f"encode {split}")


@lru_cache(maxsize=1)
def _encoder_model(spec: str):
    """The model whose encoder fills the cache, loaded once for every split."""
    return models.load_hf(spec)[0]


def _name(audio) -> str:
    return audio if isinstance(audio, str) else f"<{type(audio).__name__}>"
