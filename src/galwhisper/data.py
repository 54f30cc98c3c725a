"""Corpus sources, read as rows of (audio, sentence, split).

A source is written as text, as on the command line:

    cv:DIR                  a Common Voice release folder (train.tsv, dev.tsv, test.tsv, clips/)
    manifest:FILE           a .tsv or .csv file with path and sentence columns, optional split
    hf:DATASET[:CONFIG]     a Hugging Face hub dataset, or a local folder: one written by
                            save_to_disk, or one load_dataset reads (audiofolder + metadata.csv, ...)
    synthetic[:DIR]         the built-in synthetic Galician corpus (built on first use, then reused)

Every loader names validation "validation" (Common Voice's dev.tsv, a hub dataset's "dev" or
"valid" split). Audio stays undecoded where it can (a path, or the file's bytes); decoding is
galwhisper.audio.load_audio's job, so every source goes through the same decoder.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from galwhisper.errors import GalwhisperError, one_line

logger = logging.getLogger(__name__)

SCHEMES = ("cv", "hf", "manifest", "synthetic")
USAGE = "use cv:DIR, hf:DATASET[:CONFIG], manifest:FILE or synthetic[:DIR]"

SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation"}
# Common Voice TSVs that are not splits: read only when asked for by name.
CV_NON_SPLITS = {
    "validated", "invalidated", "other", "reported", "clip_durations",
    "validated_sentences", "unvalidated_sentences",
}  # fmt: skip
PATH_COLUMNS = ("path", "audio", "file_name", "audio_path")
TEXT_COLUMNS = ("sentence", "text", "transcription", "transcript", "normalized_text", "raw_transcription")
MANIFEST_SPLIT = "all"  # the split of manifest rows that have no split column


@dataclass
class Row:
    """One utterance. audio is a file path, the file's bytes, or 16 kHz mono samples."""

    audio: str | bytes | np.ndarray
    sentence: str
    split: str
    id: str


@dataclass(frozen=True)
class Source:
    scheme: str  # one of SCHEMES
    location: str = ""  # folder, file or dataset id; "" = the default synthetic folder
    config: str | None = None  # hf: dataset configuration, e.g. a language code
    spec: str = ""  # as the user wrote it, for messages

    def __str__(self) -> str:
        return self.spec or f"{self.scheme}:{self.location}"


def parse_source(spec: str) -> Source:
    """Parse 'cv:DIR', 'hf:ID[:CONFIG]', 'manifest:FILE', 'synthetic' or 'synthetic:DIR'."""
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
    if scheme != "hf" or os.path.exists(os.path.expanduser(rest)):
        return Source(scheme, rest, spec=text)
    # Hub ids contain no colon, so a colon separates the configuration.
    location, _, config = rest.partition(":")
    return Source("hf", location, config or None, spec=text)


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
) -> Iterator[Row]:
    """Yield the rows of `source`, optionally only those of `splits` (e.g. ["train", "dev"]).

    Problems with the source itself (missing folder, no usable columns, hub unreachable) raise
    GalwhisperError at once, before the first row. audio_column and text_column apply to hf:
    sources (text_column is detected when None); streaming streams a hub dataset instead of
    downloading it; synthetic_config (a SyntheticConfig) overrides the synthetic corpus settings.
    """
    if not isinstance(source, Source):
        source = parse_source(source)
    wanted = None if splits is None else {normalize_split(s) for s in splits}
    if source.scheme == "cv":
        return _cv_rows(Path(source.location).expanduser(), wanted, str(source))
    if source.scheme == "manifest":
        return _manifest_rows(Path(source.location).expanduser(), wanted, str(source))
    if source.scheme == "hf":
        return _hf_rows(source, wanted, audio_column, text_column, streaming)
    if source.scheme == "synthetic":
        return _synthetic_rows(source, wanted, synthetic_config)
    raise GalwhisperError(f"{source}: unknown source type '{source.scheme}:'; {USAGE}")


def normalize_split(name: str) -> str:
    name = str(name).strip()
    return SPLIT_ALIASES.get(name.lower(), name)


# ---------------------------------------------------------------- Common Voice


def _cv_rows(folder: Path, wanted: set[str] | None, label: str) -> Iterator[Row]:
    if not folder.is_dir():
        raise GalwhisperError(f"{label}: folder not found" if not folder.exists() else f"{label}: not a folder")
    tables = []
    for split, tsv in _cv_split_files(folder, wanted):
        header = _read_header(tsv, "\t")
        if "path" in header and "sentence" in header:
            tables.append((split, tsv))
        elif wanted is not None:
            raise GalwhisperError(f"{label}: {tsv.name} has no path and sentence columns")
    if not tables:
        if wanted is not None:  # the asked-for splits are just missing: that is fine
            return iter(())
        raise GalwhisperError(f"{label}: no Common Voice split files (train.tsv, dev.tsv, test.tsv with path and sentence columns)")
    clips = folder.absolute() / "clips"
    if not clips.is_dir():
        raise GalwhisperError(f"{label}: has no clips/ folder next to its TSV files")

    def rows() -> Iterator[Row]:
        for split, tsv in tables:
            for record in _read_table(tsv, "\t"):
                path, sentence = record.get("path", "").strip(), record.get("sentence", "").strip()
                if path:  # an empty sentence reaches prepare, which skips and counts it
                    yield Row(str(clips / path), sentence, split, Path(path).stem)

    return rows()


def _cv_split_files(folder: Path, wanted: set[str] | None) -> list[tuple[str, Path]]:
    """(split, tsv) pairs: train, validation (dev.tsv), test, then any other split TSVs."""
    found = {}
    for tsv in sorted(folder.glob("*.tsv")):
        split = normalize_split(tsv.stem)
        if wanted is None and tsv.stem in CV_NON_SPLITS:
            continue
        if wanted is None or split in wanted:
            found[split] = tsv
    order = {"train": 0, "validation": 1, "test": 2}
    return sorted(found.items(), key=lambda item: (order.get(item[0], 3), item[0]))


# ---------------------------------------------------------------- manifest files


def _manifest_rows(file: Path, wanted: set[str] | None, label: str) -> Iterator[Row]:
    if not file.is_file():
        raise GalwhisperError(f"{label}: file not found" if not file.exists() else f"{label}: not a file")
    suffix = file.suffix.lower()
    if suffix not in (".tsv", ".csv"):
        raise GalwhisperError(f"{label}: must be a .tsv or .csv file")
    delimiter = "\t" if suffix == ".tsv" else ","
    header = _read_header(file, delimiter)
    path_column = next((c for c in PATH_COLUMNS if c in header), None)
    text_column = next((c for c in TEXT_COLUMNS if c in header), None)
    if path_column is None or text_column is None:
        found = ", ".join(header) or "none"
        raise GalwhisperError(f"{label}: needs a 'path' and a 'sentence' (or text/transcript) column; found columns: {found}")
    base = file.parent.absolute()

    def rows() -> Iterator[Row]:
        skipped = 0
        for number, record in enumerate(_read_table(file, delimiter), start=1):
            path, sentence = (record.get(path_column) or "").strip(), (record.get(text_column) or "").strip()
            split = normalize_split(record.get("split") or "") or MANIFEST_SPLIT
            if not path or not sentence:
                skipped += 1
                continue
            if wanted is None or split in wanted:
                row_id = (record.get("id") or "").strip() or f"{Path(path).stem}-{number}"
                yield Row(str(base / Path(path).expanduser()), sentence, split, row_id)  # absolute paths stay
        if skipped:
            logger.warning("%s: skipped %d rows without a path or a sentence", label, skipped)

    return rows()


# ---------------------------------------------------------------- TSV/CSV helpers


def _read_header(file: Path, delimiter: str) -> list[str]:
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


def _read_table(file: Path, delimiter: str) -> Iterator[dict[str, str]]:
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


def _hf_rows(source: Source, wanted: set[str] | None, audio_column: str, text_column: str | None, streaming: bool) -> Iterator[Row]:
    label = str(source)
    local = Path(source.location).expanduser()
    dataset = _load_local_dataset(local, source, streaming) if local.exists() else _load_hub_dataset(source, streaming)
    if not hasattr(dataset, "keys"):  # one Dataset, e.g. save_to_disk of a single split
        dataset = {"train": dataset}
    parts = {}
    for name, part in dataset.items():
        split = normalize_split(name)
        if wanted is None or split in wanted:
            parts[split] = _prepare_columns(part, label, audio_column, text_column)
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
        raise GalwhisperError(f"{label}: not a dataset folder (save_to_disk output, or audio files with metadata.csv)")
    try:  # audiofolder (audio + metadata.csv), csv/json/parquet files, ...
        return datasets.load_dataset(str(folder), source.config, streaming=streaming)
    except Exception as exc:
        raise GalwhisperError(f"{label}: cannot load the dataset folder ({one_line(exc)})") from None


def _load_hub_dataset(source: Source, streaming: bool):
    import datasets
    from huggingface_hub import constants

    label = str(source)
    offline = bool(constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE)
    # Without a network load_dataset retries for ~30 s before failing; a quick connect says it at once.
    if not offline and not _hub_reachable(constants.ENDPOINT):
        raise GalwhisperError(f"{label}: cannot reach the Hugging Face hub (offline?); set HF_HUB_OFFLINE=1 to use a cached copy")
    try:
        return datasets.load_dataset(source.location, source.config, streaming=streaming)
    except Exception as exc:  # classify by type name: the classes moved between library versions
        kinds = {cls.__name__ for cls in type(exc).__mro__}
        text = one_line(exc)
        if kinds & {"ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError"} or "Couldn't reach" in text:
            raise GalwhisperError(f"{label}: cannot reach the Hugging Face hub (offline?)") from None
        if "DatasetNotFoundError" in kinds or "RepositoryNotFoundError" in kinds:
            raise GalwhisperError(f"{label}: no such dataset on the Hugging Face hub (gated? log in with `hf auth login`)") from None
        raise GalwhisperError(f"{label}: cannot load the dataset ({text})") from None


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy decides; let load_dataset try
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _prepare_columns(part, label: str, audio_column: str, text_column: str | None):
    """Check the columns, pick the text column, and turn off datasets' own audio decoding."""
    import datasets

    columns = list(part.column_names or [])
    found = ", ".join(columns) or "unknown"
    if columns and audio_column not in columns:
        raise GalwhisperError(f"{label}: no audio column '{audio_column}'; found columns: {found}")
    if text_column is None:
        text_column = next((c for c in TEXT_COLUMNS if c in columns), None)
        if text_column is None:
            raise GalwhisperError(f"{label}: no text column ({', '.join(TEXT_COLUMNS)}); found columns: {found}")
    elif columns and text_column not in columns:
        raise GalwhisperError(f"{label}: no text column '{text_column}'; found columns: {found}")
    features = part.features or {}
    if isinstance(features.get(audio_column), datasets.Audio):
        # Undecoded ({"bytes", "path"}) so load_audio decodes, not datasets' torchcodec backend.
        part = part.cast_column(audio_column, datasets.Audio(decode=False))
    return part, text_column


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
    return _cv_rows(folder, wanted, str(source))
