r"""Loading a user's data for ``analysis.own_model``: inputs, targets, h0 and the loss they imply, from tensors,
arrays, files (command line) or uploads (dashboard). Every check is one line naming the field and its range.

    prepare_inputs   ids / floats, batch-first or time-major -> float64 (T, B, I)
    prepare_targets  class ids (T, B) / (B,) -> cross-entropy; floats (T, B, O) / (B, O) -> MSE
    prepare_h0       torch's (L*D, B, H) or (h0, c0) -> the engine's initial states
    readout_loss     torch's reduction='mean' over the steps used and the batch
    analyse_files    the same analysis from file contents (bytes), with the files' names and sha256 recorded
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from typing import TYPE_CHECKING

from rnn_models.cells import cell_type
from rnn_models.config import ConfigError

from .config import MAX_BATCH, MAX_SEQ_LEN, ExperimentConfig
from .own_files import fill_from_file, read_array, read_file, read_state_dict
from .upload_limits import check_upload

if TYPE_CHECKING:
    from .engine import ExperimentResult


# ---- inputs, targets, h0 ---------------------------------------------------------------------------------
def _as_tensor(a, name: str) -> Tensor:
    if isinstance(a, np.ndarray):
        if a.dtype.kind not in "iufb":
            raise ConfigError(f"{name} has dtype {a.dtype}: it must be numeric")
        return torch.from_numpy(np.ascontiguousarray(a))
    if isinstance(a, Tensor):
        return a.detach().cpu()
    raise ConfigError(f"{name} must be a torch tensor or a numpy array; got {type(a).__name__}")


def prepare_inputs(x, arch: dict, *, batch_first: bool, embedding: Tensor | None) -> Tensor:
    """Inputs as float64 (T, B, I): ids looked up in the embedding, batch-first transposed, every check one line."""
    x = _as_tensor(x, "inputs")
    I = arch["input_size"]
    order = "(B, T" if batch_first else "(T, B"
    if embedding is not None:
        if x.is_floating_point() or x.dim() != 2:
            raise ConfigError(f"inputs have shape {tuple(x.shape)} ({x.dtype}); with an embedding they must be "
                              f"token ids {order}) of an integer type")
        V = embedding.shape[0]
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= V):
            raise ConfigError(f"inputs: token ids must be in [0, {V - 1}] (the embedding has {V} rows); "
                              f"got [{int(x.min())}, {int(x.max())}]")
        x = F.embedding(x.long(), embedding)  # (., ., I) in the embedding's dtype: only the rows looked up are
        # converted below (x.double()), not the whole table
    elif not x.is_floating_point() and x.dim() != 3:
        hint = "pass embeddings, e.g. model.encoder(ids), or embedding=model.encoder (--embedding NAME)"
        raise ConfigError(f"inputs are integers of shape {tuple(x.shape)}, like token ids, but the recurrent module "
                          f"reads float vectors of size {I}: {hint}")
    if x.dim() != 3:
        raise ConfigError(f"inputs have shape {tuple(x.shape)}: they must be 3-D {order}, input_size={I})")
    if x.shape[2] != I:
        raise ConfigError(f"inputs have shape {tuple(x.shape)}, read as {order}, I): I={x.shape[2]} but the module "
                          f"reads input_size={I}")
    x = x.double()
    if batch_first:
        x = x.transpose(0, 1)  # (B, T, I) -> (T, B, I)
    T, B = x.shape[:2]
    if not (1 <= T <= MAX_SEQ_LEN and 1 <= B <= MAX_BATCH):
        raise ConfigError(f"inputs: T={T}, B={B}: T must be in [1, {MAX_SEQ_LEN}] and B in [1, {MAX_BATCH}]")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ConfigError(f"inputs: {bad} non-finite values (NaN/Inf) out of {x.numel()}")
    return x.contiguous()


def prepare_targets(tg, T: int, B: int, O: int, *, batch_first: bool) -> tuple[Tensor, str]:
    """Targets and the loss they imply: ('ce' ids (T, B) or (B,)) or ('mse' floats (T, B, O) or (B, O))."""
    tg = _as_tensor(tg, "targets")
    if batch_first and tg.dim() >= 2 and tg.shape[:2] == (B, T) and (tg.dim() == 3 or not tg.is_floating_point()):
        tg = tg.transpose(0, 1)  # (B, T, ...) -> (T, B, ...)
    if not tg.is_floating_point():
        if tuple(tg.shape) not in ((T, B), (B,)):
            raise ConfigError(f"targets are class ids of shape {tuple(tg.shape)}: they must be (T, B) = {(T, B)} "
                              f"(a loss at every step) or (B,) = ({B},) (the last step)")
        if int(tg.min()) < 0 or int(tg.max()) >= O:
            raise ConfigError(f"targets: class ids must be in [0, {O - 1}] (the readout has {O} outputs); got "
                              f"[{int(tg.min())}, {int(tg.max())}]")
        return tg.long(), "ce"
    if tuple(tg.shape) not in ((T, B, O), (B, O)):
        raise ConfigError(f"targets are floats of shape {tuple(tg.shape)}: they must be (T, B, O) = {(T, B, O)} or "
                          f"(B, O) = {(B, O)} (MSE); class ids must have an integer type")
    if not bool(torch.isfinite(tg).all()):
        raise ConfigError("targets contain non-finite values (NaN/Inf)")
    return tg.double(), "mse"


def prepare_h0(h0, arch: dict, B: int, dtype: torch.dtype) -> list[list[tuple]]:
    """torch's h0 (L*D, B, H) or (h0, c0) -> the engine's initial[l][d] = (h,) or (h, c)."""
    L, D, H = arch["num_layers"], 2 if arch["bidirectional"] else 1, arch["hidden_size"]
    names = cell_type(arch["cell"]).state_names  # ("h",), or ("h", "c") for the LSTM
    parts = tuple(h0) if isinstance(h0, (tuple, list)) else (h0,)
    if len(parts) != len(names):
        want = f"the tuple ({', '.join(n + '0' for n in names)})" if len(names) > 1 else "one tensor h0"
        raise ConfigError(f"h0: the {arch['cell']} takes {want}, as torch does; got {len(parts)} tensor(s)")
    parts = tuple(_as_tensor(p, "h0").double() for p in parts)
    for p in parts:
        if tuple(p.shape) != (L * D, B, H):
            raise ConfigError(f"h0 has shape {tuple(p.shape)}: it must be (num_layers*directions, B, H) = "
                              f"{(L * D, B, H)}")
        if not bool(torch.isfinite(p).all()):
            raise ConfigError("h0 contains non-finite values (NaN/Inf)")
    return [[tuple(p[l * D + d].to(dtype) for p in parts) for d in range(D)] for l in range(L)]


# ---- losses -------------------------------------------------------------------------------------------
def readout_loss(tg: Tensor, kind: str, steps: str):
    """loss_fn(y (T, B, O)) -> scalar, torch's reduction='mean' over the steps used and the batch."""
    def loss_fn(y: Tensor) -> Tensor:
        if steps == "last":
            z = tg[-1] if tg.dim() == y.dim() else tg  # (B,) ids or (B, O) floats
            yl = y[-1]  # (B, O)
            return F.cross_entropy(yl, z) if kind == "ce" else F.mse_loss(yl, z.to(y.dtype))
        T, B, O = y.shape
        if kind == "ce":
            return F.cross_entropy(y.reshape(T * B, O), tg.reshape(T * B))  # (T*B, O) vs (T*B,)
        return F.mse_loss(y, tg.to(y.dtype))
    return loss_fn


def _callable_loss(loss):
    def loss_fn(y: Tensor) -> Tensor:
        out = loss(y)
        if not isinstance(out, Tensor) or out.numel() != 1:
            raise ConfigError(f"loss(outputs) must return a scalar tensor; got "
                              f"{type(out).__name__}{tuple(out.shape) if isinstance(out, Tensor) else ''}")
        return out.reshape(())
    return loss_fn


# ---- files (command line) and uploads (dashboard) ------------------------------------------------------
def analyse_files(config: ExperimentConfig, state_dict: bytes, *, inputs: tuple[bytes, str] | None = None,
                  targets: tuple[bytes, str] | None = None, h0: tuple[bytes, str] | None = None,
                  names: dict | None = None, progress=None, only: str | None = None,
                  views=None) -> ExperimentResult:
    """The same analysis from file contents: a whole model's state_dict and (bytes, '.npy'/'.pt') arrays.

    ``config`` names the module / readout / embedding inside the state_dict; ``names`` how each file is called
    in messages (the flag and path, or the uploaded file's name), and in the result's provenance with each
    file's sha256.
    """
    from .own_model import analyse_own
    from .provenance import file_record
    names = names or {}
    given = {"state_dict": state_dict, "inputs": inputs and inputs[0], "targets": targets and targets[0],
             "h0": h0 and h0[0]}
    upload = str(names.get("state_dict", "")).startswith("upload")
    prov = {"source": "upload" if upload else "files", "module": None, "readout": config.readout,
            "embedding": config.embedding,
            "dropout": "unknown: a state_dict stores no dropout layers (none is applied here)",
            "files": {k: file_record(_plain_name(names.get(k, k)), v) for k, v in given.items() if v is not None}}
    sd = read_state_dict(state_dict, names.get("state_dict", "state_dict"))  # shapes only (analysis.archive)
    config, fm = fill_from_file(config, sd, names.get("state_dict", "state_dict"),
                                cost=lambda c: check_upload(c, inputs, only))  # before any tensor is loaded
    if inputs is None:
        if config.embedding or config.batch_first:
            raise ConfigError("embedding and batch_first apply to given inputs: give the inputs file too")
        from .tasks import make_batch
        x = make_batch("random", config.seq_len, config.batch_size, seed=config.seed,
                       input_size=fm.arch["input_size"], dtype=torch.float64).inputs
        fm.notes.append(f"inputs: seeded random N(0, 1) (T={config.seq_len}, B={config.batch_size}); none given")
    else:
        x = prepare_inputs(read_array(inputs[0], names.get("inputs", "inputs"), inputs[1]), fm.arch,
                           batch_first=config.batch_first, embedding=fm.embedding)
    tg = read_array(targets[0], names.get("targets", "targets"), targets[1]) if targets else None
    h = read_array(h0[0], names.get("h0", "h0"), h0[1]) if h0 else None
    if isinstance(tg, tuple):
        raise ConfigError(f"{names.get('targets', 'targets')} holds a tuple: targets are one array")
    prov["module"] = fm.module
    return analyse_own(config, fm, x, targets=tg, h0=h, progress=progress, only=only, views=views,
                       provenance=prov)


def _plain_name(name: str) -> str:
    """'inputs_path='ids.npy'' -> 'ids.npy'; 'upload ids.npy' -> 'ids.npy'."""
    name = str(name)
    if "=" in name:
        name = name.split("=", 1)[1].strip("'\"")
    return name[len("upload "):] if name.startswith("upload ") else name


def run_files(config: ExperimentConfig, progress=None, only: str | None = None, views=None) -> ExperimentResult:
    """run_experiment's path for ``state_dict_path`` with the random task: read the files, then analyse_files."""
    import os

    def arr(path, field):
        return (read_file(path, field), os.path.splitext(path)[1]) if path else None

    sd = read_file(config.state_dict_path, "state_dict_path")
    return analyse_files(config, sd, inputs=arr(config.inputs_path, "inputs_path"),
                         targets=arr(config.targets_path, "targets_path"), h0=arr(config.h0_path, "h0_path"),
                         names={"state_dict": f"state_dict_path={config.state_dict_path!r}",
                                "inputs": f"inputs_path={config.inputs_path!r}",
                                "targets": f"targets_path={config.targets_path!r}",
                                "h0": f"h0_path={config.h0_path!r}"}, progress=progress, only=only, views=views)
