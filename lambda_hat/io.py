"""Atomic file writes: write a temp file in the same directory, fsync, rename."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class DiskFull(RuntimeError):
    """No space left where the results go. One line naming the path."""


def disk_full(error: OSError, fallback: Path | str) -> DiskFull | None:
    """The one-line error for a write that failed for want of space (or quota); None for
    any other failure."""
    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return DiskFull(
        f"results: no space left on the device of {error.filename or fallback}; free space "
        "and rerun the same command (finished runs come from the cache)"
    )


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``os.umask``
    sets it while it reads it, which another thread could see)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically, with the mode a plain ``open`` would give
    (``0o666`` less the umask: ``mkstemp`` alone makes every file private, mode 600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def atomic_write_npz(path: Path, **arrays: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def safe_load_yaml(text: str, source: str, error: type[Exception]) -> Any:
    """``yaml.safe_load`` whose syntax errors become ``error("<source>: malformed YAML at
    line N")``: one line, no traceback for the user."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise error(f"{source}: malformed YAML{where}") from None


def read_text(path: Path, field: str, error: type[Exception]) -> str:
    """A UTF-8 text file, or ``error`` in one line naming the field, the file and what is
    wrong with it (not text, unreadable).

    >>> import tempfile
    >>> bad = Path(tempfile.mkdtemp()) / "p.yaml"; _ = bad.write_bytes(b"n: 1" + bytes([255]))
    >>> read_text(bad, "problems", ValueError)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: problems: .../p.yaml is not UTF-8 text (byte 0xff at offset 4)
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start : exc.start + 1].hex()
        raise error(
            f"{field}: {path} is not UTF-8 text (byte 0x{byte} at offset {exc.start})"
        ) from None
    except OSError as exc:
        raise error(f"{field}: {path}: {exc.strerror or exc}") from None


def check_writable(path: Path, field: str) -> None:
    """Fail in one line if ``path`` could not be created or written, without creating it:
    the nearest existing ancestor must be a writable directory.

    >>> check_writable(Path("/proc/version/results"), "results_dir")
    Traceback (most recent call last):
    ...
    ValueError: results_dir /proc/version/results: /proc/version is not a directory
    """
    ancestor = Path(path).absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{field} {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{field} {path}: {ancestor} is not writable")
    try:  # access() trusts the mode bits; root, sysfs and read-only mounts need a real try
        os.rmdir(tempfile.mkdtemp(prefix=".lambda_hat-probe-", dir=ancestor))
    except OSError as error:
        raise ValueError(
            f"{field} {path}: cannot create anything in {ancestor} ({error.strerror})"
        ) from None


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or not valid JSON (e.g. truncated)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
