"""Writing outputs safely: atomically, with the permissions the user's umask asks for.

Every file a run or an evaluation leaves behind (weights, configs, metrics, plots, training states)
goes through this module, so that

* a process killed while writing never leaves a half-written file under the final name: each file
  is written to a temporary sibling and moved into place with ``os.replace``;
* outputs are shareable: ``tempfile`` and ``safetensors`` create files readable by their owner
  only (0600) and temporary folders 0700, so the final files and folders get the mode a plain
  ``open()`` / ``mkdir`` would have given them, ``0o666`` / ``0o777`` minus the umask;
* a damaged weight file is reported with its path (:func:`check_safetensors`) instead of a bare
  ``SafetensorError``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import DamagedFileError

__all__ = [
    "TEMP_PREFIX",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_dir",
    "check_output_file",
    "check_safetensors",
    "current_umask",
    "honour_umask",
    "refuse_overlap",
    "remove_stale_temporaries",
    "staging_dir",
]

TEMP_PREFIX = ".tmp_"
"""Prefix of every temporary file and folder this module creates next to an output."""


def current_umask() -> int:
    """The process's umask (read by setting and restoring it; there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike[str]) -> None:
    """Give ``path`` (and, for a folder, everything below it) the umask's default permissions:
    ``0o666 & ~umask`` for files, ``0o777 & ~umask`` for folders."""
    mask = current_umask()
    root = Path(path)
    entries = [root] if not root.is_dir() else [root, *root.rglob("*")]
    for entry in entries:
        if entry.is_symlink():
            continue
        entry.chmod((0o777 if entry.is_dir() else 0o666) & ~mask)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and ``os.replace`` (atomic)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        honour_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically, see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


@contextmanager
def staging_dir(parent: str | os.PathLike[str], *, name: str = "") -> Iterator[Path]:
    """A temporary folder inside ``parent`` (same file system, so ``os.replace`` out of it is
    atomic), removed on exit with whatever the body did not move out. Call :func:`honour_umask` on
    it before moving files out: ``mkdtemp`` folders are private (0700) and so may be their files."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=f"{TEMP_PREFIX}{name}"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_temporaries(folder: str | os.PathLike[str], *, prefixes: tuple[str, ...] = ()) -> list[Path]:
    """Remove the temporaries (``.tmp_*`` and ``prefixes``) that a killed writer left in ``folder``.

    Only the folder's own entries are looked at, not its subfolders. Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        if entry.name.startswith((TEMP_PREFIX, *prefixes)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def check_output_dir(path: str | os.PathLike[str], *, name: str = "output_dir") -> Path:
    """Check, before any work, that ``path`` can become an output folder: it is a folder or does
    not exist yet, and a folder can be made in it or in its nearest existing parent.

    The check makes and removes an empty probe folder there instead of asking ``os.access``,
    which says yes to root on read-only or virtual file systems (``/proc``) where writing fails.
    Nothing is left behind.

    Raises:
        ConfigError: Naming the argument, the path and the reason.
    """
    from .errors import ConfigError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name} {path} exists and is not a folder")
    existing = path if path.exists() else next((p for p in path.absolute().parents if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise ConfigError(f"{name} {path} cannot be written: {existing} is not a folder")
    try:
        Path(tempfile.mkdtemp(prefix=".write_probe_", dir=existing)).rmdir()
    except OSError as error:
        raise ConfigError(f"{name} {path} cannot be written: {existing} refuses new files "
                          f"({error.strerror or error}); choose another folder") from None
    return path


def check_output_file(path: str | os.PathLike[str], *, name: str = "output") -> Path:
    """Check, before any work, that a file can be written at ``path``: it is not a folder, and its
    folder exists or can be made and takes new files (:func:`check_output_dir` on the folder).

    Whether an existing file may be replaced is the caller's decision.

    Raises:
        ConfigError: Naming the argument, the path and the reason.
    """
    from .errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{name} {path} is a folder; pass a file path such as {path / 'model.onnx'}")
    check_output_dir(path.parent, name=f"the folder of {name} {path.name}:")
    return path


def refuse_overlap(output: str | os.PathLike[str], source: str | os.PathLike[str], *,
                   output_name: str = "--output_dir", source_name: str = "--checkpoint",
                   inside_ok: bool = False) -> None:
    """Refuse an output folder that is, contains or (unless ``inside_ok``) lies inside ``source``.

    Paths are compared after resolving symbolic links and ``..``, so another spelling of the same
    folder is caught too. Writing (or ``--overwrite``) there would replace or delete the files of
    the input the run reads.

    Raises:
        ConfigError: Naming both arguments, both paths and how they overlap.
    """
    from .errors import ConfigError

    out, src = Path(output).resolve(), Path(source).resolve()
    if out == src:
        how = "is"
    elif out in src.parents:
        how = "contains"
    elif src in out.parents and not inside_ok:
        how = "is inside"
    else:
        return
    raise ConfigError(
        f"{output_name} {output} {how} {source_name} {source}: writing there would replace or delete "
        f"the files this run reads; choose an {output_name} outside {source}"
    )


def check_safetensors(path: str | os.PathLike[str]) -> list[str]:
    """Open a ``.safetensors`` file's header and check that its data is complete.

    Returns:
        The tensor names.

    Raises:
        DamagedFileError: The file is missing, truncated or not a safetensors file; the message
            names the path.
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except FileNotFoundError:
        raise DamagedFileError(f"{path} does not exist") from None
    except Exception as err:  # noqa: BLE001 - SafetensorError is a Rust class, not importable everywhere
        raise DamagedFileError(
            f"{path} is damaged or truncated and cannot be read ({err}); it was probably cut off "
            "by a full disk or an interrupted copy: copy or export it again"
        ) from None
