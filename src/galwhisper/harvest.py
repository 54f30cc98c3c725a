"""Subtitled video and audio -> a training corpus: segments checked by a model -> manifest.tsv.

    sources ─► videos (media + one subtitle track in the language) ─► cues (SRT / WebVTT, cleaned)
      ─► segments of 1-30 s at cue boundaries ─► 16 kHz mono clips ─► CER of the model's
      transcript vs the subtitle text (over --max-cer: dropped) ─► DIR/manifest.tsv + harvest.json

A SOURCE is a URL yt-dlp reads (a video, a page with `<video>` + `<track>`, a playlist, a
channel), a folder of media files with subtitles of the same stem, or one media file (its
subtitles beside it, or `--subs FILE`).

Layout of DIR:
    manifest.tsv              path, sentence, split, source, video_id, start, end, cer, licence, segments
    dropped.tsv               every dropped segment with its reason (to judge --max-cer)
    harvest.json              settings, counts kept and dropped by reason, per source, hours, splits
    clips/VIDEO/VIDEO-0001.wav
    state/settings.json       the settings this folder was harvested with
    state/videos/VIDEO.json   one finished video (its rows); written after its clips
    state/sources/SOURCE.json one finished source (its videos and the failed ones)

Resume: a finished source or video has its state file and is skipped; everything is written
through a temp name and a rename, and what a killed run left half-done (temp folders and
files, clip folders without a state file) is removed when the next run starts.
"""

from __future__ import annotations

import fcntl
import hashlib
import html
import json
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from galwhisper import features, models, options
from galwhisper.audio import SAMPLE_RATE, load_audio, write_wav
from galwhisper.errors import GalwhisperError, bars_disabled, one_line
from galwhisper.files import atomic_dir, check_output_dir, private_tempdir, read_json, safe_name, write_json_atomic, write_text_atomic
from galwhisper.languages import DEFAULT_LANGUAGE, language_code
from galwhisper.media import DownloadLimits, download_audio, extract_info, fetch_bytes, is_url
from galwhisper.metrics import error_rates

MANIFEST_COLUMNS = ("path", "sentence", "split", "source", "video_id", "start", "end", "cer", "licence", "segments")
DROPPED_COLUMNS = ("source", "video_id", "start", "end", "reason", "cer", "sentence")
MEDIA_SUFFIXES = {
    ".wav", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".wma",
    ".mp4", ".m4v", ".webm", ".mkv", ".mov", ".avi", ".mpg", ".mpeg", ".ts", ".3gp",
}  # fmt: skip
SUBTITLE_SUFFIXES = (".vtt", ".srt")  # preferred in this order
READABLE_TRACKS = ("vtt", "srt")
OTHER_TRACK_FORMATS = {"ttml", "dfxp", "xml", "srv1", "srv2", "srv3", "json3", "ass", "ssa", "sbv", "lrc"}
GENERIC_EXTRACTORS = {"Generic", "HTML5MediaEmbed"}  # pages read by yt-dlp's generic extractor

# Why a segment was dropped (keys of harvest.json's "dropped").
TOO_SHORT = "too_short"  # a segment (a lone cue, cut off by gaps) under --min-seconds
TOO_LONG = "too_long"  # one cue over --max-seconds: cues are never cut
PAST_END = "past_audio_end"  # the cue times run past the end of the audio
OVER_CER = "over_max_cer"  # the model heard something else
OUT_OF_SYNC = "track_out_of_sync"  # most of the video's segments failed: its track is off
REASONS = (TOO_SHORT, TOO_LONG, PAST_END, OVER_CER, OUT_OF_SYNC)
END_SLACK = 0.5  # seconds a segment may run past the audio's end (container rounding)

# Settings a finished video depends on; a folder is only resumed with the same ones.
STATE_SETTINGS = ("language", "model", "compute_type", "max_cer", "max_bad_share", "no_check", "auto_subs",
                  "max_gap", "min_seconds", "max_seconds")  # fmt: skip


@dataclass(frozen=True)
class HarvestConfig:
    sources: tuple[str, ...]
    out_dir: Path
    language: str = DEFAULT_LANGUAGE
    model: str = models.DEFAULT_MODEL  # the check's model; a fine-tuned run checks better
    compute_type: str = "int8"
    # Segments whose CER (Whisper-normalised, model transcript vs subtitle text) is over this are
    # dropped. Measured with the bundled base on espeak-ng Galician (tests/test_harvest.py data,
    # benchmarks/harvest_speed.py): a segment checked against the text of other audio (a track
    # shifted by a sentence or more) scored 0.70-1.0 and above (0.71 the lowest of 29 pairs),
    # while base's zero-shot CER on correctly timed segments had a median of 0.38 and a 75th
    # percentile of 0.52 (robotic voices; real speech and fine-tuned models score far lower).
    # 0.6 sits between: it keeps most good segments even with the weakest model and drops text
    # that belongs to other audio. With a fine-tuned model, lower it (0.3) to drop loose subtitles.
    max_cer: float = 0.6
    # When more than this share of a video's checked segments is over --max-cer, its subtitles
    # are taken as out of sync and the whole video is dropped: a shifted track lets a few
    # segments through by chance, and those would be wrong labels.
    max_bad_share: float = 0.5
    no_check: bool = False
    auto_subs: bool = False  # also take automatic captions (never machine-translated ones)
    subs: Path | None = None  # the subtitle file of a single media SOURCE
    max_videos: int | None = None  # per playlist or channel
    # A gap between cues longer than this ends a segment: a long gap may hold speech that has no
    # subtitle (a label missing words), a short one is a breath between sentences.
    max_gap: float = 1.0
    min_seconds: float = 1.0
    max_seconds: float = features.MAX_SECONDS  # Whisper's window
    validation_ratio: float = 0.1  # of videos, not segments: no video is in two splits
    test_ratio: float = 0.1
    limits: DownloadLimits = field(default_factory=DownloadLimits)

    def __post_init__(self):
        sources = (self.sources,) if isinstance(self.sources, str) else tuple(self.sources or ())
        sources = tuple(str(s).strip() for s in sources)
        if not sources or not all(sources):
            raise GalwhisperError("harvest: give at least one SOURCE (a URL, a folder of media + subtitles, or a media file)")
        object.__setattr__(self, "sources", tuple(dict.fromkeys(sources)))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        object.__setattr__(self, "language", language_code(self.language))
        if not str(self.model or "").strip():
            raise options.refuse("model", self.model, "give a model (base, a folder, or a hub id)")
        options.number("max_cer", self.max_cer)
        options.number("max_bad_share", self.max_bad_share, strict=False, maximum=1.0)
        options.whole("max_videos", self.max_videos, optional=True)
        options.number("max_gap", self.max_gap, strict=False)
        options.number("min_seconds", self.min_seconds, strict=False)
        options.number("max_seconds", self.max_seconds, maximum=features.MAX_SECONDS)
        if self.min_seconds >= self.max_seconds:
            raise options.refuse("min_seconds", self.min_seconds, f"must be below --max-seconds {self.max_seconds:g}")
        options.number("validation_ratio", self.validation_ratio, strict=False, maximum=1.0)
        options.number("test_ratio", self.test_ratio, strict=False, maximum=1.0)
        if self.validation_ratio + self.test_ratio >= 1:
            raise options.refuse("test_ratio", self.test_ratio, "with --validation-ratio it leaves no videos for training")
        if self.subs is not None:
            object.__setattr__(self, "subs", Path(self.subs).expanduser())
            if len(self.sources) != 1:
                raise options.refuse("subs", self.subs, "takes exactly one SOURCE (the media file it belongs to)")
        if not isinstance(self.limits, DownloadLimits):
            raise GalwhisperError(f"harvest: limits must be a DownloadLimits, not {type(self.limits).__name__}")

    def settings(self) -> dict:
        return {name: str(value) if isinstance(value, Path) else value for name, value in asdict(self).items() if name in STATE_SETTINGS}


@dataclass(frozen=True)
class Video:
    """One media file or online video and the subtitle track to harvest it with."""

    key: str  # names its clip folder and state file; unique per video
    identity: str  # what the split is drawn from: the same video always lands in the same split
    label: str  # how messages name it
    source: str  # the SOURCE it came from
    index: int  # its place in the source
    video_id: str
    media: str  # URL or path
    subtitles: str  # URL or path
    licence: str = ""
    automatic: bool = False  # automatic captions


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str


@dataclass(frozen=True)
class RawCue:
    start: float
    end: float
    lines: tuple[str, ...]
    line: int  # where its timing line is in the file


@dataclass(frozen=True)
class Segment:
    cues: tuple[Cue, ...]

    @property
    def start(self) -> float:
        return self.cues[0].start

    @property
    def end(self) -> float:
        return max(cue.end for cue in self.cues)

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def text(self) -> str:
        return " ".join(cue.text for cue in self.cues)


# ---------------------------------------------------------------------------------------------
# The run


def harvest(config: HarvestConfig, progress: bool = True) -> dict:
    """Harvest every source into config.out_dir; return the run's summary (also in harvest.json).

    A source that fails is reported in the summary's "errors" (source -> one line naming it and
    what is wrong) and the others are still harvested; videos of a playlist or folder that could
    not be harvested are in "run" -> "warnings". Options and the output folder are checked first."""
    out = check_output_dir(config.out_dir, "--out")
    started = time.perf_counter()
    with _locked(out):
        _check_settings(out, config)
        _remove_leftovers(out)
        check = None if config.no_check else _transcriber(config.model, config.compute_type)  # a bad --model fails here
        run = {"errors": {}, "warnings": [], "sources_skipped": 0, "videos_harvested": 0, "videos_skipped": 0}
        workdir = private_tempdir("harvest")
        try:
            for spec in config.sources:
                try:
                    harvest_source(spec, config, out, workdir, check, run, progress)
                except GalwhisperError as exc:
                    run["errors"][spec] = str(exc)
                write_outputs(out, config, run, time.perf_counter() - started)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return read_json(out / "harvest.json", "harvest summary")


def harvest_source(spec: str, config: HarvestConfig, out: Path, workdir: Path, check, run: dict, progress: bool) -> None:
    record = out / "state" / "sources" / f"{source_key(spec, config)}.json"
    if record.is_file():
        run["sources_skipped"] += 1
        return
    items, collection = list_videos(spec, config)
    done, failures = [], []
    for item in items:
        if isinstance(item, GalwhisperError):
            failures.append(str(item))
            continue
        try:
            fresh = harvest_video(item, config, out, workdir, check, progress)
            run["videos_harvested" if fresh else "videos_skipped"] += 1
            done.append(item.key)
        except GalwhisperError as exc:
            failures.append(str(exc))
    if not done:
        if not collection:
            raise GalwhisperError(failures[0])  # it names the input and what is wrong
        raise GalwhisperError(f"{spec}: none of its {len(items)} videos is usable (first: {failures[0]})")
    run["warnings"] += failures
    write_json_atomic(record, {"source": spec, "videos": done, "failed": failures})


def harvest_video(video: Video, config: HarvestConfig, out: Path, workdir: Path, check, progress: bool) -> bool:
    """Cut, check and store one video; False when it was already done."""
    state = out / "state" / "videos" / f"{video.key}.json"
    if state.is_file():
        return False
    cues = read_cues(video.subtitles, config.limits)
    segments, too_long = merge_cues(cues, config.max_gap, config.max_seconds)
    audio = video_audio(video, config.limits, workdir)
    judged = judge_segments(segments, too_long, audio, config, check, video.label, progress)
    kept = [(segment, cer) for segment, reason, cer in judged if reason is None]
    rows = []
    if kept:
        with atomic_dir(out / "clips" / video.key) as folder:
            for number, (segment, cer) in enumerate(kept, start=1):
                name = f"{video.key}-{number:04d}.wav"
                write_wav(folder / name, audio[_sample(segment.start) : _sample(segment.end)])
                rows.append(manifest_row(f"clips/{video.key}/{name}", segment, cer, video))
    dropped = [dropped_row(segment, reason, cer, video) for segment, reason, cer in judged if reason is not None]
    write_json_atomic(state, {
        **asdict(video),
        "audio_seconds": round(len(audio) / SAMPLE_RATE, 3), "cues": len(cues),
        "rows": rows, "dropped": dropped,
    })  # fmt: skip
    return True


# ---------------------------------------------------------------------------------------------
# Sources -> videos


def list_videos(spec: str, config: HarvestConfig) -> tuple[list, bool]:
    """(videos, or a GalwhisperError per video that cannot be harvested; whether the source is a
    collection: a playlist, channel or folder). A source that cannot be read at all raises."""
    if config.subs is not None:
        return [subs_video(spec, config)], False
    if is_url(spec):
        return url_videos(spec, config)
    path = Path(spec).expanduser()
    if not path.exists():
        raise GalwhisperError(f"{spec}: not found (expected a URL, a folder or a media file)")
    if path.is_dir():
        return folder_videos(path, spec, config), True
    return [local_video(path, spec, 0, find_subtitles(path, config.language))], False


def url_videos(spec: str, config: HarvestConfig) -> tuple[list, bool]:
    info = extract_info(spec, config.limits, max_entries=config.max_videos)
    if info.get("_type") not in ("playlist", "multi_video"):
        return [url_video(info, spec, 0, False, config, page_licences={})], False
    entries = [entry for entry in info.get("entries") or [] if entry][: config.max_videos]
    if not entries:
        raise GalwhisperError(f"{spec}: a playlist with no videos")
    items, page_licences = [], {}
    for index, entry in enumerate(entries):
        try:
            if entry.get("_type") in ("url", "url_transparent"):  # listed flat: read the video's own page
                entry = extract_info(entry["url"], config.limits)
            items.append(url_video(entry, spec, index, True, config, page_licences))
        except GalwhisperError as exc:
            items.append(exc)
    return items, True


def url_video(info: dict, spec: str, index: int, in_playlist: bool, config: HarvestConfig, page_licences: dict) -> Video:
    page = info.get("webpage_url") or spec
    video_id = str(info.get("id") or index)
    label = f"{page} [{video_id}]" if in_playlist and page == spec else page  # videos of one page share its URL
    if info.get("_type") in ("playlist", "multi_video"):
        raise GalwhisperError(f"{label}: a playlist inside a playlist; give it as a SOURCE of its own")
    subtitles, automatic = choose_track(info, label, config.language, config.auto_subs)
    extractor = info.get("extractor_key") or "Generic"
    generic = extractor in GENERIC_EXTRACTORS
    identity = f"{page}#{video_id}" if generic else f"{extractor}:{video_id}"
    licence = str(info.get("license") or "") or (page_licence(page, config.limits, page_licences) if generic else "")
    return Video(video_key(video_id, identity), identity, label, spec, index, video_id, media_url(info, page),
                 subtitles, licence, automatic)


def media_url(info: dict, page: str) -> str:
    """A direct file link when the video has one (an HTML5 <video>, a plain file): several videos
    of one page share the page's URL, and the link needs no second page extraction. Otherwise
    the video's page, which media.download_audio extracts again (YouTube and the like)."""
    formats = info.get("formats") or []
    if len(formats) == 1 and str(formats[0].get("protocol") or "").startswith("http") and formats[0].get("url"):
        return formats[0]["url"]
    return page


def choose_track(info: dict, label: str, language: str, auto_subs: bool) -> tuple[str, bool]:
    """(URL of the subtitle track in `language`, whether it is automatic); one-line errors saying
    what the page has instead."""
    manual = {str(k): v for k, v in (info.get("subtitles") or {}).items() if k not in (None, "live_chat") and v}
    automatic = {str(k): v for k, v in (info.get("automatic_captions") or {}).items() if k and v}
    key, is_automatic = _language_key(manual, language), False
    if key is None and auto_subs:
        key, is_automatic = _automatic_key(automatic, language), True
    if key is None:
        if _automatic_key(automatic, language) and not auto_subs:
            raise GalwhisperError(f"{label}: only automatic captions in {language}; pass --auto-subs to use them")
        if not manual and not automatic:
            raise GalwhisperError(f"{label}: no subtitles (the video has no subtitle track)")
        spoken = sorted(k.removesuffix("-orig") for k in automatic if k.endswith("-orig"))
        found = sorted(manual) + [f"{k} (automatic)" for k in (spoken or sorted(automatic))]
        listed = ", ".join(found[:12]) + (f" and {len(found) - 12} more" if len(found) > 12 else "")
        translated = ""
        if spoken and language in automatic:  # YouTube's machine translation of another language's captions
            translated = f" ({language} automatic captions are machine translations, not used)"
        raise GalwhisperError(f"{label}: no subtitles in {language}; found only: {listed}{translated}")
    tracks = (automatic if is_automatic else manual)[key]
    for ext in READABLE_TRACKS:
        for track in tracks:
            if track.get("url") and (track.get("ext") == ext or str(track["url"]).split("?")[0].lower().endswith("." + ext)):
                return track["url"], is_automatic
    unknown = [t for t in tracks if t.get("url") and t.get("ext") not in OTHER_TRACK_FORMATS]
    if unknown:  # a track whose format yt-dlp could not name: the parser tells SRT from WebVTT itself
        return unknown[0]["url"], is_automatic
    formats = ", ".join(sorted({str(t.get("ext")) for t in tracks}))
    raise GalwhisperError(f"{label}: subtitles in {key} only as {formats} (galwhisper reads SRT and WebVTT)")


def _language_key(tracks: dict, language: str) -> str | None:
    """The track key for `language`: `gl`, or a region or script variant (`gl-ES`); never a
    translation (`gl-en`: Galician translated from English, lower case by yt-dlp's convention)."""
    variant = re.compile(rf"{re.escape(language)}[-_](?:[A-Z]{{2}}|[0-9]{{3}}|[A-Z][a-z]{{3}})")
    exact = [k for k in tracks if k.lower() == language]
    return (exact or [k for k in tracks if variant.fullmatch(k)] or [None])[0]


def _automatic_key(tracks: dict, language: str) -> str | None:
    """YouTube lists the speech recogniser's own track as `LANG-orig` and machine translations of
    it into every language as plain codes: where an `-orig` track exists, only it is speech in
    its language."""
    originals = [k for k in tracks if k.endswith("-orig")]
    if originals:
        return next((k for k in originals if k.removesuffix("-orig").lower() == language), None)
    return _language_key(tracks, language)


def page_licence(page: str, limits: DownloadLimits, cache: dict) -> str:
    """The licence a web page states the HTML way (`<a rel="license" href=...>` or `<link ...>`,
    as Creative Commons' chooser writes it), or ""; fetched once per page."""
    if page not in cache:
        try:
            text = fetch_bytes(page, limits).decode("utf-8", "replace")
        except GalwhisperError:
            text = ""
        cache[page] = ""
        for tag in re.findall(r"<(?:a|link)\b[^>]*>", text, re.IGNORECASE):
            if re.search(r"\brel\s*=\s*[\"']?[^\"'>]*\blicense\b", tag, re.IGNORECASE):
                href = re.search(r"\bhref\s*=\s*[\"']?([^\"'\s>]+)", tag, re.IGNORECASE)
                if href:
                    cache[page] = html.unescape(href.group(1))
                    break
    return cache[page]


def folder_videos(folder: Path, spec: str, config: HarvestConfig) -> list:
    media = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
    if not media:
        raise GalwhisperError(f"{spec}: no media files in this folder ({', '.join(sorted(MEDIA_SUFFIXES))})")
    items = []
    for index, path in enumerate(media):
        try:
            items.append(local_video(path, spec, index, find_subtitles(path, config.language)))
        except GalwhisperError as exc:
            items.append(exc)
    return items


def find_subtitles(media: Path, language: str) -> Path:
    """NAME.srt / NAME.vtt beside media NAME.EXT, or NAME.LANG.srt / .vtt (yt-dlp's naming)."""
    if media.suffix.lower() in SUBTITLE_SUFFIXES:
        raise GalwhisperError(f"{media}: is a subtitle file; give the media file it belongs to (with --subs {media})")
    tagged: dict[str, list[Path]] = {}
    for path in media.parent.glob(f"{_glob_escape(media.stem)}.*"):
        if path.suffix.lower() not in SUBTITLE_SUFFIXES or not path.is_file():
            continue
        middle = path.name[len(media.stem) + 1 : -len(path.suffix)]
        if middle == "" or re.fullmatch(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*", middle):
            tagged.setdefault(middle, []).append(path)
    key = _language_key(tagged, language)
    chosen = tagged.get(key) if key is not None else tagged.get("")
    if chosen:
        return min(chosen, key=lambda p: SUBTITLE_SUFFIXES.index(p.suffix.lower()))
    if tagged:
        raise GalwhisperError(f"{media}: no subtitles in {language}; found only: {', '.join(sorted(tagged))}")
    raise GalwhisperError(f"{media}: no subtitles ({media.stem}.srt or {media.stem}.vtt beside it)")


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def local_video(path: Path, spec: str, index: int, subtitles: Path) -> Video:
    identity = str(path.resolve())
    return Video(video_key(path.stem, identity), identity, str(path), spec, index, path.stem, str(path), str(subtitles))


def subs_video(spec: str, config: HarvestConfig) -> Video:
    if not config.subs.is_file():
        raise GalwhisperError(f"--subs {config.subs}: " + ("not a file" if config.subs.exists() else "file not found"))
    if is_url(spec):
        name = spec.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "video"
        return Video(video_key(name, spec), spec, spec, spec, 0, Path(name).stem, spec, str(config.subs))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise GalwhisperError(f"{spec}: not found" if not path.exists() else f"{spec}: --subs needs a media file, not a folder")
    return local_video(path, spec, 0, config.subs)


def video_key(name: str, identity: str) -> str:
    return f"{safe_name(name, 'video', 40)}-{hashlib.sha1(identity.encode()).hexdigest()[:10]}"


def source_key(spec: str, config: HarvestConfig) -> str:
    where = spec if is_url(spec) else str(Path(spec).expanduser().resolve())
    canonical = json.dumps([where, str(config.subs.resolve()) if config.subs else None, config.max_videos])
    tail = spec.rstrip("/").rsplit("/", 1)[-1]
    return f"{safe_name(tail, 'source', 40)}-{hashlib.sha1(canonical.encode()).hexdigest()[:10]}"


# ---------------------------------------------------------------------------------------------
# Subtitles -> cues

_TIMING = re.compile(r"^(?P<start>\S+)\s*-->\s*(?P<end>\S+)(?:\s.*)?$")
_TIME = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})$")
_VTT_BLOCKS = ("WEBVTT", "NOTE", "STYLE", "REGION")  # blocks that hold no cue


def read_cues(subtitles: str, limits: DownloadLimits) -> list[Cue]:
    """The cleaned cues of an SRT or WebVTT file or URL, in time order."""
    if is_url(subtitles):
        data = fetch_bytes(subtitles, limits)
    else:
        try:
            data = Path(subtitles).read_bytes()
        except OSError as exc:
            raise GalwhisperError(f"{subtitles}: cannot read ({exc.strerror or exc})") from None
    return clean_cues(parse_subtitles(decode_text(data), subtitles))


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-16 with a BOM, else Windows-1252 (older SRT files)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def parse_subtitles(text: str, name: str) -> list[RawCue]:
    """Cues of SRT or WebVTT text (told apart by the WEBVTT header). Lenient where files vary
    (cue numbers or ids optional, ',' or '.' before the milliseconds, hours optional, cue
    settings after the end time, missing blank lines between cues); anything else is refused
    with the file and the line."""
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    vtt = next((line.strip() for line in lines if line.strip()), "").startswith("WEBVTT")
    cues: list[RawCue] = []
    current: list[str] | None = None  # the text lines of the cue being read
    skipping = False  # inside the WebVTT header or a NOTE / STYLE / REGION block
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if "\x00" in line:
            raise GalwhisperError(f"{name}: line {number}: binary data, not SRT or WebVTT subtitles")
        if not line:
            current, skipping = None, False
            continue
        if skipping:
            continue
        if "-->" in line:
            start, end = _timing(line, name, number)
            current = []
            cues.append(RawCue(start, end, (), number))
            continue
        next_is_timing = number < len(lines) and "-->" in lines[number]
        if next_is_timing and (current is None or line.isdigit()):
            continue  # a cue number (SRT) or cue identifier (WebVTT)
        if current is not None:
            current.append(line)
            cues[-1] = RawCue(cues[-1].start, cues[-1].end, tuple(current), cues[-1].line)
            continue
        if vtt and line.split(maxsplit=1)[0] in _VTT_BLOCKS:
            skipping = True
            continue
        raise GalwhisperError(f"{name}: line {number}: expected a cue number or a cue timing "
                              f"(00:00:01,000 --> 00:00:02,500), found {one_line(line, 40)!r}")
    if not cues:
        what = "is empty" if not text.strip() else "line 1: not SRT or WebVTT (no cue timings found)"
        raise GalwhisperError(f"{name}: {what}")
    return cues


def _timing(line: str, name: str, number: int) -> tuple[float, float]:
    match = _TIMING.match(line)
    times = [_seconds(match.group(part)) for part in ("start", "end")] if match else [None]
    if None in times:
        raise GalwhisperError(f"{name}: line {number}: not a cue timing: {one_line(line, 60)!r}")
    start, end = times
    if end < start:
        raise GalwhisperError(f"{name}: line {number}: the cue ends before it starts ({one_line(line, 60)})")
    return start, end


def _seconds(text: str) -> float | None:
    match = _TIME.match(text)
    if not match:
        return None
    hours, minutes, seconds, fraction = match.groups()
    if int(minutes) > 59 or int(seconds) > 59:
        return None
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction.ljust(3, "0")) / 1000


# Markup and non-speech: tags (<i>, <c>, <00:00:01.000>, <v Name>), ASS overrides ({\an8}),
# sound and music markers ([música], (risas), ♪ lyrics ♪), speaker dashes and >> turns, and
# upper-case speaker labels ("XOÁN: ...").
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")
_SOUND = re.compile(r"\[[^\]]*\]|\([^)]*\)|[♪♫][^♪♫]*(?:[♪♫]|$)")
_DASH = re.compile(r"^(?:[-–—‐]+|>>+)\s*")
_LABEL = re.compile(r"^[A-ZÁÉÍÓÚÑÇÜ][A-ZÁÉÍÓÚÑÇÜ0-9 .'-]{0,30}:(?:\s+|$)")


def clean_line(line: str) -> str:
    line = html.unescape(_TAG.sub("", line))
    line = _SOUND.sub(" ", line).strip()
    line = _DASH.sub("", _LABEL.sub("", _DASH.sub("", line)))
    return " ".join(line.split())


def clean_cues(raw: list[RawCue]) -> list[Cue]:
    """Cues with clean text, in time order; cues left without words (only [música], say) are
    dropped. In rolling automatic captions each line shows in two or three cues (spoken, then
    scrolled up, plus ~10 ms cues holding the old lines): a line is kept only in the cue where it
    first appears, so its text occurs once, with the times it was spoken."""
    cleaned = [[text for text in map(clean_line, cue.lines) if text] for cue in raw]
    rolling = is_rolling(cleaned)
    cues, previous = [], []
    for cue, lines in zip(raw, cleaned):
        new = [line for line in lines if line not in previous] if rolling else lines
        if lines:
            previous = lines
        text = " ".join(new)
        if any(ch.isalnum() for ch in text):
            cues.append(Cue(cue.start, cue.end, text))
    return sorted(cues, key=lambda cue: (cue.start, cue.end))


def is_rolling(cleaned: list[list[str]]) -> bool:
    """True when most cues begin with a line the previous cue already showed."""
    shown = [lines for lines in cleaned if lines]
    repeats = sum(1 for before, lines in zip(shown, shown[1:]) if lines[0] in before)
    return repeats >= 2 and repeats >= 0.5 * (len(shown) - 1)


def merge_cues(cues: list[Cue], max_gap: float, max_seconds: float) -> tuple[list[Segment], list[Segment]]:
    """(segments, single cues over max_seconds): cues joined in time order while the gap to the
    next cue is at most max_gap and the segment stays within max_seconds. A segment always
    starts and ends at cue boundaries; a cue is never cut (one that is too long is returned apart)."""
    segments, too_long, current = [], [], []
    for cue in cues:
        if cue.end - cue.start > max_seconds:
            too_long.append(Segment((cue,)))
            continue
        if current and (cue.start - Segment(tuple(current)).end > max_gap or cue.end - current[0].start > max_seconds):
            segments.append(Segment(tuple(current)))
            current = []
        current.append(cue)
    if current:
        segments.append(Segment(tuple(current)))
    return segments, too_long


# ---------------------------------------------------------------------------------------------
# Audio and the check


def video_audio(video: Video, limits: DownloadLimits, workdir: Path) -> np.ndarray:
    """The whole audio as 16 kHz mono, decoded once by FFmpeg (the ffmpeg CLI for downloads, its
    libraries through PyAV for local files); segments are cut from it sample-exactly, which costs
    nothing next to one ffmpeg process per segment."""
    if not is_url(video.media):
        return load_audio(video.media)
    info = download_audio(video.media, workdir, limits)
    try:
        return load_audio(info.path)
    finally:
        info.path.unlink(missing_ok=True)


def judge_segments(segments, too_long, audio, config: HarvestConfig, check, label: str, progress: bool) -> list:
    """[(segment, reason it is dropped or None, CER or None)] in time order."""
    from tqdm.auto import tqdm

    from galwhisper.transcribe import TranscribeOptions

    audio_seconds = len(audio) / SAMPLE_RATE
    judged = [(segment, TOO_LONG, None) for segment in too_long]
    decode = TranscribeOptions(language=config.language, batch_size=1, beam_size=1, timestamps=False)
    bar = tqdm(segments, desc=f"check {label[-40:]}", unit="segment", leave=False,
               disable=True if check is None else bars_disabled(progress))
    for segment in bar:
        if segment.seconds < config.min_seconds:
            judged.append((segment, TOO_SHORT, None))
        elif segment.end > audio_seconds + END_SLACK:
            judged.append((segment, PAST_END, None))
        elif check is None:
            judged.append((segment, None, None))
        else:
            clip = audio[_sample(segment.start) : _sample(segment.end)]
            cer = segment_cer(check.transcribe(clip, decode, name=label).text, segment.text)
            judged.append((segment, None if cer <= config.max_cer else OVER_CER, cer))
    checked = [cer for _, reason, cer in judged if cer is not None]
    if checked and sum(cer > config.max_cer for cer in checked) > config.max_bad_share * len(checked):
        judged = [(s, OUT_OF_SYNC if reason is None else reason, cer) for s, reason, cer in judged]
    return sorted(judged, key=lambda item: item[0].start)


def segment_cer(hypothesis: str, sentence: str) -> float:
    """Whisper-normalised CER (punctuation and case do not count, accents do)."""
    try:
        return round(error_rates([sentence], [hypothesis]).cer, 4)
    except ValueError:  # nothing left of the sentence after normalisation (only symbols)
        return 1.0


@lru_cache(maxsize=1)
def _transcriber(model: str, compute_type: str):
    from galwhisper.transcribe import Transcriber

    return Transcriber(model, compute_type=compute_type)


def _sample(seconds: float) -> int:
    return max(0, int(round(seconds * SAMPLE_RATE)))


# ---------------------------------------------------------------------------------------------
# Outputs


def manifest_row(path: str, segment: Segment, cer: float | None, video: Video) -> dict:
    cues = [[round(c.start - segment.start, 3), round(c.end - segment.start, 3), c.text] for c in segment.cues]
    return {
        "path": path, "sentence": segment.text, "source": video.source, "video_id": video.video_id,
        "start": round(segment.start, 3), "end": round(segment.end, 3), "cer": cer, "licence": video.licence,
        "segments": json.dumps(cues, ensure_ascii=False),
    }  # fmt: skip


def dropped_row(segment: Segment, reason: str, cer: float | None, video: Video) -> dict:
    return {"source": video.source, "video_id": video.video_id, "start": round(segment.start, 3),
            "end": round(segment.end, 3), "reason": reason, "cer": cer, "sentence": segment.text}


def split_of(identity: str, validation_ratio: float, test_ratio: float) -> str:
    """A video's split, drawn from its identity alone: it never changes as the corpus grows, so a
    model trained on an earlier harvest never meets its training videos in a later test split."""
    draw = int(hashlib.sha1(f"split:{identity}".encode()).hexdigest()[:12], 16) / 16**12
    if draw < test_ratio:
        return "test"
    return "validation" if draw < test_ratio + validation_ratio else "train"


def write_outputs(out: Path, config: HarvestConfig, run: dict, elapsed: float) -> None:
    """manifest.tsv, dropped.tsv and harvest.json from every finished video in `out`."""
    order = {spec: n for n, spec in enumerate(config.sources)}  # this run's sources first, in its order
    videos = sorted((read_json(p, "video state") for p in (out / "state" / "videos").glob("*.json")),
                    key=lambda v: (order.get(v["source"], len(order)), v["source"], v["index"], v["key"]))
    finished = {}
    for path in sorted((out / "state" / "sources").glob("*.json")):
        record = read_json(path, "source state")
        finished[record["source"]] = record
    manifest, dropped = [], []
    for video in videos:
        split = split_of(video["identity"], config.validation_ratio, config.test_ratio)
        manifest += [{**row, "split": split} for row in video["rows"]]
        dropped += video["dropped"]
    write_text_atomic(out / "manifest.tsv", _tsv(MANIFEST_COLUMNS, manifest))
    write_text_atomic(out / "dropped.tsv", _tsv(DROPPED_COLUMNS, dropped))
    write_json_atomic(out / "harvest.json", {
        "settings": config.settings(),
        "sources": {spec: _counts([v for v in videos if v["source"] == spec], finished.get(spec), run["errors"].get(spec))
                    for spec in dict.fromkeys([*config.sources, *finished, *(v["source"] for v in videos)])},
        "totals": _counts(videos),
        "splits": _split_counts(manifest),
        "errors": run["errors"],
        "run": {**{k: v for k, v in run.items() if k != "errors"}, "elapsed_seconds": round(elapsed, 1),
                "sources": list(config.sources), "max_videos": config.max_videos},
    })  # fmt: skip


def _counts(videos: list[dict], record: dict | None = None, error: str | None = None) -> dict:
    kept = [row for v in videos for row in v["rows"]]
    dropped = [row for v in videos for row in v["dropped"]]
    counts = {
        "videos": len(videos),
        "segments_kept": len(kept),
        "segments_dropped": {reason: sum(row["reason"] == reason for row in dropped) for reason in REASONS},
        "hours_kept": round(sum(r["end"] - r["start"] for r in kept) / 3600, 4),
        "hours_dropped": round(sum(r["end"] - r["start"] for r in dropped) / 3600, 4),
        "hours_audio": round(sum(v["audio_seconds"] for v in videos) / 3600, 4),
    }
    cers = [row["cer"] for row in kept if row["cer"] is not None]
    if cers:
        counts["mean_cer_kept"] = round(float(np.mean(cers)), 4)
    if record is not None:
        counts.update(finished=True, videos_failed=record["failed"])
    if error is not None:
        counts["error"] = error
    return counts


def _split_counts(manifest: list[dict]) -> dict:
    splits = {}
    for name in ("train", "validation", "test"):
        rows = [row for row in manifest if row["split"] == name]
        splits[name] = {"videos": len({(r["source"], r["video_id"]) for r in rows}), "segments": len(rows),
                        "hours": round(sum(r["end"] - r["start"] for r in rows) / 3600, 4)}
    return splits


def _tsv(columns: tuple[str, ...], rows: list[dict]) -> str:
    """One row a line; tabs and line breaks inside values become spaces (the TSV is unquoted)."""
    def cell(value) -> str:
        text = "" if value is None else str(value)
        return " ".join(text.split()) if any(ch in text for ch in "\t\r\n") else text

    return "".join("\t".join(map(cell, line)) + "\n" for line in [columns, *([row.get(c) for c in columns] for row in rows)])


# ---------------------------------------------------------------------------------------------
# The output folder: one run at a time, same settings, no leftovers


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out` (released by the kernel when a run is killed)."""
    state = out / "state"
    state.mkdir(parents=True, exist_ok=True)
    with open(state / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise GalwhisperError(f"--out {out}: another galwhisper harvest is writing to this folder") from None
        yield


def _check_settings(out: Path, config: HarvestConfig) -> None:
    path = out / "state" / "settings.json"
    settings = config.settings()
    if not path.is_file():
        write_json_atomic(path, settings)
        return
    before = read_json(path, "harvest settings")
    changed = [f"--{k.replace('_', '-')} {before.get(k)} -> {v}" for k, v in settings.items() if before.get(k) != v]
    if changed:
        raise GalwhisperError(f"--out {out}: was harvested with other settings ({', '.join(changed)}); "
                              "use the same settings to continue, or another --out")


def _remove_leftovers(out: Path) -> None:
    """What a killed run left: temp folders and files, and clip folders of unfinished videos."""
    finished = {p.stem for p in (out / "state" / "videos").glob("*.json")}
    for folder in (out, out / "clips", out / "state", out / "state" / "videos", out / "state" / "sources"):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(".tmp-") or (path.name.startswith(".") and path.name.endswith(".tmp")):
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            elif folder.name == "clips" and path.is_dir() and path.name not in finished:
                shutil.rmtree(path)
