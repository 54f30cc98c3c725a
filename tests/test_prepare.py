"""galwhisper prepare on real files: Common Voice layout with bad clips, manifest, datasets folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import GALICIAN, assert_one_line_error, ffmpeg, run_cli, speak
from galwhisper import features, models
from galwhisper.audio import load_audio
from galwhisper.errors import GalwhisperError
from galwhisper.prepare import MARKER, PrepareConfig, load_prepared, load_split, plan_packs, prepare


@pytest.fixture(scope="module")
def cv_folder(tmp_path_factory):
    """Common Voice layout: good mp3 clips plus a corrupt one, a missing one, an empty sentence
    and one clip longer than the cap used below (6 s)."""
    root = tmp_path_factory.mktemp("cv")
    clips = root / "clips"
    clips.mkdir()
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment\n"
    good = []
    for i, text in enumerate(GALICIAN):
        speak(text, root / "tmp.wav")
        ffmpeg(root / "tmp.wav", clips / f"common_voice_gl_{i}.mp3")
        good.append((f"common_voice_gl_{i}.mp3", text))
    speak(" ".join(GALICIAN[:3]), root / "long.wav", speed=110)
    ffmpeg(root / "long.wav", clips / "long.mp3")
    (clips / "corrupt.mp3").write_bytes(b"ID3" + os.urandom(3000))

    def tsv(name, rows):
        (root / name).write_text(header + "".join(f"anon\t{p}\t{s}\t2\t0\t\t\t\tgl\t\n" for p, s in rows), encoding="utf-8")

    tsv("train.tsv", good[:3] + [("corrupt.mp3", "Isto non se le."), ("missing.mp3", "Non existe."),
                                 (good[3][0], ""), ("long.mp3", "Unha frase moi longa.")])
    tsv("dev.tsv", good[3:4])
    tsv("test.tsv", good[4:5])
    tsv("validated.tsv", good)  # not a split: must be ignored
    return root


@pytest.fixture(scope="module")
def prepared_cv(cv_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "features"
    config = PrepareConfig(source=f"cv:{cv_folder}", out_dir=out, max_seconds=6.0, num_proc=2)
    return config, prepare(config, progress=False)


def test_counts_and_skipped_reasons(prepared_cv, cv_folder):
    config, summary = prepared_cv
    train_split = summary["splits"]["train"]
    assert (train_split["clips"], train_split["skipped"]) == (3, 4)
    # The seconds are the kept clips' decoded lengths, measured here independently.
    clips = [cv_folder / "clips" / f"common_voice_gl_{i}.mp3" for i in range(3)]
    assert train_split["seconds"] == pytest.approx(sum(len(load_audio(c)) / 16000 for c in clips), abs=0.05)
    assert summary["splits"]["validation"]["clips"] == 1 and summary["splits"]["test"]["clips"] == 1
    assert "validated" not in summary["splits"]
    reasons = {s["id"]: s["reason"] for s in summary["skipped"]}
    assert "not a readable audio" in reasons["corrupt"]
    assert "not found" in reasons["missing"]
    assert reasons["common_voice_gl_3"] == "empty sentence"
    assert reasons["long"].startswith("too long")
    on_disk = load_prepared(config.out_dir)
    assert on_disk["model"]["n_mels"] == 80 and on_disk["language"] == "gl"


def test_labels_decode_back_and_features_match_transcribe_path(prepared_cv, cv_folder):
    config, _ = prepared_cv
    tokenizer = models.load_hf("base")[1].tokenizer
    train = load_split(config.out_dir, "train")
    for row in train:
        labels = list(row["labels"])
        assert labels[:4] == tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|gl|>", "<|transcribe|>", "<|notimestamps|>"])
        assert labels[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(labels, skip_special_tokens=True).strip() == row["sentence"]
        # The same audio through the inference path gives the same log-mel (float16 storage).
        audio = load_audio(cv_folder / "clips" / f"{row['id']}.mp3")
        expected = features.log_mel(audio)
        stored = np.asarray(row["input_features"], dtype=np.float32).T
        assert stored.shape == expected.shape
        assert np.abs(stored - expected).max() < 2e-3


def test_second_run_is_a_cache_hit(prepared_cv, capsys):
    config, first = prepared_cv
    marker = config.out_dir / "train" / MARKER
    before = marker.stat().st_mtime_ns
    again = prepare(config, progress=False)
    assert "reusing" in capsys.readouterr().out
    assert marker.stat().st_mtime_ns == before
    assert again["splits"] == first["splits"]


def test_half_written_split_is_redone(prepared_cv, capsys):
    config, first = prepared_cv
    (config.out_dir / "validation" / MARKER).unlink()  # as if killed before the marker
    again = prepare(config, progress=False)
    out = capsys.readouterr().out
    assert "validation: reusing" not in out and "train: reusing" in out
    assert (config.out_dir / "validation" / MARKER).is_file()
    assert again["splits"]["validation"] == first["splits"]["validation"]


def test_sigkill_then_rerun_is_complete(cv_folder, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "galwhisper.cli", "prepare", "--source", f"cv:{cv_folder}", "--out", str(out), "--max-seconds", "6"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".tmp-*")) and not list(out.glob(f"*/{MARKER}")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Whatever was left: no split without its marker is taken as done.
    for folder in out.iterdir() if out.exists() else []:
        if folder.is_dir() and not folder.name.startswith(".tmp-"):
            assert (folder / MARKER).is_file() or not (folder / "dataset_info.json").exists()
    done = run_cli("prepare", "--source", f"cv:{cv_folder}", "--out", str(out), "--max-seconds", "6")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["splits"]["train"]["clips"] == 3 and summary["splits"]["test"]["clips"] == 1


def test_manifest_and_datasets_folder(cv_folder, tmp_path):
    from datasets import Audio, Dataset

    clips = sorted((cv_folder / "clips").glob("common_voice_gl_*.mp3"))
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,sentence\n" + "".join(f"{c},{GALICIAN[int(c.stem[-1])]}\n" for c in clips), encoding="utf-8")
    summary = prepare(PrepareConfig(source=f"manifest:{manifest}", out_dir=tmp_path / "m"), progress=False)
    assert list(summary["splits"]) == ["all"]
    assert (summary["splits"]["all"]["clips"], summary["splits"]["all"]["skipped"]) == (5, 0)
    assert summary["splits"]["all"]["seconds"] == pytest.approx(sum(len(load_audio(c)) / 16000 for c in clips), abs=0.05)

    data = Dataset.from_dict({"audio": [str(c) for c in clips], "sentence": [GALICIAN[int(c.stem[-1])] for c in clips]})
    data.cast_column("audio", Audio(decode=False)).save_to_disk(str(tmp_path / "ds"))
    summary = prepare(PrepareConfig(source=f"hf:{tmp_path / 'ds'}", out_dir=tmp_path / "h"), progress=False)
    (split,) = summary["splits"]
    assert summary["splits"][split]["clips"] == 5


def test_nothing_usable_is_a_clear_error(tmp_path):
    (tmp_path / "bad.wav").write_text("not audio")
    manifest = tmp_path / "list.tsv"
    manifest.write_text("path\tsentence\nbad.wav\tOla.\nmissing.wav\tAdeus.\n")
    with pytest.raises(GalwhisperError, match="no usable clips"):
        prepare(PrepareConfig(source=f"manifest:{manifest}", out_dir=tmp_path / "out"), progress=False)
    assert_one_line_error(run_cli("prepare", "--source", f"manifest:{manifest}", "--out", str(tmp_path / "o2")), "no usable clips")


def test_cached_encoder_states_match_the_encoder(tiny_prepared):
    """The cache holds the encoder's state before its final norm; that norm over it is exactly
    the encoder's output (what cached-encoder training feeds the decoder)."""
    model, _ = models.load_hf("base")
    train = load_split(tiny_prepared, "train")
    assert len(train) == 12 and "encoder_hidden" in train.column_names
    row = train[0]
    mel = np.asarray(row["input_features"], dtype=np.float32).T
    with torch.inference_mode():
        expected = model.model.encoder(torch.from_numpy(features.stack_inputs([mel]))).last_hidden_state[0]
        cached = torch.from_numpy(np.asarray(row["encoder_hidden"], dtype=np.float32))
        assert cached.shape == (1500, 512)
        normed = model.model.encoder.layer_norm(cached)
    assert (normed - expected).abs().max() < 0.05  # float16 storage


def test_bottom_layers_then_the_rest_is_the_whole_encoder():
    """features.encoder_states (the cache) followed by the trainer's top layers equals the
    encoder's own forward, for every split point."""
    from galwhisper.trainer import CachedBottomEncoder

    model, _ = models.load_hf("base")
    encoder = model.model.encoder.eval()
    mels = torch.from_numpy(features.stack_inputs([np.random.default_rng(0).standard_normal((80, 400)).astype(np.float32)]))
    with torch.inference_mode():
        whole = encoder(mels).last_hidden_state
        encoder.__class__ = CachedBottomEncoder
        for k in (0, 3, 6):
            encoder.cached_layers = k
            above = encoder(features.encoder_states(encoder, mels, k)).last_hidden_state
            assert (above - whole).abs().max() < 1e-4, k
        assert (encoder(mels).last_hidden_state - whole).abs().max() < 1e-6  # log-mels: the whole encoder


@pytest.fixture(scope="module")
def packed(tiny_prepared, tmp_path_factory):
    """The tiny synthetic corpus prepared again with --pack (its clips' speech times are known)."""
    corpus = tiny_prepared.parent / "corpus"
    out = tmp_path_factory.mktemp("packed") / "features"
    config = PrepareConfig(source=f"cv:{corpus}", out_dir=out, pack=True, pack_min_seconds=6, pack_seconds=14,
                           pack_singles=0.5, splits=("train", "validation"))
    return config, prepare(config, progress=False)


def test_packed_windows_carry_their_clips_and_times(packed, tiny_prepared):
    from galwhisper.data import load_rows

    config, summary = packed
    train = load_split(config.out_dir, "train")
    singles = {r["id"]: r for r in load_split(tiny_prepared, "train")}
    rows = {r.id: r for r in load_rows(f"cv:{tiny_prepared.parent / 'corpus'}", ["train"])["train"]}
    tokenizer = models.load_hf("base")[1].tokenizer
    windows = [r for r in train if r["clips"] > 1]
    assert windows and len(train) - len(windows) == 6  # pack_singles 0.5 of 12 clips
    assert summary["splits"]["train"]["examples"] == len(train) and summary["splits"]["train"]["clips"] == 12
    assert summary["splits"]["validation"]["examples"] == 4  # only train is packed
    for window in windows:
        ids = window["id"].split("+")
        assert len(ids) == window["clips"] and set(ids) <= set(singles)
        assert window["sentence"] == " ".join(singles[i]["sentence"] for i in ids)
        assert window["seconds"] <= config.pack_seconds + 1.0  # pauses are drawn within the window's length
        assert window["seconds"] > sum(singles[i]["seconds"] for i in ids)  # the pauses between clips
        assert tokenizer.decode(window["labels"], skip_special_tokens=True).strip() == window["sentence"]
        # The timed label: per clip <|start|> text <|end|>, inside the window, in order, and each
        # clip's speech lasting as long as the corpus says it does.
        tokens = tokenizer.convert_ids_to_tokens(list(window["timed_labels"]))
        assert tokens[:3] == ["<|startoftranscript|>", "<|gl|>", "<|transcribe|>"] and tokens[-1] == "<|endoftext|>"
        times = [float(t[2:-2]) for t in tokens if t.startswith("<|") and t[2:-2].replace(".", "").isdigit()]
        assert len(times) == 2 * len(ids) and times == sorted(times) and times[-1] <= window["seconds"] + 0.02
        spoken = [(rows[i].segments[0][1] - rows[i].segments[0][0]) for i in ids]
        assert [round(b - a, 2) for a, b in zip(times[::2], times[1::2])] == pytest.approx(spoken, abs=0.041)


def test_single_clips_get_timed_labels_from_the_corpus(tiny_prepared):
    tokenizer = models.load_hf("base")[1].tokenizer
    row = load_split(tiny_prepared, "test")[0]
    tokens = tokenizer.convert_ids_to_tokens(list(row["timed_labels"]))
    start, end = float(tokens[3][2:-2]), float(tokens[-2][2:-2])
    assert 0.0 < start < 0.5 and start < end <= row["seconds"]  # the corpus' lead silence is 0.05-0.4 s


def test_pack_plan_respects_lengths_and_the_decoder(tmp_path):
    config = PrepareConfig(source="synthetic", out_dir=tmp_path, pack=True, pack_min_seconds=10, pack_seconds=20, seed=3)
    seconds = list(np.random.default_rng(1).uniform(1.5, 6.0, 200))
    windows = plan_packs(seconds, [30] * 200, config)
    used = [i for w in windows for i, _ in w]
    assert len(used) == len(set(used)) > 150  # each clip at most once; most are packed
    for window in windows:
        length = sum(pause + seconds[i] for i, pause in window)
        assert 1 < len(window) and length <= 20 and all(0 <= p <= 0.8 for _, p in window)
    assert plan_packs(seconds, [30] * 200, config) == windows  # seeded
    few_tokens = plan_packs(seconds, [250] * 200, config)  # labels of 250 tokens: two do not fit 448
    assert few_tokens == []
