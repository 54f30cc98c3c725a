"""Every run gets a model card in the hub's format; evaluate --card adds test results; push is
refused in one line when the hub cannot be reached, with nothing sent."""

from __future__ import annotations

import pytest

from conftest import GALICIAN, assert_one_line_error, run_main
from families import build
from galwhisper.prepare import PrepareConfig, prepare
from galwhisper.train import make_config, train


@pytest.fixture(scope="module")
def run(galician_clips, tmp_path_factory):
    folder = tmp_path_factory.mktemp("card")
    model = build("tiny", folder / "model")
    rows = [(galician_clips[i], GALICIAN[i], split) for i, split in enumerate(["train", "train", "validation", "test", "test"])]
    manifest = folder / "clips.tsv"
    manifest.write_text("path\tsentence\tsplit\n" + "".join(f"{p}\t{s}\t{t}\n" for p, s, t in rows), encoding="utf-8")
    prepare(PrepareConfig(source=f"manifest:{manifest}", out_dir=folder / "features", model=str(model)), progress=False)
    train(make_config(None, features=str(folder / "features"), out=str(folder / "run"), model=str(model), max_steps=1,
                      eval_steps=1, batch_size=2, eval_batch_size=2, warmup_steps=0, generation_max_tokens=4), progress=False)
    return folder / "run", folder / "features"


def card_metadata(path):
    from huggingface_hub import ModelCard

    return ModelCard.load(path).data.to_dict()


def test_each_run_has_a_hub_model_card(run):
    run_dir, _ = run
    for folder in ("best", "best-ct2"):
        data = card_metadata(run_dir / folder / "README.md")
        assert data["language"] == "gl" and data["pipeline_tag"] == "automatic-speech-recognition"
        (index,) = data["model-index"]
        (validation,) = index["results"]
        assert validation["dataset"]["split"] == "validation" and validation["metrics"][0]["type"] == "wer"
    text = (run_dir / "best" / "README.md").read_text()
    assert "manifest:" in text and "mode `full`" in text


def test_evaluate_card_adds_test_results(run, tmp_path):
    run_dir, features = run
    proc = run_main("evaluate", "--model", str(run_dir / "best-ct2"), "--data", str(features), "--split", "test",
                    "--card", str(run_dir), "--engine", "ct2")
    assert proc.returncode == 0, proc.stderr
    results = {r["dataset"]["split"]: r for r in card_metadata(run_dir / "best" / "README.md")["model-index"][0]["results"]}
    assert set(results) == {"test", "validation"}  # the validation WER is kept
    assert sorted(m["type"] for m in results["test"]["metrics"]) == ["cer", "wer"]
    assert_one_line_error(run_main("evaluate", "--model", "base", "--data", str(features), "--card", str(tmp_path)),
                          "--card", "not a finished galwhisper run")


def test_push_offline_sends_nothing(run, monkeypatch):
    run_dir, _ = run
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert_one_line_error(run_main("push", str(run_dir), "--repo-id", "someone/whisper-tiny-gl"),
                          "someone/whisper-tiny-gl", "cannot reach the Hugging Face hub", "nothing was sent")
    assert_one_line_error(run_main("push", str(run_dir.parent), "--repo-id", "someone/x"), "has no best/")
