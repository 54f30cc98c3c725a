"""Fetch the audio of a web page or media URL (YouTube, a podcast, a plain .mp3 link) as a
16 kHz mono wav, with limits on size, duration and time, and one-line errors naming the URL.

yt-dlp does the fetching (it knows thousands of sites and plain file links alike); the
ffmpeg CLI converts whatever came down to the wav that `galwhisper.audio.load_audio` reads.
Nothing half-written is left behind: every download happens in its own temp folder inside
`workdir`, which is removed on every path out, and the finished wav is renamed into place.

What may be fetched is decided for every request yt-dlp makes, not only the first URL: every
hop (the page, each redirect, the media and its fragments) must be http(s), and unless
`allow_private_urls` is set it must not reach a loopback, private, link-local, multicast or
reserved address. That is checked twice: on the host name before each request and redirect (a
clear message), and on the address each socket connects to (so a name that resolves one way
when checked and another when used still cannot reach inside).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union
from urllib.parse import urljoin, urlsplit

import yt_dlp
from yt_dlp.networking._urllib import RedirectHandler, UrllibRH
from yt_dlp.networking.exceptions import RequestError

from galwhisper import options
from galwhisper.audio import SAMPLE_RATE
from galwhisper.errors import GalwhisperError, one_line
from galwhisper.files import private_tempdir, safe_name

log = logging.getLogger(__name__)

_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# One stalled read never waits longer than this, so a dead server fails well before the wall cap.
SOCKET_TIMEOUT = 30.0
# After a wall-time cancel, wait this long for the download thread to stop and clean up.
_CANCEL_GRACE = 1.0


@dataclass(frozen=True)
class DownloadLimits:
    """Caps on one download; field names are the CLI's option names."""

    max_download_mb: float = 500  # downloaded media
    max_duration: float = 3600  # seconds of audio
    download_timeout: float = 600  # wall time for download + conversion, seconds
    allow_private_urls: bool = False  # loopback, private networks, link-local (e.g. cloud metadata)

    def __post_init__(self):
        options.number("max_download_mb", self.max_download_mb)
        options.number("max_duration", self.max_duration)
        options.number("download_timeout", self.download_timeout)

    @property
    def max_bytes(self) -> int:
        return int(self.max_download_mb * 1_000_000)


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


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of `url` answers a TCP connection now (a quick way to say "offline" in one
    line before a library retries for half a minute). Behind a proxy, the proxy decides: True."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout=timeout).close()
    except (OSError, TypeError):
        return False
    return True


def check_url(url: str, allow_private: bool = False) -> None:
    """Raise GalwhisperError unless `url` is an http(s) URL with a host that may be fetched.

    file:// would read local files on a server, and ftp:// etc. are not worth the risk. A host
    that resolves to a non-public address is refused unless `allow_private`."""
    if not is_url(url):
        raise GalwhisperError(f"{url}: not a URL (expected http:// or https://)")
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise GalwhisperError(f"{url}: only http(s) URLs are supported")
    if not parts.hostname:
        raise GalwhisperError(f"{url}: URL has no host name")
    if not allow_private:
        for address in _addresses(url, parts.hostname):
            _check_public(url, address)


def _addresses(url: str, host: str) -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)})
    except (socket.gaierror, UnicodeError):
        raise GalwhisperError(f"{url}: host unreachable (host name not found)") from None


def _check_public(url: str, address: str) -> None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    ip = getattr(ip, "ipv4_mapped", None) or ip
    if not ip.is_global or ip.is_multicast:
        raise GalwhisperError(
            f"{url}: refused: the host resolves to a non-public address ({ip}); "
            "pass --allow-private-urls to fetch from your own network"
        )


# --- the connect-time check: an audit hook that sees every socket.connect of a download thread

_POLICY = threading.local()  # .refused: the first address refused in this thread
_HOOK_INSTALLED = False
_HOOK_LOCK = threading.Lock()


def _audit(event: str, args: tuple) -> None:
    if event != "socket.connect" or not getattr(_POLICY, "active", False):
        return
    address = args[1]
    if not isinstance(address, tuple) or not address or not isinstance(address[0], str):
        return  # a Unix socket or the like: not a network address
    try:
        _check_public(_POLICY.url, address[0])
    except GalwhisperError as exc:
        _POLICY.refused = str(exc)
        raise ConnectionRefusedError(f"refused: non-public address {address[0]}") from None
    except ValueError:
        return  # a host name, not an address: only reached when the caller resolved nothing


@contextmanager
def _public_only(url: str, enabled: bool) -> Iterator[None]:
    """While active (in this thread), connecting to a non-public address fails."""
    global _HOOK_INSTALLED
    if not enabled:
        yield
        return
    with _HOOK_LOCK:
        if not _HOOK_INSTALLED:
            sys.addaudithook(_audit)  # process-wide and permanent; it acts only where active
            _HOOK_INSTALLED = True
    _POLICY.active, _POLICY.url, _POLICY.refused = True, url, None
    try:
        yield
    finally:
        _POLICY.active = False


def download_audio(
    url: str, workdir: Union[str, os.PathLike], limits: Optional[DownloadLimits] = None
) -> MediaInfo:
    """Download the audio of `url` into `workdir` as a 16 kHz mono wav.

    Raises GalwhisperError (one line, naming the URL) for refused URLs, failed downloads, and
    media over `limits`; on any failure nothing is left in `workdir`."""
    limits = limits or DownloadLimits()
    url = url.strip()
    check_url(url, limits.allow_private_urls)
    deadline = time.monotonic() + limits.download_timeout
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".download-", dir=workdir))
    try:
        title, media = _fetch_with_deadline(url, folder, limits, deadline)
        wav = folder / "audio.wav"  # temp name; renamed into place only once complete
        seconds = _convert_to_wav(url, media, wav, limits, deadline)
        final = workdir / f"{safe_name(title, 'audio', 60)}-{hashlib.sha1(url.encode()).hexdigest()[:8]}.wav"
        os.replace(wav, final)
        return MediaInfo(url=url, title=title, duration=seconds, path=final)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def fetched_audio(url: str, limits: Optional[DownloadLimits] = None) -> Iterator[MediaInfo]:
    """`with fetched_audio(url) as media:` gives a MediaInfo whose wav is deleted afterwards.

    The temp folder carries this process's id, so one left by a killed process is removed by
    the next galwhisper that starts a download (files.clean_stale_tempdirs)."""
    workdir = private_tempdir("media")
    try:
        yield download_audio(url, workdir, limits)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- yt-dlp ---------------------------------------------------------------------------------


class Refused(RequestError):
    """A request or redirect the policy refuses; a RequestError so that yt-dlp passes it up
    unchanged (other exceptions from a request handler are swallowed into a generic one)."""


class _GuardedRedirectHandler(RedirectHandler):
    """yt-dlp's redirect handler, refusing a hop to a scheme or host the policy does not allow."""

    handler_order = RedirectHandler.handler_order - 1  # consulted before yt-dlp's own

    def __init__(self, allow_private: bool):
        super().__init__()
        self.allow_private = allow_private

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urljoin(req.full_url, newurl)
        try:
            check_url(target, self.allow_private)
        except GalwhisperError as exc:
            raise Refused(f"{req.full_url}: redirect refused: {exc}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _GuardedUrllibRH(UrllibRH):
    """yt-dlp's urllib request handler for http(s) only, with every request checked first."""

    _SUPPORTED_URL_SCHEMES = ("http", "https")
    allow_private = False  # set per YoutubeDL by GuardedYoutubeDL

    def _send(self, request):
        try:
            check_url(request.url, self.allow_private)
        except GalwhisperError as exc:
            raise Refused(str(exc)) from None
        return super()._send(request)

    def _create_instance(self, proxies, cookiejar, legacy_ssl_support=None):
        opener = super()._create_instance(proxies, cookiejar, legacy_ssl_support)
        opener.add_handler(_GuardedRedirectHandler(self.allow_private))
        return opener


class GuardedYoutubeDL(yt_dlp.YoutubeDL):
    """YoutubeDL whose only request handler is _GuardedUrllibRH: no other handler (curl_cffi,
    requests, websockets, file) can fetch a URL the policy refuses."""

    def __init__(self, params: dict, allow_private: bool = False):
        self._allow_private = allow_private
        super().__init__(params)

    def build_request_director(self, handlers, preferences=None):
        director = super().build_request_director([_GuardedUrllibRH], preferences)
        for handler in director.handlers.values():
            handler.allow_private = self._allow_private
        return director


def _refusal_in(exc: BaseException | None) -> str | None:
    """The message of our Refused, if that is what made yt-dlp fail (it arrives wrapped)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, Refused):
            return exc.msg
        exc = (exc.__cause__ or exc.__context__ or getattr(exc, "cause", None)
               or (getattr(exc, "exc_info", None) or (None, None))[1])
    return None


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
            with _public_only(url, not limits.allow_private_urls):
                try:
                    outcome["value"] = _fetch(url, folder, limits, deadline, cancelled)
                except GalwhisperError:
                    if getattr(_POLICY, "refused", None):  # the connect-time check fired: say that, not "unreachable"
                        raise GalwhisperError(_POLICY.refused) from None
                    raise
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
    from yt_dlp.utils import YoutubeDLError

    def progress(status: dict) -> None:
        if cancelled.is_set() or time.monotonic() > deadline:
            raise _Abort(_timed_out(url, limits))
        # Servers that send no Content-Length get past yt-dlp's max_filesize; count bytes here.
        done = status.get("downloaded_bytes") or 0
        if max(done, status.get("total_bytes") or 0) > limits.max_bytes:
            raise _Abort(_over_size(url, limits))

    logger = _QuietLogger()
    params = {
        "quiet": True,
        "noprogress": True,
        "no_warnings": True,
        "color": "no_color",
        "logger": logger,
        "noplaylist": True,
        "extract_flat": "in_playlist",  # a playlist is refused below; don't resolve its entries
        "format": "bestaudio/best",
        "max_filesize": limits.max_bytes,
        "socket_timeout": min(SOCKET_TIMEOUT, limits.download_timeout),
        "hls_prefer_native": True,  # yt-dlp's own downloader (guarded), never an ffmpeg that fetches by itself
        "retries": 3,
        "fragment_retries": 3,
        "outtmpl": {"default": str(folder / "media.%(ext)s")},  # fixed name: titles can be anything
        "progress_hooks": [progress],
    }
    try:
        with GuardedYoutubeDL(params, allow_private=limits.allow_private_urls) as ydl:
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
        # A hook's _Abort or our refusal may arrive wrapped in yt-dlp's DownloadError.
        cause = (getattr(exc, "exc_info", None) or (None, None))[1]
        if isinstance(cause, (_Abort, GalwhisperError)):
            raise GalwhisperError(str(cause)) from None
        refused = _refusal_in(exc)
        if refused:
            raise GalwhisperError(refused) from None
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
    if duration is not None and duration > limits.max_duration:
        raise GalwhisperError(_over_duration(url, limits, duration))
    size = info.get("filesize") or info.get("filesize_approx")
    if size and size > limits.max_bytes:
        raise GalwhisperError(_over_size(url, limits))
    return str(info.get("title") or "").strip() or Path(urlsplit(url).path).stem or "audio"


# --- pages, playlists and small files (galwhisper harvest) -----------------------------------

SMALL_FILE_BYTES = 20_000_000  # a subtitle track or a web page; real ones are well under 1 MB


def extract_info(url: str, limits: Optional[DownloadLimits] = None, max_entries: Optional[int] = None) -> dict:
    """yt-dlp's metadata for `url` (a video, a page, a playlist or a channel), downloading no media.

    Playlist and channel entries are listed flat, the first `max_entries` only, and not resolved:
    pass an entry's `url` to this function again. The same policy, wall-time cap and one-line
    errors as download_audio."""
    limits = limits or DownloadLimits()
    url = url.strip()
    check_url(url, limits.allow_private_urls)

    def work() -> dict:
        from yt_dlp.utils import YoutubeDLError

        params = {
            "quiet": True, "noprogress": True, "no_warnings": True, "color": "no_color",
            "logger": _QuietLogger(), "extract_flat": "in_playlist",
            "socket_timeout": min(SOCKET_TIMEOUT, limits.download_timeout), "retries": 3,
        }  # fmt: skip
        if max_entries is not None:
            params["playlistend"] = max_entries
        try:
            with GuardedYoutubeDL(params, allow_private=limits.allow_private_urls) as ydl:
                info = ydl.extract_info(url, download=False)
        except YoutubeDLError as exc:
            raise GalwhisperError(_refusal_in(exc) or _error_message(url, str(exc))) from None
        if not info:
            raise GalwhisperError(f"{url}: no audio or video found")
        return ydl.sanitize_info(info)

    return _guarded_call(url, limits, work)


def fetch_bytes(url: str, limits: Optional[DownloadLimits] = None, max_bytes: int = SMALL_FILE_BYTES) -> bytes:
    """The body of a small file at `url` (a subtitle track, a page), fetched through the same
    guarded request path as every download, with one-line errors naming the URL."""
    limits = limits or DownloadLimits()
    url = url.strip()
    check_url(url, limits.allow_private_urls)

    def work() -> bytes:
        from yt_dlp.networking import Request

        params = {"quiet": True, "no_warnings": True, "logger": _QuietLogger(),
                  "socket_timeout": min(SOCKET_TIMEOUT, limits.download_timeout)}
        try:
            with GuardedYoutubeDL(params, allow_private=limits.allow_private_urls) as ydl:
                with ydl.urlopen(Request(url)) as response:
                    body = response.read(max_bytes + 1)
        except RequestError as exc:
            raise GalwhisperError(_refusal_in(exc) or _error_message(url, str(exc))) from None
        if len(body) > max_bytes:
            raise GalwhisperError(f"{url}: file is larger than the {_format_bytes(max_bytes)} size limit")
        return body

    return _guarded_call(url, limits, work)


def _guarded_call(url: str, limits: DownloadLimits, work):
    """`work()` in a thread of its own, under the connect-time policy and the wall-time cap
    (a server that hangs during page extraction runs no hook that could stop it)."""
    outcome: dict = {}

    def run() -> None:
        try:
            with _public_only(url, not limits.allow_private_urls):
                try:
                    outcome["value"] = work()
                except GalwhisperError:
                    if getattr(_POLICY, "refused", None):  # the connect-time check fired: say that
                        raise GalwhisperError(_POLICY.refused) from None
                    raise
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="galwhisper-fetch", daemon=True)
    thread.start()
    thread.join(limits.download_timeout)
    if thread.is_alive():  # the daemon thread ends with its socket timeout; nothing was written
        raise GalwhisperError(_timed_out(url, limits))
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --- ffmpeg ---------------------------------------------------------------------------------


def _convert_to_wav(url: str, media: Path, wav: Path, limits: DownloadLimits, deadline: float) -> float:
    """Convert `media` to 16 kHz mono wav at `wav`; return its duration in seconds.

    Many direct links carry no duration metadata, so the cap is checked on the result; `-t`
    keeps ffmpeg from decoding hours of audio only to refuse it."""
    command = [
        "ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(media),
        "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-t", f"{limits.max_duration + 1:g}",
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
        detail = one_line(done.stderr or '') or f"ffmpeg exit code {done.returncode}"
        if "does not contain any stream" in detail or "matches no streams" in detail:
            raise GalwhisperError(f"{url}: the downloaded media has no audio track")
        raise GalwhisperError(f"{url}: downloaded file is not readable audio ({detail})")
    with wave.open(str(wav), "rb") as reader:
        seconds = reader.getnframes() / float(reader.getframerate())
    if seconds == 0:
        raise GalwhisperError(f"{url}: the downloaded media contains no audio")
    if seconds > limits.max_duration:
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
    detail = re.sub(r"^(ERROR:\s*)?(\[[\w:-]+\]\s*([\w-]+:\s+)?)?", "", one_line(_strip_ansi(raw)))
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
    return f"{url}: timed out (took longer than {limits.download_timeout:g} s)"


def _over_size(url: str, limits: DownloadLimits) -> str:
    return f"{url}: file is larger than the {_format_bytes(limits.max_bytes)} size limit"


def _over_duration(url: str, limits: DownloadLimits, seconds: Optional[float]) -> str:
    if seconds is None:  # measured on the converted audio, which stops just past the cap
        return f"{url}: is longer than the {limits.max_duration:g} s duration limit"
    return f"{url}: is {seconds:.0f} s long, over the {limits.max_duration:g} s duration limit"


def _format_bytes(n: int) -> str:
    return f"{n / 1e6:g} MB" if n >= 1_000_000 else f"{n} bytes"


def _strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text or "")

