"""Files and folders: the cache root, atomic writes, safe names, checked output folders, temp folders.

Every stage writes through these helpers so that a killed run never leaves a file or folder that
looks complete, nothing is written outside the folder the user named, and a bad output folder is
refused before any work starts.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from galwhisper.errors import GalwhisperError

# A name that becomes one path component: no separators, no "." or "..", no leading dot or dash.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")
TEMP_PREFIX = "galwhisper-"


def cache_root() -> Path:
    """`GALWHISPER_CACHE`, else `$XDG_CACHE_HOME/galwhisper`, else ~/.cache/galwhisper."""
    explicit = os.environ.get("GALWHISPER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "galwhisper"


# ---------------------------------------------------------------------------------------------
# Atomic writes


@contextmanager
def atomic_dir(final: Path, keep: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temp folder beside `final`; move it into place only when the block succeeds.

    A crash leaves a `.tmp-*` folder that is never taken for the real one. `keep` (for caches,
    where every writer builds the same folder) says whether a `final` already there is complete:
    one that another thread or process put in place first is then kept and this one dropped.
    Six app requests joining the bundled model at once each removed the folder another had just
    moved in (FileNotFoundError).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        if keep is not None and keep(final):
            return  # another writer finished first
        if final.exists():
            shutil.rmtree(final, ignore_errors=keep is not None)
        try:
            os.replace(tmp, final)
        except OSError as error:  # another writer got there between the check and the move
            if keep is None or error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not keep(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `path` through a temp file and a rename: readers see the old or the new file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, data: object) -> Path:
    return write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`, or a one-line error naming the file and what is wrong."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GalwhisperError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GalwhisperError(f"{path}: {what} is not readable JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise GalwhisperError(f"{path}: {what} is not a JSON object")
    return data


# ---------------------------------------------------------------------------------------------
# Names and folders


def check_name(name: str, what: str) -> str:
    """`name` if it is safe as one path component, else a one-line error saying what it is."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or name in (".", ".."):
        raise GalwhisperError(
            f"{what} {name!r}: not a safe name (letters, digits, '_', '.', '+', '-'; no slashes, not '.' or '..')"
        )
    return name


def safe_name(text: str, fallback: str = "file", limit: int = 80) -> str:
    """A file-name-safe version of any text (for stems made from titles, URLs, model names)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(text)).strip("._-")[:limit]
    return cleaned if cleaned and SAFE_NAME.match(cleaned) else fallback


def inside(folder: Path, path: Path) -> Path:
    """`path` if it lies inside `folder` (after resolving links and '..'), else an error."""
    folder, resolved = Path(folder).resolve(), Path(path).resolve()
    if resolved != folder and folder not in resolved.parents:
        raise GalwhisperError(f"{path}: would be outside {folder}; refused")
    return Path(path)


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """Create `path` (a folder results go to) or check it is a writable folder, before any work."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise GalwhisperError(f"{option} {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise GalwhisperError(f"{option} {folder}: not writable ({exc.strerror or exc})") from None
    return folder


def check_output_file(path: str | os.PathLike, option: str) -> Path:
    """A file path results go to: its folder must be writable and it must not be a folder."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise GalwhisperError(f"{option} {file}: is a folder, expected a file name")
    check_output_dir(file.parent, option)
    return file


# ---------------------------------------------------------------------------------------------
# Temp folders that do not outlive their process


def temp_root() -> Path:
    return Path(tempfile.gettempdir())


def private_tempdir(kind: str) -> Path:
    """A new temp folder named after this process; `clean_stale_tempdirs` removes those of dead ones."""
    clean_stale_tempdirs()
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{check_name(kind, 'temp kind')}-{os.getpid()}-", dir=temp_root()))


def clean_stale_tempdirs() -> int:
    """Remove galwhisper temp folders whose process is gone (killed runs); return how many."""
    removed = 0
    for folder in temp_root().glob(f"{TEMP_PREFIX}*-*-*"):
        pid = folder.name[len(TEMP_PREFIX) :].split("-")
        if len(pid) < 3 or not pid[1].isdigit() or _alive(int(pid[1])) or not folder.is_dir():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
