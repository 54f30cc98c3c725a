"""The Gradio app, tested for real: the app served on 127.0.0.1, Debian's Chromium driven by
Playwright (a fake microphone fed from a wav file), media served by `python -m http.server`,
and gradio_client calling the API. Everything is offline."""

from __future__ import annotations

import re
import shutil
import struct
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gradio_client import Client, handle_file

from conftest import assert_one_line_error, ffmpeg, free_port, run_cli, serve_folder
from galwhisper.app import AppConfig, ModelCache, find_runs, launch, model_choices
from galwhisper.cli import build_parser
from galwhisper.errors import GalwhisperError
from galwhisper.media import DownloadLimits, fetched_audio
from galwhisper.transcribe import TranscribeOptions, Transcriber

CHROMIUM = "/usr/bin/chromium"
WHISPER_HEADER = struct.pack("<IH", 6, 12) + b"WhisperSpec\0"  # the start of a CTranslate2 Whisper model.bin
REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "build" / "screenshots"
BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
MIC_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]

def browser(test):
    """A test that drives a real Chromium: end to end, so also `slow`."""
    return pytest.mark.slow(pytest.mark.browser(test))
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"
)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-záéíóúñ']+", text.lower()))


# ---------------------------------------------------------------------------------------------
# Fixtures: the server, reference transcripts, the browser


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def add_broken_run(runs: Path, name: str = "late-run") -> Path:
    """A run folder that appears after the server started, with a damaged model."""
    model = runs / name / "best-ct2"
    model.mkdir(parents=True, exist_ok=True)
    (model / "model.bin").write_bytes(b"not a model")
    return model


@pytest.fixture(scope="module")
def server(runs_dir) -> str:
    """The app on a free port, in this process (its server runs in threads)."""
    port = free_port()
    config = AppConfig(runs_dir=str(runs_dir), port=port, limits=DownloadLimits(allow_private_urls=True))
    demo = launch(config, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def reference():
    """What `Transcriber("base")` (an instance of the test's own) gives for a file."""
    transcriber, cache = Transcriber("base"), {}

    def text(path, language: str = "gl") -> str:
        key = (str(path), language)
        if key not in cache:
            cache[key] = transcriber.transcribe(path, TranscribeOptions(language=language)).text
        return cache[key]

    return text


@pytest.fixture(scope="module")
def playwright():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture
def open_page(playwright, server, tmp_path):
    """open_page(tab, fake_audio=None) -> a page of the app with `tab` selected, in a
    browser context of its own (the fake microphone file is fixed per browser)."""
    contexts = []

    def opener(tab: str, fake_audio: Path | None = None):
        args = BROWSER_ARGS + MIC_ARGS + ([f"--use-file-for-fake-audio-capture={fake_audio}"] if fake_audio else [])
        context = playwright.chromium.launch_persistent_context(
            tempfile.mkdtemp(dir=tmp_path, prefix="chromium-"),
            executable_path=CHROMIUM,
            headless=True,
            permissions=["microphone"],
            args=args,
            viewport={"width": 1200, "height": 1000},
        )
        contexts.append(context)
        context.set_default_timeout(60_000)
        page = context.new_page()
        page.goto(server)
        page.get_by_role("tab", name=tab).click()
        return page

    yield opener
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def screenshot(page, folder: Path, name: str) -> None:
    """Full page, toasts closed, into pytest's tmp and build/screenshots/ of the repo."""
    page.evaluate("document.querySelectorAll('.toast-close').forEach(button => button.click())")
    page.wait_for_function("!document.querySelector('.toast-body')", timeout=5_000)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / path.name)


def expect_error(page, message: str) -> None:
    """A toast carrying `message` appears; no traceback anywhere in the page."""
    page.locator(".toast-body", has_text=message).first.wait_for(state="visible", timeout=60_000)
    assert "Traceback" not in page.content()


def wait_for_recorded(page, audio: str, seconds: int) -> None:
    """Poll the recorder's own duration display (m:ss) until it shows `seconds`."""
    page.wait_for_function(
        """([sel, want]) => { const t = document.querySelector(sel + ' time.duration');
            if (!t) return false; const [m, s] = t.textContent.trim().split(':').map(Number); return m * 60 + s >= want; }""",
        arg=[audio, seconds], timeout=(seconds + 30) * 1000, polling=250,
    )


def stop_recording(page, audio: str) -> None:
    """Stop, and wait until the recording is the component's value: uploaded and fetched back
    from the server (the Play button shows before that, and a click then sends no audio)."""
    with page.expect_response(lambda r: "/gradio_api/file=" in r.url, timeout=60_000):
        with page.expect_response(lambda r: r.url.endswith("/gradio_api/upload") and r.ok, timeout=60_000):
            page.locator(f"{audio} button.stop-button").click()
    page.locator(audio).get_by_role("button", name="Play", exact=True).wait_for()


def click_transcribe_and_wait(page, prefix: str) -> str:
    """Click the tab's Transcribe button and wait for this request's info line; the text."""
    info = page.locator(f"#{prefix}-info textarea")
    page.evaluate("sel => { document.querySelector(sel).value = '' }", f"#{prefix}-info textarea")
    page.locator(f"#{prefix}-button").click()
    page.wait_for_function(
        "sel => document.querySelector(sel).value.includes('real-time factor')", arg=f"#{prefix}-info textarea", timeout=120_000
    )
    assert "model whisper-base (bundled)" in info.input_value()
    return page.locator(f"#{prefix}-text textarea").input_value()


# ---------------------------------------------------------------------------------------------
# Browser: one test per tab, bad input first, then a good request on the same page


@browser
@needs_chromium
def test_file_tab(open_page, runs_dir, galician_clips, reference, screenshots, tmp_path):
    add_broken_run(runs_dir)
    page = open_page("Audio file")
    page.locator("#model input").click()  # runs made after the server started are offered
    page.get_by_role("option", name="late-run: fine-tuned").wait_for()
    page.keyboard.press("Escape")
    assert page.locator("#model input").input_value() == "base: Whisper base (bundled)"
    page.locator("#file-button").click()
    expect_error(page, "No file: choose an audio or video file first.")

    notes = tmp_path / "notes.txt"
    notes.write_text("not audio at all\n")
    page.locator("#file-input input[type=file]").set_input_files(str(notes))
    page.locator("#file-button").click()
    expect_error(page, "notes.txt: not a readable audio/video file")
    assert "/tmp/gradio" not in page.locator(".toast-body").first.inner_text()  # server paths stay hidden

    page.locator("#file-input button[aria-label='Clear']").first.click()
    clip = galician_clips[1]
    page.locator("#file-input input[type=file]").set_input_files(str(clip))
    page.locator(f"#file-input td.filename[aria-label='{clip.name}']").wait_for()
    shown = click_transcribe_and_wait(page, "file")
    assert shown and shown == reference(clip)

    link = page.locator(f"#file-srt a[download='{clip.stem}.srt']")
    srt = page.request.get(link.get_attribute("href")).text()
    assert srt.startswith("1\n00:00:") and "-->" in srt and words(shown) <= words(srt), srt
    screenshot(page, screenshots, "file")


@browser
@needs_chromium
def test_microphone_tab(open_page, english_clip, screenshots, tmp_path):
    # The fake device loops the file: pad the sentence with silence, record one loop.
    padded = ffmpeg(english_clip, tmp_path / "mic.wav", "-af", "adelay=500,apad=pad_dur=1.5", "-ar", "44100", "-ac", "1")
    page = open_page("Microphone", fake_audio=padded)
    page.locator("#mic-button").click()
    expect_error(page, "No recording: press Record")

    page.locator("#language input").click()
    page.get_by_role("option", name="English (en)").click()
    page.locator("#mic-audio button.record-button").click()
    page.locator("#mic-audio button.stop-button").wait_for()
    wait_for_recorded(page, "#mic-audio", 7)  # the padded clip is ~7 s
    stop_recording(page, "#mic-audio")

    shown = click_transcribe_and_wait(page, "mic")
    # The beep Chromium plays without a file has no words: these prove the file's audio arrived.
    assert "country" in words(shown) and words(shown) & {"fellow", "americans"}, shown
    assert "language en" in page.locator("#mic-info textarea").input_value()
    page.locator("#mic-srt a[download='microphone.srt']").wait_for()
    screenshot(page, screenshots, "microphone")


@pytest.fixture(scope="module")
def media_site(tmp_path_factory, galician_clips):
    """A webm (opus) and an mp4 (aac) of a Galician clip on a local http.server."""
    folder = tmp_path_factory.mktemp("site")
    ffmpeg(galician_clips[2], folder / "charla.webm", "-c:a", "libopus")
    ffmpeg(galician_clips[2], folder / "entrevista.mp4", "-c:a", "aac")
    with serve_folder(folder) as base:
        yield base


@browser
@needs_chromium
def test_url_tab(open_page, media_site, reference, screenshots):
    page = open_page("YouTube / URL")
    url_box = page.locator("#url-input textarea, #url-input input").first

    page.locator("#url-button").click()
    expect_error(page, "No URL: paste a YouTube link")
    url_box.fill("file:///etc/passwd")
    page.locator("#url-button").click()
    expect_error(page, "file:///etc/passwd: only http(s) URLs are supported")
    url_box.fill(f"{media_site}/missing.webm")
    page.locator("#url-button").click()
    expect_error(page, f"{media_site}/missing.webm: not found (HTTP 404)")

    for name in ("charla.webm", "entrevista.mp4"):
        url = f"{media_site}/{name}"
        url_box.fill(url)
        shown = click_transcribe_and_wait(page, "url")
        media = page.locator("#url-media").inner_text()
        assert Path(name).stem in media and "0:0" in media, media  # title and duration (m:ss)
        with fetched_audio(url, DownloadLimits(allow_private_urls=True)) as fetched:
            assert shown and shown == reference(fetched.path), (name, shown)
        page.locator(f"#url-srt a[download='{Path(name).stem}.srt']").wait_for()
    screenshot(page, screenshots, "url")


# ---------------------------------------------------------------------------------------------
# API: gradio_client


def test_concurrent_api_clients(server, galician_clips, reference):
    """Eight clients at once (two worked on at a time): every answer is the right transcript."""
    clips = [galician_clips[i % len(galician_clips)] for i in range(8)]
    expected = [reference(clip) for clip in clips]
    barrier = threading.Barrier(len(clips))

    def call(clip):
        client = Client(server, verbose=False)
        barrier.wait()
        return client.predict(handle_file(str(clip)), "base", "gl", api_name="/transcribe_file")

    with ThreadPoolExecutor(len(clips)) as pool:
        results = list(pool.map(call, clips))
    for (text, srt, info), want, clip in zip(results, expected, clips):
        assert text and text == want, (clip.name, text, want)
        assert Path(srt).name == f"{clip.stem}.srt" and "real-time factor" in info


def test_api_errors_are_one_line(server, runs_dir, galician_clips):
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    clip = handle_file(str(galician_clips[0]))
    broken = str(add_broken_run(runs_dir))
    cases = [
        ((clip, broken, "gl"), "/transcribe_file", "model.bin: not a CTranslate2 model.bin"),
        (("", "base", "gl"), "/transcribe_url", "No URL"),
        (("ftp://example.org/a.mp3", "base", "gl"), "/transcribe_url", "only http(s) URLs"),
        ((clip, "/no/such/model", "gl"), "/transcribe_file", "/no/such/model: model not found"),
        ((clip, "base", "xx"), "/transcribe_file", "language xx: not a Whisper language"),
    ]
    for args, api_name, needle in cases:
        with pytest.raises(AppError) as caught:
            client.predict(*args, api_name=api_name)
        message = str(caught.value)
        assert needle in message and "\n" not in message and "Traceback" not in message, message
    # The app still serves after the errors; the microphone endpoint reads a file too.
    text, _, info = client.predict(clip, "base", "auto", api_name="/transcribe_microphone")
    assert text and "language " in info


# ---------------------------------------------------------------------------------------------
# Pieces: run discovery, the model cache, the CLI


def test_runs_are_listed(tmp_path):
    for name in ("b-run", "a-run"):
        (tmp_path / name / "best-ct2").mkdir(parents=True)
        (tmp_path / name / "best-ct2" / "model.bin").write_bytes(b"")
    (tmp_path / "unfinished" / "best-ct2").mkdir(parents=True)  # no model.bin: not offered
    runs = find_runs(tmp_path)
    assert runs == [str(tmp_path / "a-run" / "best-ct2"), str(tmp_path / "b-run" / "best-ct2")]
    assert find_runs(tmp_path / "missing") == []
    choices = model_choices(["base"], tmp_path)
    assert [value for _, value in choices] == ["base", *runs]
    assert choices[1][0].startswith("a-run: fine-tuned")


def test_model_cache_loads_each_model_once():
    loads = []

    def factory(spec):
        loads.append(spec)
        return object()

    cache = ModelCache(size=2, factory=factory)
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(cache.get, ["base", "", None, "base", " base ", "base"]))
    assert loads == ["base"] and all(g is got[0] for g in got)


def test_model_cache_keeps_a_few_and_words_load_failures(tmp_path):
    folders = []
    for name in "abc":
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.bin").write_bytes(WHISPER_HEADER)  # resolve() reads only the header
        folders.append(str(tmp_path / name))

    def factory(spec):
        if spec.endswith("c"):
            raise RuntimeError("Unsupported model binary version.\nSecond line")
        return object()

    cache = ModelCache(size=2, factory=factory)
    a, _, _ = cache.get(folders[0]), cache.get(folders[1]), cache.get("base")  # a is dropped
    assert cache.get(folders[0]) is not a and cache.get(folders[0]) is cache.get(folders[0])
    with pytest.raises(GalwhisperError, match=r"/c: could not load the model \(Unsupported model binary version\. Second line\)$"):
        cache.get(folders[2])
    with pytest.raises(GalwhisperError, match="model not found"):
        cache.get(str(tmp_path / "missing"))


def test_cli_app_command():
    args = build_parser("app").parse_args(["app", "--model", "base", "runs/x/best-ct2", "--port", "7999", "--runs-dir", "elsewhere"])
    assert args.models == ["base", "runs/x/best-ct2"] and args.port == 7999 and args.runs_dir == "elsewhere"
    assert not hasattr(args, "host") and not hasattr(args, "share")  # not given: AppConfig's defaults apply
    config = AppConfig(models=args.models, port=args.port, runs_dir=args.runs_dir)
    assert config.host == "127.0.0.1" and not config.share and config.language == "gl"
    assert_one_line_error(run_cli("app", "--model", "/no/such/model", "--port", str(free_port()), timeout=120), "/no/such/model")
