"""Live transcription: text while someone speaks, fed chunk by chunk.

The policy is ufal/whisper_streaming's LocalAgreement-2. Every update transcribes the audio
buffer (what is not yet confirmed, with a little context) with word timestamps; a word is
*confirmed* once two consecutive updates agree on it (the common prefix of their new words),
and is never changed afterwards. The rest of the latest update is the *tentative* tail.

Unlike the usual "transcribe everything so far on every chunk" loop, whose cost grows with the
talk, the buffer is trimmed once it is longer than `LiveConfig.trim_seconds`: it is cut in a
pause (or after a sentence end) that follows a confirmed word, so each update transcribes at
most about `max_buffer_seconds` (one Whisper window) however long the talk is. galwhisper
decodes without segment timestamps (its fine-tuned models are trained without them), so the cut
is placed by word timestamps rather than whisper_streaming's segment ends. As in
whisper_streaming, each update is prompted with the confirmed text just before the buffer, so a
trimmed buffer keeps its context (until a prompted update loops). Silence costs little:
faster-whisper's Silero VAD keeps non-speech from the decoder, and a buffer in which nothing was
heard is dropped.

`LiveTranscriber` is the synchronous core (feed, update, finish; `stream(chunks)` drives it over
an iterable). `LiveSession` runs one on a worker thread of its own, so that whoever feeds it
(the app's stream handler) never waits for the model: each update takes all the audio that came
in since the last one, so a slow update is followed by a bigger one, not by a queue.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from galwhisper import options as checks
from galwhisper.audio import SAMPLE_RATE, StreamResampler
from galwhisper.errors import GalwhisperError
from galwhisper.transcribe import Segment, TranscribeOptions, Transcriber, Transcript, Word

SENTENCE_END = (".", "?", "!", "…")
# whisper_streaming drops a new word that starts this much before the last confirmed word's
# end: word timestamps jitter by about this much between updates.
TIME_TOLERANCE = 0.1
# Two updates agree on a word only if they also place it within this many seconds of each
# other: comparing text alone matched a "de" of one update with a "de" 15 s later in the next
# (the bundled base's hypotheses of synthetic speech change a lot), and lost the 15 s between.
SAME_WORD_SECONDS = 1.0
# ... and spell it alike: accents aside, words of 3+ letters may differ by one edit per 4
# letters. Updates of the bundled base kept respelling the same word ("cabeiros"/"caberos",
# "reunión"/"reunion", "sen"/"sem"), and exact matching then confirmed nothing for 30 s.
LETTERS_PER_EDIT = 4
# The first words of an update that repeat the last confirmed ones (up to this many) are the
# same words heard again across a trim, not new ones (whisper_streaming's rule).
MAX_OVERLAP_WORDS = 5
KEEP_AFTER_SILENCE = 2.0  # seconds kept of a buffer in which nothing was heard: speech may be starting
CUE_SECONDS, CUE_GAP = 7.0, 0.8  # an .srt cue ends at a sentence end, a pause or this length


@dataclass(frozen=True)
class LiveConfig:
    """How the live buffer is updated and trimmed (whisper_streaming's names in comments)."""

    min_chunk_seconds: float = 1.0  # new audio needed for an update (--min-chunk-size)
    trim_seconds: float = 15.0  # buffer length above which it is trimmed (buffer_trimming_sec)
    max_buffer_seconds: float = 30.0  # one Whisper window: beyond it the oldest words are confirmed as they are
    min_pause_seconds: float = 0.3  # a pause this long after a confirmed word is a place to trim
    # The confirmed text before the buffer (up to this many characters, whole words) prompts each
    # update (whisper_streaming's 200), until a prompted update loops. benchmarks/live_latency.py
    # --quick (120 s, AMD EPYC): the demo's fine-tuned model on synthetic Galician, live WER 25.7%
    # without, 20.9% always prompted, 21.7% as now (its file: 20.9%); English with the base 21.3%
    # -> 21.0%. The zero-shot base on Galician, always prompted, looped on its own guesses
    # (updates 1.3 -> 6.1 s in minute 2); as now, 1.1-1.2 s. 0: no prompt.
    prompt_chars: int = 200
    max_seconds: float | None = None  # refuse a stream longer than this (the app's duration cap)
    idle_seconds: float = 60.0  # a LiveSession's worker stops after this long without audio

    def __post_init__(self):
        checks.number("min_chunk_seconds", self.min_chunk_seconds)
        checks.number("trim_seconds", self.trim_seconds)
        checks.number("max_buffer_seconds", self.max_buffer_seconds, minimum=self.trim_seconds)
        checks.number("min_pause_seconds", self.min_pause_seconds)
        checks.whole("prompt_chars", self.prompt_chars, minimum=0, maximum=1000)
        checks.number("max_seconds", self.max_seconds, optional=True)
        checks.number("idle_seconds", self.idle_seconds)


@dataclass
class LiveUpdate:
    """What to show after an update: confirmed text plainly, the tentative tail apart."""

    confirmed: str
    tentative: str
    heard_seconds: float  # audio received so far
    buffer_seconds: float  # audio the last update transcribed
    update_seconds: float  # compute time of the last update
    updates: int
    language: str | None


@dataclass
class UpdateStat:
    """One update, for benchmarks: how much audio, how long it took, what it confirmed."""

    heard_seconds: float  # audio received when the update started
    buffer_seconds: float
    compute_seconds: float
    finished_at: float  # time.perf_counter() when it ended
    confirmed_words: list[Word] = field(default_factory=list)  # confirmed by this update
    forced_words: int = 0  # of which confirmed without agreement, to keep the buffer to one window


def _key(word: Word) -> str:
    """How two updates' words are compared: case, accents and surrounding punctuation do not count."""
    text = unicodedata.normalize("NFKD", word.word.strip().strip(".,;:!?¿¡…\"'()«»-").lower())
    return "".join(c for c in text if not unicodedata.combining(c))


def _same(new: Word, old: Word) -> bool:
    """Whether two updates heard the same word: at the same place, spelt (nearly) alike."""
    if abs(new.start - old.start) >= SAME_WORD_SECONDS:
        return False
    a, b = _key(new), _key(old)
    if a == b:
        return True
    from rapidfuzz.distance import Levenshtein  # jiwer's own dependency

    return min(len(a), len(b)) >= 3 and Levenshtein.distance(a, b) <= max(1, min(len(a), len(b)) // LETTERS_PER_EDIT)


class LocalAgreement:
    """LocalAgreement-2 (whisper_streaming's HypothesisBuffer): words are confirmed when two
    consecutive hypotheses agree on them. Times are seconds of the stream."""

    def __init__(self) -> None:
        self.confirmed_in_buffer: list[Word] = []  # confirmed words whose audio is still buffered
        self.tentative: list[Word] = []  # the last hypothesis' unconfirmed words
        self.last_confirmed_end = 0.0

    def insert(self, hypothesis: list[Word]) -> list[Word]:
        """Take a new hypothesis of the buffer; return the words it confirms."""
        new = [w for w in hypothesis if w.start > self.last_confirmed_end - TIME_TOLERANCE]
        if new and self.confirmed_in_buffer and abs(new[0].start - self.last_confirmed_end) < 1.0:
            most = min(len(self.confirmed_in_buffer), len(new), MAX_OVERLAP_WORDS)
            for n in range(1, most + 1):
                if [_key(w) for w in self.confirmed_in_buffer[-n:]] == [_key(w) for w in new[:n]]:
                    new = new[n:]
                    break
        confirmed = []
        while new and self.tentative and _same(new[0], self.tentative[0]):
            confirmed.append(new.pop(0))
            self.tentative.pop(0)
        self.tentative = new
        self.accept(confirmed)
        return confirmed

    def accept(self, words: list[Word]) -> None:
        """Count `words` as confirmed (also used to confirm words without agreement)."""
        if words:
            self.confirmed_in_buffer += words
            self.last_confirmed_end = words[-1].end
            done = {id(w) for w in words}
            self.tentative = [w for w in self.tentative if id(w) not in done and w.start >= self.last_confirmed_end - TIME_TOLERANCE]

    def forget_before(self, seconds: float) -> None:
        """The buffer now starts at `seconds`: confirmed words before it are out of reach."""
        self.confirmed_in_buffer = [w for w in self.confirmed_in_buffer if w.end > seconds]


class LiveTranscriber:
    """Live transcription of one stream (one speaker session); not thread-safe (see LiveSession)."""

    def __init__(self, transcriber: Transcriber, options: TranscribeOptions | None = None, config: LiveConfig | None = None):
        self.transcriber = transcriber
        # The files' decoding (batched over Silero-VAD windows: silence is skipped, and unlike
        # sequential decoding no window is dropped by Whisper's no-speech rule), with word times
        # (the policy needs them); language, task and repetition guard are the caller's.
        self.options = dataclasses.replace(options or TranscribeOptions(), vad=True, word_timestamps=True, timestamps=False)
        self.config = config or LiveConfig()
        self.language = self.options.language
        self.confirmed: list[Word] = []
        self.stats: list[UpdateStat] = []
        self._agreement = LocalAgreement()
        self._resample = StreamResampler()
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = 0.0  # stream time of the buffer's first sample
        self._heard = 0  # samples received (16 kHz)
        self._pending = 0  # samples received since the last update
        self._finished: Transcript | None = None
        self._prompting = self.config.prompt_chars > 0  # off for good once a prompted update loops

    # -- feeding ---------------------------------------------------------------------------------

    def feed(self, samples: np.ndarray, sample_rate: int) -> None:
        """Add a chunk of audio at any sample rate (int or float samples, mono or (frames, channels))."""
        if self._finished is not None:
            raise GalwhisperError("live transcription: this stream has finished; start a new one")
        self._append(self._resample(samples, sample_rate))

    def _append(self, audio: np.ndarray) -> None:
        cap = self.config.max_seconds
        if cap is not None and (self._heard + len(audio)) / SAMPLE_RATE > cap:
            raise GalwhisperError(f"live transcription: longer than the {cap:g} s duration limit; press Stop")
        self._buffer = np.concatenate([self._buffer, audio])
        self._heard += len(audio)
        self._pending += len(audio)

    @property
    def pending_seconds(self) -> float:
        """Audio received since the last update."""
        return self._pending / SAMPLE_RATE

    @property
    def heard_seconds(self) -> float:
        return self._heard / SAMPLE_RATE

    # -- updating --------------------------------------------------------------------------------

    def update(self) -> LiveUpdate:
        """Transcribe the buffer, confirm what two updates agree on, trim the buffer."""
        started = time.perf_counter()
        buffer_seconds = len(self._buffer) / SAMPLE_RATE
        hypothesis = self._hypothesis()
        newly = self._agreement.insert(hypothesis)
        self.confirmed += newly
        forced = self._trim(hypothesis)
        self._pending = 0
        finished = time.perf_counter()
        self.stats.append(UpdateStat(self.heard_seconds, buffer_seconds, finished - started, finished, newly + forced, len(forced)))
        return self.snapshot()

    def _hypothesis(self) -> list[Word]:
        """The buffer's words, in stream time."""
        if len(self._buffer) == 0:
            return []
        prompt = self.prompt() if self._prompting else None
        result = self.transcriber.transcribe(self._buffer, dataclasses.replace(self.options, initial_prompt=prompt), name="live")
        if prompt and result.notes:
            # The repetition guard had to step in: a model unsure of the language loops on its
            # own earlier guesses (openai/whisper drops its prompt on fallback for the same reason).
            self._prompting = False
        if self.options.language is None and result.text:
            # "auto": the language heard first is kept, so that updates cannot disagree on it.
            self.options = dataclasses.replace(self.options, language=result.language)
        self.language = result.language or self.language
        offset = self._offset
        return [
            Word(w.start + offset, w.end + offset, w.word, w.probability)
            for s in result.segments
            for w in s.words
            if w.word.strip()
        ]

    def prompt(self) -> str | None:
        """The last whole confirmed words before the buffer, up to `prompt_chars` characters
        (words still in the buffer are transcribed again, so they are not prompted)."""
        words, length = [], 0
        for word in reversed(self.confirmed):
            if word.end > self._offset:
                continue
            length += len(word.word)
            if length > self.config.prompt_chars:
                break
            words.append(word)
        return _text(words[::-1]) or None

    def _trim(self, hypothesis: list[Word]) -> list[Word]:
        """Cut the buffer where confirmed words end in a pause; returns the words confirmed
        without agreement when the buffer reached one window."""
        buffer_end = self._offset + len(self._buffer) / SAMPLE_RATE
        forced: list[Word] = []
        if not hypothesis and not self._agreement.tentative:
            self._cut(buffer_end - KEEP_AFTER_SILENCE)  # nothing heard: keep only the last seconds
            return forced
        if buffer_end - self._offset <= self.config.trim_seconds:
            return forced
        cut = self._pause_after_confirmed(buffer_end)
        if cut is None and buffer_end - self._offset >= self.config.max_buffer_seconds:
            # Updates keep disagreeing (or nobody pauses): confirm the older words as they stand,
            # so the buffer never grows past one window.
            forced = self._older_words(buffer_end - self.config.trim_seconds)
            self._agreement.accept(forced)
            self.confirmed += forced
            cut = forced[-1].end if forced else buffer_end - self.config.trim_seconds
        if cut is not None:
            self._cut(cut)
        return forced

    def _older_words(self, horizon: float) -> list[Word]:
        """The tentative words that end before `horizon`, up to the last pause among them."""
        words = self._agreement.tentative
        older = [w for w in words if w.end <= horizon]
        for i in range(len(older) - 1, -1, -1):
            if i + 1 < len(words) and words[i + 1].start - older[i].end >= self.config.min_pause_seconds:
                return older[: i + 1]
        return older

    def _pause_after_confirmed(self, buffer_end: float) -> float | None:
        """Where to cut: in the latest pause (or after the latest sentence end) that follows a
        confirmed word still in the buffer; None if there is none."""
        confirmed = self._agreement.confirmed_in_buffer
        later = confirmed[1:] + self._agreement.tentative[:1]  # the word after each confirmed one
        for i in range(len(confirmed) - 1, -1, -1):
            word = confirmed[i]
            after = later[i] if i < len(later) else None
            gap = (after.start if after else buffer_end) - word.end
            if gap >= self.config.min_pause_seconds or word.word.strip().endswith(SENTENCE_END):
                # The middle of a pause between two words; just past a word nothing follows yet.
                return word.end + (max(gap, 0.0) / 2 if after else min(gap, self.config.min_pause_seconds) / 2)
        return None

    def _cut(self, seconds: float) -> None:
        drop = int(round((seconds - self._offset) * SAMPLE_RATE))
        drop = max(0, min(drop, len(self._buffer)))
        if drop:
            self._buffer = self._buffer[drop:]
            self._offset += drop / SAMPLE_RATE
            self._agreement.forget_before(self._offset)

    # -- results ---------------------------------------------------------------------------------

    def snapshot(self) -> LiveUpdate:
        last = self.stats[-1] if self.stats else None
        return LiveUpdate(
            confirmed=_text(self.confirmed),
            tentative=_text(self._agreement.tentative),
            heard_seconds=self.heard_seconds,
            buffer_seconds=last.buffer_seconds if last else 0.0,
            update_seconds=last.compute_seconds if last else 0.0,
            updates=len(self.stats),
            language=self.language,
        )

    def finish(self) -> Transcript:
        """Transcribe what is left and confirm the last update's words as they are (there is no
        next update to agree with); the whole text and its segments, as the other tabs give."""
        if self._finished is not None:
            return self._finished
        self._append(self._resample.flush())
        if self._pending or self._agreement.tentative:
            self.update()
        tail = self._agreement.tentative
        self._agreement.accept(tail)
        self.confirmed += tail
        compute = sum(s.compute_seconds for s in self.stats)
        segments = words_to_segments(self.confirmed)
        self._finished = Transcript("live", _text(self.confirmed), segments, self.language, self.heard_seconds, compute)
        return self._finished

    def stream(self, chunks: Iterable[tuple[np.ndarray, int]]) -> Iterator[LiveUpdate]:
        """Feed (samples, sample_rate) chunks, yielding an update whenever at least
        `min_chunk_seconds` of new audio came in, and a last one (everything confirmed) at the end."""
        for samples, sample_rate in chunks:
            self.feed(samples, sample_rate)
            if self.pending_seconds >= self.config.min_chunk_seconds:
                yield self.update()
        self.finish()
        yield self.snapshot()


def _text(words: list[Word]) -> str:
    """Words as Whisper spelled them: a word without a leading space ("-ngera", "'s") continues
    the one before; a space is added where an update began without one."""
    text = ""
    for word in words:
        piece = word.word
        if text and not piece[:1].isspace() and piece[:1] not in "-'’":
            piece = " " + piece
        text += piece
    return " ".join(text.split())


def words_to_segments(words: list[Word]) -> list[Segment]:
    """Confirmed words grouped into subtitle cues: a cue ends at a sentence end, before a pause
    of CUE_GAP seconds, or when it reaches CUE_SECONDS."""
    segments, cue = [], []

    def close() -> None:
        if cue:
            segments.append(Segment(cue[0].start, cue[-1].end, _text(cue), list(cue)))
            cue.clear()

    for word in words:
        if cue and (word.start - cue[-1].end >= CUE_GAP or word.end - cue[0].start > CUE_SECONDS):
            close()
        cue.append(word)
        if word.word.strip().endswith(SENTENCE_END):
            close()
    close()
    return segments


class LiveSession:
    """A LiveTranscriber on a worker thread of its own: `feed` returns at once with the latest
    update, `finish` waits for the audio fed so far and returns the final Transcript. The
    worker stops after `idle_seconds` without audio and starts again on the next chunk."""

    def __init__(self, live: LiveTranscriber):
        self.live = live
        self._lock = threading.Condition()
        self._chunks: list[tuple[np.ndarray, int]] = []
        self._latest = live.snapshot()
        self._error: BaseException | None = None
        self._result: Transcript | None = None
        self._finishing = self._closed = False
        self._worker: threading.Thread | None = None

    @property
    def finished(self) -> bool:
        return self._finishing or self._closed

    def feed(self, samples: np.ndarray, sample_rate: int) -> LiveUpdate:
        with self._lock:
            self._raise_error()
            if self.finished:
                raise GalwhisperError("live transcription: this recording has stopped; press Record again")
            self._chunks.append((samples, sample_rate))
            self._start_worker()
            self._lock.notify()
            return self._latest

    def latest(self) -> LiveUpdate:
        with self._lock:
            self._raise_error()
            return self._latest

    def finish(self, timeout: float | None = None) -> Transcript:
        """Stop taking audio, transcribe what came in, and return the final Transcript."""
        with self._lock:
            self._finishing = True
            self._start_worker()
            self._lock.notify()
            worker = self._worker
        worker.join(timeout)
        with self._lock:
            self._raise_error()
            if self._result is None:
                raise GalwhisperError("live transcription: the last update did not finish in time; try again")
            return self._result

    def close(self) -> None:
        """Drop the session (its page was closed): the worker stops without transcribing more."""
        with self._lock:
            self._closed = True
            self._chunks.clear()
            self._lock.notify()

    # -- the worker --------------------------------------------------------------------------

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _start_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="galwhisper-live", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if not (self._chunks or self._finishing or self._closed):
                        self._lock.wait(self.live.config.idle_seconds)
                    if not (self._chunks or self._finishing or self._closed):
                        return  # idle: the next chunk starts a new worker
                    chunks, self._chunks = self._chunks, []
                    finishing, closed = self._finishing, self._closed
                if closed:
                    return
                for samples, sample_rate in chunks:
                    self.live.feed(samples, sample_rate)
                if finishing:
                    result = self.live.finish()
                    with self._lock:
                        self._result, self._latest = result, self.live.snapshot()
                    return
                if self.live.pending_seconds >= self.live.config.min_chunk_seconds:
                    update = self.live.update()
                    with self._lock:
                        self._latest = update
        except BaseException as exc:  # handed to the feeding thread by feed/latest/finish
            with self._lock:
                self._error = exc
