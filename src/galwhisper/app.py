"""The web app: a Gradio Blocks UI over `galwhisper.transcribe`, nothing more.

Four tabs (Microphone, Live, YouTube / URL, Audio file) share one model picker and one language
picker. The classic tabs have stable API endpoints; each takes its input first, then the
model, then the language:

    /transcribe_microphone (audio, model, language) -> (transcript, srt, info)
    /transcribe_url        (url, model, language)   -> (media, transcript, srt, info)
    /transcribe_file       (file, model, language)  -> (transcript, srt, info)

audio, file   a local file, passed with `gradio_client.handle_file(path)`; the file tab reads
              anything ffmpeg decodes (audio or video), up to `max_upload_mb` and the duration cap
url           a YouTube link or any http(s) media URL yt-dlp reads (caps: `DownloadLimits`)
model         "base" (the bundled Whisper base), a run such as "runs/NAME/best-ct2", or (when
              `allow_model_paths`) any spec `galwhisper.models.resolve` accepts
language      a Whisper language code ("gl", "es", "pt", "en", ...) or "auto" to detect
transcript    the text; srt: a subtitle file; info: audio length, processing time, real-time
              factor; media: the URL's title and duration

    from gradio_client import Client, handle_file
    text, srt, info = Client("http://127.0.0.1:7860/").predict(
        handle_file("talk.mp3"), "base", "gl", api_name="/transcribe_file")

The Live tab streams the microphone to `galwhisper.streaming.LiveSession` (about one update a
second; confirmed text plainly, the tentative tail greyed) and gives the final text and an
.srt on Stop. It is a browser feature: gradio_client cannot stream a microphone.

Safe to share (`--share`, `--host 0.0.0.0`): URLs reaching non-public addresses are refused
(media.py), uploads are capped by size while uploading and by duration before decoding them
whole, downloads wait in slots of their own with a shorter time cap than the CLI's (a stalled
download never holds a transcription slot), typed model folders are refused unless
`allow_model_paths`, `auth` adds Gradio's login, and a message never shows a server path, a
traceback or whether a server path exists. Errors a user can cause are one-line `gr.Error`s;
the app keeps serving. Models are loaded once and kept (a few at a time) for every request.
"""

from __future__ import annotations

import atexit
import errno
import html
import ipaddress
import itertools
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from fastapi import BackgroundTasks, Request
from fastapi.routing import APIRoute
from gradio.data_classes import PredictBody  # the body of Gradio's /stream route, which keep_live_chunks wraps

from galwhisper import models as model_specs
from galwhisper import options
from galwhisper.audio import load_audio, read_samples
from galwhisper.errors import GalwhisperError, one_line
from galwhisper.files import private_tempdir
from galwhisper.languages import DEFAULT_LANGUAGE, language_code
from galwhisper.media import DownloadLimits, check_url, fetched_audio
from galwhisper.streaming import LiveConfig, LiveSession, LiveTranscriber, LiveUpdate
from galwhisper.transcribe import TranscribeOptions, Transcriber, Transcript, write_transcript

log = logging.getLogger(__name__)

TITLE = "galwhisper — Recoñecemento de fala en galego"
SUBTITLE = "Speech recognition for Galician with Whisper: record, paste a YouTube or media link, or upload a file."
MAX_QUEUE = 64  # waiting requests beyond this are refused with "queue full"
MAX_LOADED_MODELS = 3  # least recently used models beyond this are dropped
OUTPUT_MAX_AGE = 3600  # seconds an .srt we wrote is kept (Gradio serves its own copy)
# One download in the app may take this long (the CLI's cap, DownloadLimits', is 600 s): a
# visitor's link that trickles a byte a second must not hold a download slot for ten minutes.
APP_DOWNLOAD_TIMEOUT = 120.0
LIVE_CHUNK_SECONDS = 1.0  # asked of Gradio; its Audio (6.x) posts the microphone every 0.1 s anyway
LIVE_SLOTS = "live"  # the Live streams' concurrency id
LIVE_CHUNKS_MAX_AGE = 7200.0  # seconds: the unread chunks of a page that left mid-recording are forgotten
# A Live chunk waits at most this long for the one numbered before it (LiveChunks).
LIVE_REORDER_SECONDS = 1.0
LIVE_TAKEN_KEPT = 100  # chunks a Live page remembers having taken, so one Gradio hands again is not fed twice
LIVE_FINISH_TIMEOUT = 300.0  # the last live update (after Stop) never waits longer than this
UPLOAD_HEADER = "x-galwhisper-upload"  # the page's own count of its uploads (LiveChunks orders by it)
# The page asks the browser for the microphone as it is, and numbers its uploads. By default
# browsers run the microphone through their call processing (echo cancellation, noise
# suppression, automatic gain), made for people, not for Whisper: a 61-s English talk through
# Chromium's default reached the server at WER 17.6% read as a file, without it at 7.6% (the
# talk's own file: 4.6%). Gradio asks for `{audio: true}` and has no option for it, so
# getUserMedia is wrapped (a constraint Gradio sets, the chosen device, still applies); its
# uploads go through fetch, which is wrapped to add the upload's number.
RAW_MICROPHONE_HEAD = """<script>
(() => {
  const devices = navigator.mediaDevices;  // absent on plain http (except localhost)
  if (devices && devices.getUserMedia) {
    const getUserMedia = devices.getUserMedia.bind(devices);
    devices.getUserMedia = (constraints) => {
      if (constraints && constraints.audio) {
        const asked = typeof constraints.audio === "object" ? constraints.audio : {};
        const raw = {echoCancellation: false, noiseSuppression: false, autoGainControl: false};
        constraints = {...constraints, audio: {...raw, ...asked}};
      }
      return getUserMedia(constraints);
    };
  }
  const fetchOriginal = window.fetch.bind(window);
  let uploads = 0;
  window.fetch = (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input), location.href);
    if (init && init.method === "POST" && url.pathname.endsWith("/gradio_api/upload")) {
      const headers = new Headers(init.headers || {});
      headers.set("UPLOAD_HEADER", String(uploads++));
      init = {...init, headers};
    }
    return fetchOriginal(input, init);
  };
})();
</script>""".replace("UPLOAD_HEADER", UPLOAD_HEADER)

# (label, value) for the language picker; any other Whisper code can be typed in.
LANGUAGES = [
    ("galego (gl)", "gl"),
    ("español (es)", "es"),
    ("português (pt)", "pt"),
    ("English (en)", "en"),
    ("català (ca)", "ca"),
    ("euskara (eu)", "eu"),
    ("français (fr)", "fr"),
    ("italiano (it)", "it"),
    ("Deutsch (de)", "de"),
    ("detect (auto)", "auto"),
]




def app_download_limits() -> DownloadLimits:
    """The app's download caps: DownloadLimits' own, with a shorter time cap."""
    return DownloadLimits(download_timeout=APP_DOWNLOAD_TIMEOUT)


@dataclass(frozen=True)
class AppConfig:
    """How the app is served; field names are `galwhisper app`'s option names."""

    models: tuple[str, ...] = (model_specs.DEFAULT_MODEL,)  # offered first; every RUNS_DIR/*/best-ct2 too
    runs_dir: str = "runs"
    language: str = DEFAULT_LANGUAGE  # the language picker's first value ("auto" detects)
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    concurrency: int = 2  # requests transcribed at once, across all tabs (2 CPU cores)
    download_concurrency: int = 4  # URL downloads at once, in slots of their own
    live_sessions: int = 2  # Live-tab recordings streamed at once
    max_upload_mb: float = 200  # bigger uploads are refused while they upload
    # Typed model folders (any folder of the server). None: allowed only when the app listens on
    # a loopback address without --share, i.e. when every visitor is on this machine.
    allow_model_paths: bool | None = None
    auth: tuple[str, ...] = field(default=(), repr=False)  # USER:PASS logins (Gradio's login page)
    auth_file: str | None = None  # a file of USER:PASS lines, read at start
    limits: DownloadLimits = field(default_factory=app_download_limits)
    credentials: tuple[tuple[str, str], ...] = field(init=False, repr=False)  # from auth and auth_file

    def __post_init__(self):
        object.__setattr__(self, "models", tuple(self.models or (model_specs.DEFAULT_MODEL,)))
        object.__setattr__(self, "language", language_code(self.language, allow_auto=True) or "auto")
        options.whole("port", self.port, minimum=0, maximum=65535)
        options.whole("concurrency", self.concurrency, maximum=64)
        options.whole("download_concurrency", self.download_concurrency, maximum=64)
        options.whole("live_sessions", self.live_sessions, maximum=64)
        options.number("max_upload_mb", self.max_upload_mb)
        if self.allow_model_paths is None:
            object.__setattr__(self, "allow_model_paths", is_loopback(self.host) and not self.share)
        object.__setattr__(self, "auth", tuple(self.auth or ()))
        object.__setattr__(self, "credentials", read_credentials(self.auth, self.auth_file))


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.1, ::1, localhost)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_credentials(auth: Sequence[str], auth_file: str | None) -> tuple[tuple[str, str], ...]:
    """(user, password) pairs from USER:PASS values and a file of USER:PASS lines (blank lines
    and # comments skipped). Messages never quote a password."""
    pairs = [_credential(value, "--auth") for value in auth]
    if auth_file:
        try:
            lines = Path(auth_file).expanduser().read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise GalwhisperError(f"--auth-file {auth_file}: not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise GalwhisperError(f"--auth-file {auth_file}: not readable ({type(exc).__name__})") from None
        pairs += [
            _credential(line.strip(), f"--auth-file {auth_file}: line {number}")
            for number, line in enumerate(lines, start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not pairs:
            raise GalwhisperError(f"--auth-file {auth_file}: holds no USER:PASS line")
    return tuple(pairs)


def _credential(value: str, where: str) -> tuple[str, str]:
    user, colon, password = str(value).partition(":")
    if not colon or not user.strip() or not password:
        raise GalwhisperError(f"{where}: expected USER:PASS, with a user name and a password")
    return user.strip(), password


# ---------------------------------------------------------------------------------------------
# Models


def find_runs(runs_dir: str | os.PathLike = "runs") -> list[str]:
    """Every `RUNS_DIR/*/best-ct2` holding a CTranslate2 model, as model specs (paths)."""
    folder = Path(runs_dir)
    if not folder.is_dir():
        return []
    return [str(path) for path in sorted(folder.glob("*/best-ct2")) if (path / "model.bin").is_file()]


def model_choices(models: Sequence[str] | None = None, runs_dir: str | os.PathLike = "runs") -> list[tuple[str, str]]:
    """(label, spec) for the model picker: the given specs (default: base), then every run."""
    specs = list(dict.fromkeys([*(models or [model_specs.DEFAULT_MODEL]), *find_runs(runs_dir)]))
    choices = []
    for spec in specs:
        if spec == model_specs.DEFAULT_MODEL:
            label = "base: Whisper base (bundled)"
        elif Path(spec).name == "best-ct2":
            label = f"{Path(spec).parent.name}: fine-tuned ({spec})"
        else:
            label = spec
        choices.append((label, spec))
    return choices


class ModelCache:
    """Transcribers loaded once and shared by all requests, keyed by the resolved model.

    A lock per model means two first requests for one model load it once, while requests for
    models already loaded never wait on a load."""

    def __init__(self, size: int = MAX_LOADED_MODELS, factory=Transcriber):
        self._size, self._factory = size, factory
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, Transcriber] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, spec: str | None) -> Transcriber:
        spec = (spec or "").strip() or model_specs.DEFAULT_MODEL
        ref = model_specs.resolve(spec)  # GalwhisperError for a spec that names nothing
        key = str(ref.path.resolve()) if ref.path is not None else ref.spec
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            try:
                transcriber = self._factory(spec)
            except GalwhisperError:
                raise
            except Exception as exc:  # e.g. a run folder whose model.bin is damaged
                raise GalwhisperError(f"{spec}: could not load the model ({one_line(exc, 160)})") from None
            else:
                with self._lock:
                    self._loaded[key] = transcriber
                    while len(self._loaded) > self._size:
                        self._loaded.popitem(last=False)
                return transcriber
            finally:
                with self._lock:
                    self._loading.pop(key, None)


# ---------------------------------------------------------------------------------------------
# The work behind each tab


# A server path in a message: "/" not inside a word or URL, up to a space, quote, colon or
# bracket. Shown by its last part ("/tmp/gradio/3f2a/notes.txt" -> "notes.txt").
_SERVER_PATH = re.compile(r"(?<![\w:/.~\0-])/[^\s:'\"()\[\],;]+")


def hide_paths(message: str, keep: Sequence[str] = (), rename: dict[str, str] | None = None) -> str:
    """`message` with every server path shown by its last part, so that a visitor learns
    nothing of the server's folders. `keep`: what the visitor typed (a URL, a model) stays as
    it is; `rename`: paths shown by another name (a listed run by NAME/best-ct2)."""
    kept = [k for k in keep if k and len(k) > 2] + list((rename or {}).values())  # not "/": every path holds one
    for old, new in sorted((rename or {}).items(), key=lambda item: -len(item[0])):
        message = message.replace(old, new)
    for i, text in enumerate(kept):
        message = message.replace(text, f"\0{i}\0")
    message = _SERVER_PATH.sub(lambda m: m.group().rstrip("/").rsplit("/", 1)[-1], message)
    for i, text in enumerate(kept):
        message = message.replace(f"\0{i}\0", text)
    return message


@contextmanager
def _as_gr_error(keep: Sequence[str] = (), rename: dict[str, str] | None = None) -> Iterator[None]:
    """User errors become one-line gr.Errors without server paths (see hide_paths); bugs are
    logged with their traceback and shown as one line too, so the page never sees a stack trace."""
    try:
        yield
    except gr.Error:
        raise
    except GalwhisperError as exc:
        raise gr.Error(hide_paths(str(exc), keep, rename), print_exception=False) from None
    except Exception as exc:
        log.exception("galwhisper app: unexpected error")
        message = f"unexpected error ({type(exc).__name__}); the details are in the server log"
        raise gr.Error(message, print_exception=False) from None


def _language(code: str | None) -> str | None:
    return language_code((code or "").strip() or DEFAULT_LANGUAGE, allow_auto=True, option="language")


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    total = round(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _info(t: Transcript, transcriber: Transcriber, extra: str = "") -> str:
    parts = [
        f"{t.duration:.1f} s of audio transcribed in {t.elapsed:.1f} s",
        f"real-time factor {t.real_time_factor:.2f}",
        f"model {transcriber.name}",
        f"language {t.language or '?'}",
    ]
    if extra:
        parts.append(extra)
    if not t.text:
        parts.append("no speech found")
    return " · ".join(parts)


def live_html(update: LiveUpdate | None) -> str:
    """The Live tab's text: confirmed words plainly, the tentative tail greyed, a status line."""
    if update is None:
        return '<div class="live-text"><span class="live-status">Press Record and speak: text appears as you talk.</span></div>'
    status = f"{update.heard_seconds:.0f} s heard · {update.updates} updates"
    if update.updates:
        status += f" · last update {update.update_seconds:.1f} s for {update.buffer_seconds:.0f} s of audio"
    return (
        '<div class="live-text">'
        f'<span class="confirmed">{html.escape(update.confirmed)}</span> '
        f'<span class="tentative" style="color: #9ca3af">{html.escape(update.tentative)}</span>'
        f'</div><div class="live-status" style="color: #6b7280; font-size: 0.85em">{status}</div>'
    )


class LiveChunks:
    """The Live microphone chunks each page posted, put back in recording order, not yet transcribed.

    Gradio's browser side records the microphone in 0.1-s chunks and, for each, uploads the file
    and then posts it to its /stream route. Both steps lose audio, measured on 2 cores:
    - /stream keeps only a stream's latest chunk until the queue reads it, so on a busy server
      chunks were replaced unread (5.3-12.6 s of a 22.4-s talk arrived, 8 other requests running);
    - the uploads run at once and each posts when it is done, so neighbouring chunks arrived
      swapped, about 10 times a minute from one quiet local visitor (two uploads often leave the
      browser within a millisecond), and each swap garbles a word or two.
    The page numbers its uploads (RAW_MICROPHONE_HEAD's script, header `UPLOAD_HEADER`);
    `keep_live_chunks` notes the number of each upload and each chunk posted to /stream. A Live
    update takes the page's chunks in number order, waiting up to `hold_seconds` for a missing
    number; Stop takes the rest. Without numbers (another client) chunks go in arrival order. A
    chunk is known by Gradio's content-named folder and file name, so equal chunks (such as
    silence) are interchangeable."""

    def __init__(self, hold_seconds: float = LIVE_REORDER_SECONDS):
        self.hold_seconds = hold_seconds
        self._lock = threading.Lock()
        self._arrivals = itertools.count()
        self._uploaded: dict[str, list[tuple[int, float]]] = {}  # chunk key -> (number, when) of uploads not yet posted
        self._noted: dict[str, list[tuple[int, bool, str]]] = {}  # page -> (order, numbered, chunk file)
        self._next: dict[str, int] = {}  # page -> the number expected next
        self._gap_since: dict[str, float] = {}  # page -> when a number was first found missing
        self._taken: dict[str, deque[str]] = {}  # page -> keys of the chunks taken last
        self._touched: dict[str, float] = {}

    def uploaded(self, number: int, paths: Sequence[str]) -> None:
        """The page's upload `number` stored `paths`."""
        with self._lock:
            for path in paths:
                self._uploaded.setdefault(_chunk_key(path), []).append((number, time.monotonic()))

    def add(self, page: str, path: str) -> None:
        """A chunk posted to /stream by `page`."""
        now = time.monotonic()
        with self._lock:
            for stale in [key for key, when in self._touched.items() if now - when > LIVE_CHUNKS_MAX_AGE]:
                self._forget(stale)  # a page that left mid-recording
            for key in [key for key, uploads in self._uploaded.items() if now - uploads[-1][1] > LIVE_CHUNKS_MAX_AGE]:
                del self._uploaded[key]  # uploads of the other tabs, never posted to /stream
            self._noted.setdefault(page, []).append(self._order(path))
            self._touched[page] = now

    def take_ready(self, page: str | None, handed: str) -> list[str]:
        """The page's chunks in recording order, up to a missing number (waited for at most
        `hold_seconds`). `handed` (the chunk Gradio hands the update) counts only if it was never
        noted: a stream's first chunk comes with the queue join, not through /stream."""
        now = time.monotonic()
        with self._lock:
            noted, key = self._noted.setdefault(page, []), _chunk_key(handed)
            taken = self._taken.setdefault(page, deque(maxlen=LIVE_TAKEN_KEPT))
            if key not in taken and all(_chunk_key(path) != key for _, _, path in noted):
                noted.append(self._order(handed))
            noted.sort()
            ready = []
            while noted:
                order, numbered, path = noted[0]
                expected = self._next.get(page)
                if numbered and expected is not None and order > expected:
                    since = self._gap_since.setdefault(page, now)
                    if now - since < self.hold_seconds:
                        break  # the chunk before it is probably still on its way
                self._gap_since.pop(page, None)
                if numbered:
                    self._next[page] = order + 1
                ready.append(noted.pop(0)[2])
            taken.extend(_chunk_key(path) for path in ready)
            self._touched[page] = now
            return ready

    def take_all(self, page: str | None) -> list[str]:
        """Stop: every chunk the page posted that no update took, in recording order."""
        with self._lock:
            return [path for _, _, path in sorted(self._forget(page))]

    def _order(self, path: str) -> tuple[int, bool, str]:
        """(the page's number of the oldest upload of this chunk not yet posted, True, path);
        (arrival count, False, path) when none is known."""
        key = _chunk_key(path)
        uploads = self._uploaded.get(key)
        if not uploads:
            return next(self._arrivals), False, path
        number, _ = uploads.pop(0)
        if not uploads:
            del self._uploaded[key]
        return number, True, path

    def _forget(self, page: str | None) -> list[tuple[int, bool, str]]:
        for table in (self._touched, self._taken, self._next, self._gap_since):
            table.pop(page, None)
        return self._noted.pop(page, [])


def _chunk_key(path: str) -> str:
    return "/".join(Path(path).parts[-2:])


def _upload_number(request: Request) -> int | None:
    """The page's number of this upload (UPLOAD_HEADER), if it sent one."""
    value = request.headers.get(UPLOAD_HEADER, "")
    return int(value) if value.isdigit() else None


def keep_live_chunks(demo: gr.Blocks, chunks: LiveChunks) -> None:
    """Put routes before Gradio's POST /upload and POST /stream/{event_id} that note each
    numbered upload and each Live chunk in `chunks`, then hand the request on unchanged (with
    the original route's checks, such as the login). Without those routes (another Gradio),
    Live works as Gradio delivers it."""
    from gradio.route_utils import API_PREFIX

    events = demo._queue.event_ids_to_events

    def stream_route(forward):
        async def note_live_chunk(event_id: str, body: PredictBody, request: Request):
            event = events.get(event_id)
            chunk = body.data[0] if body.data else None
            if event is not None and event.fn.concurrency_id == LIVE_SLOTS and isinstance(chunk, dict) and chunk.get("path"):
                chunks.add(body.session_hash, chunk["path"])
            return await forward(event_id, body, request)

        return note_live_chunk

    def upload_route(forward):
        async def note_upload(request: Request, bg_tasks: BackgroundTasks, upload_id: str | None = None):
            response = await forward(request, bg_tasks, upload_id)
            number = _upload_number(request)
            if number is not None and isinstance(response, list):
                chunks.uploaded(number, response)
            return response

        return note_upload

    app = demo.server_app
    for path, wrap in ((f"{API_PREFIX}/stream/{{event_id}}", stream_route), (f"{API_PREFIX}/upload", upload_route)):
        gradios = [route for route in _routes(app.router.routes) if route.path == path and "POST" in route.methods]
        if not gradios:
            log.warning("Live: Gradio %s has no %s route; chunks may be lost or swapped", gr.__version__, path)
            continue
        original = gradios[0]
        app.router.routes.insert(0, APIRoute(path, wrap(original.endpoint), methods=["POST"], dependencies=original.dependencies))


def _routes(routes) -> Iterator:
    """Every APIRoute, including those of included routers (FastAPI >= 0.16x keeps them apart)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)


def close_live(session: LiveSession | None) -> None:
    """gr.State's delete callback: a page closed mid-recording stops its worker."""
    if session is not None:
        session.close()


class _Service:
    def __init__(self, config: AppConfig, cache: ModelCache):
        self.config = config
        self.limits = config.limits
        self.models = cache
        # Transcription slots shared by every tab; a URL request takes one only once its
        # download is done, so downloads (in Gradio's "download" slots) never hold one.
        self.slots = threading.BoundedSemaphore(config.concurrency)
        self.live_chunks = LiveChunks()
        # Named after this process: removed on exit, or by the next galwhisper if this one is killed.
        self.workdir = private_tempdir("app")
        atexit.register(shutil.rmtree, self.workdir, ignore_errors=True)

    def _output_dir(self) -> Path:
        """A fresh folder for one request's .srt; folders older than OUTPUT_MAX_AGE go."""
        now = time.time()
        for old in self.workdir.iterdir():
            try:
                if now - old.stat().st_mtime > OUTPUT_MAX_AGE:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        return Path(tempfile.mkdtemp(dir=self.workdir))

    def _listed(self) -> dict[str, str]:
        """The models offered in the picker (read now: runs trained since start count): spec -> short name."""
        return {spec: _short_name(spec) for _, spec in model_choices(self.config.models, self.config.runs_dir)}

    def _model(self, model: str | None) -> str:
        """The spec to load, refused (with the same words whether it exists or not) when it is a
        typed folder and typed folders are off."""
        spec = (model or "").strip() or model_specs.DEFAULT_MODEL
        if self.config.allow_model_paths or spec in self._listed():
            return spec
        raise GalwhisperError(f"model {one_line(spec, 80)}: not offered by this app; choose a model from the list")

    def _errors(self, *keep: str):
        """_as_gr_error keeping what the visitor typed and naming listed runs by NAME/best-ct2."""
        listed = {spec: name for spec, name in self._listed().items() if spec != name}
        return _as_gr_error(keep=keep, rename=listed)

    def _load(self, spec: str, progress) -> Transcriber:
        progress(0.05, desc="Loading the model")
        return self.models.get(spec)

    def _transcribe(self, transcriber: Transcriber, source, name: str, options: TranscribeOptions, progress, extra: str = ""):
        """Decode (refusing audio over the duration cap before decoding it all) and transcribe,
        in one of the transcription slots."""
        progress(0.2, desc="Waiting for a free slot")
        with self.slots:
            progress(0.3, desc="Transcribing")
            audio = load_audio(source, max_seconds=self.limits.max_duration)
            transcript = transcriber.transcribe(audio, options, name=name)
        progress(0.95, desc="Writing subtitles")
        srt = write_transcript(transcript, "srt", self._output_dir())
        return transcript.text, str(srt), _info(transcript, transcriber, extra)

    # -- endpoints (argument order is the public API) ----------------------------------------

    def transcribe_microphone(self, recording, model, language, progress=gr.Progress()):
        if not recording:
            raise gr.Error("No recording: press Record, speak, press Stop, then Transcribe.", print_exception=False)
        with self._errors(model):
            options = TranscribeOptions(language=_language(language))
            transcriber = self._load(self._model(model), progress)
            return self._transcribe(transcriber, str(recording), "microphone", options, progress)

    def transcribe_url(self, url, model, language, progress=gr.Progress()):
        url = (url or "").strip()
        if not url:
            raise gr.Error("No URL: paste a YouTube link or the address of an audio or video file.", print_exception=False)
        with self._errors(url, model):
            check_url(url, self.limits.allow_private_urls)  # refuse file://, ftp://, private hosts before anything is loaded
            options = TranscribeOptions(language=_language(language))
            transcriber = self._load(self._model(model), progress)
            progress(0.1, desc="Downloading")
            started = time.perf_counter()
            with fetched_audio(url, self.limits) as media:
                fetched = time.perf_counter() - started
                header = f"**{media.title}** · {_clock(media.duration)}"
                yield header, "", None, f"downloaded in {fetched:.1f} s; transcribing…"
                result = self._transcribe(transcriber, media.path, url, options, progress, f"downloaded in {fetched:.1f} s")
            yield (header, *result)

    def transcribe_file(self, file, model, language, progress=gr.Progress()):
        if not file:
            raise gr.Error("No file: choose an audio or video file first.", print_exception=False)
        path = str(file)
        with self._errors(model):
            options = TranscribeOptions(language=_language(language))
            transcriber = self._load(self._model(model), progress)
            return self._transcribe(transcriber, path, Path(path).name, options, progress)

    # -- the Live tab --------------------------------------------------------------------------

    def live_start(self):
        """Record pressed: a new session starts with the first chunk."""
        return None, live_html(None), "", None, ""

    def live_chunk(self, chunk, session, model, language, request: gr.Request):
        """The microphone's chunks that came in since the last call, in recording order
        (LiveChunks): fed to the session's worker, which transcribes in the background; answers
        at once with the latest update."""
        if chunk is None or (session is not None and session.finished):
            return gr.skip(), session  # nothing yet, or a chunk that came in after Stop
        with self._errors(model):
            if session is None:
                transcriber = self.models.get(self._model(model))
                options = TranscribeOptions(language=_language(language))
                config = LiveConfig(max_seconds=self.limits.max_duration)
                session = LiveSession(LiveTranscriber(transcriber, options, config))
            for path in self.live_chunks.take_ready(request.session_hash, str(chunk)):
                session.feed(*read_samples(path))
            return live_html(session.latest()), session

    def live_stop(self, session, request: gr.Request):
        """Stop pressed: the chunks not yet read and the last audio are transcribed; the final
        text and .srt are given."""
        unread = self.live_chunks.take_all(request.session_hash)
        if session is None:
            raise gr.Error("Nothing heard yet: press Record, speak, then Stop.", print_exception=False)
        with self._errors():
            for path in unread:
                if not session.finished:
                    session.feed(*read_samples(path))
            transcript = session.finish(LIVE_FINISH_TIMEOUT)
            srt = write_transcript(transcript, "srt", self._output_dir(), stem="live")
            transcriber = session.live.transcriber
            updates = session.live.stats
            extra = f"{len(updates)} live updates"
            if updates:
                extra += f", median {sorted(u.compute_seconds for u in updates)[len(updates) // 2]:.1f} s each"
            return live_html(session.latest()), transcript.text, str(srt), _info(transcript, transcriber, extra), session


def _short_name(spec: str) -> str:
    """How a listed model is named in messages: base, or NAME/best-ct2 for a run."""
    if spec == model_specs.DEFAULT_MODEL or "/" not in spec:
        return spec
    return "/".join(Path(spec).parts[-2:])


# ---------------------------------------------------------------------------------------------
# The page


def _outputs(prefix: str, label: str = "Transcript"):
    text = gr.Textbox(label=label, lines=8, max_lines=30, interactive=False, buttons=["copy"], elem_id=f"{prefix}-text")
    with gr.Row():
        srt = gr.File(label="Subtitles (.srt)", interactive=False, elem_id=f"{prefix}-srt", scale=1)
        info = gr.Textbox(label="Processing", interactive=False, elem_id=f"{prefix}-info", scale=2)
    return text, srt, info


def build_app(config: AppConfig | None = None, preload: bool = False) -> gr.Blocks:
    """The Gradio app. `config.models`: specs offered first; every `runs_dir/*/best-ct2` is
    offered too. `preload`: load the first model now, so a bad spec fails here and the first
    request does not wait."""
    config = config or AppConfig()
    models, runs_dir, concurrency = list(config.models), config.runs_dir, config.concurrency
    service = _Service(config, ModelCache())
    choices = model_choices(models, runs_dir)
    if preload:
        service.models.get(choices[0][1])
        from faster_whisper.vad import get_vad_model

        get_vad_model()  # Silero VAD (batched windows, the Live tab): loaded now, not by the first visitor

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        gr.Markdown(f"# {TITLE}\n{SUBTITLE}", elem_id="header")
        with gr.Row():
            # Custom values stay allowed in the component: with typed folders off, _Service._model
            # refuses them with its own words (Gradio's refusal would list the runs' server paths).
            model = gr.Dropdown(
                choices, value=choices[0][1], label="Model", allow_custom_value=True, elem_id="model",
                info="bundled base or a fine-tuned run" + (", or type a model folder" if config.allow_model_paths else ""),
            )  # fmt: skip
            language = gr.Dropdown(
                LANGUAGES, value=config.language, label="Language", allow_custom_value=True, elem_id="language",
                info="'auto' detects it",
            )  # fmt: skip
        with gr.Tabs():
            _microphone_tab(service, model, language)
            _live_tab(service, model, language)
            _url_tab(service, model, language)
            _file_tab(service, model, language)

        # Runs trained after the server started show up on the next page load.
        refresh = lambda: gr.Dropdown(choices=model_choices(models, runs_dir))  # noqa: E731
        demo.load(refresh, None, model, queue=False, api_visibility="private")

    demo.queue(default_concurrency_limit=concurrency, max_size=MAX_QUEUE)
    demo.galwhisper_models = service.models  # for callers that want to share the loaded models
    demo.galwhisper_live_chunks = service.live_chunks  # for launch, which routes chunks to it
    return demo


def _transcription_slots(config: AppConfig) -> dict:
    """The classic tabs share `concurrency` transcription slots."""
    return dict(concurrency_limit=config.concurrency, concurrency_id="transcribe")


def _microphone_tab(service: "_Service", model, language) -> None:
    with gr.Tab("Microphone", id="microphone"):
        mic = gr.Audio(sources=["microphone"], type="filepath", label="Recording", elem_id="mic-audio")
        mic_button = gr.Button("Transcribe", variant="primary", elem_id="mic-button")
        mic_out = _outputs("mic")
        mic_button.click(service.transcribe_microphone, [mic, model, language], list(mic_out), api_name="transcribe_microphone",
                         **_transcription_slots(service.config))


def _live_tab(service: "_Service", model, language) -> None:
    limits, config = service.limits, service.config
    with gr.Tab("Live", id="live"):
        live_session = gr.State(None, time_to_live=limits.max_duration + 3600, delete_callback=close_live)
        live_audio = gr.Audio(
            sources=["microphone"], streaming=True, type="filepath", label="Microphone (live)", elem_id="live-audio",
        )  # fmt: skip
        live_view = gr.HTML(live_html(None), label="Live transcript", elem_id="live-view")
        live_out = _outputs("live", label="Final transcript")
        live_audio.start_recording(
            service.live_start, None, [live_session, live_view, *live_out], queue=False, api_visibility="private",
        )  # fmt: skip
        # show_progress hidden: Gradio would fade the text for as long as the stream runs.
        live_audio.stream(
            service.live_chunk, [live_audio, live_session, model, language], [live_view, live_session],
            stream_every=LIVE_CHUNK_SECONDS, time_limit=limits.max_duration, concurrency_limit=config.live_sessions,
            concurrency_id=LIVE_SLOTS, api_visibility="private", show_progress="hidden",
        )  # fmt: skip
        # Not in the "live" slots (held by the streams themselves until they close): it
        # only waits for its own session's worker.
        live_audio.stop_recording(
            service.live_stop, [live_session], [live_view, *live_out, live_session], concurrency_limit=None,
            api_visibility="private",
        )  # fmt: skip


def _url_tab(service: "_Service", model, language) -> None:
    limits, config = service.limits, service.config
    with gr.Tab("YouTube / URL", id="url"):
        url = gr.Textbox(
            label="YouTube link or media URL", placeholder="https://www.youtube.com/watch?v=…  or  https://…/talk.mp3",
            info=f"http(s) only; up to {_clock(limits.max_duration)} of audio, {limits.max_download_mb:g} MB, "
            f"{limits.download_timeout:g} s to download",
            elem_id="url-input",
        )  # fmt: skip
        url_button = gr.Button("Transcribe", variant="primary", elem_id="url-button")
        url_media = gr.Markdown(label="Media", elem_id="url-media")
        url_out = _outputs("url")
        inputs, outputs = [url, model, language], [url_media, *url_out]
        # Downloads have slots of their own; the transcription after one takes a
        # transcription slot (_Service.slots) only once the download is done.
        downloads = dict(concurrency_limit=config.download_concurrency, concurrency_id="download")
        url_button.click(service.transcribe_url, inputs, outputs, api_name="transcribe_url", **downloads)
        url.submit(service.transcribe_url, inputs, outputs, api_visibility="private", **downloads)


def _file_tab(service: "_Service", model, language) -> None:
    limits, config = service.limits, service.config
    with gr.Tab("Audio file", id="file"):
        upload = gr.File(
            label=f"Audio or video file (any format ffmpeg reads; up to {config.max_upload_mb:g} MB, "
            f"{_clock(limits.max_duration)} of audio)",
            elem_id="file-input",
        )  # fmt: skip
        file_button = gr.Button("Transcribe", variant="primary", elem_id="file-button")
        file_out = _outputs("file")
        file_button.click(service.transcribe_file, [upload, model, language], list(file_out), api_name="transcribe_file",
                          **_transcription_slots(config))


def launch(config: AppConfig | None = None, preload: bool = True, **launch_kwargs) -> gr.Blocks:
    """Build the app and serve it (blocks unless `prevent_thread_lock=True`); returns the app."""
    config = config or AppConfig()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    for spec in config.models:
        model_specs.resolve(spec)  # a typo in --model fails now, with one line
    _check_port_free(config.host, config.port)
    # SIGTERM (a service manager stopping the app) ends the process through atexit, which
    # removes the app's temp folder; without this, SIGTERM skips atexit.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
    demo = build_app(config, preload=preload)
    launch_kwargs.setdefault("ssr_mode", False)
    launch_kwargs.setdefault("show_error", False)
    launch_kwargs.setdefault("head", RAW_MICROPHONE_HEAD)
    launch_kwargs.setdefault("max_file_size", int(config.max_upload_mb * 1_000_000))
    if config.credentials:
        launch_kwargs.setdefault("auth", list(config.credentials))
    block = not launch_kwargs.pop("prevent_thread_lock", False)
    demo.launch(server_name=config.host, server_port=config.port, share=config.share, prevent_thread_lock=True, **launch_kwargs)
    keep_live_chunks(demo, demo.galwhisper_live_chunks)
    if block:
        demo.block_thread()
    return demo


def _stop(signum, _frame) -> None:
    raise SystemExit(128 + signum)  # a normal exit: atexit handlers run


def _check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise GalwhisperError(f"--port {port}: already in use on {host}; choose another --port") from None
            raise GalwhisperError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
