"""Corpora where they live today, with faithful offline stand-ins: Common Voice archives as
downloaded, the Mozilla Data Collective (a local server speaking its API), hub parquet snapshots,
several sources in one prepare."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from conftest import GALICIAN, assert_one_line_error, ffmpeg, run_main, speak
from galwhisper.data import load_rows
from galwhisper.errors import GalwhisperError
from galwhisper.prepare import PrepareConfig, load_split, prepare

RELEASE = "cv-corpus-25.0-2026-03-01"
HEADER = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment\n"
EXTRA = [  # more Galician sentences for the validated/other pools
    "A biblioteca abre ás nove da mañá.", "Mañá imos ver o partido de fútbol.", "O xantar está na mesa.",
    "Compramos pan e leite no mercado.", "A rúa estaba chea de xente.",
]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A small Common Voice release folder laid out as the archives are (several TSVs, clips/)."""
    root = tmp_path_factory.mktemp("cv-release") / RELEASE / "gl"
    (root / "clips").mkdir(parents=True)
    sentences = GALICIAN + EXTRA
    for i, text in enumerate(sentences):
        speak(text, root / "tmp.wav", voice="pt" if i % 2 else "es")
        ffmpeg(root / "tmp.wav", root / "clips" / f"common_voice_gl_{i}.mp3")
    (root / "tmp.wav").unlink()
    row = lambda i, speaker: f"{speaker}\tcommon_voice_gl_{i}.mp3\ts{i}\t{sentences[i]}\t\t2\t0\t\t\t\t\tgl\t\n"  # noqa: E731
    tables = {
        "train": [row(0, "spk-a"), row(1, "spk-b")],
        "dev": [row(2, "spk-c")],
        "test": [row(3, "spk-d")],
        # validated: train's and dev/test's clips, plus clips by speakers and sentences not held out,
        # one by the test speaker (spk-d) and one repeating the dev sentence: both must be left out.
        "validated": [row(i, s) for i, s in ((0, "spk-a"), (1, "spk-b"), (2, "spk-c"), (3, "spk-d"), (5, "spk-e"),
                                             (6, "spk-f"), (7, "spk-d"), (8, "spk-g"))] + [f"spk-h\tcommon_voice_gl_9.mp3\ts2\t{sentences[2]}\t\t2\t0\t\t\t\t\tgl\t\n"],
        "other": [row(4, "spk-z")],
        "invalidated": [],
    }
    for name, rows in tables.items():
        (root / f"{name}.tsv").write_text(HEADER + "".join(rows), encoding="utf-8")
    (root / "clip_durations.tsv").write_text("clip\tduration[ms]\n", encoding="utf-8")
    return root.parent


def make_archive(release: Path, target: Path, *extra_locales: str) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        tar.add(release, arcname=RELEASE)
        for locale in extra_locales:  # a second locale: its TSVs only
            data = (release / "gl" / "train.tsv").read_bytes()
            info = tarfile.TarInfo(f"{RELEASE}/{locale}/train.tsv")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


@pytest.fixture(scope="module")
def archive(release, tmp_path_factory) -> Path:
    return make_archive(release, tmp_path_factory.mktemp("archive") / f"{RELEASE}-gl.tar.gz")


def test_archive_prepares_like_the_extracted_folder(archive, release, tmp_path):
    from_folder = prepare(PrepareConfig(source=f"cv:{release}", out_dir=tmp_path / "folder"), progress=False)
    from_archive = prepare(PrepareConfig(source=f"cv:{archive}", out_dir=tmp_path / "archive"), progress=False)
    assert from_archive["splits"] == from_folder["splits"]
    for split in ("train", "validation", "test"):
        a, b = load_split(tmp_path / "archive", split), load_split(tmp_path / "folder", split)
        assert list(a["sentence"]) == list(b["sentence"]) and list(a["id"]) == list(b["id"])
    # Only the clips the splits name came out of the archive (not other.tsv's, not validated's).
    from galwhisper.files import cache_root

    folders = list((cache_root() / "cv").glob(f"{RELEASE}-*/gl/clips"))
    assert folders and sorted(p.name for p in folders[0].iterdir()) == [f"common_voice_gl_{i}.mp3" for i in range(4)]


def test_archive_second_run_extracts_nothing(archive, tmp_path):
    from galwhisper.files import cache_root

    load_rows(f"cv:{archive}", ["train"])
    clips = next((cache_root() / "cv").glob(f"{RELEASE}-*/gl/clips"))
    stamps = {p.name: p.stat().st_mtime_ns for p in clips.iterdir()}
    (clips / "common_voice_gl_0.mp3").unlink()  # as if killed before this clip was written
    rows = load_rows(f"cv:{archive}", ["train", "validation", "test"])
    assert sum(map(len, rows.values())) == 4
    after = {p.name: p.stat().st_mtime_ns for p in clips.iterdir()}
    assert set(after) == set(stamps)  # the missing clip came back ...
    assert all(after[name] == stamps[name] for name in stamps if name != "common_voice_gl_0.mp3")  # ... alone


def test_cv_train_validated_keeps_dev_and_test_out(release):
    rows = load_rows(f"cv:{release}", ["train"], cv_train="validated")["train"]
    # validated minus dev/test clips, minus the test speaker's other clip, minus the dev sentence's repeat
    assert sorted(r.id for r in rows) == ["common_voice_gl_0", "common_voice_gl_1", "common_voice_gl_5",
                                          "common_voice_gl_6", "common_voice_gl_8"]
    assert_one_line_error(run_main("prepare", "--source", f"cv:{release}", "--out", "/tmp/x", "--cv-train", "everything"),
                          "--cv-train")


def test_locales_are_found_or_named(release, tmp_path):
    two = make_archive(release, tmp_path / "two.tar.gz", "pt")
    with pytest.raises(GalwhisperError, match=r"several locales \(gl, pt\)"):
        load_rows(f"cv:{two}", ["train"])
    assert len(load_rows(f"cv:{two}:gl", ["train"])["train"]) == 2
    with pytest.raises(GalwhisperError, match=r"has no locale 'eu' \(it has: gl, pt\)"):
        load_rows(f"cv:{two}:eu", ["train"])
    with pytest.raises(GalwhisperError, match=r"has no locale 'eu' \(it has: gl\)"):
        load_rows(f"cv:{release}:eu", ["train"])


def test_bad_archives_are_one_line(archive, tmp_path):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    assert_one_line_error(run_main("prepare", "--source", f"cv:{cut}", "--out", str(tmp_path / "o")),
                          str(cut), "damaged or truncated archive")
    empty = tmp_path / "no-tsv.tar"
    with tarfile.open(empty, "w") as tar:
        info = tarfile.TarInfo("readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    assert_one_line_error(run_main("prepare", "--source", f"cv:{empty}", "--out", str(tmp_path / "o")),
                          "the archive holds no Common Voice TSV files")


# ---------------------------------------------------------------------------------------------
# Mozilla Data Collective: a local server speaking the API the datacollective client uses


class _MdcStandIn(http.server.BaseHTTPRequestHandler):
    """GET /api/datasets/ID, POST /api/datasets/ID/download, GET /files/NAME (with Range).
    The first download is cut 1000 bytes before its end, as a dropped connection would cut it."""

    def _json(self, data: dict, status: int = 200):
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        server = self.server
        if self.path == f"/api/datasets/{server.dataset_id}":
            return self._json({"id": server.dataset_id, "filename": server.name, "checksum": server.sha256,
                               "sizeBytes": len(server.data)})
        if self.path == f"/files/{server.name}":
            start = int(self.headers.get("Range", "bytes=0-").split("=")[1].split("-")[0] or 0)
            server.ranges.append(start)
            body = server.data[start:]
            cut = len(server.ranges) == 1  # the first attempt dies halfway
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:-1000] if cut else body)
            if cut:
                self.wfile.flush()
                self.connection.shutdown(2)
            return
        self._json({"message": "not found"}, 404)

    def do_POST(self):  # noqa: N802
        server = self.server
        if self.path == f"/api/datasets/{server.dataset_id}/download":
            host, port = server.server_address
            return self._json({"downloadUrl": f"http://{host}:{port}/files/{server.name}", "sizeBytes": len(server.data),
                               "checksum": server.sha256})
        self._json({"message": "not found"}, 404)

    def log_message(self, *args):
        pass


@pytest.fixture
def mdc(archive, monkeypatch):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MdcStandIn)
    httpd.dataset_id, httpd.name, httpd.data, httpd.ranges = "cmgalician25", archive.name, archive.read_bytes(), []
    httpd.sha256 = hashlib.sha256(httpd.data).hexdigest()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("MDC_API_URL", f"http://127.0.0.1:{httpd.server_address[1]}/api")
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_mdc_download_resumes_and_prepares(mdc, tmp_path, monkeypatch):
    monkeypatch.setenv("MDC_API_KEY", "test-key")
    first = run_main("prepare", "--source", f"mdc:{mdc.dataset_id}", "--out", str(tmp_path / "f"))
    assert_one_line_error(first, f"mdc:{mdc.dataset_id}", "download failed", "run again to resume")
    second = run_main("prepare", "--source", f"mdc:{mdc.dataset_id}", "--out", str(tmp_path / "f"))
    assert second.returncode == 0, second.stderr
    assert mdc.ranges[0] == 0 and 0 < mdc.ranges[1] < len(mdc.data)  # the second request resumed where the first stopped
    summary = json.loads((tmp_path / "f" / "prepare.json").read_text())
    assert summary["splits"]["train"]["clips"] == 2 and summary["splits"]["test"]["clips"] == 1


def test_mdc_needs_a_key_before_any_work(mdc, tmp_path, monkeypatch):
    monkeypatch.delenv("MDC_API_KEY", raising=False)
    assert_one_line_error(run_main("prepare", "--source", f"mdc:{mdc.dataset_id}", "--out", str(tmp_path / "f")),
                          "set MDC_API_KEY")
    assert mdc.ranges == []


# ---------------------------------------------------------------------------------------------
# The hub's parquet layout, and several sources at once


@pytest.fixture(scope="module")
def parquet_snapshot(release, tmp_path_factory) -> Path:
    """A local copy of a dataset as the hub's parquet branch stores it: CONFIG/SPLIT/*.parquet,
    audio as {bytes, path} structs, FLEURS' columns, the big split named partial-train."""
    from datasets import Dataset

    root = tmp_path_factory.mktemp("snapshot")
    clips = sorted((release / "gl" / "clips").glob("*.mp3"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    sentences = GALICIAN + EXTRA
    for split, indexes in (("partial-train", [0, 1, 5]), ("dev", [2]), ("test", [3])):
        folder = root / "gl_es" / split
        folder.mkdir(parents=True)
        Dataset.from_dict({
            "id": indexes,
            "audio": [{"bytes": clips[i].read_bytes(), "path": clips[i].name} for i in indexes],
            "transcription": [sentences[i].lower().rstrip(".?") for i in indexes],
            "raw_transcription": [sentences[i] for i in indexes],
        }).to_parquet(str(folder / "0000.parquet"))  # fmt: skip
    (root / "en_us" / "test").mkdir(parents=True)
    Dataset.from_dict({"path": ["x.wav"], "text": ["hello"]}).to_parquet(str(root / "en_us" / "test" / "0000.parquet"))
    return root


def test_parquet_snapshot_of_the_hub(parquet_snapshot, tmp_path):
    summary = prepare(PrepareConfig(source=f"hf:{parquet_snapshot}:gl_es", out_dir=tmp_path / "f"), progress=False)
    assert {k: v["clips"] for k, v in summary["splits"].items()} == {"train": 3, "validation": 1, "test": 1}
    # The cased, punctuated raw_transcription is preferred over the normalised transcription.
    assert list(load_split(tmp_path / "f", "validation")["sentence"]) == [GALICIAN[2]]
    with pytest.raises(GalwhisperError, match=r"several configurations \(en_us, gl_es\)"):
        load_rows(f"hf:{parquet_snapshot}")
    with pytest.raises(GalwhisperError, match="no audio column 'audio'; found columns: path, text"):
        load_rows(f"hf:{parquet_snapshot}:en_us")


def test_text_column_in_the_language_of_the_run(release, tmp_path):
    from datasets import Dataset

    clips = sorted((release / "gl" / "clips").glob("*.mp3"))[:2]
    folder = tmp_path / "speecht" / "train"
    folder.mkdir(parents=True)
    Dataset.from_dict({"audio": [{"bytes": c.read_bytes(), "path": c.name} for c in clips],
                       "text_en": ["english one", "english two"], "text_gl": ["galego un", "galego dous"]}).to_parquet(
        str(folder / "0000.parquet"))
    rows = load_rows(f"hf:{tmp_path / 'speecht'}", language="gl")["train"]
    assert [r.sentence for r in rows] == ["galego un", "galego dous"]


def test_several_sources_merge_their_splits(release, parquet_snapshot, tmp_path):
    proc = run_main("prepare", "--source", f"cv:{release}", "--source", f"hf:{parquet_snapshot}:gl_es",
                    "--out", str(tmp_path / "f"), "--max-per-source", "2")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "f" / "prepare.json").read_text())
    assert summary["splits"]["train"]["clips"] == 4  # 2 from each source (capped)
    per_source = {s["source"]: s["splits"] for s in summary["sources"]}
    assert per_source[f"cv:{release}"]["train"]["clips"] == 2 and per_source[f"hf:{parquet_snapshot}:gl_es"]["train"]["clips"] == 2
    ids = list(load_split(tmp_path / "f", "train")["id"])
    assert len(set(ids)) == 4 and {i.split(":")[0] for i in ids} == {"1", "2"}
