"""The synthetic corpus: sentence list, splits, and a tiny real build with espeak-ng and ffmpeg."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import time
from importlib import resources

import pytest

from galwhisper.audio import SAMPLE_RATE, load_audio
from galwhisper.errors import GalwhisperError
from galwhisper.synthetic import (
    TSV_COLUMNS,
    SyntheticConfig,
    build_corpus,
    load_sentences,
    plan_corpus,
    split_sentences,
)

TINY = {"n_train": 6, "n_validation": 2, "n_test": 2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    config = SyntheticConfig(out_dir=tmp_path_factory.mktemp("synthetic") / "corpus", **TINY)
    return config, build_corpus(config, progress=False)


def read_tsv(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_sentence_file_is_a_usable_corpus():
    lines = resources.files("galwhisper").joinpath("data/gl_sentences.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 600
    assert len({line.casefold() for line in lines}) == len(lines), "duplicate sentences"
    for line in lines:
        assert line == line.strip() and "\t" not in line, line
        assert 4 <= len(line.split()) <= 20, line
        assert not re.search(r"\d", line), line  # numbers are read differently by each voice
    assert load_sentences() == lines


def test_split_is_stable_and_disjoint():
    sentences = load_sentences()
    splits = split_sentences(sentences)
    assert set(splits) == {"train", "validation", "test"}
    assert sum(len(v) for v in splits.values()) == len(set(sentences))
    assert not set(splits["train"]) & set(splits["test"])
    assert not set(splits["train"]) & set(splits["validation"])
    assert not set(splits["validation"]) & set(splits["test"])
    for name, fraction in (("validation", 0.1), ("test", 0.1)):
        assert 0.05 < len(splits[name]) / len(sentences) < 0.15
    # Stable: reordering the input or adding sentences moves nothing.
    assert split_sentences(list(reversed(sentences))) == splits
    grown = split_sentences(sentences + ["Unha frase nova que antes non estaba."])
    assert all(set(splits[name]) <= set(grown[name]) for name in splits)
    assert split_sentences(sentences, seed=1) != splits


def test_split_rejects_bad_fractions():
    with pytest.raises(GalwhisperError):
        split_sentences(["a b c d"], validation=0.6, test=0.5)


def test_same_seed_same_choices(tmp_path):
    config = SyntheticConfig(out_dir=tmp_path, **TINY)
    first, second = plan_corpus(config), plan_corpus(config)
    assert first == second
    other = plan_corpus(dataclasses.replace(config, seed=1))
    assert [(p.voice, p.speed_wpm, p.pitch) for p in other] != [(p.voice, p.speed_wpm, p.pitch) for p in first]
    for plan in first:
        assert config.speed_wpm[0] <= plan.speed_wpm <= config.speed_wpm[1]
        assert config.pitch[0] <= plan.pitch <= config.pitch[1]
        assert config.snr_db[0] <= plan.snr_db <= config.snr_db[1]


def test_layout_and_tsv_columns(corpus):
    _, folder = corpus
    assert sorted(p.name for p in folder.iterdir()) == ["clips", "corpus.json", "dev.tsv", "test.tsv", "test_unseen.tsv", "train.tsv"]
    counts = {"train.tsv": 6, "dev.tsv": 2, "test.tsv": 2, "test_unseen.tsv": 2}
    for name, count in counts.items():
        header = (folder / name).read_text(encoding="utf-8").splitlines()[0].split("\t")
        assert tuple(header) == TSV_COLUMNS
        rows = read_tsv(folder / name)
        assert len(rows) == count
        for row in rows:
            assert row["locale"] == "gl" and row["client_id"]
            assert "/" not in row["path"] and (folder / "clips" / row["path"]).is_file()
    assert len(list((folder / "clips").glob("*.mp3"))) == sum(counts.values())
    # No temporary build folders are left next to the corpus.
    assert [p.name for p in folder.parent.iterdir()] == ["corpus"]


def test_clips_decode_to_plausible_speech(corpus):
    _, folder = corpus
    for row in read_tsv(folder / "train.tsv") + read_tsv(folder / "test_unseen.tsv"):
        audio = load_audio(folder / "clips" / row["path"])
        seconds = len(audio) / SAMPLE_RATE
        assert 0.5 <= seconds <= 15, (row["path"], seconds)
        assert 0.01 < float(abs(audio).max()) <= 1.0


def test_splits_disjoint_and_unseen_voice(corpus):
    _, folder = corpus
    sentences = {name: {r["sentence"] for r in read_tsv(folder / f"{name}.tsv")} for name in ("train", "dev", "test", "test_unseen")}
    assert not sentences["train"] & (sentences["dev"] | sentences["test"])
    assert not sentences["dev"] & sentences["test"]
    assert sentences["test_unseen"] == sentences["test"]
    seen = {r["client_id"] for name in ("train", "dev") for r in read_tsv(folder / f"{name}.tsv")}
    unseen = {r["client_id"] for r in read_tsv(folder / "test_unseen.tsv")}
    assert unseen and not unseen & seen


def test_corpus_json(corpus):
    config, folder = corpus
    info = json.loads((folder / "corpus.json").read_text(encoding="utf-8"))
    assert info["synthetic"] is True
    assert info["counts"] == {"train": 6, "validation": 2, "test": 2, "test_unseen": 2}
    assert info["voices"]["test_unseen"] == [config.unseen_voice]
    assert config.unseen_voice not in info["voices"]["train"] + info["voices"]["validation"]
    assert info["config"]["n_train"] == 6 and info["config"]["seed"] == 0
    # The recorded choices are the plan: same seed, same voices/speeds/pitches.
    assert info["clips"] == [dataclasses.asdict(p) for p in plan_corpus(config)]


def test_second_build_is_reused(corpus, caplog):
    config, folder = corpus
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "clips").iterdir()}
    with caplog.at_level("INFO", logger="galwhisper.synthetic"):
        assert build_corpus(config, progress=False) == folder
    assert "Reusing" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "clips").iterdir()} == before


def test_changed_config_rebuilds_in_place(tmp_path):
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("A choiva cae mansa sobre Compostela.\nO gato dorme enriba da cadeira.\n", encoding="utf-8")
    config = SyntheticConfig(out_dir=tmp_path / "c", sentences_file=sentences, validation_fraction=0, test_fraction=0, speed_perturb=None)
    folder = build_corpus(config, progress=False)
    assert len(read_tsv(folder / "train.tsv")) == 2 and read_tsv(folder / "test_unseen.tsv") == []
    rebuilt = build_corpus(dataclasses.replace(config, n_train=1), progress=False)
    assert rebuilt == folder and len(read_tsv(folder / "train.tsv")) == 1
    assert len(list((folder / "clips").iterdir())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "sentences.txt"]


def test_refuses_to_overwrite_other_folders(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(GalwhisperError, match="mine"):
        build_corpus(SyntheticConfig(out_dir=tmp_path / "mine", **TINY), progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_bad_voice_and_config_are_user_errors(tmp_path):
    with pytest.raises(GalwhisperError, match="xx-nonexistent"):
        build_corpus(SyntheticConfig(out_dir=tmp_path / "c", unseen_voice="xx-nonexistent", **TINY), progress=False)
    with pytest.raises(GalwhisperError, match="pitch"):
        plan_corpus(SyntheticConfig(out_dir=tmp_path / "c", pitch=(70, 30)))
    with pytest.raises(GalwhisperError, match="unseen_voice"):
        plan_corpus(SyntheticConfig(out_dir=tmp_path / "c", seen_voices=("pt",), unseen_voice="pt"))
    assert not (tmp_path / "c").exists()


def test_failed_build_leaves_nothing_half_done(tmp_path, monkeypatch):
    from galwhisper import synthetic

    real_render = synthetic.render_clip

    def failing_render(plan, mp3_path, scratch_dir):
        if plan.index == 3:
            raise GalwhisperError("espeak-ng: simulated failure")
        real_render(plan, mp3_path, scratch_dir)

    monkeypatch.setattr(synthetic, "render_clip", failing_render)
    with pytest.raises(GalwhisperError, match="simulated"):
        build_corpus(SyntheticConfig(out_dir=tmp_path / "c", **TINY), progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the corpus nor its staging folder
