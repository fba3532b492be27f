r"""The limits' check of a user's files before anything is loaded: the recurrent module's real shapes (from the
state_dict's metadata) and the inputs' T and B (from the .npy header or the .pt archive's metadata).

``analysis.own_model.analyse_files`` (the command line's ``--load-state-dict`` and the dashboard's uploads) calls
``check_upload`` between reading the state_dict's structure and loading its tensors, so an upload is estimated
on what it declares, as a built-in analysis of the same sizes is (``analysis.limits.check``); the analysis
itself checks again on the final shapes (``analyse_own``).
"""
from __future__ import annotations

import io

import numpy as np

from rnn_models.config import ConfigError

from .archive import Archive, is_zip, tensors_of


def npy_shape(data: bytes, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy header; the data must hold every declared byte (checked before np.load
    allocates the declared array)."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    except Exception as e:  # noqa: BLE001 - a malformed header is the file's problem
        raise ConfigError(f"{where} could not be read as .npy ({' '.join(str(e).split())[:160]})") from None
    if dtype.hasobject:
        raise ConfigError(f"{where} must hold one numeric array; it holds dtype {dtype}")
    declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
    if declared > len(data) - f.tell():
        raise ConfigError(f"{where}: the header declares shape {tuple(shape)} ({declared:,} bytes), the file holds "
                          f"{len(data) - f.tell():,}")
    return tuple(shape), dtype


def input_shape(data: bytes, suffix: str, where: str) -> tuple[int, ...] | None:
    """The inputs' declared shape, nothing loaded (None where it cannot be told: the analysis checks later)."""
    suffix = suffix.lower()
    if suffix == ".npy":
        return npy_shape(data, where)[0]
    if suffix == ".pt" and is_zip(data):
        ts = tensors_of(Archive(data, where).obj)
        return tuple(ts[0].shape) if ts else None
    return None


def upload_config(config, state_dict: bytes, inputs: tuple[bytes, str] | None = None, names: dict | None = None):
    """The config an upload's analysis runs (the file's architecture; T and B of the inputs, else the config's),
    from the files' metadata alone: no tensor is materialised (for an admission check before the work)."""
    from .own_files import fill_from_file, read_state_dict
    where = (names or {}).get("state_dict", "state_dict")
    full, fm = fill_from_file(config, read_state_dict(state_dict, where), where, load=False)
    T, B = full.seq_len, full.batch_size
    if inputs is not None:
        shape = input_shape(inputs[0], inputs[1], (names or {}).get("inputs", "inputs"))
        if shape is not None and len(shape) in (2, 3):  # (T, B[, I]) or (B, T[, I])
            T, B = (shape[1], shape[0]) if config.batch_first else shape[:2]
    return full.replace(seq_len=int(T), batch_size=int(B), input_size=fm.arch["input_size"], embedding=None)


def check_upload(config, inputs: tuple[bytes, str] | None, only: str | None = None):
    """``limits.check`` on ``config`` (the file's architecture filled in) with T and B of the given inputs
    ((bytes, suffix); (T, B, ...) or (B, T, ...) when batch_first), or the config's own when none are given."""
    if inputs is not None:
        shape = input_shape(inputs[0], inputs[1], "inputs")
        if shape is not None and len(shape) >= 2:
            T, B = (shape[1], shape[0]) if config.batch_first else (shape[0], shape[1])
            try:
                config = config.replace(seq_len=int(T), batch_size=int(B))
            except ConfigError:
                return None  # out of the config's ranges: the analysis says so in its own words
    from .own_model import check_own  # the Jacobian detail resolved as the analysis will (auto: light above a size)
    return check_own(config, only)[2]
