"""Shared fixtures: a private model cache, real speech clips made with espeak-ng, the CLI."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Iterator

import pytest

# Every test runs offline: a hub lookup must fail fast, never wait on the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GALICIAN = [
    "Bo día, como estás hoxe?",
    "Mañá vai chover en Santiago de Compostela.",
    "O tren para A Coruña sae ás dez da mañá.",
    "Gústame moito o polbo á feira.",
    "Onte fomos á praia coa familia.",
]
ENGLISH = "And so my fellow Americans, ask not what your country can do for you."


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """A cache folder of the test session's own, so conversions are tested from scratch."""
    cache = Path(os.environ.get("GALWHISPER_TEST_CACHE") or tmp_path_factory.mktemp("galwhisper-cache"))
    os.environ["GALWHISPER_CACHE"] = str(cache)
    return cache


def speak(text: str, path: Path, voice: str = "pt", speed: int = 150) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    return path


def ffmpeg(src: Path, dst: Path, *extra: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *extra, str(dst)], check=True)
    return dst


@pytest.fixture(scope="session")
def galician_clips(tmp_path_factory) -> list[Path]:
    """Five Galician sentences spoken by espeak-ng's Portuguese voice (22.05 kHz wav)."""
    folder = tmp_path_factory.mktemp("gl-clips")
    return [speak(text, folder / f"gl{i}.wav") for i, text in enumerate(GALICIAN)]


@pytest.fixture(scope="session")
def english_clip(tmp_path_factory) -> Path:
    """English speech Whisper base transcribes reliably: checks content, not just 'some text'."""
    return speak(ENGLISH, tmp_path_factory.mktemp("en-clip") / "en.wav", voice="en-us", speed=140)


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `galwhisper ARGS` as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "galwhisper.cli", *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


def run_main(*args: str) -> subprocess.CompletedProcess:
    """`galwhisper ARGS` in this process (no interpreter start-up): for checks that end before
    any work, e.g. refused options. stdout, stderr and the exit status are captured."""
    from galwhisper.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit status 2 and exactly one line on stderr, `galwhisper: error: ...`, holding `needles`."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("galwhisper: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve `folder` with a real `python -m http.server` on 127.0.0.1; yield its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):  # up to 10 s for it to answer
            try:
                urllib.request.urlopen(f"{base}/", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        else:
            pytest.fail("http.server did not start")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    """A small synthetic Galician corpus, prepared with cached encoder outputs (shared)."""
    from galwhisper.prepare import PrepareConfig, prepare
    from galwhisper.synthetic import SyntheticConfig

    root = tmp_path_factory.mktemp("tiny")
    synthetic = SyntheticConfig(out_dir=root / "corpus", n_train=12, n_validation=4, n_test=4)
    prepare(PrepareConfig(source=f"synthetic:{root / 'corpus'}", out_dir=root / "features", synthetic=synthetic,
                          cache_encoder=True), progress=False)
    return root / "features"
