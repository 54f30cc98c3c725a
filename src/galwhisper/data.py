"""Corpus sources, read as rows of (audio, sentence, split).

A source is written as text, as on the command line:

    cv:PATH[:LOCALE]        a Common Voice release: its folder, or the .tar.gz/.tar archive as
                            downloaded, read without extracting it (commonvoice.py)
    mdc:DATASET_ID          a Common Voice release on the Mozilla Data Collective, downloaded
                            once with the datacollective client (needs MDC_API_KEY)
    manifest:FILE           a .tsv or .csv file with path and sentence columns, optional split
                            and segments (times of the text in the clip) columns
    hf:DATASET[:CONFIG][@REVISION]
                            a Hugging Face hub dataset (e.g. @refs/convert/parquet, the hub's
                            parquet branch of script-based sets such as google/fleurs), or a
                            local folder: save_to_disk output, a parquet snapshot laid out
                            CONFIG/SPLIT/*.parquet, or anything load_dataset reads
    synthetic[:DIR]         the built-in synthetic Galician corpus (built on first use, then reused)

Every loader names validation "validation" (Common Voice's dev.tsv, a hub dataset's "dev" or
"valid" split) and train "train" (the parquet branch's "partial-train"). Audio stays undecoded
where it can (a path, or the file's bytes); decoding is galwhisper.audio.load_audio's job, so
every source goes through the same decoder.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galwhisper.errors import GalwhisperError, one_line

logger = logging.getLogger(__name__)

SCHEMES = ("cv", "mdc", "hf", "manifest", "synthetic")
USAGE = "use cv:PATH[:LOCALE], mdc:DATASET_ID, hf:DATASET[:CONFIG][@REVISION], manifest:FILE or synthetic[:DIR]"

SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation", "partial-train": "train"}
PATH_COLUMNS = ("path", "audio", "file_name", "audio_path")
# Text columns in order of preference: cased and punctuated before normalised (FLEURS has both
# raw_transcription and a lower-cased transcription); `text_<language>` is tried after
# `sentence` (FLEURS-SpeechT-GL-EN: text_gl, text_en).
TEXT_COLUMNS = ("sentence", "raw_transcription", "text", "transcription", "transcript", "normalized_text")
MANIFEST_SPLIT = "all"  # the split of manifest rows that have no split column


Segment = tuple[float, float, str]  # (start, end, text): seconds from the clip's start


@dataclass
class Row:
    """One utterance. audio is a file path, the file's bytes, or 16 kHz mono samples.
    segments: where its text is spoken in the clip, when the source knows (None otherwise)."""

    audio: str | bytes | np.ndarray
    sentence: str
    split: str
    id: str
    segments: tuple[Segment, ...] | None = None
    source: str = ""  # the source spec it came from (prepare reads several)


def parse_segments(cell: str | None) -> tuple[Segment, ...] | None:
    """A `segments` cell: JSON [[start, end, text], ...] in seconds from the clip's start, in
    order and not overlapping. Anything else is None (the row is used without times)."""
    if not cell or not cell.strip():
        return None
    try:
        items = json.loads(cell)
        segments = tuple((float(a), float(b), str(t).strip()) for a, b, t in items)
    except (ValueError, TypeError):
        return None
    previous_end = 0.0
    for start, end, text in segments:
        if not (previous_end - 1e-3 <= start < end) or not text:
            return None
        previous_end = end
    return segments or None


@dataclass(frozen=True)
class Source:
    scheme: str  # one of SCHEMES
    location: str = ""  # folder, file or dataset id; "" = the default synthetic folder
    config: str | None = None  # hf: dataset configuration; cv: the locale
    revision: str | None = None  # hf: a branch, tag or commit (e.g. refs/convert/parquet)
    spec: str = ""  # as the user wrote it, for messages

    def __str__(self) -> str:
        return self.spec or f"{self.scheme}:{self.location}"


def parse_source(spec: str) -> Source:
    """Parse a source as written on the command line (see the module's docstring)."""
    text = str(spec).strip()
    if text == "synthetic":
        return Source("synthetic", spec=text)
    scheme, colon, rest = text.partition(":")
    if not colon:
        raise GalwhisperError(f"{text or repr(spec)}: not a data source; {USAGE}")
    if scheme not in SCHEMES:
        raise GalwhisperError(f"{text}: unknown source type '{scheme}:'; {USAGE}")
    rest = rest.strip()
    if not rest:
        raise GalwhisperError(f"{text}: says nothing after '{scheme}:'; {USAGE}")
    if scheme in ("manifest", "synthetic", "mdc") or os.path.exists(os.path.expanduser(rest)):
        return Source(scheme, rest, spec=text)
    if scheme == "cv":  # cv:PATH:LOCALE, where PATH exists
        location, _, locale = rest.rpartition(":")
        return Source("cv", location or rest, locale or None, spec=text) if location else Source("cv", rest, spec=text)
    # Hub ids contain no colon or @: a colon separates the configuration, an @ the revision.
    rest, _, revision = rest.partition("@")
    location, _, config = rest.partition(":")
    return Source("hf", location, config or None, revision or None, spec=text)


def load_rows(source: str | Source, splits: Iterable[str] | None = None, **options) -> dict[str, list[Row]]:
    """All rows of `source`, grouped by split. Options are those of iter_rows."""
    grouped: dict[str, list[Row]] = {}
    for row in iter_rows(source, splits, **options):
        grouped.setdefault(row.split, []).append(row)
    return grouped


def iter_rows(
    source: str | Source,
    splits: Iterable[str] | None = None,
    *,
    audio_column: str = "audio",
    text_column: str | None = None,
    streaming: bool = False,
    synthetic_config=None,
    cv_train: str = "train",
    language: str | None = None,
    progress: bool = True,
) -> Iterator[Row]:
    """Yield the rows of `source`, optionally only those of `splits` (e.g. ["train", "dev"]).

    Problems with the source itself (missing folder, no usable columns, hub unreachable) raise
    GalwhisperError at once, before the first row. audio_column and text_column apply to hf:
    sources (text_column is detected when None, `text_<language>` included); streaming streams
    a hub dataset instead of downloading it; synthetic_config (a SyntheticConfig) overrides the
    synthetic corpus settings; cv_train "validated" trains Common Voice on validated.tsv minus
    dev and test (commonvoice.py).
    """
    if not isinstance(source, Source):
        source = parse_source(source)
    wanted = None if splits is None else {normalize_split(s) for s in splits}
    if source.scheme in ("cv", "mdc"):
        return _cv_rows(source, wanted, cv_train, progress)
    if source.scheme == "manifest":
        return _manifest_rows(Path(source.location).expanduser(), wanted, str(source))
    if source.scheme == "hf":
        return _hf_rows(source, wanted, audio_column, text_column, streaming, language)
    if source.scheme == "synthetic":
        return _synthetic_rows(source, wanted, synthetic_config)
    raise GalwhisperError(f"{source}: unknown source type '{source.scheme}:'; {USAGE}")


def normalize_split(name: str) -> str:
    name = str(name).strip()
    return SPLIT_ALIASES.get(name.lower(), name)


# ---------------------------------------------------------------- Common Voice


def _cv_rows(source: Source, wanted: set[str] | None, cv_train: str, progress: bool) -> Iterator[Row]:
    from galwhisper import commonvoice

    label = str(source)
    if source.scheme == "mdc":
        archive = commonvoice.mdc_archive(source.location, label, progress)
        folder = commonvoice.extracted(archive, source.config, wanted, cv_train, label, progress)
    else:
        path = Path(source.location).expanduser()
        if commonvoice.is_archive(path):
            folder = commonvoice.extracted(path, source.config, wanted, cv_train, label, progress)
        else:
            folder = commonvoice.locale_folder(path, source.config, label)
    if not commonvoice.split_tsvs(folder, wanted, cv_train, label):
        if wanted is not None:  # the asked-for splits are just missing: that is fine
            return iter(())
        raise GalwhisperError(f"{label}: no Common Voice split files (train.tsv, dev.tsv, test.tsv with path and sentence columns)")
    records = commonvoice.rows_of_release(folder, wanted, cv_train, label)
    return (Row(path, sentence, split, clip_id, parse_segments(segments)) for split, path, sentence, clip_id, segments in records)


# ---------------------------------------------------------------- manifest files


def _manifest_rows(file: Path, wanted: set[str] | None, label: str) -> Iterator[Row]:
    if not file.is_file():
        raise GalwhisperError(f"{label}: file not found" if not file.exists() else f"{label}: not a file")
    suffix = file.suffix.lower()
    if suffix not in (".tsv", ".csv"):
        raise GalwhisperError(f"{label}: must be a .tsv or .csv file")
    delimiter = "\t" if suffix == ".tsv" else ","
    header = read_header(file, delimiter)
    path_column = next((c for c in PATH_COLUMNS if c in header), None)
    text_column = next((c for c in TEXT_COLUMNS if c in header), None)
    if path_column is None or text_column is None:
        found = ", ".join(header) or "none"
        raise GalwhisperError(f"{label}: needs a 'path' and a 'sentence' (or text/transcript) column; found columns: {found}")
    base = file.parent.absolute()

    def rows() -> Iterator[Row]:
        skipped = 0
        for number, record in enumerate(read_table(file, delimiter), start=1):
            path, sentence = (record.get(path_column) or "").strip(), (record.get(text_column) or "").strip()
            split = normalize_split(record.get("split") or "") or MANIFEST_SPLIT
            if not path or not sentence:
                skipped += 1
                continue
            if wanted is None or split in wanted:
                row_id = (record.get("id") or "").strip() or f"{Path(path).stem}-{number}"
                audio = str(base / Path(path).expanduser())  # absolute paths stay
                yield Row(audio, sentence, split, row_id, parse_segments(record.get("segments")))
        if skipped:
            logger.warning("%s: skipped %d rows without a path or a sentence", label, skipped)

    return rows()


# ---------------------------------------------------------------- TSV/CSV helpers


def read_header(file: Path, delimiter: str) -> list[str]:
    try:
        with open(file, encoding="utf-8-sig", newline="") as handle:
            first = handle.readline()
    except UnicodeDecodeError:
        raise GalwhisperError(f"{file}: line 1 is not UTF-8 text") from None
    except OSError as exc:
        raise GalwhisperError(f"{file}: cannot read ({exc.strerror or exc})") from None
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    fields = next(csv.reader([first], delimiter=delimiter, quoting=quoting), [])
    return [name.strip().lower() for name in fields]


def read_table(file: Path, delimiter: str) -> Iterator[dict[str, str]]:
    """Rows as dicts with lower-case keys. TSVs are unquoted: CV sentences contain quotes.

    A byte that is not UTF-8 anywhere in the file is a one-line error naming file and line."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with open(file, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        try:
            header = [name.strip().lower() for name in next(reader, [])]
            for values in reader:
                if values:
                    yield dict(zip(header, values))
        except UnicodeDecodeError:
            raise GalwhisperError(f"{file}: line {_first_bad_line(file)} is not UTF-8 text") from None
        except csv.Error as exc:
            raise GalwhisperError(f"{file}: line {reader.line_num}: {one_line(exc)}") from None


def _first_bad_line(file: Path) -> int:
    with open(file, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


# ---------------------------------------------------------------- Hugging Face datasets


def _hf_rows(source: Source, wanted: set[str] | None, audio_column: str, text_column: str | None, streaming: bool,
             language: str | None) -> Iterator[Row]:
    label = str(source)
    local = Path(source.location).expanduser()
    dataset = _load_local_dataset(local, source, streaming) if local.exists() else _load_hub_dataset(source, streaming)
    if not hasattr(dataset, "keys"):  # one Dataset, e.g. save_to_disk of a single split
        dataset = {"train": dataset}
    parts = {}
    for name, part in dataset.items():
        split = normalize_split(name)
        if wanted is None or split in wanted:
            parts[split] = _prepare_columns(part, label, audio_column, text_column, language)
    base = local.absolute() if local.is_dir() else None

    def rows() -> Iterator[Row]:
        for split, (part, text_name) in parts.items():
            for index, example in enumerate(part):
                sentence = str(example.get(text_name) or "").strip()
                audio, path = _audio_of(example[audio_column], base, label)
                row_id = Path(path).stem if path else f"{split}-{index:06d}"
                if sentence and audio is not None:
                    yield Row(audio, sentence, split, row_id)

    return rows()


def _load_local_dataset(folder: Path, source: Source, streaming: bool):
    import datasets

    label = str(source)
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        if source.config:
            raise GalwhisperError(f"{label}: a save_to_disk folder has no configurations; drop ':{source.config}'")
        try:
            return datasets.load_from_disk(str(folder))
        except Exception as exc:  # datasets raises many types for a damaged folder
            raise GalwhisperError(f"{label}: not a readable save_to_disk folder ({one_line(exc)})") from None
    if not folder.is_dir():
        raise GalwhisperError(f"{label}: not a dataset folder (save_to_disk output, a parquet snapshot, or audio files with metadata.csv)")
    data_files = parquet_splits(folder, source.config, label)
    try:
        if data_files:  # the hub's parquet layout: CONFIG/SPLIT/*.parquet
            return datasets.load_dataset("parquet", data_files=data_files, streaming=streaming)
        return datasets.load_dataset(str(folder), source.config, streaming=streaming)  # audiofolder, csv, json...
    except Exception as exc:
        raise GalwhisperError(f"{label}: cannot load the dataset folder ({one_line(exc)})") from None


def parquet_splits(folder: Path, config: str | None, label: str) -> dict[str, list[str]]:
    """{split name: globs of its parquet files} for a folder laid out as the hub's parquet branch
    (CONFIG/SPLIT/*.parquet, or SPLIT/*.parquet); {} for any other folder."""
    configs = sorted({p.parent.parent.name for p in folder.glob("*/*/*.parquet")})
    if configs:
        if config is None and len(configs) > 1:
            raise GalwhisperError(f"{label}: holds several configurations ({', '.join(configs)}); name one, e.g. hf:PATH:{configs[0]}")
        if config is not None and config not in configs:
            raise GalwhisperError(f"{label}: has no configuration '{config}' (it has: {', '.join(configs)})")
        root = folder / (config or configs[0])
    else:
        root = folder
    files: dict[str, list[str]] = {}
    for split in sorted(root.iterdir()):
        if split.is_dir() and any(split.glob("*.parquet")):  # datasets wants word-like names: partial-train -> train
            files.setdefault(normalize_split(split.name), []).append(str(split / "*.parquet"))
    return files


def _load_hub_dataset(source: Source, streaming: bool):
    import datasets
    from huggingface_hub import constants

    from galwhisper.media import reachable

    label = str(source)
    offline = bool(constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE)
    # Without a network load_dataset retries for ~30 s before failing; a quick connect says it at once.
    if not offline and not reachable(constants.ENDPOINT):
        raise GalwhisperError(f"{label}: cannot reach the Hugging Face hub (offline?); set HF_HUB_OFFLINE=1 to use a cached copy")
    # On the parquet branch each configuration is a folder (data_dir); elsewhere it is a name.
    by_folder = bool(source.revision and "parquet" in source.revision)
    try:
        return datasets.load_dataset(source.location, None if by_folder else source.config, revision=source.revision,
                                     data_dir=source.config if by_folder else None, streaming=streaming)
    except Exception as exc:  # classify by type name: the classes moved between library versions
        kinds = {cls.__name__ for cls in type(exc).__mro__}
        text = one_line(exc)
        if kinds & {"ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError"} or "Couldn't reach" in text:
            raise GalwhisperError(f"{label}: cannot reach the Hugging Face hub (offline?)") from None
        if "DatasetNotFoundError" in kinds or "RepositoryNotFoundError" in kinds:
            raise GalwhisperError(f"{label}: no such dataset on the Hugging Face hub (gated? log in with `hf auth login`)") from None
        raise GalwhisperError(f"{label}: cannot load the dataset ({text})") from None


def _prepare_columns(part, label: str, audio_column: str, text_column: str | None, language: str | None):
    """Check the columns, pick the text column, and turn off datasets' own audio decoding."""
    import datasets

    columns = list(part.column_names or [])
    found = ", ".join(columns) or "unknown"
    if columns and audio_column not in columns:
        raise GalwhisperError(f"{label}: no audio column '{audio_column}'; found columns: {found}")
    if text_column is None:
        text_column = choose_text_column(columns, language)
        if text_column is None:
            raise GalwhisperError(f"{label}: no text column ({', '.join(TEXT_COLUMNS)}, text_<language>); found columns: {found}; "
                                  "name one with --text-column")
    elif columns and text_column not in columns:
        raise GalwhisperError(f"{label}: no text column '{text_column}'; found columns: {found}")
    features = part.features or {}
    if isinstance(features.get(audio_column), datasets.Audio):
        # Undecoded ({"bytes", "path"}) so load_audio decodes, not datasets' torchcodec backend.
        part = part.cast_column(audio_column, datasets.Audio(decode=False))
    return part, text_column


def choose_text_column(columns: list[str], language: str | None) -> str | None:
    """sentence, then text_<language>, then the other known names; a lone text_xx column too."""
    preferred = ["sentence", f"text_{language}" if language else None, *TEXT_COLUMNS[1:]]
    found = next((c for c in preferred if c and c in columns), None)
    if found is None:
        candidates = [c for c in columns if c.startswith("text_")]
        found = candidates[0] if len(candidates) == 1 else None
    return found


def _audio_of(value, base: Path | None, label: str) -> tuple[str | bytes | np.ndarray | None, str | None]:
    """(audio for Row, file path if known) from an audio cell: a dict or a path string."""
    if isinstance(value, (str, os.PathLike)):
        path = Path(value).expanduser()
        return str(base / path if base and not path.is_absolute() else path), str(value)
    if isinstance(value, dict):
        path = value.get("path")
        if value.get("bytes"):
            return value["bytes"], path
        if value.get("array") is not None:
            from galwhisper.audio import to_mono_16k

            return to_mono_16k(np.asarray(value["array"]), int(value["sampling_rate"])), path
        if path:
            return _audio_of(path, base, label)
    if value is None:
        return None, None
    raise GalwhisperError(f"{label}: cannot read an audio cell of type {type(value).__name__}")


# ---------------------------------------------------------------- synthetic corpus


def _synthetic_rows(source: Source, wanted: set[str] | None, config) -> Iterator[Row]:
    from galwhisper.synthetic import SyntheticConfig, build_corpus, default_corpus_dir

    if config is None:
        config = SyntheticConfig(out_dir=default_corpus_dir())
    if source.location:
        config = dataclasses.replace(config, out_dir=Path(source.location).expanduser())
    folder = build_corpus(config)  # returns at once when the corpus is already built
    return _cv_rows(Source("cv", str(folder), spec=str(source)), wanted, "train", False)
