"""Safe, reproducible file writing shared by :mod:`quipref.formats` and the model pipeline.

Internal module (not public API; part of the quipref <-> fast contract, see
:mod:`quipref._contract`). Two helpers:

* :func:`atomic_write_bytes` writes a file so that a reader (or a crash, or a kill)
  never sees a cut-off file at the target name: the bytes go to a temporary file in the
  same folder, which is flushed, ``fsync``-ed and then renamed over the target
  (``os.replace``, atomic on POSIX and Windows within one file system); the folder is
  ``fsync``-ed too where the OS allows it, so the rename itself is durable. On any
  failure the temporary file is removed and the older file at the target name, if any,
  is left untouched. The new file gets the mode an ordinary ``open(path, "w")`` would
  give it (``0o666`` minus the process umask), not ``mkstemp``'s ``0o600``.
* :func:`safetensors_bytes` serializes arrays plus string metadata to the safetensors
  format (https://huggingface.co/docs/safetensors/index, "Format") deterministically:
  the same arrays and metadata always give the same bytes, whatever the installed
  ``safetensors`` version (its writer emits the metadata map in hash order, so two saves
  of one layer could differ). Files are read back with ``safetensors.safe_open``.

Layout written by :func:`safetensors_bytes`: an 8-byte little-endian header length N, a
JSON header of N bytes (``{"__metadata__": {...sorted keys...}, name: {"dtype", "shape",
"data_offsets"}, ...}`` with compact separators, padded with spaces to a multiple of 8
bytes), then the tensor bytes, C order, little-endian. Tensors are laid out by decreasing
item size, then by name (as the reference writer does), so every tensor is aligned to its
item size.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["atomic_write_bytes", "safetensors_bytes", "SAFETENSORS_DTYPES"]

#: NumPy dtype -> safetensors dtype name
SAFETENSORS_DTYPES = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8",
    np.dtype(np.uint16): "U16", np.dtype(np.int16): "I16",
    np.dtype(np.uint32): "U32", np.dtype(np.int32): "I32",
    np.dtype(np.uint64): "U64", np.dtype(np.int64): "I64",
    np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(np.float64): "F64",
}


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back (not thread-safe with
    # respect to other threads creating files in this instant, as every umask query)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns the path.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; its folder must exist.
    data : bytes or bytes-like

    Raises
    ------
    FileNotFoundError
        The folder of ``path`` does not exist.
    OSError
        Writing, syncing or renaming failed (the temporary file is removed first).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save to {path}: the folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def safetensors_bytes(tensors: dict, metadata: dict | None = None) -> bytes:
    """Serialize ``tensors`` (str -> ndarray) and ``metadata`` (str -> str) deterministically.

    Raises
    ------
    TypeError
        A name or metadata entry that is not a string, or an array dtype safetensors
        cannot store.
    """
    meta = {} if metadata is None else dict(metadata)
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")
    arrays = {}
    for name, a in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r}")
        a = np.asarray(a)
        if a.dtype.newbyteorder("=") not in SAFETENSORS_DTYPES:
            raise TypeError(f"tensor {name!r} has dtype {a.dtype}, which safetensors cannot store")
        arrays[name] = np.array(a, dtype=a.dtype.newbyteorder("<"), order="C")  # (keeps 0-d shapes)
    order = sorted(arrays, key=lambda k: (-arrays[k].dtype.itemsize, k))
    header = {"__metadata__": dict(sorted(meta.items()))} if meta else {}
    offset, chunks = 0, []
    for name in order:
        a = arrays[name]
        raw = a.tobytes()
        header[name] = {"dtype": SAFETENSORS_DTYPES[a.dtype.newbyteorder("=")], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    head += b" " * (-len(head) % 8)
    return len(head).to_bytes(8, "little") + head + b"".join(chunks)
