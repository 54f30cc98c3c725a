"""Fetch the audio of a web page or media URL (YouTube, a podcast, a plain .mp3 link) as a
16 kHz mono wav, with limits on size, duration and time, and one-line errors naming the URL.

yt-dlp does the fetching (it knows thousands of sites and plain file links alike); the
ffmpeg CLI converts whatever came down to the wav that `galwhisper.audio.load_audio` reads.
Nothing half-written is left behind: every download happens in its own temp folder inside
`workdir`, which is removed on every path out, and the finished wav is renamed into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import wave
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union
from urllib.parse import urlsplit

from galwhisper.audio import SAMPLE_RATE
from galwhisper.errors import GalwhisperError

log = logging.getLogger(__name__)

_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# One stalled read never waits longer than this, so a dead server fails well before the wall cap.
SOCKET_TIMEOUT = 30.0
# After a wall-time cancel, wait this long for the download thread to stop and clean up.
_CANCEL_GRACE = 1.0


@dataclass
class DownloadLimits:
    max_bytes: int = 500 * 1000 * 1000  # 500 MB of downloaded media
    max_seconds: float = 3600.0  # duration cap: 1 h of audio
    timeout_seconds: float = 600.0  # wall time for download + conversion


@dataclass(frozen=True)
class MediaInfo:
    url: str
    title: str
    duration: Optional[float]  # seconds of audio in the wav
    path: Path  # 16 kHz mono wav


def is_url(text: object) -> bool:
    """True for anything shaped like `scheme://...` (http, ftp, file, ...), so callers can tell
    URLs from local paths; `check_url` then decides whether the scheme is allowed."""
    return isinstance(text, str) and bool(_URL_RE.match(text.strip()))


def check_url(url: str) -> None:
    """Raise GalwhisperError unless `url` is an http(s) URL with a host.

    file:// would read local files on a server, and ftp:// etc. are not worth the risk."""
    if not is_url(url):
        raise GalwhisperError(f"{url}: not a URL (expected http:// or https://)")
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise GalwhisperError(f"{url}: only http(s) URLs are supported")
    if not parts.hostname:
        raise GalwhisperError(f"{url}: URL has no host name")


def download_audio(
    url: str, workdir: Union[str, os.PathLike], limits: Optional[DownloadLimits] = None
) -> MediaInfo:
    """Download the audio of `url` into `workdir` as a 16 kHz mono wav.

    Raises GalwhisperError (one line, naming the URL) for refused URLs, failed downloads, and
    media over `limits`; on any failure nothing is left in `workdir`."""
    limits = limits or DownloadLimits()
    check_url(url)
    url = url.strip()
    deadline = time.monotonic() + limits.timeout_seconds
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".download-", dir=workdir))
    try:
        title, media = _fetch_with_deadline(url, folder, limits, deadline)
        wav = folder / "audio.wav"  # temp name; renamed into place only once complete
        seconds = _convert_to_wav(url, media, wav, limits, deadline)
        final = workdir / f"{_slug(title)}-{hashlib.sha1(url.encode()).hexdigest()[:8]}.wav"
        os.replace(wav, final)
        return MediaInfo(url=url, title=title, duration=seconds, path=final)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def fetched_audio(url: str, limits: Optional[DownloadLimits] = None) -> Iterator[MediaInfo]:
    """`with fetched_audio(url) as media:` gives a MediaInfo whose wav is deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="galwhisper-media-") as workdir:
        yield download_audio(url, workdir, limits)


# --- yt-dlp ---------------------------------------------------------------------------------


class _Abort(Exception):
    """Raised from yt-dlp's progress hook to stop a download; carries our one-line message."""


class _QuietLogger:
    """yt-dlp logger that keeps the terminal clean: everything goes to our module logger at
    DEBUG (we raise our own error for failures), and size-cap skips are remembered because
    yt-dlp reports them only as a message, not as an error."""

    def __init__(self) -> None:
        self.over_size_cap = False

    def debug(self, msg: str) -> None:
        if "larger than max-filesize" in msg:
            self.over_size_cap = True
        log.debug("yt-dlp: %s", _strip_ansi(msg))

    info = debug

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp warning: %s", _strip_ansi(msg))

    def error(self, msg: str) -> None:
        log.debug("yt-dlp error: %s", _strip_ansi(msg))


def _fetch_with_deadline(url: str, folder: Path, limits: DownloadLimits, deadline: float):
    """Run the yt-dlp part in a thread so the wall-time cap holds even when a server hangs
    during page extraction, where no progress hook runs."""
    cancelled = threading.Event()
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["value"] = _fetch(url, folder, limits, deadline, cancelled)
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc
        finally:
            if cancelled.is_set():  # the caller gave up and already removed the folder;
                shutil.rmtree(folder, ignore_errors=True)  # remove what we wrote since

    thread = threading.Thread(target=work, name="galwhisper-download", daemon=True)
    thread.start()
    try:
        thread.join(max(0.0, deadline - time.monotonic()))
        timed_out = thread.is_alive()
    finally:  # also on Ctrl-C: tell the worker to stop (its progress hook aborts at the next call)
        if thread.is_alive():
            cancelled.set()
            thread.join(_CANCEL_GRACE)  # usually enough for it to stop and clean up
    if timed_out:
        raise GalwhisperError(_timed_out(url, limits))
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _fetch(url: str, folder: Path, limits: DownloadLimits, deadline: float, cancelled: threading.Event):
    """Look up title and duration, refuse what is over the caps, then download.
    Returns (title, path of the downloaded media file)."""
    import yt_dlp
    from yt_dlp.utils import YoutubeDLError

    def progress(status: dict) -> None:
        if cancelled.is_set() or time.monotonic() > deadline:
            raise _Abort(_timed_out(url, limits))
        # Servers that send no Content-Length get past yt-dlp's max_filesize; count bytes here.
        done = status.get("downloaded_bytes") or 0
        if max(done, status.get("total_bytes") or 0) > limits.max_bytes:
            raise _Abort(_over_size(url, limits))

    logger = _QuietLogger()
    options = {
        "quiet": True,
        "noprogress": True,
        "no_warnings": True,
        "color": "no_color",
        "logger": logger,
        "noplaylist": True,
        "extract_flat": "in_playlist",  # a playlist is refused below; don't resolve its entries
        "format": "bestaudio/best",
        "max_filesize": limits.max_bytes,
        "socket_timeout": min(SOCKET_TIMEOUT, limits.timeout_seconds),
        "retries": 3,
        "fragment_retries": 3,
        "outtmpl": {"default": str(folder / "media.%(ext)s")},  # fixed name: titles can be anything
        "progress_hooks": [progress],
    }
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=False)
            if info is None:
                raise GalwhisperError(f"{url}: no audio or video found")
            title = _check_info(url, info, limits)
            if cancelled.is_set():
                raise _Abort(_timed_out(url, limits))
            result = ydl.process_ie_result(info, download=True)
    except _Abort as exc:
        raise GalwhisperError(str(exc)) from None
    except YoutubeDLError as exc:
        # A hook's _Abort may arrive wrapped in yt-dlp's DownloadError.
        cause = (getattr(exc, "exc_info", None) or (None, None))[1]
        if isinstance(cause, _Abort):
            raise GalwhisperError(str(cause)) from None
        raise GalwhisperError(_error_message(url, str(exc))) from None

    downloads = (result or {}).get("requested_downloads") or [{}]
    media = downloads[0].get("filepath")
    if not media or not Path(media).is_file():
        if logger.over_size_cap:  # yt-dlp skipped it on Content-Length, without an error
            raise GalwhisperError(_over_size(url, limits))
        raise GalwhisperError(f"{url}: download produced no file")
    if Path(media).stat().st_size > limits.max_bytes:
        raise GalwhisperError(_over_size(url, limits))
    return title, Path(media)


def _check_info(url: str, info: dict, limits: DownloadLimits) -> str:
    """Refuse before downloading what the metadata already shows to be unusable; return the title."""
    if info.get("_type") in ("playlist", "multi_video"):
        raise GalwhisperError(f"{url}: is a playlist or channel; give the URL of a single video")
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        raise GalwhisperError(f"{url}: is a live stream; only recorded media can be downloaded")
    duration = info.get("duration")
    duration = float(duration) if duration else None
    if duration is not None and duration > limits.max_seconds:
        raise GalwhisperError(_over_duration(url, limits, duration))
    size = info.get("filesize") or info.get("filesize_approx")
    if size and size > limits.max_bytes:
        raise GalwhisperError(_over_size(url, limits))
    return str(info.get("title") or "").strip() or Path(urlsplit(url).path).stem or "audio"


# --- ffmpeg ---------------------------------------------------------------------------------


def _convert_to_wav(url: str, media: Path, wav: Path, limits: DownloadLimits, deadline: float) -> float:
    """Convert `media` to 16 kHz mono wav at `wav`; return its duration in seconds.

    Many direct links carry no duration metadata, so the cap is checked on the result; `-t`
    keeps ffmpeg from decoding hours of audio only to refuse it."""
    command = [
        "ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(media),
        "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-t", f"{limits.max_seconds + 1:g}",
        "-f", "wav", str(wav),
    ]  # fmt: skip
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise GalwhisperError(_timed_out(url, limits))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=remaining)
    except FileNotFoundError:
        raise GalwhisperError(f"{url}: ffmpeg is not installed (needed to convert audio)") from None
    except subprocess.TimeoutExpired:
        raise GalwhisperError(_timed_out(url, limits)) from None
    if done.returncode != 0 or not wav.is_file():
        detail = _short(done.stderr) or f"ffmpeg exit code {done.returncode}"
        if "does not contain any stream" in detail or "matches no streams" in detail:
            raise GalwhisperError(f"{url}: the downloaded media has no audio track")
        raise GalwhisperError(f"{url}: downloaded file is not readable audio ({detail})")
    with wave.open(str(wav), "rb") as reader:
        seconds = reader.getnframes() / float(reader.getframerate())
    if seconds == 0:
        raise GalwhisperError(f"{url}: the downloaded media contains no audio")
    if seconds > limits.max_seconds:
        raise GalwhisperError(_over_duration(url, limits, None))
    return seconds


# --- messages -------------------------------------------------------------------------------


# What yt-dlp's error text says -> what we tell the user; the first row with a match wins.
_KNOWN_ERRORS = (
    (("not a bot",), "the site asks to sign in to confirm you're not a bot (bot check); try later"),
    (("confirm your age", "age-restricted", "age restricted"), "the video is age-restricted"),
    (("private video", "video is private"), "the video is private"),
    (("members-only", "join this channel"), "the video is for channel members only"),
    (("unsupported url", "no video formats", "no suitable formats", "requested format is not available",
      "no video could be found", "no media"), "no audio or video found at this URL"),
    (("video unavailable", "is unavailable", "not available", "no longer available", "has been removed",
      "been terminated"), "the video is unavailable ({detail})"),
    (("connection refused",), "host unreachable (connection refused)"),
    (("name or service not known", "failed to resolve", "name resolution", "nodename nor servname",
      "getaddrinfo failed", "no address associated"), "host unreachable (host name not found)"),
    (("network is unreachable", "no route to host", "connection reset", "remote end closed",
      "connection aborted"), "host unreachable or connection dropped ({detail})"),
    (("timed out", "timeout"), "timed out waiting for the server"),
    (("certificate", "ssl"), "secure connection failed ({detail})"),
)
_HTTP_ERRORS = {401: "access denied", 403: "access denied", 404: "not found", 410: "not found",
                429: "too many requests; try again later"}  # fmt: skip


def _error_message(url: str, raw: str) -> str:
    """Turn a yt-dlp error string into one line naming `url` and saying what went wrong."""
    # "ERROR: [youtube] abc123: Video unavailable. ..." -> "Video unavailable. ..."
    detail = re.sub(r"^(ERROR:\s*)?(\[[\w:-]+\]\s*([\w-]+:\s+)?)?", "", _short(_strip_ansi(raw)))
    http = re.search(r"HTTP Error (\d{3})", detail)
    if http:
        code = int(http.group(1))
        what = _HTTP_ERRORS.get(code, "server error" if code >= 500 else "request refused")
        return f"{url}: {what} (HTTP {code})"
    lower = detail.lower()
    for keys, message in _KNOWN_ERRORS:
        if any(key in lower for key in keys):
            return f"{url}: " + message.format(detail=detail)
    return f"{url}: download failed ({detail or 'unknown error'})"


def _timed_out(url: str, limits: DownloadLimits) -> str:
    return f"{url}: timed out (took longer than {limits.timeout_seconds:g} s)"


def _over_size(url: str, limits: DownloadLimits) -> str:
    return f"{url}: file is larger than the {_format_bytes(limits.max_bytes)} size limit"


def _over_duration(url: str, limits: DownloadLimits, seconds: Optional[float]) -> str:
    if seconds is None:  # measured on the converted audio, which stops just past the cap
        return f"{url}: is longer than the {limits.max_seconds:g} s duration limit"
    return f"{url}: is {seconds:.0f} s long, over the {limits.max_seconds:g} s duration limit"


def _format_bytes(n: int) -> str:
    return f"{n / 1e6:g} MB" if n >= 1_000_000 else f"{n} bytes"


def _strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text or "")


def _short(text: str, limit: int = 200) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _slug(title: str) -> str:
    """A file-name-safe version of `title` (the URL hash added after it keeps names unique)."""
    return (re.sub(r"[^\w.-]+", "_", title).strip("._") or "audio")[:60]
