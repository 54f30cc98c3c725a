"""Common Voice where it lives today: release folders, the archives as downloaded, and the
Mozilla Data Collective (MDC), where releases are published since they left the Hugging Face hub.

A release (`cv-corpus-<version>/<locale>/{train,dev,test,validated,...}.tsv` + `clips/*.mp3`) is
read from a folder, or from the `.tar.gz` / `.tar` archive itself without extracting it: one
streaming pass reads the TSVs, a second extracts only the clips that the chosen splits name,
each clip written whole (temp file + rename) into the cache, so a killed run resumes where it
stopped and memory stays flat whatever the archive's size. `mdc:DATASET_ID` downloads the
archive with the official `datacollective` client (resumable; needs `MDC_API_KEY`).
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from galwhisper.errors import GalwhisperError, bars_disabled, one_line
from galwhisper.files import cache_root, check_name, read_json, write_json_atomic

SPLIT_TSVS = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
# TSVs that are not splits: read only when asked for by name (or by --cv-train validated).
NON_SPLITS = {"validated", "invalidated", "other", "reported", "clip_durations", "validated_sentences",
              "unvalidated_sentences"}  # fmt: skip
CV_TRAIN = ("train", "validated")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_LOCALE_TSV = re.compile(r"^(?:.*/)?([^/]+)/([^/]+)\.tsv$")  # .../<locale>/<name>.tsv


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# Folders


def locale_folder(path: Path, locale: str | None, label: str) -> Path:
    """The folder holding a release's TSVs: `path` itself, or its one (or the named) locale."""
    if not path.is_dir():
        raise GalwhisperError(f"{label}: folder not found" if not path.exists() else f"{label}: not a folder or archive")
    if any(path.glob("*.tsv")) and locale is None:
        return path
    locales = sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.glob("*.tsv")))
    return path / _choose_locale(locales, locale, label)


def _choose_locale(locales: list[str], locale: str | None, label: str) -> str:
    if locale is not None:
        if locale not in locales:
            raise GalwhisperError(f"{label}: has no locale '{locale}' (it has: {', '.join(locales) or 'none'})")
        return locale
    if len(locales) == 1:
        return locales[0]
    if not locales:
        raise GalwhisperError(f"{label}: no Common Voice split files (train.tsv, dev.tsv, test.tsv)")
    raise GalwhisperError(f"{label}: holds several locales ({', '.join(locales)}); name one, e.g. cv:PATH:{locales[0]}")


def split_tsvs(folder: Path, wanted: set[str] | None, cv_train: str = "train", label: str = "") -> list[tuple[str, Path]]:
    """(split, tsv) pairs: train (train.tsv, or validated.tsv with --cv-train validated),
    validation (dev.tsv), test, then any other split TSVs with path and sentence columns (a TSV
    without them is passed over, or refused when its split was asked for by name)."""
    from galwhisper.data import read_header

    found = {}
    for tsv in sorted(folder.glob("*.tsv")):
        split = {"dev": "validation"}.get(tsv.stem, tsv.stem)
        if tsv.stem in NON_SPLITS and (wanted is None or split not in wanted):
            continue
        if wanted is None or split in wanted:
            found[split] = tsv
    if cv_train == "validated" and "train" in found:
        found["train"] = folder / "validated.tsv"
    for split, tsv in list(found.items()):
        header = read_header(tsv, "\t") if tsv.is_file() else []
        if "path" not in header or "sentence" not in header:
            if wanted is not None:
                raise GalwhisperError(f"{label or folder}: {tsv.name} has no path and sentence columns")
            del found[split]
    order = {"train": 0, "validation": 1, "test": 2}
    return sorted(found.items(), key=lambda item: (order.get(item[0], 3), item[0]))


def read_tsv(file: Path) -> Iterator[dict[str, str]]:
    """Rows of a Common Voice TSV as dicts (unquoted: sentences contain quotes)."""
    from galwhisper.data import read_table

    return read_table(file, "\t")


def held_out(folder: Path) -> tuple[set[str], set[str]]:
    """Sentences and speakers (client_id) of dev and test: kept out of a validated-based train."""
    sentences, speakers = set(), set()
    for name in ("dev.tsv", "test.tsv"):
        if (folder / name).is_file():
            for record in read_tsv(folder / name):
                sentences.add(" ".join(record.get("sentence", "").split()).casefold())
                speakers.add(record.get("client_id", ""))
    speakers.discard("")
    return sentences, speakers


def split_records(folder: Path, wanted: set[str] | None, cv_train: str, label: str) -> Iterator[tuple[str, dict]]:
    """(split, TSV record) for every clip of the chosen splits. With cv_train "validated", train
    is validated.tsv minus every sentence and every speaker of dev and test: several times
    more training data than train.tsv, still disjoint from what is evaluated."""
    if cv_train == "validated" and (folder / "train.tsv").is_file() and not (folder / "validated.tsv").is_file():
        raise GalwhisperError(f"{label}: --cv-train validated needs validated.tsv, which the release lacks")
    tables = split_tsvs(folder, wanted, cv_train, label)
    sentences, speakers = held_out(folder) if cv_train == "validated" else (set(), set())
    for split, tsv in tables:
        for record in read_tsv(tsv):
            if split == "train" and cv_train == "validated":
                if record.get("client_id", "") in speakers or " ".join(record.get("sentence", "").split()).casefold() in sentences:
                    continue
            yield split, record


# ---------------------------------------------------------------------------------------------
# Archives


def extracted(archive: Path, locale: str | None, wanted: set[str] | None, cv_train: str, label: str,
              progress: bool = True) -> Path:
    """A cache folder holding the archive's TSVs (of the chosen locale) and the clips the chosen
    splits name; extracted once, resumably, in at most two streaming passes."""
    stat = archive.stat()
    key = hashlib.sha1(f"{archive.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    stem = next((archive.name[: -len(s)] for s in ARCHIVE_SUFFIXES if archive.name.lower().endswith(s)), archive.name)
    root = cache_root() / "cv" / f"{stem}-{key}"
    locales_file = root / "locales.json"
    if not locales_file.is_file():
        found = _extract_tsvs(archive, root, label, progress)
        if not found:
            raise GalwhisperError(f"{label}: the archive holds no Common Voice TSV files (train.tsv, dev.tsv, test.tsv)")
        write_json_atomic(locales_file, {"locales": found})  # last: the TSVs are complete
    locales = read_json(locales_file, "locales.json")["locales"]
    folder = root / _choose_locale(sorted(locales), locale, label)
    needed = {record.get("path", "").strip() for _, record in split_records(folder, wanted, cv_train, label)}
    needed.discard("")
    _extract_clips(archive, folder, locales[folder.name], needed, label, progress)
    return folder


def _members(archive: Path, label: str, progress: bool, desc: str) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Every member of the archive in order, streaming (memory flat), with a progress bar over
    the archive's bytes; a damaged or truncated archive is one line naming it."""
    from tqdm.auto import tqdm

    size = archive.stat().st_size
    try:
        with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar, \
                tqdm(total=size, desc=desc, unit="B", unit_scale=True, disable=bars_disabled(progress)) as bar:
            for member in tar:
                bar.update(raw.tell() - bar.n)
                yield tar, member
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise GalwhisperError(f"{label}: damaged or truncated archive ({one_line(exc, 100)}); download it again") from None


def _extract_tsvs(archive: Path, root: Path, label: str, progress: bool) -> dict[str, str]:
    """Extract every `<locale>/*.tsv`; return {locale: its folder's path inside the archive}."""
    found: dict[str, str] = {}
    for tar, member in _members(archive, label, progress, "read TSVs"):
        match = _LOCALE_TSV.match(member.name)
        if not member.isfile() or not match:
            continue
        locale, name = match.groups()
        check_name(locale, f"{label}: locale folder")
        check_name(name, f"{label}: TSV")
        found[locale] = member.name.rsplit("/", 2)[0] if member.name.count("/") >= 2 else ""
        _write_member(tar, member, root / locale / f"{name}.tsv")
    return found


def _extract_clips(archive: Path, folder: Path, inside: str, needed: set[str], label: str, progress: bool) -> None:
    """Extract the needed clips that are not there yet (a killed run resumes), in one pass.
    Clips a TSV names but the archive lacks are remembered, so they cost no further pass."""
    clips = folder / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    absent_file = folder / "absent.json"
    absent = set(read_json(absent_file, "absent.json")["clips"]) if absent_file.is_file() else set()
    todo = {name for name in needed - absent if not (clips / name).is_file()}
    if not todo:
        return
    prefix = f"{inside}/{folder.name}/clips/" if inside else f"{folder.name}/clips/"
    for tar, member in _members(archive, label, progress, f"extract {len(todo)} clips"):
        name = member.name[len(prefix):] if member.name.startswith(prefix) else None
        if name in todo and member.isfile():
            _write_member(tar, member, clips / check_name(name, f"{label}: clip"))
            todo.discard(name)
            if not todo:
                return
    # Named by a TSV but not in the archive: prepare counts them as missing clips.
    write_json_atomic(absent_file, {"clips": sorted(absent | todo)})


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    source = tar.extractfile(member)
    with open(tmp, "wb") as out:
        while chunk := source.read(1 << 20):
            out.write(chunk)
    os.replace(tmp, target)


# ---------------------------------------------------------------------------------------------
# Mozilla Data Collective


def mdc_archive(dataset_id: str, label: str, progress: bool = True) -> Path:
    """The dataset's archive, downloaded once into the cache with the official client
    (resumable), and checked against its sha256 when the platform gives one."""
    if not os.environ.get("MDC_API_KEY"):
        raise GalwhisperError(f"{label}: set MDC_API_KEY to your Mozilla Data Collective API key "
                              "(mozilladatacollective.com, your profile's API keys) to download it")
    from galwhisper.media import reachable

    try:
        import datacollective
        from datacollective.api_utils import _get_api_url
    except ImportError:
        raise GalwhisperError(f"{label}: needs the datacollective package (pip install datacollective)") from None
    api = _get_api_url()
    if not reachable(api):
        raise GalwhisperError(f"{label}: cannot reach the Mozilla Data Collective at {api} (offline?)")
    folder = cache_root() / "mdc"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        details = datacollective.get_dataset_details(dataset_id)
        archive = Path(datacollective.download_dataset(dataset_id, download_directory=str(folder), show_progress=progress))
    except Exception as exc:  # the client raises many types (HTTP, auth, download, validation)
        raise GalwhisperError(f"{label}: download failed ({type(exc).__name__}: {one_line(exc, 120)}); run again to resume") from None
    checksum = str(details.checksum or "").lower()
    if re.fullmatch(r"[0-9a-f]{64}", checksum) and _sha256(archive) != checksum:
        archive.unlink(missing_ok=True)
        raise GalwhisperError(f"{label}: the downloaded archive does not match its sha256 checksum; removed, run again")
    return archive


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def rows_of_release(folder: Path, wanted: set[str] | None, cv_train: str, label: str):
    """(split, clip path, sentence, clip id, segments cell) for every clip of the chosen splits."""
    clips = folder.absolute() / "clips"
    if not clips.is_dir():
        raise GalwhisperError(f"{label}: has no clips/ folder next to its TSV files")
    for split, record in split_records(folder, wanted, cv_train, label):
        path, sentence = record.get("path", "").strip(), record.get("sentence", "").strip()
        if path:  # an empty sentence reaches prepare, which skips and counts it
            yield split, str(clips / path), sentence, Path(path).stem, record.get("segments")
