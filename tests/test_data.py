"""Corpus sources on real files: Common Voice folders, manifests, local datasets, synthetic."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from galwhisper.audio import SAMPLE_RATE, load_audio
from galwhisper.data import Row, Source, iter_rows, load_rows, parse_source
from galwhisper.errors import GalwhisperError

SENTENCES = [
    "Bos días, veño buscar o pan que encarguei onte.",
    'Ela dixo "mañá chove" e marchou correndo.',  # quotes: CV TSVs are not quoted
    "O río Miño pasa por Ourense, Tui e A Guarda.",
]


def speak_mp3(path, text):
    """A real mp3 of espeak-ng speech, as Common Voice ships."""
    wav = path.with_suffix(".wav")
    subprocess.run(["espeak-ng", "-v", "pt", "-w", str(wav), "--stdin"], input=text.encode(), check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-ac", "1", "-ar", "16000", "-b:a", "48k", str(path)], check=True)
    wav.unlink()
    return path


@pytest.fixture(scope="module")
def mp3s(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech")
    return [speak_mp3(folder / f"clip{i}.mp3", text) for i, text in enumerate(SENTENCES)]


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    """Keep datasets' cache (it writes one for local folders too) inside the test's folder."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def write_tsv(path, header, rows):
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")


CV_HEADER = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "locale", "segment"]


def cv_row(path, sentence):
    return ["abc123", path, sentence, "2", "0", "", "", "", "gl", ""]


@pytest.fixture()
def cv_folder(tmp_path, mp3s):
    folder = tmp_path / "cv-corpus-gl"
    (folder / "clips").mkdir(parents=True)
    for mp3 in mp3s:
        (folder / "clips" / mp3.name).write_bytes(mp3.read_bytes())
    write_tsv(folder / "train.tsv", CV_HEADER, [cv_row("clip0.mp3", SENTENCES[0]), cv_row("clip1.mp3", SENTENCES[1])])
    write_tsv(folder / "dev.tsv", CV_HEADER, [cv_row("clip2.mp3", SENTENCES[2])])
    write_tsv(folder / "test.tsv", CV_HEADER, [cv_row("clip1.mp3", SENTENCES[1])])
    write_tsv(folder / "test_unseen.tsv", CV_HEADER, [cv_row("clip2.mp3", SENTENCES[2])])
    # Release files that are not splits, and one TSV without the needed columns.
    write_tsv(folder / "validated.tsv", CV_HEADER, [cv_row(m.name, s) for m, s in zip(mp3s, SENTENCES)])
    write_tsv(folder / "other.tsv", CV_HEADER, [cv_row("clip0.mp3", SENTENCES[0])])
    write_tsv(folder / "clip_durations.tsv", ["clip", "duration[ms]"], [["clip0.mp3", "2000"]])
    write_tsv(folder / "notes.tsv", ["note"], [["hello"]])
    return folder


# ---------------------------------------------------------------- parse_source


def test_parse_source(tmp_path):
    assert parse_source("cv:/data/cv") == Source("cv", "/data/cv", spec="cv:/data/cv")
    assert parse_source("manifest:m.tsv").location == "m.tsv"
    assert parse_source("hf:mozilla/cv:gl") == Source("hf", "mozilla/cv", "gl", spec="hf:mozilla/cv:gl")
    assert parse_source("hf:someone/dataset").config is None
    assert parse_source(f"hf:{tmp_path}").location == str(tmp_path)
    assert parse_source("synthetic") == Source("synthetic", spec="synthetic")
    assert parse_source("synthetic:/tmp/s").location == "/tmp/s"


@pytest.mark.parametrize("spec", ["ftp:/x", "/some/folder", "cv:", "hf:", ""])
def test_parse_source_errors(spec):
    with pytest.raises(GalwhisperError) as error:
        parse_source(spec)
    assert "\n" not in str(error.value)


def test_unknown_scheme():
    with pytest.raises(GalwhisperError, match=r"s3:bucket/x: unknown source type 's3:'"):
        load_rows("s3:bucket/x")


# ---------------------------------------------------------------- Common Voice


def test_cv_folder(cv_folder):
    rows = load_rows(f"cv:{cv_folder}")
    assert list(rows) == ["train", "validation", "test", "test_unseen"]  # not validated/other/...
    assert [r.sentence for r in rows["train"]] == SENTENCES[:2]  # quotes kept as written
    row = rows["validation"][0]
    assert row == Row(str(cv_folder.absolute() / "clips" / "clip2.mp3"), SENTENCES[2], "validation", "clip2")
    audio = load_audio(row.audio)
    assert 0.5 < len(audio) / SAMPLE_RATE < 15


def test_cv_selected_splits(cv_folder):
    assert list(load_rows(f"cv:{cv_folder}", splits=["dev"])) == ["validation"]
    assert list(load_rows(f"cv:{cv_folder}", splits=["validation", "test"])) == ["validation", "test"]
    assert len(load_rows(f"cv:{cv_folder}", splits=["validated"])["validated"]) == 3  # only when asked
    assert load_rows(f"cv:{cv_folder}", splits=["nonexistent"]) == {}  # a missing split is fine


def test_cv_missing_folder_is_one_line_error(tmp_path):
    missing = tmp_path / "no such corpus"
    with pytest.raises(GalwhisperError) as error:
        iter_rows(f"cv:{missing}")  # raised at once, not on the first row
    message = str(error.value)
    assert str(missing) in message and "not found" in message and "\n" not in message


def test_cv_folder_without_splits_or_clips(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalwhisperError, match="no Common Voice split files"):
        load_rows(f"cv:{tmp_path / 'empty'}")
    write_tsv(tmp_path / "empty" / "train.tsv", ["path", "sentence"], [["a.mp3", "Ola"]])
    with pytest.raises(GalwhisperError, match="clips/"):
        load_rows(f"cv:{tmp_path / 'empty'}")


# ---------------------------------------------------------------- manifests


def test_manifest_tsv_with_splits(tmp_path, mp3s):
    (tmp_path / "audio").mkdir()
    for mp3 in mp3s:
        (tmp_path / "audio" / mp3.name).write_bytes(mp3.read_bytes())
    manifest = tmp_path / "list.tsv"
    write_tsv(
        manifest,
        ["path", "sentence", "split"],
        [["audio/clip0.mp3", SENTENCES[0], "train"], ["audio/clip1.mp3", SENTENCES[1], "dev"], [str(mp3s[2]), SENTENCES[2], "test"]],
    )
    rows = load_rows(f"manifest:{manifest}")
    assert list(rows) == ["train", "validation", "test"]
    assert rows["train"][0].audio == str(tmp_path / "audio" / "clip0.mp3")
    assert rows["validation"][0].sentence == SENTENCES[1]
    assert rows["test"][0].audio == str(mp3s[2])  # absolute paths stay
    assert load_audio(rows["train"][0].audio).size > SAMPLE_RATE // 2
    assert list(load_rows(f"manifest:{manifest}", splits=["test"])) == ["test"]


def test_manifest_csv_text_column_and_no_split(tmp_path, mp3s, monkeypatch):
    manifest = tmp_path / "sub" / "list.csv"
    manifest.parent.mkdir()
    lines = ["file_name,text"] + [f'../{m.name},"{s.replace(chr(34), chr(34) * 2)}"' for m, s in zip(mp3s, SENTENCES)]
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for mp3 in mp3s:
        (tmp_path / mp3.name).write_bytes(mp3.read_bytes())
    monkeypatch.chdir(tmp_path / "sub")
    rows = load_rows("manifest:list.csv")  # relative to the manifest, not to the working folder
    assert list(rows) == ["all"]
    assert [r.sentence for r in rows["all"]] == SENTENCES  # commas and quotes from CSV quoting
    assert all(load_audio(r.audio).size for r in rows["all"])


def test_manifest_errors(tmp_path):
    with pytest.raises(GalwhisperError, match="file not found"):
        load_rows(f"manifest:{tmp_path / 'missing.tsv'}")
    bad = tmp_path / "bad.tsv"
    write_tsv(bad, ["audio_file", "words"], [["a.mp3", "ola"]])
    with pytest.raises(GalwhisperError, match=r"bad.tsv: needs a 'path'.*found columns: audio_file, words"):
        load_rows(f"manifest:{bad}")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(GalwhisperError, match=r"\.tsv or \.csv"):
        load_rows(f"manifest:{tmp_path / 'list.json'}")


# ---------------------------------------------------------------- Hugging Face datasets (local)


def test_hf_save_to_disk(tmp_path, mp3s, hf_cache):
    from datasets import Audio, Dataset, DatasetDict

    def part(indexes):
        columns = {"audio": [str(mp3s[i]) for i in indexes], "sentence": [SENTENCES[i] for i in indexes]}
        return Dataset.from_dict(columns).cast_column("audio", Audio())

    DatasetDict({"train": part([0, 1]), "dev": part([2])}).save_to_disk(str(tmp_path / "saved"))
    rows = load_rows(f"hf:{tmp_path / 'saved'}")
    assert list(rows) == ["train", "validation"]
    assert [r.sentence for r in rows["train"]] == SENTENCES[:2]
    first = rows["train"][0]
    assert isinstance(first.audio, bytes) and first.id == "clip0"  # save_to_disk embeds the files
    assert np.allclose(load_audio(first.audio), load_audio(mp3s[0]))
    assert list(load_rows(f"hf:{tmp_path / 'saved'}", splits=["validation"])) == ["validation"]

    # A single Dataset (no splits), a custom text column, plain path strings.
    Dataset.from_dict({"audio": [str(mp3s[2])], "words": [SENTENCES[2]]}).save_to_disk(str(tmp_path / "one"))
    rows = load_rows(f"hf:{tmp_path / 'one'}", text_column="words")
    assert rows == {"train": [Row(str(mp3s[2]), SENTENCES[2], "train", "clip2")]}
    with pytest.raises(GalwhisperError, match="no text column"):
        load_rows(f"hf:{tmp_path / 'one'}")


def test_hf_audiofolder(tmp_path, mp3s, hf_cache):
    folder = tmp_path / "audiofolder"
    folder.mkdir()
    for mp3 in mp3s:
        (folder / mp3.name).write_bytes(mp3.read_bytes())
    lines = ["file_name,transcription"] + [f'{m.name},"{s.replace(chr(34), chr(34) * 2)}"' for m, s in zip(mp3s, SENTENCES)]
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = load_rows(f"hf:{folder}")
    assert list(rows) == ["train"]
    assert sorted(r.sentence for r in rows["train"]) == sorted(SENTENCES)
    for row in rows["train"]:
        assert load_audio(row.audio).size > SAMPLE_RATE // 2


def test_hf_hub_offline_is_quick_one_line_error(monkeypatch):
    import datasets
    from huggingface_hub import constants

    # A closed local port stands in for "no network", whatever this machine's network is.
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(GalwhisperError, match=r"^hf:someone/no-such-dataset:gl: cannot reach the Hugging Face hub \(offline\?\)"):
        load_rows("hf:someone/no-such-dataset:gl")


def test_hf_local_path_that_is_not_a_dataset(tmp_path, hf_cache):
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(GalwhisperError, match="not a dataset folder"):
        load_rows(f"hf:{tmp_path / 'file.txt'}")


# ---------------------------------------------------------------- synthetic


def test_synthetic_source(tmp_path):
    from galwhisper.synthetic import SyntheticConfig

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES + ["A choiva cae mansa sobre os tellados."]) + "\n", encoding="utf-8")
    config = SyntheticConfig(out_dir=tmp_path / "unused", sentences_file=sentences, validation_fraction=0.3, test_fraction=0.3)
    rows = load_rows(f"synthetic:{tmp_path / 'corpus'}", synthetic_config=config)
    assert (tmp_path / "corpus" / "corpus.json").is_file() and not (tmp_path / "unused").exists()
    seen_splits = [rows.get(name, []) for name in ("train", "validation", "test")]
    assert {r.sentence for split in seen_splits for r in split} == set(SENTENCES) | {"A choiva cae mansa sobre os tellados."}
    assert [r.sentence for r in rows.get("test_unseen", [])] == [r.sentence for r in rows.get("test", [])]
    some = next(iter(rows.values()))[0]
    assert 0.5 < len(load_audio(some.audio)) / SAMPLE_RATE < 15


def test_synthetic_default_folder_honors_cache_env(tmp_path, monkeypatch):
    from galwhisper.synthetic import default_corpus_dir

    monkeypatch.setenv("GALWHISPER_CACHE", str(tmp_path / "cache"))
    assert default_corpus_dir() == tmp_path / "cache" / "synthetic"
