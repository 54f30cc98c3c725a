"""Transcription engines (CTranslate2 through faster-whisper, transformers), long-form, writers.

The CTranslate2 engine is the default: it runs the bundled model as shipped and any model
`galwhisper train` exports. The transformers engine exists for parity checks. Both take their
log-mel features from `features.py`, the path training uses.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from galwhisper import features, models, options
from galwhisper.audio import SAMPLE_RATE, AudioInput, describe, load_audio
from galwhisper.errors import GalwhisperError
from galwhisper.files import safe_name, write_text_atomic
from galwhisper.languages import DEFAULT_LANGUAGE, language_code

SILENCE_PEAK = 1e-3  # below this peak amplitude there is nothing to transcribe
FORMATS = ("txt", "srt", "vtt", "json")
BACKENDS = ("ct2", "transformers")
OFF = "off"  # what turns an optional check off on the command line
# A window that loops is decoded again greedily with faster-whisper's repetition_penalty 1.2. On
# four looping windows of the bundled base (synthetic Galician) this removed every loop and gave
# the lowest or near-lowest WER of the settings tried (no_repeat_ngram_size 3 and 5, penalty
# 1.1/1.2/1.3, beam 5), where no_repeat_ngram_size 3 broke words into "-sh -ca -ru" fragments;
# Whisper's temperature fallback (0.2 ... 1.0, 5 samples each) took 30 s on one window and
# still looped.
RETRY_REPETITION_PENALTY = 1.2
MAX_LOOP_WORDS = 20  # the longest phrase (in words) looked for when finding a loop
RETRY_PAD = 0.2  # seconds of audio added on each side of a window decoded again


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = DEFAULT_LANGUAGE  # None or "auto": detect
    task: str = "transcribe"  # or "translate" (to English)
    beam_size: int = 1  # greedy: on 2 CPU cores beam 5 costs ~2x for little gain
    batch_size: int = 16  # >1: BatchedInferencePipeline over VAD windows; 16 beat 8 by ~10% (benchmarks)
    vad: bool = False  # with batch_size 1: skip non-speech with Silero VAD (batched always does)
    word_timestamps: bool = False
    # Segment timestamps predicted by the model. None (auto): on for models galwhisper trained
    # with timestamped targets (galwhisper.json says so) and for sequential decoding (batch_size
    # 1) of audio longer than one 30 s window, where Whisper's long-form algorithm seeks by them
    # (without, windows cut sentences: 15 of 24 kept in a 3-minute test). Otherwise off: a model
    # fine-tuned only on <|notimestamps|> targets was seen to transcribe worse when asked for them.
    timestamps: bool | None = None
    # The repetition guard, with faster-whisper's names where it has them. A decoded window whose
    # text compresses (gzip) better than compression_ratio_threshold, repeats a phrase more than
    # max_repeats times in a row, or (when set) has an average log-probability under
    # log_prob_threshold is decoded again on its own; a phrase that still repeats more than
    # max_repeats times is cut to one. Both are noted in Transcript.notes. None/"off": no check.
    compression_ratio_threshold: float | None = 2.4  # Whisper's and faster-whisper's value
    # Off by default: the zero-shot base falls under faster-whisper's -1.0 on 8 of 11 windows of
    # benchmarks/transcribe_speed.py's synthetic speech, and decoding those again doubled the time.
    log_prob_threshold: float | None = None
    no_repeat_ngram_size: int = 0  # > 0: no n-gram of this many tokens may repeat within a window
    repetition_penalty: float = 1.0  # > 1: tokens already in the window are less likely (a retry uses >= 1.2)
    max_repeats: int | None = 4
    # Text said just before this audio, given to the decoder as Whisper's previous-text prompt
    # (CTranslate2 models; the Live tab passes what it confirmed before its buffer).
    initial_prompt: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "language", language_code(self.language, allow_auto=True))
        options.one_of("task", self.task, ("transcribe", "translate"))
        options.whole("beam_size", self.beam_size, maximum=32)
        options.whole("batch_size", self.batch_size, maximum=256)
        for name in ("compression_ratio_threshold", "log_prob_threshold", "max_repeats"):
            if getattr(self, name) == OFF:
                object.__setattr__(self, name, None)
        options.number("compression_ratio_threshold", self.compression_ratio_threshold, optional=True)
        options.number("log_prob_threshold", self.log_prob_threshold, minimum=-100.0, maximum=0.0, optional=True)
        options.whole("no_repeat_ngram_size", self.no_repeat_ngram_size, minimum=0, maximum=64)
        options.number("repetition_penalty", self.repetition_penalty, minimum=1.0, strict=False, maximum=10.0)
        options.whole("max_repeats", self.max_repeats, minimum=1, optional=True)
        if self.initial_prompt is not None and not isinstance(self.initial_prompt, str):
            raise options.refuse("initial_prompt", self.initial_prompt, "must be text")


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    source: str
    text: str
    segments: list[Segment]
    language: str | None
    duration: float  # seconds of audio
    elapsed: float  # seconds of compute
    notes: list[str] = field(default_factory=list)  # what the repetition guard did, one line each

    @property
    def real_time_factor(self) -> float:
        return self.elapsed / self.duration if self.duration else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "real_time_factor": self.real_time_factor}


class Transcriber:
    """A model loaded once, reused for every call (the app keeps one per model)."""

    def __init__(self, model: str = models.DEFAULT_MODEL, backend: str = "ct2", compute_type: str = "int8", cpu_threads: int = 0):
        options.one_of("backend", backend, BACKENDS)
        self.model_spec, self.backend = model, backend
        self.name = models.resolve(model).name
        # A model galwhisper fine-tuned with timestamped targets keeps usable segment times.
        self.timestamps_trained = bool(models.trained_info(model).get("timestamps"))
        if backend == "ct2":
            self._model = models.load_whisper(model, compute_type, cpu_threads)
            self.n_mels = self._model.feature_extractor.mel_filters.shape[0]
        else:
            import torch

            self._hf, self._processor = models.load_hf(model)
            self._hf.eval()
            self._torch = torch
            self.n_mels = self._hf.config.num_mel_bins

    # -- public -------------------------------------------------------------------------------

    def transcribe(self, source: AudioInput, options: TranscribeOptions | None = None, name: str | None = None) -> Transcript:
        options = options or TranscribeOptions()
        audio = load_audio(source)
        started = time.perf_counter()
        duration = len(audio) / SAMPLE_RATE
        notes: list[str] = []
        if np.abs(audio).max(initial=0.0) < SILENCE_PEAK:
            segments, language = [], options.language
        elif self.backend == "ct2":
            segments, language = self._transcribe_ct2(audio, options, notes)
        else:
            segments, language = self._transcribe_hf(audio, options)
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        elapsed = time.perf_counter() - started
        return Transcript(name or describe(source), text, segments, language, duration, elapsed, notes)

    # -- engines ------------------------------------------------------------------------------

    def _transcribe_ct2(self, audio: np.ndarray, o: TranscribeOptions, notes: list[str]):
        common = dict(
            language=o.language,
            task=o.task,
            beam_size=o.beam_size,
            word_timestamps=o.word_timestamps,
            vad_filter=o.vad,
            temperature=0.0,  # no fallback: it took 4-7x longer on poor audio for little gain
            condition_on_previous_text=False,  # stops one bad window from looping into the next
            no_repeat_ngram_size=o.no_repeat_ngram_size,
            repetition_penalty=o.repetition_penalty,
            without_timestamps=not self._use_timestamps(audio, o),
            initial_prompt=o.initial_prompt or None,
        )
        if o.batch_size > 1:
            # Batched decoding needs windows of <= 30 s; cutting them at pauses found by Silero VAD
            # keeps every sentence whole (fixed 30 s windows without timestamps dropped about
            # half the sentences of a 3-minute test).
            common.update(vad_filter=True)
            from faster_whisper import BatchedInferencePipeline

            # A pipeline per call: it keeps the last word's time of the call in progress on
            # itself (last_speech_timestamp), so one shared by the app's concurrent requests gave
            # one Live session's words the times of another's (live WER 64-90% vs 7% alone).
            pipeline = BatchedInferencePipeline(self._model)
            generator, info = pipeline.transcribe(audio, batch_size=o.batch_size, **common)
        else:
            generator, info = self._model.transcribe(audio, **common)
        # The sequential path seeks in the audio's own time only without VAD.
        real_seek = o.batch_size <= 1 and not o.vad
        segments = []
        for window in _windows(list(generator), len(audio) / SAMPLE_RATE, self._model.frames_per_second, real_seek):
            segments += self._guard(audio, window, o, info.language, notes)
        return segments, info.language

    # -- the repetition guard -----------------------------------------------------------------

    def _guard(self, audio: np.ndarray, window: "_Window", o: TranscribeOptions, language: str, notes: list[str]) -> list[Segment]:
        """The window's segments, decoded again if they loop (or fail the log-prob check), with
        any phrase still repeated more than o.max_repeats times in a row cut to one."""
        segments = window.segments
        problem = window_problem(" ".join(s.text for s in segments), window.avg_logprob, o, window.compression_ratio)
        if problem:
            retry = self._decode_again(audio, window, o, language)
            # An empty retry (VAD heard nothing) never replaces text: the cut below handles that.
            better = bool(retry.segments) and _loop_rank(retry, o) < _loop_rank(window, o)
            if better:
                segments = retry.segments
            kept = "kept the new text" if better else "kept the first text"
            notes.append(f"{_span(window)}: {problem}; decoded again, {kept}")
        segments, cuts = cut_repetitions(segments, o.max_repeats)
        notes += [f"{_span(window)}: '{r.phrase}' repeated {r.count} times in a row, cut to one" for r in cuts]
        return segments

    def _decode_again(self, audio: np.ndarray, window: "_Window", o: TranscribeOptions, language: str) -> "_Window":
        """The window's audio decoded on its own, greedily, with repeated tokens penalised."""
        start = max(0.0, window.start - RETRY_PAD)
        end = min(len(audio) / SAMPLE_RATE, window.end + RETRY_PAD)
        piece = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        generator, _ = self._model.transcribe(
            piece,
            language=language,
            task=o.task,
            beam_size=o.beam_size,
            word_timestamps=o.word_timestamps,
            vad_filter=True,  # a batched window's audio may hold pauses VAD had taken out
            temperature=0.0,
            condition_on_previous_text=False,
            no_repeat_ngram_size=o.no_repeat_ngram_size,
            repetition_penalty=max(o.repetition_penalty, RETRY_REPETITION_PENALTY),
            # Whisper's silence rule (no-speech probability > 0.6 and log-probability < -1) must
            # not drop the window: it held speech, and penalising repeats lowers the log-probability.
            no_speech_threshold=None,
            without_timestamps=True,
        )
        decoded = list(generator)
        return _Window([_segment(s, offset=start) for s in decoded], start, end, _mean_logprob(decoded), _max_ratio(decoded))

    def _use_timestamps(self, audio: np.ndarray, o: TranscribeOptions) -> bool:
        if o.timestamps is not None:
            return o.timestamps
        if self.timestamps_trained:
            return True
        return o.batch_size <= 1 and len(audio) > features.MAX_SECONDS * SAMPLE_RATE

    def _transcribe_hf(self, audio: np.ndarray, o: TranscribeOptions):
        """Greedy/beam generate per 30 s window, features from features.py (parity reference)."""
        if o.initial_prompt:
            raise GalwhisperError("initial_prompt: only the CTranslate2 backend takes a prompt")
        torch, window = self._torch, int(features.MAX_SECONDS * SAMPLE_RATE)
        segments = []
        for start in range(0, len(audio), window):
            chunk = audio[start : start + window]
            batch = torch.from_numpy(features.model_input(chunk, self.n_mels)[None])
            with torch.inference_mode():
                ids = self._hf.generate(batch, language=o.language, task=o.task, num_beams=o.beam_size, max_new_tokens=features.MAX_NEW_TOKENS)
            text = self._processor.tokenizer.decode(ids[0], skip_special_tokens=True)
            segments.append(Segment(start / SAMPLE_RATE, (start + len(chunk)) / SAMPLE_RATE, text))
        return segments, o.language


# ---------------------------------------------------------------------------------------------
# The repetition guard: finding and cutting loops (public: evaluate can count them too)

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Repetition:
    """A phrase repeated `count` times in a row, starting at word `start` of the text."""

    start: int
    ngram: tuple[str, ...]  # the phrase's words, lower case
    count: int

    @property
    def phrase(self) -> str:
        return " ".join(self.ngram)

    @property
    def words(self) -> int:
        return len(self.ngram) * self.count


def text_words(text: str) -> list[str]:
    """The words the loop checks count: runs of letters/digits, lower case ("ba-ba" is 2 words)."""
    return [m.group().lower() for m in _WORD.finditer(text)]


def find_repetitions(words: Sequence[str] | str, min_count: int = 2, max_words: int = MAX_LOOP_WORDS) -> list[Repetition]:
    """Every phrase of up to `max_words` words repeated at least `min_count` times in a row,
    without overlaps, in text order. Where runs overlap, the one covering most words wins (then
    the shorter phrase: "a a a a" is "a" x4, not "a a" x2)."""
    words = text_words(words) if isinstance(words, str) else list(words)
    candidates = []
    for n in range(1, min(max_words, len(words) // 2) + 1):
        # count[i]: how many times words[i:i+n] repeats in a row from i (right to left).
        count = [1] * (len(words) + n)
        for i in range(len(words) - 2 * n, -1, -1):
            if words[i : i + n] == words[i + n : i + 2 * n]:
                count[i] = count[i + n] + 1
        for i in range(len(words) - 2 * n + 1):
            starts_run = i < n or words[i - n : i] != words[i : i + n]
            if count[i] >= min_count and starts_run:
                candidates.append(Repetition(i, tuple(words[i : i + n]), count[i]))
    chosen: list[Repetition] = []
    for run in sorted(candidates, key=lambda r: (-r.words, len(r.ngram), r.start)):
        if all(run.start + run.words <= c.start or c.start + c.words <= run.start for c in chosen):
            chosen.append(run)
    return sorted(chosen, key=lambda r: r.start)


def longest_repetition(text: str) -> Repetition | None:
    """The phrase repeated most times in a row in `text` (None when nothing repeats)."""
    return max(find_repetitions(text), key=lambda r: (r.count, r.words), default=None)


def compression_ratio(text: str) -> float:
    """gzip's compression ratio of `text`, as Whisper and faster-whisper compute it."""
    from faster_whisper.transcribe import get_compression_ratio

    return get_compression_ratio(text)


def window_problem(text: str, avg_logprob: float | None, o: TranscribeOptions, ratio: float | None = None) -> str | None:
    """Why a window's text fails the guard's checks (one line), or None when it passes.
    `ratio`: the compression ratio the decoder reported, when it saw more text than `text`
    (faster-whisper drops what follows a timestamp past the window's end)."""
    problems = []
    if text.strip() and o.compression_ratio_threshold is not None:
        ratio = max(ratio or 0.0, compression_ratio(text))
        if ratio > o.compression_ratio_threshold:
            problems.append(f"compression ratio {ratio:.1f} > {o.compression_ratio_threshold:g}")
    longest = longest_repetition(text)
    if o.max_repeats is not None and longest is not None and longest.count > o.max_repeats:
        problems.append(f"'{_shorten(longest.phrase)}' repeated {longest.count} times in a row")
    if o.log_prob_threshold is not None and avg_logprob is not None and avg_logprob < o.log_prob_threshold:
        problems.append(f"average log-probability {avg_logprob:.2f} < {o.log_prob_threshold:g}")
    return "; ".join(problems) or None


def cut_repetitions(segments: list[Segment], max_repeats: int | None) -> tuple[list[Segment], list[Repetition]]:
    """`segments` with every phrase repeated more than `max_repeats` times in a row (across
    segments too) cut to its first occurrence; segments left without words are dropped.
    Returns the new segments and the runs that were cut."""
    if max_repeats is None:
        return segments, []
    tokens = [(i, m.start(), m.end()) for i, s in enumerate(segments) for m in _WORD.finditer(s.text)]
    words = [segments[i].text[a:b].lower() for i, a, b in tokens]
    runs = find_repetitions(words, min_count=max_repeats + 1)
    if not runs:
        return segments, []
    dropped = {k for r in runs for k in range(r.start + len(r.ngram), r.start + r.words)}
    cuts: dict[int, list[tuple[int, int]]] = {}  # segment -> character ranges to remove
    k = 0
    while k < len(tokens):
        if k not in dropped:
            k += 1
            continue
        first = k
        while k + 1 < len(tokens) and k + 1 in dropped and tokens[k + 1][0] == tokens[first][0]:
            k += 1
        i, text = tokens[first][0], segments[tokens[first][0]].text
        if first > 0 and tokens[first - 1][0] == i:
            # After a kept word: from its end through the last dropped word, so that
            # "o tren, o tren, o tren." becomes "o tren."
            span = (tokens[first - 1][2], tokens[k][2])
        else:
            # At the segment's start: through the separator, up to the next kept word.
            following = tokens[k + 1][1] if k + 1 < len(tokens) and tokens[k + 1][0] == i else len(text)
            span = (tokens[first][1], following)
        cuts.setdefault(i, []).append(span)
        k += 1
    result = []
    for i, segment in enumerate(segments):
        if i in cuts:
            segment = _without(segment, cuts[i])
        if _WORD.search(segment.text):
            result.append(segment)
    return result, runs


def _without(segment: Segment, ranges: list[tuple[int, int]]) -> Segment:
    """`segment` with the character ranges of its text removed (and the words inside them)."""
    text, kept_words, offset = segment.text, [], 0
    joined = "".join(w.word for w in segment.words)
    for word in segment.words:
        a, b = offset + len(word.word) - len(word.word.lstrip()), offset + len(word.word)  # its characters, not its space
        offset = b
        if joined != text or not any(x < b and a < y for x, y in ranges):
            kept_words.append(word)
    for x, y in reversed(ranges):
        text = text[:x] + text[y:]
    return Segment(segment.start, segment.end, " ".join(text.split()), kept_words)


@dataclass
class _Window:
    """The segments decoded from one window of audio (one decoder call), with its span."""

    segments: list[Segment]
    start: float
    end: float
    avg_logprob: float | None
    compression_ratio: float | None  # as the decoder reported it for the whole window


def _windows(decoded: list, duration: float, frames_per_second: int, real_seek: bool) -> list[_Window]:
    """faster-whisper's segments grouped by the window they were decoded from (its `seek`).
    With `real_seek` (sequential decoding without VAD) a window runs from its seek to the next
    window's, so a window whose text lost its timestamps is still decoded again whole."""
    groups: list[list] = []
    for s in decoded:
        if groups and groups[-1][0].seek == s.seek:
            groups[-1].append(s)
        else:
            groups.append([s])
    windows = []
    for k, group in enumerate(groups):
        start, end = min(s.start for s in group), max(s.end for s in group)
        if real_seek:
            start = min(start, group[0].seek / frames_per_second)
            following = groups[k + 1][0].seek / frames_per_second if k + 1 < len(groups) else duration
            end = max(end, min(following, duration))
        windows.append(_Window([_segment(s) for s in group], start, end, _mean_logprob(group), _max_ratio(group)))
    return windows


def _segment(s, offset: float = 0.0) -> Segment:
    words = [Word(float(w.start) + offset, float(w.end) + offset, w.word, float(w.probability)) for w in (s.words or [])]
    return Segment(float(s.start) + offset, float(s.end) + offset, s.text, words)


def _mean_logprob(decoded: list) -> float | None:
    return float(np.mean([s.avg_logprob for s in decoded])) if decoded else None


def _max_ratio(decoded: list) -> float | None:
    return max((float(s.compression_ratio) for s in decoded), default=None)


def _loop_rank(window: _Window, o: TranscribeOptions) -> tuple:
    """Lower is better: the shorter longest run of a repeated phrase, then the higher
    log-probability. The compression ratio only says a window is worth decoding again: speech
    that really repeats a sentence (a refrain, a slogan) compresses as well as a loop, and the
    retry's repetition penalty then respells the repeats ("ask not" -> "ask out")."""
    longest = longest_repetition(" ".join(s.text for s in window.segments))
    count = longest.count if longest else 0
    return (count > (o.max_repeats or count), count, -(window.avg_logprob if window.avg_logprob is not None else -1e9))


def _span(window: _Window) -> str:
    return f"{window.start:.1f}-{window.end:.1f} s"


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Inputs: files and URLs


def transcribe_inputs(inputs: Iterable[str], transcriber: Transcriber, options: TranscribeOptions, limits=None):
    """Yield (input, Transcript | GalwhisperError) for files and http(s)/YouTube URLs."""
    from galwhisper import media

    for item in inputs:
        try:
            if media.is_url(item):
                with media.fetched_audio(item, limits) as info:
                    yield item, transcriber.transcribe(info.path, options, name=item)
            else:
                yield item, transcriber.transcribe(item, options)
        except GalwhisperError as exc:
            yield item, exc


# ---------------------------------------------------------------------------------------------
# Writers


def _timestamp(seconds: float, decimal: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def to_srt(transcript: Transcript) -> str:
    blocks = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(transcript.segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n" for s in transcript.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def render(transcript: Transcript, fmt: str) -> str:
    if fmt == "txt":
        return transcript.text + "\n"
    if fmt == "srt":
        return to_srt(transcript)
    if fmt == "vtt":
        return to_vtt(transcript)
    if fmt == "json":
        return json.dumps(transcript.to_dict(), ensure_ascii=False, indent=2) + "\n"
    raise GalwhisperError(f"{fmt}: unknown output format (one of {', '.join(FORMATS)})")


def output_name(source: str) -> str:
    """A file stem for an input: the file's stem, or a safe name made from a URL."""
    from galwhisper import media

    if media.is_url(source):
        stem = Path(source.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "url").stem
    else:
        stem = Path(source).stem
    return safe_name(stem, "transcript")


def output_names(sources: list[str]) -> dict[str, str]:
    """A distinct file stem per input, so that no transcript overwrites another's: inputs that
    share a stem keep their extension (good.wav -> good.wav.srt, good.mp3 -> good.mp3.srt) when
    that tells them apart, and are numbered when it does not (a/x.wav -> x, b/x.wav -> x-2)."""
    stems = {source: output_name(source) for source in dict.fromkeys(sources)}
    names: dict[str, str] = {}
    for stem in dict.fromkeys(stems.values()):
        group = [source for source, s in stems.items() if s == stem]
        suffixes = [Path(source.split("?")[0]).suffix for source in group]
        if len(group) == 1:
            names[group[0]] = stem
        elif all(suffixes) and len(set(suffixes)) == len(group):
            names.update({source: safe_name(stem + suffix, stem) for source, suffix in zip(group, suffixes)})
        else:
            names.update({source: stem if i == 0 else f"{stem}-{i + 1}" for i, source in enumerate(group)})
    taken: set[str] = set()
    for source, name in names.items():  # a numbered name may meet an input's own stem (x-2.wav)
        unique, number = name, 2
        while unique in taken:
            unique, number = f"{name}-{number}", number + 1
        names[source] = unique
        taken.add(unique)
    return names


def write_transcript(transcript: Transcript, fmt: str, output_dir: str | os.PathLike, stem: str | None = None) -> Path:
    path = Path(output_dir) / f"{stem or output_name(transcript.source)}.{fmt}"
    return write_text_atomic(path, render(transcript, fmt))
