"""The web app: a Gradio Blocks UI over `galwhisper.transcribe`, nothing more.

Three tabs (Microphone, YouTube / URL, Audio file) share one model picker and one language
picker. Each tab has a stable API endpoint; every endpoint takes its input first, then the
model, then the language:

    /transcribe_microphone (audio, model, language) -> (transcript, srt, info)
    /transcribe_url        (url, model, language)   -> (media, transcript, srt, info)
    /transcribe_file       (file, model, language)  -> (transcript, srt, info)

audio, file   a local file, passed with `gradio_client.handle_file(path)`; the file tab reads
              anything ffmpeg decodes (audio or video), of any length
url           a YouTube link or any http(s) media URL yt-dlp reads (caps: `DownloadLimits`)
model         "base" (the bundled Whisper base), a run such as "runs/NAME/best-ct2", or any
              spec `galwhisper.models.resolve` accepts
language      a Whisper language code ("gl", "es", "pt", "en", ...) or "auto" to detect
transcript    the text; srt: a subtitle file; info: audio length, processing time, real-time
              factor; media: the URL's title and duration

    from gradio_client import Client, handle_file
    text, srt, info = Client("http://127.0.0.1:7860/").predict(
        handle_file("talk.mp3"), "base", "gl", api_name="/transcribe_file")

Errors a user can cause (no input, a file that is not audio, a refused or failing URL, an
unknown model) are shown as one-line `gr.Error`s; the app keeps serving. Models are loaded
once and kept (a few at a time) for every later request.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from galwhisper import models as model_specs
from galwhisper import options
from galwhisper.audio import to_mono_16k
from galwhisper.errors import GalwhisperError, one_line
from galwhisper.files import private_tempdir
from galwhisper.languages import DEFAULT_LANGUAGE, language_code
from galwhisper.media import DownloadLimits, check_url, fetched_audio
from galwhisper.transcribe import TranscribeOptions, Transcriber, Transcript, write_transcript

log = logging.getLogger(__name__)

TITLE = "galwhisper — Recoñecemento de fala en galego"
SUBTITLE = "Speech recognition for Galician with Whisper: record, paste a YouTube or media link, or upload a file."
MAX_QUEUE = 64  # waiting requests beyond this are refused with "queue full"
MAX_LOADED_MODELS = 3  # least recently used models beyond this are dropped
OUTPUT_MAX_AGE = 3600  # seconds an .srt we wrote is kept (Gradio serves its own copy)

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




@dataclass(frozen=True)
class AppConfig:
    """How the app is served; field names are `galwhisper app`'s option names."""

    models: tuple[str, ...] = (model_specs.DEFAULT_MODEL,)  # offered first; every RUNS_DIR/*/best-ct2 too
    runs_dir: str = "runs"
    language: str = DEFAULT_LANGUAGE  # the language picker's first value ("auto" detects)
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    concurrency: int = 2  # requests worked on at once, across all tabs (2 CPU cores)
    limits: DownloadLimits = field(default_factory=DownloadLimits)

    def __post_init__(self):
        object.__setattr__(self, "models", tuple(self.models or (model_specs.DEFAULT_MODEL,)))
        object.__setattr__(self, "language", language_code(self.language, allow_auto=True) or "auto")
        options.whole("port", self.port, minimum=0, maximum=65535)
        options.whole("concurrency", self.concurrency, maximum=64)


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


@contextmanager
def _as_gr_error(hide: str | None = None) -> Iterator[None]:
    """User errors become one-line gr.Errors; bugs are logged with their traceback and shown
    as one line too, so the page never sees a stack trace. `hide`: a server path (Gradio's
    upload folder) to show as its file name only."""
    try:
        yield
    except gr.Error:
        raise
    except GalwhisperError as exc:
        message = str(exc)
        if hide:
            message = message.replace(str(hide), Path(hide).name)
        raise gr.Error(message, print_exception=False) from None
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


class _Service:
    def __init__(self, limits: DownloadLimits | None, cache: ModelCache):
        self.limits = limits or DownloadLimits()
        self.models = cache
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

    def _load(self, model: str | None, progress) -> Transcriber:
        progress(0.05, desc="Loading the model")
        return self.models.get(model)

    def _transcribe(self, transcriber: Transcriber, source, name: str, options: TranscribeOptions, progress, extra: str = ""):
        progress(0.3, desc="Transcribing")
        transcript = transcriber.transcribe(source, options, name=name)
        progress(0.95, desc="Writing subtitles")
        srt = write_transcript(transcript, "srt", self._output_dir())
        return transcript.text, str(srt), _info(transcript, transcriber, extra)

    # -- endpoints (argument order is the public API) ----------------------------------------

    def transcribe_microphone(self, recording, model, language, progress=gr.Progress()):
        if recording is None or recording[1] is None or len(recording[1]) == 0:
            raise gr.Error("No recording: press Record, speak, press Stop, then Transcribe.", print_exception=False)
        sample_rate, samples = recording
        with _as_gr_error():
            options = TranscribeOptions(language=_language(language))
            transcriber = self._load(model, progress)
            audio = to_mono_16k(samples, sample_rate)
            return self._transcribe(transcriber, audio, "microphone", options, progress)

    def transcribe_url(self, url, model, language, progress=gr.Progress()):
        url = (url or "").strip()
        if not url:
            raise gr.Error("No URL: paste a YouTube link or the address of an audio or video file.", print_exception=False)
        with _as_gr_error():
            check_url(url, self.limits.allow_private_urls)  # refuse file://, ftp://, ... before anything is loaded
            options = TranscribeOptions(language=_language(language))
            transcriber = self._load(model, progress)
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
        with _as_gr_error(hide=path):
            options = TranscribeOptions(language=_language(language))
            transcriber = self._load(model, progress)
            return self._transcribe(transcriber, path, Path(path).name, options, progress)


# ---------------------------------------------------------------------------------------------
# The page


def _outputs(prefix: str):
    text = gr.Textbox(label="Transcript", lines=8, max_lines=30, interactive=False, buttons=["copy"], elem_id=f"{prefix}-text")
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
    service = _Service(config.limits, ModelCache())
    choices = model_choices(models, runs_dir)
    if preload:
        service.models.get(choices[0][1])

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        gr.Markdown(f"# {TITLE}\n{SUBTITLE}", elem_id="header")
        with gr.Row():
            model = gr.Dropdown(
                choices, value=choices[0][1], label="Model", allow_custom_value=True, elem_id="model",
                info="bundled base, a fine-tuned run, or type a model folder",
            )  # fmt: skip
            language = gr.Dropdown(
                LANGUAGES, value=config.language, label="Language", allow_custom_value=True, elem_id="language",
                info="'auto' detects it",
            )  # fmt: skip
        common = dict(concurrency_limit=concurrency, concurrency_id="transcribe")

        with gr.Tabs():
            with gr.Tab("Microphone", id="microphone"):
                mic = gr.Audio(sources=["microphone"], type="numpy", label="Recording", elem_id="mic-audio")
                mic_button = gr.Button("Transcribe", variant="primary", elem_id="mic-button")
                mic_out = _outputs("mic")
                mic_inputs = [mic, model, language]
                mic_button.click(service.transcribe_microphone, mic_inputs, list(mic_out), api_name="transcribe_microphone", **common)

            with gr.Tab("YouTube / URL", id="url"):
                limits = service.limits
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
                url_button.click(service.transcribe_url, inputs, outputs, api_name="transcribe_url", **common)
                url.submit(service.transcribe_url, inputs, outputs, api_visibility="private", **common)

            with gr.Tab("Audio file", id="file"):
                upload = gr.File(label="Audio or video file (any format ffmpeg reads, any length)", elem_id="file-input")
                file_button = gr.Button("Transcribe", variant="primary", elem_id="file-button")
                file_out = _outputs("file")
                file_button.click(
                    service.transcribe_file, [upload, model, language], list(file_out), api_name="transcribe_file", **common
                )

        # Runs trained after the server started show up on the next page load.
        refresh = lambda: gr.Dropdown(choices=model_choices(models, runs_dir))  # noqa: E731
        demo.load(refresh, None, model, queue=False, api_visibility="private")

    demo.queue(default_concurrency_limit=concurrency, max_size=MAX_QUEUE)
    demo.galwhisper_models = service.models  # for callers that want to share the loaded models
    return demo


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
    demo.launch(server_name=config.host, server_port=config.port, share=config.share, **launch_kwargs)
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
