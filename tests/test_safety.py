"""Nothing lost, nothing let in: data-safety regressions and bad options refused before any work.

Every case runs the real CLI (or the real function) on real files; each bad option must give
exactly one stderr line and exit status 2 (conftest.assert_one_line_error), before any work.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import GALICIAN, assert_one_line_error, ffmpeg, free_port, run_cli, run_main, speak
from galwhisper import media
from galwhisper.errors import GalwhisperError
from galwhisper.files import clean_stale_tempdirs, private_tempdir
from galwhisper.prepare import MARKER, PrepareConfig, prepare


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("safety-clips")
    return [speak(text, folder / f"c{i}.wav") for i, text in enumerate(GALICIAN)]


def write_manifest(path: Path, rows: list[tuple[Path, str, str]]) -> Path:
    path.write_text("path\tsentence\tsplit\n" + "".join(f"{p}\t{s}\t{split}\n" for p, s, split in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# A. Data loss and escapes


def test_split_named_dotdot_never_touches_the_parent(tmp_path, clips):
    parent = tmp_path / "parent"
    out = parent / "features"
    out.mkdir(parents=True)
    keep = parent / "precious.txt"
    keep.write_text("user data")
    manifest = write_manifest(tmp_path / "m.tsv", [(clips[0], GALICIAN[0], ".."), (clips[1], GALICIAN[1], "train")])
    proc = run_cli("prepare", "--source", f"manifest:{manifest}", "--out", str(out))
    assert_one_line_error(proc, "split '..'", "not a safe name")
    assert keep.read_text() == "user data" and out.is_dir()
    assert sorted(p.name for p in parent.iterdir()) == ["features", "precious.txt"]


class _Redirector(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(302)
        self.send_header("Location", self.server.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def redirect_to():
    """start(target) -> URL of a local server that answers every GET with 302 -> target."""
    servers = []

    def start(target: str) -> str:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
        httpd.target = target
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/talk.webm"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def listener():
    """A TCP socket that records whether anything connected to it (a stand-in FTP server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    sock.settimeout(0.2)
    yield sock
    sock.close()


def _connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except OSError:
        return False
    conn.close()
    return True


def test_redirect_to_ftp_is_refused_and_never_followed(redirect_to, listener):
    ftp = f"ftp://127.0.0.1:{listener.getsockname()[1]}/secret.wav"
    url = redirect_to(ftp)
    proc = run_cli("transcribe", url, "--allow-private-urls")
    assert_one_line_error(proc, url, "redirect refused", "only http(s)")
    assert not _connected(listener), "the FTP target was contacted"


def test_redirect_to_a_private_address_is_refused():
    """The redirect hook itself, as yt-dlp's opener calls it: a public page redirecting inside."""
    import urllib.request

    handler = media._GuardedRedirectHandler(allow_private=False)
    request = urllib.request.Request("http://93.184.216.34/page")
    for target in ("http://127.0.0.1:8080/x", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/a.mp3"):
        with pytest.raises(media.Refused, match="redirect refused: .*non-public address"):
            handler.redirect_request(request, None, 302, "Found", {}, target)
    allowed = media._GuardedRedirectHandler(allow_private=True).redirect_request(request, None, 302, "Found", {}, "http://127.0.0.1/x")
    assert allowed.full_url == "http://127.0.0.1/x"


def test_private_urls_are_refused_unless_allowed(tmp_path):
    for url in ("http://127.0.0.1:9/a.mp3", "http://localhost/a.mp3", "http://169.254.169.254/latest/", "http://[::1]/a.wav"):
        assert_one_line_error(run_main("transcribe", url), url, "non-public address", "--allow-private-urls")


def test_connect_time_check_sees_the_real_address(listener):
    """A name checked while it resolved to a public address cannot then connect inside: the
    audit hook refuses the socket's connect to a loopback address in a download thread."""
    port = listener.getsockname()[1]
    with media._public_only("http://example.test/x", enabled=True):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        assert "non-public address (127.0.0.1)" in media._POLICY.refused
    socket.create_connection(("127.0.0.1", port), timeout=2).close()  # outside the guard: allowed
    assert _connected(listener)


def test_same_stem_inputs_each_get_their_own_file(tmp_path, clips):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = ffmpeg(clips[0], tmp_path / "a" / "x.wav")
    second = ffmpeg(clips[1], tmp_path / "b" / "x.wav")
    mp3 = ffmpeg(clips[2], tmp_path / "good.mp3")
    wav = ffmpeg(clips[3], tmp_path / "good.wav")
    out = tmp_path / "o"
    proc = run_cli("transcribe", str(first), str(second), str(mp3), str(wav), "--format", "json", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    written = {p.name: json.loads(p.read_text())["source"] for p in out.iterdir()}
    assert written == {"x.json": str(first), "x-2.json": str(second), "good.mp3.json": str(mp3), "good.wav.json": str(wav)}


def test_changed_manifest_is_prepared_again(tmp_path, clips):
    manifest = write_manifest(tmp_path / "m.tsv", [(c, t, "train") for c, t in zip(clips[:2], GALICIAN)])
    config = PrepareConfig(source=f"manifest:{manifest}", out_dir=tmp_path / "f")
    assert prepare(config, progress=False)["splits"]["train"]["clips"] == 2
    write_manifest(manifest, [(c, t, "train") for c, t in zip(clips, GALICIAN)])  # grown to 5 rows
    assert prepare(config, progress=False)["splits"]["train"]["clips"] == 5
    marker = json.loads((tmp_path / "f" / "train" / MARKER).read_text())
    assert marker["kept"] == 5
    # An audio file replaced in place (same manifest) is noticed too.
    ffmpeg(clips[4], tmp_path / "replacement.wav")
    os.replace(tmp_path / "replacement.wav", clips[0])
    summary = prepare(config, progress=False)
    assert summary["splits"]["train"]["clips"] == 5
    assert json.loads((tmp_path / "f" / "train" / MARKER).read_text())["key"] != marker["key"]


def test_output_places_are_checked_before_any_work(tmp_path, clips, tiny_prepared):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert_one_line_error(run_cli("transcribe", str(clips[0]), "--format", "txt", "--output-dir", str(a_file)),
                          "--output-dir", "not a folder")
    assert_one_line_error(run_cli("evaluate", "--model", "base", "--data", str(tiny_prepared), "--out", str(a_file)),
                          "--out", "not a folder")
    assert_one_line_error(run_cli("evaluate", "--model", "base", "--data", str(tiny_prepared), "--json", str(tmp_path)),
                          "--json", "is a folder")
    manifest = write_manifest(tmp_path / "m.tsv", [(clips[0], GALICIAN[0], "train")])
    assert_one_line_error(run_cli("prepare", "--source", f"manifest:{manifest}", "--out", str(a_file)), "--out", "not a folder")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        assert_one_line_error(run_cli("transcribe", str(clips[0]), "--format", "txt", "--output-dir", str(locked)),
                              "not writable")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigkilled_prepare_leaves_no_workers(tmp_path, clips):
    many = [(clips[i % 5], GALICIAN[i % 5], "train") for i in range(400)]
    manifest = write_manifest(tmp_path / "m.tsv", many)
    proc = subprocess.Popen([sys.executable, "-m", "galwhisper.cli", "prepare", "--source", f"manifest:{manifest}",
                             "--out", str(tmp_path / "f"), "--num-proc", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.monotonic() + 120, []
    while time.monotonic() < deadline and len(workers) < 2:
        assert proc.poll() is None, "prepare ended before its workers were seen"
        workers = _children(proc.pid)
        time.sleep(0.05)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.05)
    assert not [w for w in workers if _alive(w)], "pool workers outlived their parent"


def test_stale_temp_folders_of_dead_processes_are_removed():
    mine = private_tempdir("app")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = mine.parent / f"galwhisper-app-{int(dead.stdout)}-old"
    stale.mkdir()
    (stale / "a.srt").write_text("x")
    assert clean_stale_tempdirs() >= 1
    assert not stale.exists() and mine.is_dir()  # this process is alive: its folder stays
    mine.rmdir()


def test_app_removes_its_temp_folder_when_stopped(tmp_path):
    port = free_port()
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "galwhisper.cli", "app", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(tmp_path.glob(f"galwhisper-app-{proc.pid}-*")):
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        assert list(tmp_path.glob(f"galwhisper-app-{proc.pid}-*"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert not list(tmp_path.glob("galwhisper-app-*"))


# ---------------------------------------------------------------------------------------------
# B. Every bad option refused before work: one line, exit 2


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, clips) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    (root / "bad-config").mkdir()
    (root / "bad-config" / "config.json").write_text('{"model_type": "whisper", ')
    (root / "bad-bin").mkdir()
    (root / "bad-bin" / "model.bin").write_bytes(b"\x00garbage" * 100)
    (root / "truncated-bin").mkdir()
    (root / "truncated-bin" / "model.bin").write_bytes(struct.pack("<IH", 6, 12) + b"Whisper")
    for name, text in (("corrupt-prep", "{not json"), ("empty-prep", "")):
        (root / name).mkdir()
        (root / name / "prepare.json").write_text(text)
    rows = "".join(f"{clips[i % 5]}\tFrase número {i} en galego.\n" for i in range(200))
    (root / "latin1.tsv").write_bytes(("path\tsentence\n" + rows).encode() + f"{clips[0]}\tCami\xf1o\n".encode("latin-1"))
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "color=c=black:s=64x64:d=2",
                    "-c:v", "libx264", str(root / "silent.mp4")], check=True)
    return root


BAD_OPTIONS = [
    (["prepare", "--source", "synthetic", "--out", "{tmp}/o", "--language", "xx"], "--language xx"),
    (["train", "--features", "{tmp}", "--out", "{tmp}/r", "--language", "xx"], "--language xx"),
    (["evaluate", "--model", "base", "--data", "{tmp}", "--language", "xx"], "--language xx"),
    (["transcribe", "{clip}", "--language", "xx"], "--language xx"),
    (["app", "--language", "xx"], "--language xx"),
    (["train", "--features", "{tmp}", "--out", "{tmp}/r", "--batch-size", "0"], "--batch-size 0"),
    (["evaluate", "--model", "base", "--data", "{tmp}", "--batch-size", "0"], "--batch-size 0"),
    (["transcribe", "{clip}", "--beam-size", "0"], "--beam-size 0"),
    (["evaluate", "--model", "base", "--data", "{tmp}", "--beam-size", "0"], "--beam-size 0"),
    (["train", "--features", "{tmp}", "--out", "{tmp}/r", "--max-steps", "-1"], "--max-steps -1"),
    (["train", "--features", "{tmp}", "--out", "{tmp}/r", "--eval-steps", "0"], "--eval-steps 0"),
    (["train", "--features", "{tmp}", "--out", "{tmp}/r", "--learning-rate", "-1"], "--learning-rate -1"),
    (["train", "--features", "{tmp}", "--out", "{tmp}/r", "--lr-scheduler", "bogus"], "--lr-scheduler bogus"),
    (["prepare", "--source", "synthetic", "--out", "{tmp}/o", "--max-seconds", "0"], "--max-seconds 0"),
    (["transcribe", "{clip}", "--max-download-mb", "-5"], "--max-download-mb -5"),
    (["app", "--max-download-mb", "-5"], "--max-download-mb -5"),
    (["transcribe", "{clip}", "--batch-size", "abc"], "--batch-size: invalid int value"),
    (["transcribe", "{clip}", "--compute-type", "int3"], "--compute-type int3"),
]


@pytest.mark.parametrize("argv,needle", BAD_OPTIONS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_OPTIONS])
def test_bad_option_is_one_line(argv, needle, tmp_path, clips):
    """In this process (the refusal comes before any work), except `app`, which would serve
    if it were not refused: that runs as a real process with a time limit."""
    args = [a.format(tmp=tmp_path, clip=clips[0]) for a in argv]
    proc = run_cli(*args, timeout=120) if args[0] == "app" else run_main(*args)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists(), "work started before the refusal"


def test_the_real_command_refuses_in_one_line(clips):
    """The same rule through the installed console script, as the user runs it."""
    proc = subprocess.run([str(Path(sys.executable).parent / "galwhisper"), "transcribe", str(clips[0]), "--language", "xx"],
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, "--language xx")


def test_damaged_model_folders(bad_inputs, clips):
    assert_one_line_error(run_main("transcribe", str(clips[0]), "--model", str(bad_inputs / "bad-config")),
                          "config.json", "damaged")
    assert_one_line_error(run_main("transcribe", str(clips[0]), "--model", str(bad_inputs / "bad-bin")),
                          "model.bin", "not a CTranslate2 model")
    assert_one_line_error(run_main("transcribe", str(clips[0]), "--model", str(bad_inputs / "truncated-bin")), "model.bin")
    assert_one_line_error(run_main("evaluate", "--model", str(bad_inputs / "bad-bin"), "--data", str(bad_inputs / "x")),
                          "model.bin")


def test_damaged_prepare_json(bad_inputs, tmp_path):
    for name in ("corrupt-prep", "empty-prep"):
        folder = bad_inputs / name
        assert_one_line_error(run_main("train", "--features", str(folder), "--out", str(tmp_path / name)),
                              "prepare.json", "not readable JSON")
        assert_one_line_error(run_main("evaluate", "--model", "base", "--data", str(folder)), "prepare.json")


def test_manifest_with_a_late_non_utf8_byte(bad_inputs, tmp_path):
    proc = run_cli("prepare", "--source", f"manifest:{bad_inputs / 'latin1.tsv'}", "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "latin1.tsv: line 202 is not UTF-8 text")


def test_video_without_audio(bad_inputs):
    path = bad_inputs / "silent.mp4"
    assert_one_line_error(run_cli("transcribe", str(path)), str(path), "has no audio stream")


def test_app_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert_one_line_error(run_cli("app", "--port", str(port), timeout=120), f"--port {port}: already in use")
