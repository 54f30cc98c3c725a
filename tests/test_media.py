"""Real, offline tests of galwhisper.media: real media files made with ffmpeg, served over real
HTTP on 127.0.0.1, fetched with real yt-dlp and converted with real ffmpeg."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf

from conftest import free_port, serve_folder
from galwhisper.audio import SAMPLE_RATE, load_audio
from galwhisper.errors import GalwhisperError
from galwhisper.media import (
    DownloadLimits,
    MediaInfo,
    _check_info,
    _error_message,
    check_url,
    download_audio,
    fetched_audio,
    is_url,
)

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")
LOCAL = DownloadLimits(allow_private_urls=True)  # the test servers listen on 127.0.0.1


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """speech.wav (espeak-ng if available, else a tone) plus .webm (opus) and .mp4 (aac) copies."""
    folder = tmp_path_factory.mktemp("media")
    wav = folder / "speech.wav"
    text = "Bos días. Isto é unha proba do recoñecemento de fala en galego."
    spoken = shutil.which("espeak-ng") and not subprocess.run(
        ["espeak-ng", "-w", str(wav), text], capture_output=True  # default voice: gl is rarely installed
    ).returncode
    if not spoken:
        _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=3", str(wav))
    _ffmpeg("-i", str(wav), "-c:a", "libopus", str(folder / "speech.webm"))
    _ffmpeg("-i", str(wav), "-c:a", "aac", str(folder / "speech.mp4"))
    (folder / "page.html").write_text(
        "<!doctype html><html><head><title>Sen medios</title></head><body><p>Nada aquí.</p></body></html>"
    )
    return folder


@pytest.fixture(scope="session")
def clip_seconds(media_dir) -> float:
    return sf.info(str(media_dir / "speech.wav")).duration


@pytest.fixture(scope="session")
def server(media_dir):
    """Base URL of a real `python -m http.server` serving media_dir."""
    with serve_folder(media_dir) as base:
        yield base


class _StreamingHandler(http.server.BaseHTTPRequestHandler):
    """Responses http.server cannot make: no Content-Length, a trickle, a hung server."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = self.server.body
        if self.path == "/hang.webm":
            time.sleep(3)
        self.send_response(200)
        self.send_header("Content-Type", "video/webm")
        self.end_headers()  # no Content-Length: the size is unknown until the connection closes
        try:
            if self.path == "/slow.webm":
                for start in range(0, 50 * len(body), 2048):
                    self.wfile.write((body * 50)[start : start + 2048])
                    self.wfile.flush()
                    time.sleep(0.2)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def stream_server(media_dir):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StreamingHandler)
    httpd.daemon_threads = True
    httpd.body = (media_dir / "speech.webm").read_bytes()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _refused(url: str, workdir: Path, limits: DownloadLimits = LOCAL) -> str:
    """Download that must fail; returns the message after checking it is one line naming the URL."""
    with pytest.raises(GalwhisperError) as caught:
        download_audio(url, workdir, limits)
    message = str(caught.value)
    assert "\n" not in message and url in message, message
    return message


def _assert_empty(folder: Path) -> None:
    assert list(folder.iterdir()) == [], f"leftovers: {list(folder.iterdir())}"


# --- successful downloads -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["speech.webm", "speech.mp4", "speech.wav"])
def test_download_gives_16k_mono_wav(server, clip_seconds, tmp_path, capfd, name):
    url = f"{server}/{name}"
    info = download_audio(url, tmp_path, LOCAL)

    assert isinstance(info, MediaInfo)
    assert (info.url, info.title) == (url, "speech")
    assert info.path.parent == tmp_path and info.path.suffix == ".wav"
    header = sf.info(str(info.path))
    assert (header.samplerate, header.channels) == (SAMPLE_RATE, 1)
    audio = load_audio(info.path)
    assert len(audio) / SAMPLE_RATE == pytest.approx(clip_seconds, abs=0.2)
    assert info.duration == pytest.approx(clip_seconds, abs=0.2)
    assert list(tmp_path.iterdir()) == [info.path]  # the temp download folder is gone
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), "yt-dlp or ffmpeg wrote to the terminal"


def test_fetched_audio_cleans_up(server, clip_seconds):
    with fetched_audio(f"{server}/speech.webm", LOCAL) as info:
        assert info.path.is_file()
        assert info.duration == pytest.approx(clip_seconds, abs=0.2)
    assert not info.path.exists() and not info.path.parent.exists()


# --- refused URLs and failed downloads ------------------------------------------------------


def test_404_names_the_status_and_url(server, tmp_path, capfd):
    message = _refused(f"{server}/missing.webm", tmp_path)
    assert "404" in message and "not found" in message
    _assert_empty(tmp_path)
    assert capfd.readouterr() == ("", ""), "yt-dlp printed its error too"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/y.wav", "rtmp://host/live"])
def test_non_http_schemes_refused(url, tmp_path):
    assert is_url(url)
    with pytest.raises(GalwhisperError, match="only http\\(s\\) URLs are supported"):
        check_url(url)
    message = _refused(url, tmp_path)
    assert message == f"{url}: only http(s) URLs are supported"


def test_unreachable_host(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/speech.webm"  # nothing listens there
    assert "unreachable" in _refused(url, tmp_path)
    _assert_empty(tmp_path)


def test_html_page_without_media(server, tmp_path):
    url = f"{server}/page.html"
    assert "no audio or video found" in _refused(url, tmp_path)
    _assert_empty(tmp_path)


def test_size_cap_refused_without_leftovers(server, tmp_path):
    url = f"{server}/speech.webm"
    message = _refused(url, tmp_path, DownloadLimits(max_download_mb=0.01, allow_private_urls=True))
    assert "10000 bytes size limit" in message
    _assert_empty(tmp_path)


def test_size_cap_when_server_sends_no_length(stream_server, tmp_path):
    url = f"{stream_server}/unsized.webm"
    assert "size limit" in _refused(url, tmp_path, DownloadLimits(max_download_mb=0.01, allow_private_urls=True))
    _assert_empty(tmp_path)
    assert download_audio(url, tmp_path, LOCAL).path.is_file()  # and without the cap it downloads


def test_duration_cap_refused(server, tmp_path, clip_seconds):
    url = f"{server}/speech.mp4"
    message = _refused(url, tmp_path, DownloadLimits(max_duration=clip_seconds / 2, allow_private_urls=True))
    assert "duration limit" in message
    _assert_empty(tmp_path)


def test_wall_time_cap_on_slow_download(stream_server, tmp_path):
    url = f"{stream_server}/slow.webm"
    assert "timed out (took longer than 1.5 s)" in _refused(url, tmp_path, DownloadLimits(download_timeout=1.5, allow_private_urls=True))
    _assert_empty(tmp_path)


def test_wall_time_cap_on_hung_server(stream_server, tmp_path):
    url = f"{stream_server}/hang.webm"
    assert "timed out (took longer than 1 s)" in _refused(url, tmp_path, DownloadLimits(download_timeout=1, allow_private_urls=True))
    _assert_empty(tmp_path)


# --- URL helpers and yt-dlp message mapping -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://www.youtube.com/watch?v=abc", True),
        ("HTTP://EXAMPLE.ORG/a.mp3", True),
        ("ftp://x/y.wav", True),
        ("file:///tmp/a.wav", True),
        ("s3+https://bucket/key", True),
        ("/data/clip.wav", False),
        ("clip.wav", False),
        ("C:\\audio\\clip.wav", False),
        ("", False),
    ],
)
def test_is_url(text, expected):
    assert is_url(text) is expected


@pytest.mark.parametrize("url", ["youtube.com/watch?v=x", "http:///nohost.wav"])
def test_check_url_rejects_malformed(url):
    with pytest.raises(GalwhisperError) as caught:
        check_url(url)
    assert url in str(caught.value)


U = "https://www.youtube.com/watch?v=abc123"


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"title": "x", "duration": 7200}, "is 7200 s long, over the 3600 s duration limit"),
        ({"title": "x", "filesize": 600_000_000}, "larger than the 500 MB size limit"),
        ({"title": "x", "is_live": True}, "live stream"),
        ({"_type": "playlist", "title": "x", "entries": []}, "playlist"),
    ],
)
def test_metadata_refused_before_download(info, expected):
    """yt-dlp metadata (from sites that give duration and size up front) is checked before downloading."""
    with pytest.raises(GalwhisperError, match=expected):
        _check_info(U, info, DownloadLimits())
    assert _check_info(U, {"title": " Ola ", "duration": 60, "filesize": 10**6}, DownloadLimits()) == "Ola"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "\x1b[0;31mERROR:\x1b[0m [youtube] abc123: Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser"
            " or --cookies for the authentication.\nSee  https://github.com/yt-dlp/yt-dlp/wiki/FAQ",
            "bot check",
        ),
        ("ERROR: [youtube] abc123: Private video. Sign in if you've been granted access to this video", "private"),
        ("ERROR: [youtube] abc123: Video unavailable. This video has been removed by the uploader", "unavailable"),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 403: Forbidden (caused by <HTTPError 403>)",
         "access denied (HTTP 403)"),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 404: Not Found", "not found (HTTP 404)"),
        ("ERROR: [generic] x: Unable to download webpage: [Errno -2] Name or service not known", "unreachable"),
        ("ERROR: [generic] x: Unable to download webpage: [Errno 111] Connection refused", "unreachable"),
        ("ERROR: Unsupported URL: https://example.org/", "no audio or video found"),
        ("ERROR: [youtube] abc123: Requested format is not available", "no audio or video found"),
        ("ERROR: [generic] x: Unable to download webpage: The read operation timed out", "timed out"),
        ("ERROR: something new and strange", "download failed (something new and strange)"),
    ],
)
def test_error_messages_are_one_clear_line(raw, expected):
    message = _error_message(U, raw)
    assert message.startswith(f"{U}: ") and expected in message, message
    assert "\n" not in message and "\x1b" not in message and "ERROR" not in message
