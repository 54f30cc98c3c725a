"""The main job end to end at a tiny size: corpus, features, WER before/after, export, report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from galwhisper.demo import DemoConfig, run_demo


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    overrides = dict(max_steps=8, eval_steps=4, batch_size=4, eval_batch_size=8, max_eval_samples=2, warmup_steps=0,
                     learning_rate=2e-4, logging_steps=2, timestamp_rate=0.5)
    config = DemoConfig(out=out, n_train=6, n_validation=2, n_test=2, train_overrides=overrides, extra_eval_splits=("train",),
                        pack_min_seconds=6)
    return config, run_demo(config)


@pytest.mark.slow
def test_tiny_demo_end_to_end(tiny_demo, capsys):
    config, report = tiny_demo
    out = config.out
    assert (out / "report.md").is_file() and (out / "wer.png").is_file() and (out / "run" / "curves.png").is_file()
    assert (out / "run" / "best-ct2" / "model.bin").is_file()
    text = (out / "report.md").read_text()
    assert "synthetic" in text.lower() and "![WER before and after](wer.png)" in text and "galwhisper app --model" in text
    assert "| fine-tuning |" in text and "| **total** |" in text  # the stage times
    assert report["transcribe_example"]["hypothesis"]
    # Fine-tuning must at least fit the sentences it trained on.
    assert report["after"]["train"]["wer"] <= report["before"]["train"]["wer"]
    assert set(report["before"]) == {"test", "test_unseen", "train"}
    summary = json.loads((out / "demo.json").read_text())
    assert summary["splits"]["test"]["after"]["wer"] == report["after"]["test"]["wer"]
    assert set(summary["stage_seconds"]) >= {"corpus + features", "zero-shot evaluation", "fine-tuning"}
    assert summary["paths"]["model_ct2"].endswith("best-ct2") and summary["train"]["timestamps"] is True
    card = (out / "run" / "best" / "README.md").read_text()  # trained without validation; the test WERs are in the card
    assert "no validation: the last weights" in card and "split: test_unseen" in card
    # A second run reuses corpus, features, training and evaluations: nothing is rewritten.
    outputs = [out / "run" / "best-ct2" / "model.bin", out / "run" / "train.json", out / "eval" / "fine-tuned-test" / "results.json"]
    stamps = [p.stat().st_mtime_ns for p in outputs]
    capsys.readouterr()
    again = run_demo(config)
    printed = capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in outputs] == stamps
    assert "reusing the finished training" in printed and "reusing 2 prepared clips" in printed
    assert again["after"]["test"]["wer"] == report["after"]["test"]["wer"]


@pytest.mark.slow
def test_timestamps_survive_fine_tuning(tiny_demo):
    """The demo trains with timestamped targets (packed windows, rate 0.5); its model keeps
    segment times: on long-form audio of its corpus, a loose bound on sentence start errors
    (benchmarks/timestamps.py measures the demo's real model against the real targets)."""
    from galwhisper import metrics
    from galwhisper.synthetic import long_form
    from galwhisper.transcribe import TranscribeOptions, Transcriber

    config, _ = tiny_demo
    audio, truth = long_form(config.out / "corpus", "train", seconds=300, seed=2)
    transcriber = Transcriber(str(config.out / "run" / "best-ct2"))
    assert transcriber.timestamps_trained  # recorded in galwhisper.json: timestamps are on by default
    result = transcriber.transcribe(audio)
    errors = np.array(metrics.segment_start_errors(truth, [(s.start, s.end, s.text) for s in result.segments]))
    assert len(result.segments) >= len(truth) // 2
    assert np.median(errors) <= 1.0 and np.percentile(errors, 90) <= 2.5, errors

    # --word-timestamps works on such a model too: every word timed, in order, inside the audio.
    timed = transcriber.transcribe(audio[: 60 * 16000], TranscribeOptions(word_timestamps=True))
    words = [w for s in timed.segments for w in s.words]
    assert len(words) >= len(timed.text.split()) * 0.8 and all(0 <= w.start <= w.end <= 60.5 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)


@pytest.mark.slow
def test_a_failing_stage_fails_the_demo(tiny_demo):
    """The last stage (galwhisper transcribe with the exported model) failing is the demo failing,
    with one line, not report text. Runs after the other tests of this module: it damages the model."""
    from galwhisper.errors import GalwhisperError

    config, _ = tiny_demo
    (config.out / "run" / "best-ct2" / "model.bin").write_bytes(b"damaged")
    with pytest.raises(GalwhisperError, match="galwhisper transcribe of .* failed .*model.bin"):
        run_demo(config)
