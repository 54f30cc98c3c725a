"""Every Whisper size through every stage: prepare -> train -> export -> transcribe -> evaluate.

The models are randomly initialised with each family's real interface (tests/families.py):
what is checked is that every stage handles the family's mel bins, vocabulary and special-token
ids (large-v3's `<|yue|>` shifts them), not what a random model says.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import GALICIAN, run_main
from families import FAMILIES, build
from galwhisper import models
from galwhisper.evaluate import EvaluateConfig, evaluate
from galwhisper.prepare import PrepareConfig, load_split, prepare
from galwhisper.train import make_config, train
from galwhisper.transcribe import TranscribeOptions, Transcriber

pytestmark = pytest.mark.slow
QUICK = dict(max_steps=1, eval_steps=1, batch_size=2, eval_batch_size=2, max_eval_samples=2, warmup_steps=0,
             learning_rate=1e-4, logging_steps=1, generation_max_tokens=4, eval_on_start=False)


@pytest.fixture(scope="module")
def manifest(galician_clips, tmp_path_factory):
    """Two training clips, one for validation, two for test."""
    folder = tmp_path_factory.mktemp("sizes")
    rows = [(galician_clips[i], GALICIAN[i], split) for i, split in enumerate(["train", "train", "validation", "test", "test"])]
    path = folder / "clips.tsv"
    path.write_text("path\tsentence\tsplit\n" + "".join(f"{p}\t{s}\t{t}\n" for p, s, t in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prepared(manifest, tmp_path_factory):
    """Features per interface: the 80-mel families share a vocabulary, and so do the two 128-mel
    (large-v3) ones, so each group is prepared once, with its first family's model."""
    groups = {}

    def features_for(family: str, model_dir):
        key = FAMILIES[family][3:5]
        if key not in groups:
            folder = tmp_path_factory.mktemp(f"features-{family}")
            summary = prepare(PrepareConfig(source=f"manifest:{manifest}", out_dir=folder, model=str(model_dir)), progress=False)
            groups[key] = (folder, summary)
        return groups[key]

    return features_for


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_through_every_stage(family, prepared, tmp_path, galician_clips):
    from transformers import WhisperTokenizerFast

    _, _, _, n_mels, v3, _, _ = FAMILIES[family]
    model_dir = build(family, tmp_path / "model")
    assert json.loads((model_dir / "config.json").read_text())["vocab_size"] == (51866 if v3 else 51865)

    features, summary = prepared(family, model_dir)
    assert summary["model"]["n_mels"] == n_mels
    row = load_split(features, "train")[0]
    assert np.asarray(row["input_features"]).shape[1] == n_mels
    tokenizer = WhisperTokenizerFast.from_pretrained(model_dir)  # special tokens by name, whatever their ids
    assert list(row["labels"][:4]) == tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|gl|>", "<|transcribe|>", "<|notimestamps|>"])

    run = tmp_path / "run"
    result = train(make_config(None, features=str(features), out=str(run), model=str(model_dir), **QUICK), progress=False)
    assert result["steps"] == 1 and (run / "best-ct2" / "model.bin").is_file()
    assert json.loads((run / "best-ct2" / "preprocessor_config.json").read_text())["feature_size"] == n_mels

    transcriber = Transcriber(str(run / "best-ct2"))
    assert transcriber.n_mels == n_mels
    transcript = transcriber.transcribe(galician_clips[3], TranscribeOptions(batch_size=1))
    assert transcript.duration > 1 and transcript.language == "gl"

    # Both evaluation engines for the large-v3 interface; CTranslate2 (the default elsewhere) for all.
    engines = (("ct2", run / "best-ct2"), ("torch", run / "best")) if family == "large-v3" else (("ct2", run / "best-ct2"),)
    for engine, spec in engines:
        (scores,) = evaluate(EvaluateConfig(models=(str(spec),), data=str(features), split="test", engine=engine,
                                            max_new_tokens=8), progress=False)
        assert scores.rates.utterances == 2 and len(scores.hypotheses) == 2


def test_transcribe_command_with_a_128_mel_model(tmp_path, galician_clips):
    """The CTranslate2 export of a 128-mel model transcribes from the command line (it once
    failed: 'expected an input with shape (1, 128, 3000), but got (1, 80, 3000)')."""
    model_dir = build("large-v3-turbo", tmp_path / "model")
    ct2 = models.ct2_dir(str(model_dir))
    assert json.loads((ct2 / "preprocessor_config.json").read_text())["feature_size"] == 128
    proc = run_main("transcribe", str(galician_clips[0]), "--model", str(ct2), "--batch-size", "1", "--format", "json",
                    "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out" / "gl0.json").read_text())["duration"] > 1
