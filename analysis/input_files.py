r"""The user's own inputs file (``inputs_path``, with the random probe loss): a ``.npy`` or ``.pt`` array
(T, B, input_size), read without trusting it, as the model uploads are (analysis.archive, analysis.upload_limits).

    load_inputs(path, dtype=torch.float32, *, input_size=None) -> Tensor (T, B, input_size)

Nothing is allocated beyond what the caps allow, whatever the file declares; before any array is loaded:

    the file      a regular file of at most ``MAX_FILE_BYTES`` (analysis.own_files), read once
    .npy          the header's shape x itemsize must be held by the file (``npy_shape``); no pickles
    .pt (zip)     ``Archive``: the zip directory's declared record sizes summed and capped, then ``data.pkl``
                  through torch's weights-only unpickler with meta storages (shape, dtype, strides; no data)
    .pt (legacy)  ``torch.load(weights_only=True)``: its storages are the file's own bytes (at most the file cap)
    every format  the float64 copy the analysis makes, numel x 8 bytes, at most ``MAX_LOAD_BYTES``: a
                  zero-stride ``torch.zeros(1).expand(T, B, I)`` saves 4 bytes and declares T B I x 8

Only then is the array materialised (a zip's one storage record, through ``Archive.load``). Every problem is a
one-line ``ValueError`` naming the file: missing file, wrong extension, unreadable content, a declared size over
a cap, non-numeric dtype, wrong ndim or an empty dimension, last dimension != ``input_size`` (when given),
non-finite values (NaN / Inf, also after the cast to ``dtype``).
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .archive import MAX_LOAD_BYTES, Archive, is_zip
from .own_files import MAX_FILE_BYTES
from .tasks import _check_dtype, _one_line
from .upload_limits import npy_shape

_INT_TORCH_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _file_bytes(p: Path, where: str) -> bytes:
    """The file's bytes, its size checked against the cap on the files the analysis reads before reading."""
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{where}: {size / 2**20:,.0f} MiB is over the {MAX_FILE_BYTES // 2**20} MiB limit")
    return p.read_bytes()


def _check_declared(shape: tuple[int, ...], where: str) -> None:
    """The float64 copy of an array of ``shape``, numel x 8 bytes, against the cap; before anything is loaded."""
    nbytes = math.prod(shape) * 8
    if nbytes > MAX_LOAD_BYTES:
        raise ValueError(f"{where}: the array declares shape {shape} ({nbytes / 2**20:,.0f} MiB as float64), over "
                         f"the {MAX_LOAD_BYTES // 2**20} MiB limit; nothing was loaded")


def _read_npy(data: bytes, where: str) -> Tensor:
    shape, dtype = npy_shape(data, where)  # the header's declared size against the bytes; no object arrays
    if dtype.kind not in "iuf":
        raise ValueError(f"{where}: non-numeric dtype {dtype}: must be a real integer or float type")
    _check_declared(tuple(shape), where)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a corrupt body is the file's problem
        raise ValueError(f"{where}: could not be read as .npy ({_one_line(str(exc))})") from None
    return torch.from_numpy(arr.astype(np.float64))


def _read_pt(data: bytes, where: str) -> Tensor:
    archive = None
    try:
        if is_zip(data):
            archive = Archive(data, where)  # record sizes capped, then shapes and dtypes only (meta tensors)
            obj = archive.obj
        else:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except ValueError:  # Archive's ConfigError: one line naming the file already
        raise
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{where}: could not be read as .pt ({_one_line(str(exc))})") from None
    if not isinstance(obj, Tensor):
        raise ValueError(f"{where}: contains {type(obj).__name__}, expected a tensor (T, B, input_size)")
    if not (obj.is_floating_point() or obj.dtype in _INT_TORCH_DTYPES):
        raise ValueError(f"{where}: non-numeric dtype {obj.dtype}: must be a real integer or float type")
    _check_declared(tuple(obj.shape), where)
    if archive is not None:
        obj = archive.load({"inputs": obj})["inputs"]  # its one storage record, read at its declared size
    return obj.detach().to(torch.float64)


def load_inputs(path, dtype: torch.dtype = torch.float32, *, input_size: int | None = None) -> Tensor:
    """Load the user's own inputs ``(T, B, input_size)`` from a ``.npy`` or ``.pt`` file (see the module
    docstring for what is checked before anything is loaded)."""
    dtype = _check_dtype(dtype)
    p, where = Path(path), f"load_inputs: {path}"
    if not p.is_file():
        raise ValueError(f"{where}: file not found")
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".pt"):
        raise ValueError(f"{where}: unsupported extension {p.suffix!r}: must be .npy or .pt")
    data = _file_bytes(p, where)
    x = _read_npy(data, where) if suffix == ".npy" else _read_pt(data, where)
    shape = tuple(x.shape)
    if x.ndim != 3:
        raise ValueError(f"{where}: wrong ndim {x.ndim} (shape {shape}): must be 3-D (T, B, input_size)")
    if min(shape) < 1:
        raise ValueError(f"{where}: wrong shape {shape}: every dimension of (T, B, input_size) must be >= 1")
    if input_size is not None and shape[2] != input_size:
        raise ValueError(f"{where}: wrong shape {shape}: last dimension must be input_size={input_size}")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{where}: {bad} non-finite values (NaN/Inf) out of {x.numel()}")
    x = x.to(dtype)
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{where}: {bad} values overflow {dtype} (non-finite after cast)")
    return x
