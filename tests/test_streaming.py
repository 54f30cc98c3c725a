"""Live transcription (galwhisper.streaming) on real speech with the real bundled model: what
is confirmed while audio comes in, that the buffer stays bounded, that nothing is lost or said
twice across trims, that silence costs little, and that the threaded session never makes its
feeder wait."""

from __future__ import annotations

import dataclasses
import re
import time

import numpy as np
import pytest

from conftest import ENGLISH, speak
from galwhisper.audio import SAMPLE_RATE, StreamResampler, load_audio
from galwhisper.errors import GalwhisperError
from galwhisper.streaming import KEEP_AFTER_SILENCE, LiveConfig, LiveSession, LiveTranscriber, LocalAgreement, words_to_segments
from galwhisper.transcribe import TranscribeOptions, Transcriber, Word

MARKERS = ["first", "second", "third", "fourth"]
BROWSER_RATE = 44100  # what Chromium's recorder sends


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


@pytest.fixture(scope="module")
def transcriber():
    return Transcriber("base")


@pytest.fixture(scope="module")
def talk(tmp_path_factory) -> tuple[np.ndarray, float]:
    """~35 s of English at 44.1 kHz int16 (as a browser sends it): four parts, each naming
    itself and saying the same sentence, with pauses between."""
    folder = tmp_path_factory.mktemp("talk")
    parts = []
    for marker in MARKERS:
        speak(f"This is the {marker} part. {ENGLISH}", folder / "p.wav", voice="en-us", speed=140)
        parts += [load_audio(folder / "p.wav", sample_rate=BROWSER_RATE), np.zeros(int(1.2 * BROWSER_RATE), np.float32)]
    audio = np.concatenate(parts)
    return (audio * 32767).astype(np.int16), len(audio) / BROWSER_RATE


def chunks(audio: np.ndarray, seconds: float, rate: int = BROWSER_RATE):
    step = int(seconds * rate)
    return ((audio[i : i + step], rate) for i in range(0, len(audio), step))


def test_local_agreement_confirms_what_two_updates_agree_on():
    w = lambda text, start: Word(start, start + 0.4, f" {text}", 0.9)  # noqa: E731
    agreement = LocalAgreement()
    assert agreement.insert([w("Bo", 0.0), w("día", 0.5)]) == []  # one update: nothing agreed yet
    confirmed = agreement.insert([w("bo", 0.05), w("día,", 0.5), w("como", 1.0)])  # case, punctuation ignored
    assert [x.word for x in confirmed] == [" bo", " día,"] and [x.word for x in agreement.tentative] == [" como"]
    # Words before the last confirmed one are not confirmed twice, and the same text placed 2 s
    # later is another word, not an agreement with this one.
    assert agreement.insert([w("bo", 0.0), w("día", 0.5), w("como", 3.0)]) == []
    assert [x.word.strip() for x in agreement.insert([w("como", 3.05), w("estás", 3.5)])] == ["como"]
    agreement.forget_before(0.95)
    assert [x.word.strip() for x in agreement.confirmed_in_buffer] == ["como"]
    # A respelling agrees (accents, one letter in four); a different short word does not.
    assert agreement.insert([w("reunión", 4.0), w("cabeiros", 4.5), w("de", 5.0)]) == []
    assert [x.word.strip() for x in agreement.insert([w("reunion", 4.0), w("caberos", 4.5), w("do", 5.0)])] == ["reunion", "caberos"]


def test_stream_resampler_matches_resampling_the_whole(talk):
    audio, _ = talk
    whole = StreamResampler()
    expected = np.concatenate([whole(audio, BROWSER_RATE), whole.flush()])
    chunked = StreamResampler()
    rng = np.random.default_rng(0)
    pieces, start = [], 0
    while start < len(audio):
        size = int(rng.integers(500, 30000))
        pieces.append(chunked(audio[start : start + size], BROWSER_RATE))
        start += size
    got = np.concatenate(pieces + [chunked.flush()])
    assert len(got) == len(expected) == pytest.approx(len(audio) * SAMPLE_RATE / BROWSER_RATE, abs=2)
    assert np.abs(got - expected).max() < 1e-4  # no clicks at chunk boundaries


@pytest.mark.slow
def test_live_transcriber_confirms_early_trims_and_loses_nothing(transcriber, talk):
    audio, seconds = talk
    config = LiveConfig(min_chunk_seconds=2.0, trim_seconds=8.0, max_buffer_seconds=16.0)
    live = LiveTranscriber(transcriber, TranscribeOptions(language="en"), config)
    updates = list(live.stream(chunks(audio, 0.5)))
    final = live.finish()

    first = next(u for u in updates if u.confirmed)
    assert first.heard_seconds < seconds - 10, "nothing was confirmed while the talk went on"
    buffers = [s.buffer_seconds for s in live.stats]
    assert max(buffers) <= config.max_buffer_seconds + config.min_chunk_seconds, buffers
    assert any(later < earlier for earlier, later in zip(buffers, buffers[1:])), f"the buffer was never trimmed: {buffers}"
    # Across every trim, each part is there once: nothing lost, nothing said twice.
    said = words(final.text)
    assert said.count("country") == said.count("americans") == len(MARKERS), final.text
    found = [m for m in said if m in MARKERS]
    assert len(found) >= 3 and found == sorted(found, key=MARKERS.index), final.text
    assert final.text == updates[-1].confirmed and not updates[-1].tentative
    starts = [s.start for s in final.segments]
    assert starts == sorted(starts) and 0 <= final.segments[0].start and final.segments[-1].end <= seconds + 0.5


def test_updates_are_prompted_with_what_was_confirmed_before_the_buffer(transcriber, talk, tmp_path):
    # A prompt reaches the decoder: the bundled base hears "The merch can" without one.
    canoe = speak("The birch canoe slid on the smooth planks.", tmp_path / "canoe.wav", voice="en-us", speed=140)
    plain = transcriber.transcribe(canoe, TranscribeOptions(language="en")).text
    prompted = transcriber.transcribe(canoe, TranscribeOptions(language="en", initial_prompt="We paddled the birch canoe.")).text
    assert "birch" not in plain.lower() and "birch" in prompted.lower(), (plain, prompted)
    with pytest.raises(GalwhisperError, match="initial-prompt"):
        TranscribeOptions(initial_prompt=3)

    audio, _ = talk
    config = LiveConfig(min_chunk_seconds=2.0, trim_seconds=8.0, max_buffer_seconds=16.0, prompt_chars=60)
    live = LiveTranscriber(transcriber, TranscribeOptions(language="en"), config)
    prompts, transcribe = [], transcriber.transcribe

    def noting_prompts(source, options=None, name=None):  # the real model, its prompts noted
        prompts.append(options.initial_prompt)
        return transcribe(source, options, name)

    unprompted = LiveTranscriber(transcriber, TranscribeOptions(language="en"), dataclasses.replace(config, prompt_chars=0))
    transcriber.transcribe = noting_prompts
    try:
        for _ in live.stream(chunks(audio, 0.5)):
            pass
        prompted_updates = len(prompts)
        for _ in unprompted.stream(chunks(audio, 0.5)):
            pass
    finally:
        del transcriber.transcribe
    text = live.finish().text
    assert prompts[0] is None  # nothing confirmed yet
    given = [p for p in prompts[:prompted_updates] if p]
    assert given, "no update was prompted although the buffer was trimmed"
    for prompt in given:  # whole confirmed words from before the buffer, at most prompt_chars
        assert len(prompt) <= config.prompt_chars and f" {prompt} " in f" {text} ", (prompt, text)
    assert len(prompts) > prompted_updates and not any(prompts[prompted_updates:])  # prompt_chars 0: none


def test_silence_is_skipped_and_not_kept(transcriber):
    noise = (np.random.default_rng(1).normal(0, 0.003, 12 * BROWSER_RATE) * 32767).astype(np.int16)
    live = LiveTranscriber(transcriber, TranscribeOptions(language="en"))
    updates = list(live.stream(chunks(noise, 1.0)))
    assert all(not u.confirmed and not u.tentative for u in updates)
    assert max(s.buffer_seconds for s in live.stats) <= KEEP_AFTER_SILENCE + 1.0 + 0.01
    assert live.finish().text == ""


@pytest.mark.slow
def test_session_feeds_without_waiting_and_finishes(transcriber, talk):
    audio, seconds = talk
    half = audio[: len(audio) // 2]
    session = LiveSession(LiveTranscriber(transcriber, TranscribeOptions(language="en")))
    waits = []
    for samples, rate in chunks(half, 0.1):  # as fast as possible: the worker falls behind
        started = time.perf_counter()
        session.feed(samples, rate)
        waits.append(time.perf_counter() - started)
    assert max(waits) < 0.25, f"feed waited {max(waits):.2f} s for the model"
    final = session.finish(timeout=300)
    said = words(final.text)
    assert said.count("country") == said.count("americans") == 2, final.text
    assert final.duration == pytest.approx(len(half) / BROWSER_RATE, abs=0.05)
    with pytest.raises(GalwhisperError, match="^live transcription: this recording has stopped; press Record again$"):
        session.feed(half[:4410], BROWSER_RATE)


def test_live_duration_cap_and_closed_session(transcriber):
    live = LiveTranscriber(transcriber, config=LiveConfig(max_seconds=3))
    live.feed(np.zeros(2 * 16000, np.float32), 16000)
    with pytest.raises(GalwhisperError, match="^live transcription: longer than the 3 s duration limit; press Stop$"):
        live.feed(np.zeros(2 * 16000, np.float32), 16000)
    session = LiveSession(LiveTranscriber(transcriber))
    session.close()
    with pytest.raises(GalwhisperError, match="stopped"):
        session.feed(np.zeros(1600, np.float32), 16000)


def test_words_to_segments_makes_cues():
    ws = [Word(0.0, 0.3, " Bo", 1), Word(0.3, 0.6, " día.", 1), Word(0.7, 1.0, " Como", 1), Word(2.5, 2.8, " estás?", 1)]
    cues = words_to_segments(ws)
    assert [(c.text, c.start, c.end) for c in cues] == [("Bo día.", 0.0, 0.6), ("Como", 0.7, 1.0), ("estás?", 2.5, 2.8)]
