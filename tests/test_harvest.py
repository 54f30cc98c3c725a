"""galwhisper harvest on real files: espeak-ng Galician sentences with known cue times, muxed into
webm/mp4 videos by ffmpeg, served with subtitle tracks by a real http.server on 127.0.0.1 and
read by real yt-dlp, checked by the real bundled Whisper base; then prepared by `prepare`."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import assert_one_line_error, ffmpeg, run_main, serve_folder, speak
from galwhisper.audio import SAMPLE_RATE, load_audio
from galwhisper.errors import GalwhisperError
from galwhisper.harvest import Cue, HarvestConfig, choose_track, clean_cues, merge_cues, parse_subtitles

pytestmark = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("espeak-ng")), reason="needs ffmpeg and espeak-ng")

# Sentences of galwhisper's corpus that Whisper base, zero-shot, hears well enough in espeak-ng's
# Spanish voice (measured CER 0.07-0.38 one by one), so good segments pass the default check.
GOOD = [
    "Tes que asinar o contrato antes do luns.",
    "O prezo da vivenda subiu un seis por cento no último ano.",
    "No mundial participaron trinta e dous equipos.",
    "Na clase de música aprendemos a tocar a gaita.",
    "Onde mercaches eses zapatos tan bonitos?",
    "Imos plantar carballos na leira que ardeu o ano pasado.",
    "Este inverno nevou moito na montaña de Ourense.",
    "Cando foi a última vez que estiveches en Fisterra?",
    "Fai o que queiras, eu non me meto.",
    "A que hora sae o próximo autobús para Lugo?",
    "Estes pantalóns quédanme grandes.",
    "O meu pai foi mineiro en Ourense durante anos.",
    "O meu pai xubilouse despois de trinta e oito anos no mar.",
]
SHIFTED = [
    "Gústanme moito as zorzas con ovos fritos.",
    "Esta tarde vou cortar o pelo na perruquería do barrio.",
    "O froiteiro regaloulle unha mazá ao neno.",
    "A fervenza do Ézaro cae directamente ao mar.",
]
SHORT_PAUSE, LONG_PAUSE, LEAD = 0.3, 1.6, 0.5  # seconds; the default --max-gap (1.0) lies between
SHIFT = 5.0  # seconds the out-of-sync track is late: about one sentence and its pause


# ---------------------------------------------------------------------------------------------
# Fixtures: built once for the module


def _spoken(folder: Path, text: str) -> np.ndarray:
    path = folder / f"s{abs(hash(text))}.wav"
    if not path.exists():
        speak(text, path, voice="es", speed=150)
    return load_audio(path)


def _recording(folder: Path, name: str, groups: list[list[str]]) -> tuple[Path, list[tuple[float, float, str]]]:
    """A 16 kHz wav of the sentences (SHORT_PAUSE inside a group, LONG_PAUSE between groups) and
    each sentence's (start, end, text): the cue times are known to the sample."""
    pieces, cues, at = [np.zeros(int(LEAD * SAMPLE_RATE), np.float32)], [], LEAD
    for g, group in enumerate(groups):
        for i, text in enumerate(group):
            if g or i:
                pause = SHORT_PAUSE if i else LONG_PAUSE
                pieces.append(np.zeros(int(pause * SAMPLE_RATE), np.float32))
                at += int(pause * SAMPLE_RATE) / SAMPLE_RATE
            audio = _spoken(folder, text)
            pieces.append(audio)
            cues.append((round(at, 3), round(at + len(audio) / SAMPLE_RATE, 3), text))
            at += len(audio) / SAMPLE_RATE
    pieces.append(np.zeros(int(LEAD * SAMPLE_RATE), np.float32))
    wav = folder / f"{name}.wav"
    sf.write(str(wav), np.concatenate(pieces), SAMPLE_RATE, subtype="PCM_16")
    return wav, cues


def _video(wav: Path, out: Path) -> Path:
    """A real video file: a tiny black picture plus the speech (webm: VP8 + Opus, mp4: H.264 + AAC)."""
    codecs = ["-c:v", "libvpx", "-b:v", "20k", "-c:a", "libopus"] if out.suffix == ".webm" else ["-c:v", "libx264", "-c:a", "aac"]
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=32x32:r=4",
                    "-i", str(wav), "-shortest", *codecs, str(out)], check=True)
    return out


def _clock(seconds: float, decimal: str) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{decimal}{ms % 1000:03d}"


def _srt(cues, decorate=lambda i, text: text) -> str:
    return "\n".join(f"{i}\n{_clock(s, ',')} --> {_clock(e, ',')}\n{decorate(i, t)}\n" for i, (s, e, t) in enumerate(cues, 1))


def _vtt(cues) -> str:
    body = "\n".join(f"{_clock(s, '.')} --> {_clock(e, '.')}\n{t}\n" for s, e, t in cues)
    return f"WEBVTT\nKind: captions\n\nNOTE made for galwhisper's tests\n\n{body}"


def _rolling_vtt(cues) -> str:
    """YouTube's automatic-caption layout: each line is spoken word by word in one cue, stays as
    the top line of the next, and a ~10 ms cue repeats it in between."""
    blocks, previous = ["WEBVTT\nKind: captions\nLanguage: gl\n"], ""
    for s, e, text in cues:
        first, *rest = text.split()
        step = (e - s) / (len(rest) + 1)
        timed = first + "".join(f"<{_clock(s + (k + 1) * step, '.')}><c> {w}</c>" for k, w in enumerate(rest))
        blocks.append(f"{_clock(s, '.')} --> {_clock(e, '.')} align:start position:0%\n{previous}\n{timed}\n".replace("\n\n", "\n "))
        blocks.append(f"{_clock(e, '.')} --> {_clock(e + 0.01, '.')} align:start position:0%\n{text}\n \n")
        previous = text
    return "\n".join(blocks)


def _page(title: str, videos: list[tuple[str, list[tuple[str, str]]]], extra: str = "") -> str:
    tags = "".join(
        f'<video controls src="{src}">' + "".join(f'<track kind="subtitles" srclang="{lang}" src="{track}">' for lang, track in tracks) + "</video>"
        for src, tracks in videos
    )
    return f"<!doctype html><html><head><title>{title}</title></head><body>{tags}{extra}</body></html>"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """The served folder, a local folder of media + subtitles, and the cues each video must give."""
    root = tmp_path_factory.mktemp("harvest-site")
    web, local, work = root / "web", root / "local", root / "work"
    for folder in (web, local, work):
        folder.mkdir()
    expected = {}

    # A: a page with one video, Galician and Spanish tracks, and a licence link.
    wav, cues = _recording(work, "a", [[GOOD[0], GOOD[1]], [GOOD[2], GOOD[3]]])
    _video(wav, web / "a.webm")
    (web / "a.gl.vtt").write_text(_vtt(cues), encoding="utf-8")
    (web / "a.es.vtt").write_text(_vtt([(s, e, "Texto en castelán.") for s, e, _ in cues]), encoding="utf-8")
    licence = "https://creativecommons.org/licenses/by/4.0/"
    (web / "a.html").write_text(_page("Vídeo A", [("a.webm", [("gl", "a.gl.vtt"), ("es", "a.es.vtt")])],
                                      f'<a rel="license" href="{licence}">CC BY 4.0</a>'), encoding="utf-8")
    expected["a"] = cues

    # B and C: a playlist-like page with two videos (mp4 + SRT track, webm + VTT track); B's SRT
    # carries markup, speaker dashes and sound markers that must not reach the text.
    wav, cues_b = _recording(work, "b", [[GOOD[4]], [GOOD[5]]])
    _video(wav, web / "b.mp4")
    decorate = {1: lambda t: f"- <i>{t}</i> (risas)", 2: lambda t: f"[Música]\n♪ la la la ♪ {t}"}
    (web / "b.gl.srt").write_text(_srt(cues_b, lambda i, t: decorate[i](t)), encoding="utf-8")
    wav, cues_c = _recording(work, "c", [[GOOD[6], GOOD[7]]])
    _video(wav, web / "c.webm")
    (web / "c.gl.vtt").write_text(_vtt(cues_c), encoding="utf-8")
    (web / "list.html").write_text(_page("Lista", [("b.mp4", [("gl", "b.gl.srt")]), ("c.webm", [("gl", "c.gl.vtt")])]), encoding="utf-8")
    expected["b"], expected["c"] = cues_b, cues_c

    # D: a track SHIFT seconds late, so each cue's text belongs to the audio before it.
    wav, cues_d = _recording(work, "d", [[text] for text in SHIFTED])
    _video(wav, web / "d.webm")
    (web / "d.gl.vtt").write_text(_vtt([(s + SHIFT, e + SHIFT, t) for s, e, t in cues_d]), encoding="utf-8")
    (web / "d.html").write_text(_page("Desfasado", [("d.webm", [("gl", "d.gl.vtt")])]), encoding="utf-8")

    # E and F: a local folder of media with subtitles of the same stem (F: rolling captions).
    wav, cues_e = _recording(work, "e", [[GOOD[8]], [GOOD[9]]])
    _video(wav, local / "e.mp4")
    (local / "e.srt").write_text(_srt(cues_e), encoding="utf-8")
    wav, cues_f = _recording(work, "f", [[GOOD[10], GOOD[11], GOOD[12]]])
    shutil.copy(wav, local / "f.wav")
    (local / "f.gl.vtt").write_text(_rolling_vtt(cues_f), encoding="utf-8")
    (local / "notes.txt").write_text("not media", encoding="utf-8")
    # G: a track that drifts: its first cue is right, the later ones SHIFT seconds late.
    wav, cues_g = _recording(work, "g", [[GOOD[0]], [SHIFTED[1]], [SHIFTED[2]], [SHIFTED[3]]])
    shutil.copy(wav, local / "g.wav")
    (local / "g.srt").write_text(_srt(cues_g[:1] + [(s + SHIFT, e + SHIFT, t) for s, e, t in cues_g[1:]]), encoding="utf-8")
    expected["e"], expected["f"] = cues_e, cues_f

    # Bad inputs.
    (web / "nosubs.html").write_text(_page("Sen subtítulos", [("a.webm", [])]), encoding="utf-8")
    (web / "other.html").write_text(_page("Outras linguas", [("a.webm", [("es", "a.es.vtt"), ("en", "a.es.vtt")])]), encoding="utf-8")
    broken = "WEBVTT\n\n00:00:00.500 --> 00:00:03.000\nBo día.\n\n00:00:04.000 --> 00:00:0x.000\nBoa noite.\n"
    (web / "broken.vtt").write_text(broken, encoding="utf-8")  # the bad timing is line 6
    (web / "broken.html").write_text(_page("Roto", [("a.webm", [("gl", "broken.vtt")])]), encoding="utf-8")
    (web / "corrupt.webm").write_bytes(b"\x1aE\xdf\xa3" + os.urandom(20000))
    (web / "corrupt.html").write_text(_page("Corrupto", [("corrupt.webm", [("gl", "a.gl.vtt")])]), encoding="utf-8")
    (web / "empty-list.html").write_text(_page("Lista baleira", [("a.webm", []), ("b.mp4", [("fr", "a.es.vtt")])]), encoding="utf-8")
    return {"web": web, "local": local, "work": work, "expected": expected, "shifted": cues_d, "licence": licence}


@pytest.fixture(scope="module")
def server(site):
    with serve_folder(site["web"]) as base:
        yield base


def _rows(folder: Path) -> list[dict]:
    lines = (folder / "manifest.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def _video_name(row: dict) -> str:
    """Which fixture video a manifest row comes from (list.html's videos are list-1 and list-2)."""
    return {"list-1": "b", "list-2": "c"}.get(row["video_id"], row["video_id"][0])


def _expected_segments(cues, max_gap=1.0):
    """The segments the cue times must give: cues joined across gaps <= max_gap."""
    groups = [[cues[0]]]
    for cue in cues[1:]:
        if cue[0] - groups[-1][-1][1] > max_gap:
            groups.append([])
        groups[-1].append(cue)
    return groups


@pytest.fixture(scope="module")
def harvested(site, server, tmp_path_factory) -> dict:
    """One checked harvest of good sources, the shifted track and two bad sources, in-process."""
    out = tmp_path_factory.mktemp("corpus") / "gl"
    sources = [f"{server}/a.html", f"{server}/list.html", f"{server}/d.html", str(site["local"]),
               f"{server}/nosubs.html", f"{server}/gone.html"]
    started = time.perf_counter()
    proc = run_main("harvest", *sources, "--out", str(out), "--allow-private-urls")
    return {"out": out, "proc": proc, "sources": sources, "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------------------------------------
# The harvest


def test_good_sources_are_harvested_and_bad_ones_reported(harvested, server):
    proc, out = harvested["proc"], harvested["out"]
    errors = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr  # two sources failed ...
    assert len(errors) == 2 and all(line.startswith("galwhisper: error: ") for line in errors), proc.stderr
    assert f"{server}/nosubs.html: no subtitles" in errors[0]
    assert f"{server}/gone.html: not found (HTTP 404)" in errors[1]
    summary = json.loads((out / "harvest.json").read_text())  # ... and the others were harvested
    assert set(summary["errors"]) == {f"{server}/nosubs.html", f"{server}/gone.html"}
    assert summary["sources"][f"{server}/list.html"]["videos"] == 2
    assert summary["totals"]["videos"] == 7
    assert "segments kept" in proc.stdout


def test_manifest_rows_are_the_cues(harvested, site):
    """Every good segment is kept, its sentence is its cues' text (cleaned of markup, dashes,
    markers and rolling repeats), its times are the cue times, and its clip is that audio."""
    out, rows = harvested["out"], _rows(harvested["out"])
    assert list(rows[0]) == ["path", "sentence", "split", "source", "video_id", "start", "end", "cer", "licence", "segments"]
    by_video = {}
    for row in rows:
        by_video.setdefault(_video_name(row), []).append(row)
    assert sorted(by_video) == ["a", "b", "c", "e", "f"]  # d and g: their tracks are out of sync
    for name, cues in site["expected"].items():
        groups = _expected_segments(cues)
        got = sorted(by_video[name], key=lambda r: float(r["start"]))
        assert [r["sentence"] for r in got] == [" ".join(t for _, _, t in g) for g in groups], name
        for row, group in zip(got, groups):
            start, end = float(row["start"]), float(row["end"])
            assert start == pytest.approx(group[0][0], abs=0.002) and end == pytest.approx(group[-1][1], abs=0.002)
            assert json.loads(row["segments"]) == [[pytest.approx(s - start, abs=0.002), pytest.approx(e - start, abs=0.002), t]
                                                   for s, e, t in group]
            info = sf.info(str(out / row["path"]))
            assert (info.samplerate, info.channels) == (16000, 1)
            assert info.duration == pytest.approx(end - start, abs=0.002)
            assert 0 <= float(row["cer"]) <= 0.6
    assert {r["licence"] for r in by_video["a"]} == {site["licence"]}
    assert {r["licence"] for r in rows if r not in by_video["a"]} == {""}
    assert len(by_video["f"]) == 1 and by_video["f"][0]["sentence"].count(GOOD[10]) == 1  # rolling lines once


def test_splits_are_by_video(harvested):
    splits = {}
    for row in _rows(harvested["out"]):
        splits.setdefault((row["source"], row["video_id"]), set()).add(row["split"])
    assert all(len(s) == 1 and s <= {"train", "validation", "test"} for s in splits.values()), splits


def test_shifted_track_is_caught_by_the_check(harvested, site, server, tmp_path):
    summary = json.loads((harvested["out"] / "harvest.json").read_text())
    shifted = summary["sources"][f"{server}/d.html"]
    assert shifted["segments_kept"] == 0
    dropped = [line.split("\t") for line in (harvested["out"] / "dropped.tsv").read_text().splitlines()[1:]]
    reasons = [row[4] for row in dropped if row[0] == f"{server}/d.html"]
    assert reasons and "over_max_cer" in reasons and set(reasons) <= {"over_max_cer", "track_out_of_sync", "past_audio_end"}
    assert min(float(row[5]) for row in dropped if row[0] == f"{server}/d.html" and row[5]) > 0.6 or "track_out_of_sync" in reasons
    # Without the check the same track is kept: it is the model that caught it.
    proc = run_main("harvest", f"{server}/d.html", "--out", str(tmp_path / "unchecked"), "--no-check", "--allow-private-urls")
    assert proc.returncode == 0, proc.stderr
    assert len(_rows(tmp_path / "unchecked")) >= 3


def test_a_mostly_failing_track_is_dropped_whole(harvested):
    """A drifting track: its first segment passes the check, but most fail, so the video goes."""
    dropped = [line.split("\t") for line in (harvested["out"] / "dropped.tsv").read_text().splitlines()[1:]]
    drifting = sorted((float(row[2]), row[4], row[5]) for row in dropped if row[1] == "g")
    assert [reason for _, reason, _ in drifting] == ["track_out_of_sync", "over_max_cer", "over_max_cer", "past_audio_end"]
    assert float(drifting[0][2]) <= 0.6 < min(float(drifting[1][2]), float(drifting[2][2]))


def test_prepare_reads_the_manifest(harvested, tmp_path):
    from galwhisper.prepare import PrepareConfig, load_split, prepare

    out = harvested["out"]
    rows = _rows(out)
    summary = prepare(PrepareConfig(source=f"manifest:{out / 'manifest.tsv'}", out_dir=tmp_path / "features", num_proc=1),
                      progress=False)
    prepared = [s for split in summary["splits"] for s in load_split(tmp_path / "features", split)["sentence"]]
    assert sorted(prepared) == sorted(r["sentence"] for r in rows)
    assert set(summary["splits"]) == {r["split"] for r in rows}
    assert sum(info["skipped"] for info in summary["splits"].values()) == 0


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the input and what is wrong, nothing half-written


@pytest.mark.parametrize("page, needles", [
    ("other.html", ["no subtitles in gl; found only: en, es"]),
    ("broken.html", ["broken.vtt: line 6: not a cue timing"]),
    ("corrupt.html", ["corrupt.webm", "not readable audio"]),
    ("empty-list.html", ["empty-list.html: none of its 2 videos is usable", "no subtitles"]),
])  # fmt: skip
def test_bad_pages(page, needles, server, tmp_path):
    out = tmp_path / "out"
    proc = run_main("harvest", f"{server}/{page}", "--out", str(out), "--no-check", "--allow-private-urls")
    assert_one_line_error(proc, *needles)
    assert not (out / "clips").exists() or not any((out / "clips").iterdir())
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp") or p.name.endswith(".tmp")]
    assert _rows(out) == []


def test_bad_local_files(site, tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy(site["local"] / "e.mp4", folder / "e.mp4")
    (folder / "e.srt").write_text("1\n00:00:00,500 --> 00:00:02,000\nBo día.\n\nIsto non é unha legenda\n", encoding="utf-8")
    proc = run_main("harvest", str(folder / "e.mp4"), "--out", str(tmp_path / "o1"), "--no-check")
    assert_one_line_error(proc, f"{folder / 'e.srt'}: line 5: expected a cue number or a cue timing")
    (folder / "bad.mp4").write_bytes(os.urandom(5000))
    proc = run_main("harvest", str(folder / "bad.mp4"), "--subs", str(site["local"] / "e.srt"), "--out", str(tmp_path / "o2"), "--no-check")
    assert_one_line_error(proc, f"{folder / 'bad.mp4'}: not a readable audio/video file")
    (folder / "g.wav").write_bytes((site["local"] / "f.wav").read_bytes())
    (folder / "g.es.srt").write_text(_srt([(0.5, 2.0, "Hola.")]), encoding="utf-8")
    proc = run_main("harvest", str(folder / "g.wav"), "--out", str(tmp_path / "o3"), "--no-check")
    assert_one_line_error(proc, f"{folder / 'g.wav'}: no subtitles in gl; found only: es")
    proc = run_main("harvest", str(tmp_path / "missing"), "--out", str(tmp_path / "o4"), "--no-check")
    assert_one_line_error(proc, "missing: not found")


def test_refused_options(tmp_path):
    for args, needle in [
        (["x.mp4", "--max-cer", "-1"], "--max-cer -1.0: must be above 0"),
        (["x.mp4", "--min-seconds", "5", "--max-seconds", "4"], "--min-seconds 5.0: must be below --max-seconds 4"),
        (["x.mp4", "--max-seconds", "40"], "--max-seconds 40.0: must be at most 30"),
        (["x.mp4", "--validation-ratio", "0.5", "--test-ratio", "0.5"], "leaves no videos for training"),
        (["x.mp4", "--language", "xx"], "--language xx: not a Whisper language"),
        (["x.mp4", "y.mp4", "--subs", "x.srt"], "--subs x.srt: takes exactly one SOURCE"),
    ]:
        assert_one_line_error(run_main("harvest", *args, "--out", str(tmp_path / "o")), needle)


def test_max_videos_and_settings_are_kept(server, tmp_path):
    out = tmp_path / "out"
    proc = run_main("harvest", f"{server}/list.html", "--max-videos", "1", "--out", str(out), "--no-check", "--allow-private-urls")
    assert proc.returncode == 0, proc.stderr
    assert {r["video_id"] for r in _rows(out)} == {"list-1"}
    proc = run_main("harvest", f"{server}/list.html", "--out", str(out), "--max-gap", "2", "--no-check", "--allow-private-urls")
    assert_one_line_error(proc, "was harvested with other settings (--max-gap 1.0 -> 2.0)")


# ---------------------------------------------------------------------------------------------
# Resume after SIGKILL


class _HeldHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site, but holds requests under /held/ until the test lets them go."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.startswith("/held/"):
            self.server.requested.set()
            self.server.release.wait(60)
            self.path = self.path[len("/held"):]
        super().do_GET()

    def log_message(self, *args):
        pass


def test_resume_after_kill(site, tmp_path):
    (site["web"] / "held.html").write_text(_page("Retida", [("held/c.webm", [("gl", "c.gl.vtt")])]), encoding="utf-8")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_HeldHandler, directory=str(site["web"])))
    httpd.requested, httpd.release = threading.Event(), threading.Event()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    out = tmp_path / "out"
    args = ["harvest", f"{base}/a.html", f"{base}/held.html", "--out", str(out), "--no-check", "--allow-private-urls"]
    try:
        child = subprocess.Popen([sys.executable, "-m", "galwhisper.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not httpd.requested.is_set() and child.poll() is None and time.monotonic() < deadline:
            httpd.requested.wait(0.2)
        assert httpd.requested.is_set(), child.stderr.read().decode() if child.poll() is not None else "timed out"
        child.send_signal(signal.SIGKILL)  # killed while downloading the second source
        child.wait(10)
        first = _rows(out)
        assert first and {r["source"] for r in first} == {f"{base}/a.html"}
        clips = {p: p.stat().st_mtime_ns for p in (out / "clips").rglob("*.wav")}
        stale = list(Path(tempfile.gettempdir()).glob(f"galwhisper-harvest-{child.pid}-*"))
        assert stale  # the killed run's download folder, to be removed by the next run

        httpd.release.set()
        proc = run_main(*args)
        assert proc.returncode == 0, proc.stderr
    finally:
        httpd.release.set()
        httpd.shutdown()
    summary = json.loads((out / "harvest.json").read_text())
    assert summary["run"]["sources_skipped"] == 1 and summary["run"]["videos_harvested"] == 1
    assert {p: p.stat().st_mtime_ns for p in clips} == clips  # the finished source was not redone
    assert len(_rows(out)) == len(first) + len(_expected_segments(site["expected"]["c"]))
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp") or p.name.endswith(".tmp")]
    assert not any(p.exists() for p in stale)


# ---------------------------------------------------------------------------------------------
# Tracks, parsing and segmenting (no model)


def test_track_choice_takes_human_subtitles_and_never_translations():
    track = lambda ext: {"ext": ext, "url": f"https://example.org/t.{ext}"}  # noqa: E731
    youtube = {"subtitles": {"gl-ES": [track("json3"), track("vtt")], "gl-en": [track("vtt")]},
               "automatic_captions": {"gl-orig": [track("vtt")], "gl": [track("vtt")]}}
    assert choose_track(youtube, "v", "gl", auto_subs=False) == ("https://example.org/t.vtt", False)
    automatic_only = {"automatic_captions": youtube["automatic_captions"]}
    with pytest.raises(GalwhisperError, match="v: only automatic captions in gl; pass --auto-subs"):
        choose_track(automatic_only, "v", "gl", auto_subs=False)
    assert choose_track(automatic_only, "v", "gl", auto_subs=True) == ("https://example.org/t.vtt", True)
    translated = {"automatic_captions": {"en-orig": [track("vtt")], "en": [track("vtt")], "gl": [track("vtt")]}}
    with pytest.raises(GalwhisperError, match=r"found only: en \(automatic\) \(gl automatic captions are machine translations"):
        choose_track(translated, "v", "gl", auto_subs=True)
    with pytest.raises(GalwhisperError, match="v: subtitles in gl only as srv3, ttml"):
        choose_track({"subtitles": {"gl": [track("srv3"), track("ttml")]}}, "v", "gl", auto_subs=False)



def test_srt_and_vtt_parse_to_the_same_clean_cues():
    srt = ("1\r\n00:00:01,000 --> 00:00:02,500\r\n- <i>Bo día.</i>\r\n- XOÁN: Ola!\r\n\r\n"
           "2\r\n00:00:03,000 --> 00:00:04,000 X1:10 X2:20\r\n[MÚSICA]\r\n\r\n"
           "3\r\n00:00:04,200 --> 00:00:06,000\r\n{\\an8}Que tal &amp; (risas) ♪ tra la ♪ ben?\r\n")
    vtt = ("\ufeffWEBVTT - proba\n\nSTYLE\n::cue { color: yellow }\n\nNOTE isto é un comentario\n\n"
           "intro\n00:01.000 --> 00:02.500 align:start\n<v Xoán>- Bo día.</v>\n- Ola!\n\n"
           "00:03.000 --> 00:04.000\n♪♪\n\n00:04.200 --> 00:06.000\nQue tal &amp; ben?\n")
    expected = [Cue(1.0, 2.5, "Bo día. Ola!"), Cue(4.2, 6.0, "Que tal & ben?")]
    assert clean_cues(parse_subtitles(srt, "x.srt")) == expected
    assert clean_cues(parse_subtitles(vtt, "x.vtt")) == expected
    label_alone = "\n\nWEBVTT\n\n00:01.000 --> 00:02.000\nXOÁN:\nBo día.\n"
    assert clean_cues(parse_subtitles(label_alone, "y.vtt")) == [Cue(1.0, 2.0, "Bo día.")]


def test_rolling_captions_give_each_line_once(site):
    cues = site["expected"]["f"]
    parsed = clean_cues(parse_subtitles(_rolling_vtt(cues), "f.vtt"))
    assert [c.text for c in parsed] == [t for _, _, t in cues]
    assert [(c.start, c.end) for c in parsed] == [(pytest.approx(s, abs=1e-3), pytest.approx(e, abs=1e-3)) for s, e, _ in cues]


@pytest.mark.parametrize("text, needle", [
    ("1\n00:00:01,000 --> 00:00:00,500\nAtrás.\n", "x.srt: line 2: the cue ends before it starts"),
    ("1\n00:00:01,000 --> 00:61:00,000\nMal.\n", "x.srt: line 2: not a cue timing"),
    ("<html><body>Not found</body></html>\n", "x.srt: line 1: expected a cue number or a cue timing"),
    ("Ola, isto é texto.\n\nMáis texto.\n", "x.srt: line 1: expected a cue number"),
    ("", "x.srt: is empty"),
    ("WEBVTT\n\n", "x.srt: line 1: not SRT or WebVTT"),
])  # fmt: skip
def test_unparsable_subtitles_name_file_and_line(text, needle):
    with pytest.raises(GalwhisperError, match=None) as caught:
        parse_subtitles(text, "x.srt")
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_segments_join_cues_at_boundaries_and_never_cut_one():
    cues = [Cue(0.0, 2.0, "a"), Cue(2.5, 5.0, "b"), Cue(6.5, 8.0, "c"), Cue(8.2, 40.0, "long"),
            Cue(41.0, 55.0, "d"), Cue(55.5, 70.0, "e"), Cue(70.2, 71.5, "f")]
    segments, too_long = merge_cues(cues, max_gap=1.0, max_seconds=30.0)
    assert [[c.text for c in s.cues] for s in segments] == [["a", "b"], ["c"], ["d", "e"], ["f"]]
    assert [s.cues[0].text for s in too_long] == ["long"]
    assert all(s.end - s.start <= 30.0 for s in segments)


def test_config_is_checked_in_one_place(tmp_path):
    with pytest.raises(GalwhisperError, match="--max-gap -1: must be at least 0"):
        HarvestConfig(sources=("x",), out_dir=tmp_path, max_gap=-1)
    config = HarvestConfig(sources=["x", "x", " y "], out_dir=str(tmp_path), language="Galician")
    assert config.sources == ("x", "y") and config.language == "gl" and config.out_dir == tmp_path
