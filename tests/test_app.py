"""The Gradio app, tested for real: the app served on 127.0.0.1, Debian's Chromium driven by
Playwright (a fake microphone fed from a wav file), media served by `python -m http.server`,
and gradio_client calling the API. Everything is offline.

Two servers per module run: `server` as a user runs it on their own machine (private URLs
allowed for the local media server), and `shared_server` as a stranger meets it once shared
(login, typed model folders off, small caps, private URLs refused)."""

from __future__ import annotations

import http.server
import re
import shutil
import struct
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from conftest import assert_one_line_error, ffmpeg, free_port, run_cli, serve_folder, speak
from galwhisper.app import AppConfig, LiveChunks, ModelCache, find_runs, hide_paths, launch, model_choices
from galwhisper.audio import SAMPLE_RATE, StreamResampler, load_audio, write_wav
from galwhisper.cli import build_parser
from galwhisper.errors import GalwhisperError
from galwhisper.metrics import error_rates
from galwhisper.media import DownloadLimits, fetched_audio
from galwhisper.models import bundled_ct2_dir
from galwhisper.streaming import LiveTranscriber
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
    limits = DownloadLimits(allow_private_urls=True, download_timeout=STALL_CAP)
    config = AppConfig(runs_dir=str(runs_dir), port=port, limits=limits)
    demo = launch(config, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


STALL_CAP = 20  # the local server's download time cap (s): stalled downloads end with it
VISITOR = ("visitor", "s3cret-pass")
SHARED_CAPS = dict(max_upload_mb=1, max_duration=60)


@pytest.fixture(scope="module")
def shared_server(runs_dir) -> str:
    """The app as strangers meet it once shared: login, typed model folders off, small caps,
    private URLs refused (the default)."""
    port = free_port()
    config = AppConfig(
        runs_dir=str(runs_dir), port=port, allow_model_paths=False, auth=(":".join(VISITOR),),
        max_upload_mb=SHARED_CAPS["max_upload_mb"], limits=DownloadLimits(max_duration=SHARED_CAPS["max_duration"]),
    )  # fmt: skip
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
    """open_page(tab, fake_audio=None, url=None) -> a page of the app (`server`, or `url`) with
    `tab` selected, in a browser context of its own (the fake microphone file is fixed per browser)."""
    contexts = []

    def opener(tab: str | None, fake_audio: Path | None = None, url: str | None = None):
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
        page.goto(url or server)
        if tab:
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


# ---------------------------------------------------------------------------------------------
# The Live tab: a fake microphone playing speech, text while it plays


# IEEE "Harvard" sentences (lists 1 and 2): English that Whisper base transcribes well.
HARVARD = [
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.", "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.", "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.", "The girl at the booth sold fifty bonds.",
]


def english_talk(folder: Path, seconds: float, rate: int = 48000) -> tuple[Path, Path, str, float]:
    """About `seconds` of the HARVARD sentences in espeak-ng's en-us voice, 0.6 s pauses, with
    1 s of silence before and 4 s after, so the fake microphone (which loops its file) is stopped
    in silence. Returns the microphone's wav (at `rate`), the same audio as a 16 kHz wav for the
    Audio-file tab, the sentences, and the length."""
    pieces, spoken, total = [np.zeros(SAMPLE_RATE, np.float32)], [], 1.0
    for i, sentence in enumerate(HARVARD):
        clip = load_audio(speak(sentence, folder / f"s{i}.wav", voice="en-us", speed=140))
        pieces += [clip, np.zeros(int(0.6 * SAMPLE_RATE), np.float32)]
        spoken.append(sentence)
        total += len(clip) / SAMPLE_RATE + 0.6
        if total >= seconds:
            break
    pieces.append(np.zeros(4 * SAMPLE_RATE, np.float32))
    audio = np.concatenate(pieces)
    upload = folder / "talk-16k.wav"
    write_wav(upload, audio)
    mic = ffmpeg(upload, folder / "talk-mic.wav", "-ar", str(rate), "-ac", "1")
    return mic, upload, " ".join(spoken), len(audio) / SAMPLE_RATE


@pytest.fixture(scope="module")
def minute_talk(tmp_path_factory):
    # English, as in the load test: on synthetic Galician the zero-shot base is ~100% wrong (WER
    # 0.91-1.04 for both the live and the file text in four runs), so live and file could not be
    # told apart by how well they heard the talk.
    return english_talk(tmp_path_factory.mktemp("minute-talk"), 55)


def open_live_tab(page) -> None:
    """Open the Live tab and wait until its recorder can stream: the tab's first render loads
    the recorder's wav encoder (web workers); a Record click before that records nothing."""
    with page.expect_worker(timeout=60_000):
        page.get_by_role("tab", name="Live").click()
    page.wait_for_function(
        "() => performance.getEntriesByType('resource').filter(e => e.name.includes('/assets/module-')).length >= 3",
        timeout=60_000, polling=250,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(page.workers) < 2:
        assert time.monotonic() < deadline, "the Live recorder's encoder did not load"
        page.wait_for_timeout(100)


def start_live(page) -> float:
    """Press Record; returns the page's clock (ms) when the first chunk reached the server."""
    with page.expect_request(lambda r: "/gradio_api/queue/join" in r.url, timeout=30_000):
        page.locator("#live-audio button.record-button").click()
    return page.evaluate("performance.now()")


def wait_page_clock(page, since_ms: float, seconds: float) -> None:
    """Poll the page's own clock until `seconds` have passed since `since_ms`."""
    page.wait_for_function(
        "([since, ms]) => performance.now() - since >= ms", arg=[since_ms, seconds * 1000],
        timeout=(seconds + 60) * 1000, polling=250,
    )  # fmt: skip


def stop_live(page, press: bool = True) -> str:
    """Press Stop (unless pressed already) and wait for the final transcript (the info line
    says real-time factor)."""
    if press:
        page.locator("#live-audio button.stop-button").click()
    page.wait_for_function(
        "sel => document.querySelector(sel).value.includes('real-time factor')", arg="#live-info textarea",
        timeout=300_000, polling=250,
    )  # fmt: skip
    return page.locator("#live-text textarea").input_value()


def confirmed_words(page) -> int:
    return len(page.locator("#live-view .confirmed").inner_text().split())


@browser
@needs_chromium
def test_live_tab(open_page, minute_talk, screenshots, monkeypatch):
    mic, upload, spoken, seconds = minute_talk
    received = _record_live_audio(monkeypatch)
    page = open_page("Microphone", fake_audio=mic)
    # The page asks for the microphone without the browser's call processing.
    settings = page.evaluate("""navigator.mediaDevices.getUserMedia({audio: true}).then(stream => {
        const track = stream.getAudioTracks()[0], settings = track.getSettings(); track.stop(); return settings; })""")
    assert [settings.get(k) for k in ("echoCancellation", "noiseSuppression", "autoGainControl")] == [False] * 3, settings
    page.locator("#language input").click()
    page.get_by_role("option", name="English (en)").click()
    open_live_tab(page)
    started = start_live(page)

    # Confirmed text shows while the talk is still playing.
    page.wait_for_function(
        "() => (document.querySelector('#live-view .confirmed')?.textContent || '').trim().split(/\\s+/).length >= 5",
        timeout=seconds * 1000, polling=250,
    )  # fmt: skip
    partial_at = (page.evaluate("performance.now()") - started) / 1000
    assert partial_at < seconds - 5, f"first confirmed words only after {partial_at:.0f} s of a {seconds:.0f} s talk"
    wait_page_clock(page, started, seconds / 2)
    assert confirmed_words(page) >= 5
    screenshot(page, screenshots, "live-mid-talk")

    wait_page_clock(page, started, seconds - 1.5)  # in the trailing silence, before the file loops
    live_text = stop_live(page)
    info = page.locator("#live-info textarea").input_value()
    assert "model whisper-base (bundled)" in info and "live updates" in info, info
    page.locator("#live-srt a[download='live.srt']").wait_for()
    assert "Traceback" not in page.content()
    screenshot(page, screenshots, "live-after-stop")

    page.get_by_role("tab", name="Audio file").click()
    page.locator("#file-input input[type=file]").set_input_files(str(upload))
    page.locator(f"#file-input td.filename[aria-label='{upload.name}']").wait_for()
    file_text = click_transcribe_and_wait(page, "file")
    live_wer, file_wer = (error_rates([spoken], [text]).wer for text in (live_text, file_text))
    # The model heard the talk itself: every chunk, in order, not run through the browser's call
    # processing (with Chromium's default processing no second matched; with chunks in arrival
    # order 68-82% did).
    assert len(received) == 1
    heard = np.concatenate(next(iter(received.values())))
    assert matching_seconds(heard, load_audio(upload)) >= 0.9
    # Live updates hear ~1-s steps, so they guess worse than one pass over the file: 13.0-13.7%
    # against 4.6% here once the audio arrived whole (12-22% before).
    assert live_wer <= file_wer + 0.15, (live_wer, file_wer, live_text, file_text)


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9))


def matching_seconds(heard: np.ndarray, talk: np.ndarray) -> float:
    """The share of the speech seconds in `heard` that are the talk's (correlation >= 0.98) at
    the offset where its first speech second is found."""
    seconds = [s for s in range(len(heard) // SAMPLE_RATE) if np.abs(heard[s * SAMPLE_RATE : (s + 1) * SAMPLE_RATE]).max() > 0.05]
    first = heard[seconds[0] * SAMPLE_RATE : (seconds[0] + 1) * SAMPLE_RATE]
    start = max(0, (seconds[0] - 2) * SAMPLE_RATE)
    around = talk[start : (seconds[0] + 3) * SAMPLE_RATE]
    scores = [correlation(first, around[i : i + SAMPLE_RATE]) for i in range(len(around) - SAMPLE_RATE + 1)]
    offset = start + int(np.argmax(scores)) - seconds[0] * SAMPLE_RATE
    matched = [correlation(heard[s * SAMPLE_RATE : (s + 1) * SAMPLE_RATE], talk[s * SAMPLE_RATE + offset : (s + 1) * SAMPLE_RATE + offset]) >= 0.98
               for s in seconds if 0 <= s * SAMPLE_RATE + offset and (s + 1) * SAMPLE_RATE + offset <= len(talk)]  # fmt: skip
    return sum(matched) / len(seconds)


def test_live_chunks_come_out_in_recording_order():
    chunks = LiveChunks(hold_seconds=0.3)
    path = "/tmp/gradio/{}/audio.wav".format
    chunks.uploaded(7, [path("first")])  # the page's 8th upload (it sent a file before)
    assert chunks.take_ready("page-a", path("first")) == [path("first")]  # Gradio's first, never noted
    for number, name in ((8, "a0"), (10, "a2"), (11, "a3")):  # a1 (number 9) is slow to arrive
        chunks.uploaded(number, [path(name)])
        chunks.add("page-a", path(name))
    assert chunks.take_ready("page-a", path("a3")) == [path("a0")]  # a2 and a3 wait for a1
    chunks.uploaded(9, [path("a1")])
    chunks.add("page-a", "/srv/cache/a1/audio.wav")  # a moved copy is still a1
    assert chunks.take_ready("page-a", path("a1")) == ["/srv/cache/a1/audio.wav", path("a2"), path("a3")]
    assert chunks.take_ready("page-a", path("a3")) == []  # handed over again: fed once only

    chunks.uploaded(13, [path("a5")])  # number 12 never comes (lost, or another tab's upload)
    chunks.add("page-a", path("a5"))
    assert chunks.take_ready("page-a", path("a5")) == []
    time.sleep(0.35)  # a chunk waits for a missing number for hold_seconds at most
    assert chunks.take_ready("page-a", path("a5")) == [path("a5")]

    for number, name in ((15, "a7"), (14, "a6")):
        chunks.uploaded(number, [path(name)])
        chunks.add("page-a", path(name))
    chunks.add("page-b", path("b1"))  # a client that does not number its uploads: arrival order
    chunks.add("page-b", path("b0"))
    assert chunks.take_ready("page-b", path("b0")) == [path("b1"), path("b0")]
    assert chunks.take_all("page-a") == [path("a6"), path("a7")]  # Stop: the chunks no update read, in order
    assert chunks.take_all("page-a") == [] and chunks.take_all(None) == []

    for number in (0, 1):  # equal chunks share Gradio's content name
        chunks.uploaded(number, [path("silence")])
        chunks.add("page-c", path("silence"))
    assert chunks.take_ready("page-c", path("silence")) == [path("silence")] * 2


# ---------------------------------------------------------------------------------------------
# Load: eight API clients on the classic tabs and two Live sessions at once


def _record_live_audio(monkeypatch) -> dict:
    """What each Live session of the in-process server received, at 16 kHz (a spy on
    LiveTranscriber.feed: the model and the policy run unchanged)."""
    received: dict[int, list] = {}
    feed = LiveTranscriber.feed

    def spy(self, samples, sample_rate):
        resampler = self.__dict__.setdefault("_test_resampler", StreamResampler())
        received.setdefault(id(self), []).append(resampler(samples, sample_rate))
        return feed(self, samples, sample_rate)

    monkeypatch.setattr(LiveTranscriber, "feed", spy)
    return received


@browser
@needs_chromium
def test_load_eight_clients_and_two_live_sessions(playwright, server, media_site, galician_clips, reference, tmp_path, capsys,
                                                   monkeypatch):
    # The Live sessions speak English: on synthetic Galician the zero-shot base is ~100% wrong
    # and its guesses change with every window, so "answered correctly" could not be judged.
    mic, upload, spoken, seconds = english_talk(tmp_path, 18)
    file_wer = error_rates([spoken], [reference(upload, "en")]).wer
    requests = [("file", c) for c in galician_clips[:3]] + [("mic", c) for c in galician_clips[3:5]] + [("mic", galician_clips[0])]
    requests += [("url", f"{media_site}/charla.webm"), ("url", f"{media_site}/entrevista.mp4")]
    expected = {}
    for kind, item in requests:
        if kind == "url":
            with fetched_audio(item, DownloadLimits(allow_private_urls=True)) as fetched:
                expected[item] = reference(fetched.path)
        else:
            expected[str(item)] = reference(item)
    go = threading.Barrier(len(requests) + 1)
    received = _record_live_audio(monkeypatch)

    def call(kind, item):
        client = Client(server, verbose=False)
        go.wait()
        started = time.monotonic()
        if kind == "url":
            result = client.predict(item, "base", "gl", api_name="/transcribe_url")[1]
        else:
            result = client.predict(handle_file(str(item)), "base", "gl", api_name=f"/transcribe_{'file' if kind == 'file' else 'microphone'}")[0]
        return result, time.monotonic() - started

    # Two visitors, two browsers (each with its own fake microphone).
    contexts = [playwright.chromium.launch_persistent_context(
        str(tmp_path / f"chromium-{i}"), executable_path=CHROMIUM, headless=True, permissions=["microphone"],
        args=BROWSER_ARGS + MIC_ARGS + [f"--use-file-for-fake-audio-capture={mic}"],
    ) for i in range(2)]  # fmt: skip
    try:
        for context in contexts:
            context.set_default_timeout(60_000)
        pages = [context.new_page() for context in contexts]
        for page in pages:
            page.goto(server)
            page.locator("#language input").click()
            page.get_by_role("option", name="English (en)").click()
            open_live_tab(page)
        with ThreadPoolExecutor(len(requests)) as pool:
            jobs = [pool.submit(call, kind, item) for kind, item in requests]
            starts = [start_live(page) for page in pages]
            go.wait()
            wait_page_clock(pages[-1], starts[-1], seconds - 1.5)
            stopped = time.monotonic()
            for page in pages:  # both at once: a page still recording would loop its file
                page.locator("#live-audio button.stop-button").click()
            finals, final_waits = [], []
            for page in pages:
                finals.append(stop_live(page, press=False))
                final_waits.append(time.monotonic() - stopped)
            answers = [job.result() for job in jobs]
    finally:
        for context in contexts:
            context.close()

    for (kind, item), (text, _) in zip(requests, answers):
        assert text and text == expected[str(item)], (kind, item, text)
    # Every chunk the browsers posted reaches the model: Gradio alone kept only a stream's latest
    # unread chunk, and 5.3-12.6 s of this 22.4-s talk arrived. Each Live text is judged against
    # the file transcription of the audio that session received: two headless Chromiums on busy
    # cores may drop some (read as a file it was at WER 7-14% in four runs and 62% in a fifth; 50-100% before the
    # page asked for unprocessed audio and numbered its uploads), which no live policy can mend.
    assert len(received) == 2 and len(finals) == 2
    heard, live_wers, received_wers = [], [], []
    for number, (parts, text) in enumerate(zip(received.values(), finals)):
        audio = np.concatenate(parts)
        write_wav(tmp_path / f"received-{number}.wav", audio)
        heard.append(len(audio) / SAMPLE_RATE)
        as_file = reference(tmp_path / f"received-{number}.wav", "en")
        live_wers.append(error_rates([spoken], [text]).wer)
        received_wers.append(error_rates([spoken], [as_file]).wer)
        assert heard[-1] >= 0.75 * seconds, (heard, seconds)  # 17.7-22.6 s of 22.4 s arrived in ten runs here
        # Whisper's guesses at damaged audio differ between a whole file and ~1-s updates, so the
        # bound is loose: the live text is no more than 25 points worse than the file's.
        assert text and live_wers[-1] <= received_wers[-1] + 0.25, (text, as_file)
    with capsys.disabled():
        print(f"\n[load] 8 classic requests + 2 Live sessions: slowest classic answer after {max(w for _, w in answers):.1f} s "
              f"(median {sorted(w for _, w in answers)[4]:.1f} s); Live finals {', '.join(f'{w:.1f}' for w in final_waits)} s "
              f"after Stop; audio received {', '.join(f'{h:.1f}' for h in heard)} s of {seconds:.1f}; Live WER "
              f"{', '.join(f'{w:.2f}' for w in live_wers)}, received audio as a file {', '.join(f'{w:.2f}' for w in received_wers)}, "
              f"the talk's file {file_wer:.2f}")


# ---------------------------------------------------------------------------------------------
# Stalled downloads never hold up a file request


class _Trickle(http.server.BaseHTTPRequestHandler):
    """A media URL that sends one byte a second (a visitor's hostile or dying server)."""

    def do_GET(self):  # noqa: N802
        self.server.active += 1
        try:
            self.send_response(200)
            self.send_header("Content-Type", "video/webm")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(3 * STALL_CAP):
                self.wfile.write(b"\x1a")
                self.wfile.flush()
                time.sleep(1)  # the trickle itself: one byte a second
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.server.active -= 1

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def trickle():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    httpd.daemon_threads, httpd.active = True, 0
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_stalled_downloads_never_hold_up_other_requests(server, trickle, media_site, galician_clips, reference):
    client = Client(server, verbose=False)
    base = f"http://127.0.0.1:{trickle.server_address[1]}"
    stalled = [client.submit(f"{base}/slow{i}.webm", "base", "gl", api_name="/transcribe_url") for i in range(2)]
    deadline = time.monotonic() + 60
    while trickle.active < 2:  # both downloads are under way
        assert time.monotonic() < deadline, "the stalled downloads never started"
        time.sleep(0.1)
    started = time.monotonic()
    text, _, _ = Client(server, verbose=False).predict(handle_file(str(galician_clips[1])), "base", "gl", api_name="/transcribe_file")
    url_text = client.predict(f"{media_site}/charla.webm", "base", "gl", api_name="/transcribe_url")[1]
    waited = time.monotonic() - started
    assert text == reference(galician_clips[1]) and url_text, url_text
    assert not any(job.done() for job in stalled) and waited < STALL_CAP, waited  # answered while both still stalled
    for job in stalled:
        with pytest.raises(AppError) as caught:
            job.result(timeout=STALL_CAP + 60)
        message = str(caught.value)
        assert f"timed out (took longer than {STALL_CAP:g} s)" in message and "\n" not in message, message


# ---------------------------------------------------------------------------------------------
# Safe to share: every refusal, each followed by a request that succeeds


def shared_client(url: str) -> Client:
    return Client(url, auth=VISITOR, verbose=False)


def refused(client: Client, *args, api_name: str, typed: str = "") -> str:
    """The one-line message of a refused request; it shows no server path (beyond what the
    visitor `typed`) and no traceback."""
    with pytest.raises(AppError) as caught:
        client.predict(*args, api_name=api_name)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message and "/tmp/" not in message.replace(typed, ""), message
    return message


@browser
@needs_chromium
def test_shared_app_needs_a_login_and_caps_uploads(open_page, shared_server, galician_clips, reference, tmp_path, screenshots):
    assert httpx.get(f"{shared_server}gradio_api/info").status_code == 401
    with pytest.raises(Exception, match="credentials were not provided"):
        Client(shared_server, verbose=False)

    page = login_page(open_page, shared_server, password="wrong")
    page.get_by_text("Incorrect Credentials").wait_for()
    page.locator("input[type=text]").fill(VISITOR[0])
    page.locator("input[type=password]").fill(VISITOR[1])
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="Audio file").click()

    big = tmp_path / "big.wav"
    write_wav(big, np.zeros(int(SHARED_CAPS["max_upload_mb"] * 1_000_000), np.float32))  # 2 MB of 16-bit samples
    page.locator("#file-input input[type=file]").set_input_files(str(big))
    expect_error(page, 'File(s) exceed the maximum allowed size of 976.6 Kb: "big.wav"')
    clip = galician_clips[0]
    page.locator("#file-input input[type=file]").set_input_files(str(clip))
    page.locator(f"#file-input td.filename[aria-label='{clip.name}']").wait_for()
    assert click_transcribe_and_wait(page, "file") == reference(clip)
    screenshot(page, screenshots, "shared-after-login")


def login_page(open_page, url: str, password: str):
    """A page of `url` with Gradio's login form filled in and sent."""
    page = open_page(None, url=url)
    page.locator("input[type=text]").fill(VISITOR[0])
    page.locator("input[type=password]").fill(password)
    page.get_by_role("button", name="Login").click()
    return page


def test_shared_app_refuses_uploads_over_the_caps(shared_server, galician_clips, reference, tmp_path):
    client = shared_client(shared_server)
    # A client that skips gradio_client's own size check meets the server's: 413 while uploading.
    session = httpx.Client(base_url=shared_server)
    assert session.post("login", data=dict(zip(("username", "password"), VISITOR))).status_code == 200
    big = tmp_path / "big.wav"
    write_wav(big, np.zeros(SHARED_CAPS["max_upload_mb"] * 1_000_000, np.float32))
    answer = session.post("gradio_api/upload", files={"files": (big.name, big.read_bytes())})
    assert answer.status_code == 413 and "\n" not in answer.text, answer.text
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(big)), "base", "gl", api_name="/transcribe_file")
    # Over the duration cap but tiny: refused from the container's duration, before decoding it.
    long = ffmpeg(galician_clips[0], tmp_path / "long.opus", "-af", "apad=whole_dur=120", "-c:a", "libopus", "-b:a", "6k")
    assert long.stat().st_size < SHARED_CAPS["max_upload_mb"] * 1_000_000
    message = refused(client, handle_file(str(long)), "base", "gl", api_name="/transcribe_file")
    assert message == "long.opus: is 120 s long, over the 60 s duration limit", message
    assert client.predict(handle_file(str(galician_clips[0])), "base", "gl", api_name="/transcribe_file")[0] == reference(galician_clips[0])


def test_shared_app_refuses_private_urls(shared_server, media_site, galician_clips, reference):
    client = shared_client(shared_server)
    for url in (f"{media_site}/charla.webm", "http://169.254.169.254/latest/meta-data/", "http://[::1]:8080/a.mp3",
                "http://10.0.0.7/a.mp3", "http://192.168.1.1/a.mp3", "http://224.0.0.1/a.mp3", "http://240.0.0.1/a.mp3"):
        message = refused(client, url, "base", "gl", api_name="/transcribe_url")
        assert message.startswith(f"{url}: refused: the host resolves to a non-public address"), message
    # The same app still serves; the same local URL is fetched where private URLs are allowed (`server`).
    assert client.predict(handle_file(str(galician_clips[2])), "base", "gl", api_name="/transcribe_file")[0] == reference(galician_clips[2])


def test_shared_app_refuses_typed_model_folders_alike(shared_server, galician_clips, reference):
    client = shared_client(shared_server)
    clip = handle_file(str(galician_clips[0]))
    for folder in ("/etc", "/nonexistent", str(bundled_ct2_dir())):  # a folder, nothing, a real model: same words
        message = refused(client, clip, folder, "gl", api_name="/transcribe_file", typed=folder)
        assert message == f"model {folder}: not offered by this app; choose a model from the list", message
    assert client.predict(clip, "base", "gl", api_name="/transcribe_file")[0] == reference(galician_clips[0])
    # Typed folders are on only where every visitor is on this machine, unless said otherwise.
    assert AppConfig().allow_model_paths and AppConfig(host="::1").allow_model_paths
    assert not AppConfig(host="0.0.0.0").allow_model_paths and not AppConfig(share=True).allow_model_paths
    assert AppConfig(host="0.0.0.0", allow_model_paths=True).allow_model_paths


def test_microphone_endpoint_gives_one_line_for_bad_files(shared_server, galician_clips, reference, tmp_path):
    client = shared_client(shared_server)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.wav").write_text("not audio at all\n")
    assert refused(client, handle_file(str(tmp_path / "empty.wav")), "base", "gl", api_name="/transcribe_microphone") == "empty.wav: file is empty"
    message = refused(client, handle_file(str(tmp_path / "notes.wav")), "base", "gl", api_name="/transcribe_microphone")
    assert message.startswith("notes.wav: not a readable audio/video file"), message
    text, srt, info = client.predict(handle_file(str(galician_clips[3])), "base", "gl", api_name="/transcribe_microphone")
    assert text == reference(galician_clips[3]) and Path(srt).name == "microphone.srt"


def test_messages_show_no_server_paths():
    message = "/tmp/gradio/3f2a/notes.txt: not readable (/tmp/galwhisper-media-1-x/.download-y/media.webm: Invalid data)"
    assert hide_paths(message) == "notes.txt: not readable (media.webm: Invalid data)"
    url = "http://127.0.0.1:8000/x/y.webm"
    assert hide_paths(f"{url}: not found (HTTP 404) audio/video", keep=[url]) == f"{url}: not found (HTTP 404) audio/video"
    run = "/srv/runs/gl-1/best-ct2"
    assert hide_paths(f"{run}/model.bin: damaged", rename={run: "gl-1/best-ct2"}) == "gl-1/best-ct2/model.bin: damaged"


@pytest.mark.parametrize("argv,needle", [
    (["--auth", "visitor"], "--auth: expected USER:PASS, with a user name and a password"),
    (["--auth-file", "/no/such/file"], "--auth-file /no/such/file: not found"),
    (["--max-upload-mb", "0"], "--max-upload-mb 0.0: must be above 0"),
    (["--live-sessions", "0"], "--live-sessions 0: must be at least 1"),
])  # fmt: skip
def test_bad_sharing_options_are_one_line(argv, needle):
    assert_one_line_error(run_cli("app", "--port", str(free_port()), *argv, timeout=120), needle)


def test_auth_file_and_options_reach_the_config(tmp_path):
    logins = tmp_path / "logins.txt"
    logins.write_text("# who may use the app\nana:primeira\n\nxoan:se:gunda\n")
    args = build_parser("app").parse_args(["app", "--auth", "eva:x", "--auth", "rui:y", "--auth-file", str(logins),
                                           "--no-allow-model-paths", "--download-timeout", "30"])
    config = AppConfig(auth=args.auth, auth_file=args.auth_file, allow_model_paths=args.allow_model_paths)
    assert config.credentials == (("eva", "x"), ("rui", "y"), ("ana", "primeira"), ("xoan", "se:gunda"))
    assert not config.allow_model_paths and "primeira" not in repr(config)
    from galwhisper.app import APP_DOWNLOAD_TIMEOUT, app_download_limits
    from galwhisper.cli import download_limits

    assert AppConfig().limits.download_timeout == APP_DOWNLOAD_TIMEOUT < DownloadLimits().download_timeout
    assert download_limits(vars(args), app_download_limits()).download_timeout == 30
    assert download_limits({}, app_download_limits()).download_timeout == APP_DOWNLOAD_TIMEOUT
    logins.write_text("ana\n")
    with pytest.raises(GalwhisperError, match=r"logins.txt: line 1: expected USER:PASS"):
        AppConfig(auth_file=str(logins))
