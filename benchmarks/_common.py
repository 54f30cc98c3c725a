"""Helpers shared by the benchmark scripts (not a benchmark itself).

- `setup_env()`: GALWHISPER_CACHE defaults to /tmp/bench-cache (the bundled model is joined and
  converted there once), the Hugging Face libraries are kept offline, and thread counts are
  pinned to the machine's cores.
- `wait_quiet()`: before a measured run, wait until the machine is not busy with someone else's
  training or tests (load average < 1.0, or no such process), polling every 20 s for 10 min.
- `corpus()`: a synthetic Galician corpus (galwhisper.synthetic, Common Voice layout), built once
  under the cache and reused.
- `run_child()`: run this script again in a subprocess (one config per process, so timings,
  thread pools and peak memory are separate) and read back the JSON it prints last.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORES = os.cpu_count() or 1
# Someone else's heavy job. galwhisper's console script shows as ".venv/bin/galwhisper train",
# `python -m galwhisper.cli train` as "galwhisper.cli train": match both, plus pytest.
BUSY_PATTERN = r"galwhisper(\.cli)? (train|demo|prepare|evaluate|transcribe)|pytest"


def setup_env() -> Path:
    os.environ.setdefault("GALWHISPER_CACHE", "/tmp/bench-cache")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    cache = Path(os.environ["GALWHISPER_CACHE"])
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def busy_processes() -> list[str]:
    out = subprocess.run(["pgrep", "-af", BUSY_PATTERN], capture_output=True, text=True).stdout
    mine = {os.getpid(), os.getppid()}
    return [line for line in out.splitlines() if line.split()[0].isdigit() and int(line.split()[0]) not in mine]


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used so far) for every process."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


def _mine(table: dict[int, tuple[int, float]]) -> set[int]:
    """This process and all its descendants."""
    mine, grew = {os.getpid()}, True
    while grew:
        new = {pid for pid, (ppid, _) in table.items() if ppid in mine} - mine
        mine |= new
        grew = bool(new)
    return mine


class ForeignCpu:
    """CPU used by processes outside this benchmark's own process tree, between calls."""

    def __init__(self):
        self.before = _proc_table()
        self.t = time.monotonic()

    def cores(self) -> tuple[float, str]:
        """(cores used by others since the last call, the biggest such process)."""
        now, t = _proc_table(), time.monotonic()
        mine = _mine(now)
        used = {pid: cpu - self.before[pid][1] for pid, (_, cpu) in now.items() if pid in self.before and pid not in mine}
        self.before, elapsed, self.t = now, max(t - self.t, 1e-3), t
        top = max(used, key=used.get, default=None)
        name = ""
        if top is not None and used[top] > 0:
            try:
                name = f"{top} " + open(f"/proc/{top}/cmdline").read().replace("\0", " ")[:90]
            except OSError:
                name = str(top)
        return sum(used.values()) / elapsed, name


FOREIGN_LIMIT = 0.25  # cores that other processes may use while we measure


def load1() -> float:
    return os.getloadavg()[0]


QUIET_LOG: list[dict] = []  # one entry per wait, for the report


def wait_quiet(label: str = "", poll_s: float = 20.0, max_wait_s: float = 600.0) -> bool:
    """Wait until load1 < 1.0 or no other training/test process runs; False if it never happened."""
    started = time.monotonic()
    if os.environ.get("BENCH_NO_WAIT"):  # for debugging the scripts only: figures not trustworthy
        QUIET_LOG.append({"label": label, "quiet": False, "waited_s": 0, "load1": round(load1(), 2)})
        return False
    while True:
        busy, load = busy_processes(), load1()
        sampler = ForeignCpu()
        time.sleep(5)
        foreign, top = sampler.cores()
        # The brief's rule (load1 < 1.0, or no other galwhisper train/pytest job), and nothing else
        # (any process) using more than a quarter of a core right now.
        if (load < 1.0 or not busy) and foreign < FOREIGN_LIMIT:
            waited = time.monotonic() - started
            if waited > 10:
                print(f"[quiet] {label}: machine quiet after {waited:.0f} s (load1 {load:.2f})", flush=True)
            QUIET_LOG.append({"label": label, "quiet": True, "waited_s": round(waited), "load1": round(load, 2)})
            return True
        why = f"busy: {busy[0][:90]}" if busy and load >= 1.0 else f"others use {foreign:.2f} cores: {top}"
        if time.monotonic() - started >= max_wait_s:
            print(f"[quiet] {label}: NOT QUIET after {max_wait_s:.0f} s (load1 {load:.2f}; {why}); measuring anyway", flush=True)
            QUIET_LOG.append({"label": label, "quiet": False, "waited_s": round(max_wait_s), "load1": round(load, 2)})
            return False
        print(f"[quiet] {label}: waiting (load1 {load:.2f}, {why})", flush=True)
        time.sleep(poll_s - 5)


def quiet_summary() -> str:
    if not QUIET_LOG:
        return "quiet machine: not checked"
    noisy = [q["label"] for q in QUIET_LOG if not q["quiet"]]
    if noisy:
        return f"quiet machine: NO for {', '.join(noisy)} (another job was running; figures may be skewed)"
    runs = len({q["label"] for q in QUIET_LOG})
    return f"quiet machine: yes (no other training/test job before or during any of the {runs} measured runs)"


def corpus(n_train: int, n_validation: int = 0, name: str | None = None) -> Path:
    """A synthetic corpus (Common Voice layout) with n_train train clips, built once and reused."""
    from galwhisper.synthetic import SyntheticConfig, build_corpus

    cache = setup_env()
    out = cache / (name or f"corpus-train{n_train}-val{n_validation}")
    config = SyntheticConfig(out_dir=out, n_train=n_train, n_validation=n_validation, n_test=0, num_workers=CORES)
    t = time.perf_counter()
    folder = build_corpus(config, progress=False)
    if time.perf_counter() - t > 2:
        print(f"[setup] built synthetic corpus {folder} in {time.perf_counter() - t:.0f} s", flush=True)
    return folder


def cv_rows(folder: Path, tsv: str = "train.tsv") -> list[tuple[Path, str]]:
    """(clip path, sentence) of a Common Voice TSV, in file order."""
    lines = (folder / tsv).read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    p, s = header.index("path"), header.index("sentence")
    return [(folder / "clips" / f[p], f[s]) for f in (line.split("\t") for line in lines[1:] if line.strip())]


def run_child(script: str, args: list[str], label: str, timeout: float = 900, retries: int = 2) -> dict:
    """Run `script --child ARGS` in a fresh interpreter after waiting for a quiet machine.

    Other processes are watched during the run too (every 2 s): if any used more than
    FOREIGN_LIMIT cores meanwhile, the
    measurement is thrown away and the run repeated (at most `retries` times), since a torch
    or CTranslate2 thread pool sharing 2 cores with another job slows down by 2-20x.
    """
    import threading

    for attempt in range(retries + 1):
        wait_quiet(label)
        seen: list[str] = []
        stop = threading.Event()

        def watch():
            sampler = ForeignCpu()
            while not stop.wait(2.0):
                foreign, top = sampler.cores()
                if foreign >= FOREIGN_LIMIT and not seen:
                    seen.append(f"{foreign:.2f} cores used by others, mostly {top}")

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        command = [sys.executable, str(ROOT / "benchmarks" / script), "--child", *args]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=os.environ.copy())
        finally:
            stop.set()
            watcher.join()
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
            raise RuntimeError(f"{label}: child failed (exit {proc.returncode}):\n{tail}")
        result = json.loads(lines[-1][len("RESULT "):])
        if not seen or os.environ.get("BENCH_NO_WAIT"):
            return result
        print(f"[quiet] {label}: another job ran during the measurement ({seen[0]})"
              + ("; repeating it" if attempt < retries else "; keeping it, marked NOT QUIET"), flush=True)
        if attempt == retries:
            QUIET_LOG.append({"label": label, "quiet": False, "during": seen[0]})
            result["not_quiet"] = True
            return result
    raise AssertionError("unreachable")


def emit(result: dict) -> None:
    """Child side of run_child."""
    print("RESULT " + json.dumps(result), flush=True)


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its largest finished child process), MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.rjust(w) if re.match(r"^[-+0-9.x%]+$", c) else c.ljust(w) for c, w in zip(r, widths))
    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]])


def machine() -> str:
    from galwhisper import models

    return models.machine()
