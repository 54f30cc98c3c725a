"""galwhisper transcribe on real audio: formats, long-form, writers, bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import ENGLISH, assert_one_line_error, ffmpeg, run_cli, run_main, serve_folder, speak
from galwhisper.audio import SAMPLE_RATE, load_audio, write_wav
from galwhisper.transcribe import TranscribeOptions, Transcriber, render

ENGLISH_WORDS = {"fellow", "americans", "country"}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-záéíóúñ']+", text.lower()))


@pytest.fixture(scope="module")
def transcriber():
    return Transcriber("base")


@pytest.mark.parametrize("ext,codec", [("wav", []), ("mp3", []), ("ogg", ["-c:a", "libvorbis"]), ("webm", ["-c:a", "libopus"])])
def test_formats_are_decoded_and_transcribed(transcriber, english_clip, tmp_path, ext, codec):
    clip = ffmpeg(english_clip, tmp_path / f"speech.{ext}", *codec)
    result = transcriber.transcribe(clip, TranscribeOptions(language="en"))
    assert ENGLISH_WORDS <= words(result.text), result.text
    assert result.duration == pytest.approx(len(load_audio(english_clip)) / SAMPLE_RATE, abs=0.1)


@pytest.fixture(scope="module")
def three_minutes(tmp_path_factory):
    """~3 minutes of English: the sentence, a pause, repeated, with a marker word per part."""
    folder = tmp_path_factory.mktemp("long")
    parts = []
    for i, marker in enumerate(["apple", "river", "yellow", "doctor", "window", "garden", "orange", "silver"] * 3):
        speak(f"Part {marker}. {ENGLISH}", folder / "p.wav", voice="en-us", speed=140)
        parts += [load_audio(folder / "p.wav"), np.zeros(int(2.5 * SAMPLE_RATE), np.float32)]
    audio = np.concatenate(parts)
    write_wav(folder / "long.wav", audio)
    return folder / "long.wav", len(audio) / SAMPLE_RATE


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [8, 1])
def test_long_form_segments_in_order(transcriber, three_minutes, batch_size):
    path, seconds = three_minutes
    assert seconds > 170
    result = transcriber.transcribe(path, TranscribeOptions(language="en", batch_size=batch_size))
    starts = [s.start for s in result.segments]
    assert len(result.segments) >= 6 and starts == sorted(starts)
    assert all(s.end > s.start for s in result.segments)
    assert result.segments[-1].end > seconds - 35
    found = words(result.text)
    assert len({"apple", "river", "yellow", "doctor", "window", "garden", "orange", "silver"} & found) >= 6, result.text
    assert result.text.lower().count("country") >= 18


@pytest.mark.slow
def test_srt_vtt_json_parse(transcriber, three_minutes, tmp_path):
    result = transcriber.transcribe(three_minutes[0], TranscribeOptions(language="en", batch_size=1))
    srt = render(result, "srt")
    blocks = [b for b in srt.strip().split("\n\n")]
    assert len(blocks) == len(result.segments)
    stamp = r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d)"
    previous = -1.0
    for number, block in enumerate(blocks, start=1):
        index, times, *text = block.split("\n")
        assert int(index) == number and text
        m = re.fullmatch(f"{stamp} --> {stamp}", times)
        assert m, times
        h, mi, s, ms, h2, mi2, s2, ms2 = map(int, m.groups())
        start, end = h * 3600 + mi * 60 + s + ms / 1000, h2 * 3600 + mi2 * 60 + s2 + ms2 / 1000
        assert previous <= start < end
        previous = start
    vtt = render(result, "vtt")
    assert vtt.startswith("WEBVTT\n\n") and len(re.findall(f"{stamp} --> {stamp}", vtt)) == len(result.segments)
    assert "," not in "".join(re.findall(f"{stamp} --> {stamp}", vtt)[0])
    data = json.loads(render(result, "json"))
    assert data["text"] == result.text and len(data["segments"]) == len(result.segments)


def test_cli_writes_files_and_prints_text(english_clip, galician_clips, tmp_path):
    proc = run_cli("transcribe", str(english_clip), "--language", "en")
    assert proc.returncode == 0, proc.stderr
    assert ENGLISH_WORDS <= words(proc.stdout)
    proc = run_cli("transcribe", str(galician_clips[0]), str(english_clip), "--format", "srt", "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "gl0.srt").read_text().startswith("1\n00:00:00")
    assert (tmp_path / "en.srt").is_file()


def test_transformers_backend_matches_ct2(galician_clips):
    options = TranscribeOptions(batch_size=1)
    ct2 = Transcriber("base", compute_type="float32")
    hf = Transcriber("base", backend="transformers")
    for clip in galician_clips[:2]:
        assert ct2.transcribe(clip, options).text.strip() == hf.transcribe(clip, options).text.strip()


def test_silence_gives_empty_text(tmp_path):
    write_wav(tmp_path / "silence.wav", np.zeros(5 * SAMPLE_RATE, np.float32))
    proc = run_cli("transcribe", str(tmp_path / "silence.wav"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_bad_files_fail_with_one_line(tmp_path):
    missing = tmp_path / "missing.wav"
    assert_one_line_error(run_main("transcribe", str(missing)), str(missing), "not found")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert_one_line_error(run_main("transcribe", str(empty)), str(empty), "empty")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n" * 20)
    assert_one_line_error(run_main("transcribe", str(text)), str(text), "not a readable audio")
    assert_one_line_error(run_main("transcribe", "x.wav", "--model", str(tmp_path / "nomodel")), "model not found")


@pytest.fixture(scope="module")
def web(english_clip, tmp_path_factory):
    folder = tmp_path_factory.mktemp("web")
    ffmpeg(english_clip, folder / "talk.webm", "-c:a", "libopus")
    with serve_folder(folder) as base:
        yield base


def test_url_is_transcribed_through_yt_dlp(web, tmp_path):
    proc = run_cli("transcribe", f"{web}/talk.webm", "--language", "en", "--format", "txt", "--output-dir", str(tmp_path),
                   "--allow-private-urls")
    assert proc.returncode == 0, proc.stderr
    assert ENGLISH_WORDS <= words((tmp_path / "talk.txt").read_text())


def test_bad_urls_fail_with_one_line(web):
    assert_one_line_error(run_main("transcribe", f"{web}/missing.webm", "--allow-private-urls"), f"{web}/missing.webm", "404")
    assert_one_line_error(run_main("transcribe", "file:///etc/passwd"), "file:///etc/passwd", "only http(s)")
    assert_one_line_error(run_main("transcribe", "ftp://127.0.0.1/a.wav"), "ftp://127.0.0.1/a.wav", "only http(s)")
    big = run_main("transcribe", f"{web}/talk.webm", "--max-download-mb", "0.001", "--allow-private-urls")
    assert_one_line_error(big, f"{web}/talk.webm", "size limit")
