"""The main job end to end at a tiny size: corpus, features, WER before/after, export, report."""

from __future__ import annotations

import pytest

from galwhisper.demo import DemoConfig, run_demo


@pytest.mark.slow
def test_tiny_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    overrides = dict(max_steps=8, eval_steps=4, batch_size=4, eval_batch_size=8, max_eval_samples=2, warmup_steps=0,
                     learning_rate=2e-4, logging_steps=2)
    config = DemoConfig(out=out, n_train=6, n_validation=2, n_test=2, train_overrides=overrides, extra_eval_splits=("train",))
    report = run_demo(config)
    assert (out / "report.md").is_file() and (out / "wer.png").is_file() and (out / "run" / "curves.png").is_file()
    assert (out / "run" / "best-ct2" / "model.bin").is_file()
    text = (out / "report.md").read_text()
    assert "synthetic" in text.lower() and "![WER before and after](wer.png)" in text and "galwhisper app --model" in text
    assert report["transcribe_example"]["hypothesis"] and not report["transcribe_example"]["hypothesis"].startswith("(failed")
    # Fine-tuning must at least fit the sentences it trained on.
    assert report["after"]["train"]["wer"] <= report["before"]["train"]["wer"]
    assert set(report["before"]) == {"test", "test_unseen", "train"}
    # A second run reuses corpus, features, training and evaluations: nothing is rewritten.
    outputs = [out / "run" / "best-ct2" / "model.bin", out / "run" / "train.json", out / "features" / "prepare.json",
               out / "eval" / "fine-tuned-test" / "results.json"]
    stamps = [p.stat().st_mtime_ns for p in outputs]
    capsys.readouterr()
    again = run_demo(config)
    printed = capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in outputs[:2] + outputs[3:]] == stamps[:2] + stamps[3:]
    assert "reusing the finished training" in printed and "reusing 6 prepared clips" in printed
    assert again["after"]["test"]["wer"] == report["after"]["test"]["wer"]
