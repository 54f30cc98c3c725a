"""The repetition guard: finding and cutting loops (pure functions), and the real model on a
recording that makes it loop, through the CLI with the guard on, tuned, and off."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, run_main, speak
from galwhisper.audio import SAMPLE_RATE, load_audio, write_wav
from galwhisper.transcribe import (
    Segment,
    TranscribeOptions,
    Word,
    cut_repetitions,
    find_repetitions,
    longest_repetition,
    window_problem,
)


def test_find_repetitions_prefers_the_run_covering_most_words():
    assert [(r.start, r.phrase, r.count) for r in find_repetitions("a a b a b a b c")] == [(1, "a b", 3)]
    assert [(r.phrase, r.count) for r in find_repetitions("da da da da")] == [("da", 4)]
    assert [(r.phrase, r.count) for r in find_repetitions("ba-ba-ba-ba-ba")] == [("ba", 5)]  # hyphens split words
    assert find_repetitions("o tren sae ás dez da mañá", min_count=2) == []
    longest = longest_repetition("Bo día. O tren, o tren, o tren sae. Si, si.")
    assert (longest.phrase, longest.count, longest.start) == ("o tren", 3, 2)
    assert longest_repetition("") is None


def test_cut_keeps_one_occurrence_across_segments_and_words():
    spoken = [" o", " tren,"] * 3 + [" o", " tren.", " Adeus."]
    words = [Word(1.0 + i * 0.3, 1.2 + i * 0.3, w, 0.9) for i, w in enumerate(spoken)]
    segments = [
        Segment(0.0, 1.0, " Bo día. O tren, o tren,"),
        Segment(1.0, 4.0, " o tren, o tren, o tren, o tren. Adeus.", words),
    ]
    cut, runs = cut_repetitions(segments, max_repeats=4)
    assert [(r.phrase, r.count) for r in runs] == [("o tren", 6)]
    assert [s.text for s in cut] == ["Bo día. O tren,", "Adeus."]
    assert [w.word for w in cut[1].words] == [" Adeus."]  # the words of the cut text went with it
    assert cut_repetitions(segments, max_repeats=6) == (segments, [])  # 6 in a row is allowed at 6
    assert cut_repetitions(segments, max_repeats=None) == (segments, [])
    only, _ = cut_repetitions([Segment(0, 1, " ba-ba-ba-ba-ba-ba fin")], max_repeats=4)
    assert only[0].text == "ba fin"


def test_window_problem_names_each_failed_check():
    o = TranscribeOptions(log_prob_threshold=-1.0)
    assert window_problem("Bo día, como estás hoxe?", -0.3, o) is None
    loop = " ".join(["da"] * 40)
    assert window_problem(loop, -0.1, o) == "compression ratio 8.5 > 2.4; 'da' repeated 40 times in a row"
    assert window_problem("Bo día, como estás hoxe?", -1.5, o) == "average log-probability -1.50 < -1"
    off = TranscribeOptions(compression_ratio_threshold="off", max_repeats="off")
    assert window_problem(loop, -1.5, off) is None  # log_prob_threshold is off by default


@pytest.fixture(scope="module")
def repeated(tmp_path_factory):
    """A Galician greeting said ten times in a row: the bundled base writes it ten (or more) times,
    which the guard must take for a loop."""
    folder = tmp_path_factory.mktemp("repeated")
    clip = load_audio(speak("Bo día.", folder / "one.wav"))
    pause = np.zeros(int(0.2 * SAMPLE_RATE), np.float32)
    path = folder / "repeated.wav"
    write_wav(path, np.concatenate([np.concatenate([clip, pause]) for _ in range(10)]))
    return path


def transcribe_json(path, out, *options) -> dict:
    proc = run_main("transcribe", str(path), "--format", "json", "--output-dir", str(out), *options)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / f"{path.stem}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("batch_size", ["16", "1"])
def test_guard_decodes_a_loop_again_and_notes_it(repeated, tmp_path, batch_size):
    off = transcribe_json(repeated, tmp_path / "off", "--batch-size", batch_size, "--compression-ratio-threshold", "off",
                          "--max-repeats", "off")
    assert longest_repetition(off["text"]).count >= 5 and off["notes"] == [], off  # without the guard: the loop
    on = transcribe_json(repeated, tmp_path / "on", "--batch-size", batch_size)
    assert on["text"] and (longest_repetition(on["text"]) is None or longest_repetition(on["text"]).count <= 4), on["text"]
    assert len(on["notes"]) >= 1 and "decoded again" in on["notes"][0], on["notes"]
    assert all("\n" not in note for note in on["notes"])


@pytest.mark.parametrize(
    "option,value,needle",
    [
        ("--max-repeats", "0", "--max-repeats 0: must be at least 1"),
        ("--repetition-penalty", "0.5", "--repetition-penalty 0.5: must be at least 1"),
        ("--compression-ratio-threshold", "abc", "--compression-ratio-threshold: invalid float value: 'abc'"),
        ("--log-prob-threshold", "1", "--log-prob-threshold 1.0: must be at most 0"),
        ("--no-repeat-ngram-size", "-1", "--no-repeat-ngram-size -1: must be at least 0"),
    ],
)
def test_bad_guard_options_are_one_line(repeated, option, value, needle):
    assert_one_line_error(run_main("transcribe", str(repeated), option, value), needle)
