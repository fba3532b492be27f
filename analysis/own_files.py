r"""Reading a user's files: a whole model's ``state_dict``, its recurrent module, readout, embedding, and arrays.

Nothing here unpickles code: state_dicts are read with torch's weights-only unpickler (``analysis.archive``: the
zip's records are size-checked first and the tensors come back as meta tensors, shapes only, until
``materialise`` loads the recurrent module's expected keys and the named readout / embedding, nothing else) and
arrays with ``np.load(allow_pickle=False)`` after their header's declared size is checked; a pickled whole model
(``torch.save(model)``) is recognised by scanning the pickle's opcodes (``pickletools``, which executes nothing)
and answered with how to save a state_dict.

A whole model's state_dict holds its recurrent module under a prefix::

    rnn.weight_ih_l0  (G*H, I)   rnn.weight_hh_l0 (G*H, H)   rnn.bias_ih_l0 ...   G = 1 rnn, 3 gru, 4 lstm
    encoder.weight    (V, I)     decoder.weight   (O, D*H)   decoder.bias (O,)

``recurrent_prefixes`` finds every ``*weight_ih_l0`` prefix; ``split_state_dict`` picks one (``module=``),
strips the prefix and reads its architecture. Every problem is a ``ConfigError`` with one line.
"""
from __future__ import annotations

import io
import pickletools
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from rnn_models.cells import cell_type
from rnn_models.config import ConfigError
from rnn_models.network import infer_config_from_torch_state_dict

from .archive import MAX_LOAD_BYTES, Archive, declared_bytes, is_zip, tensors_of

MAX_FILE_BYTES = 200 * 2**20  # uploads and files read for the analysis
ARCH_FIELDS = ("cell", "hidden_size", "input_size", "num_layers", "bidirectional")
PYTHON = "python:"  # a path that records an object given to analyze() in Python (nothing opens it)
SAVE_HINT = "save the weights with torch.save(model.state_dict(), 'model.pt')"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def _pickled_class(data: bytes) -> str | None:
    """The first class a torch.save zip's data.pkl would import (module.name), found without unpickling."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            pkl = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            if pkl is None:
                return None
            raw = z.read(pkl)
    except (zipfile.BadZipFile, OSError, ValueError):
        raw = data  # legacy (non-zip) torch.save format: the pickle is at the start
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(raw):
            if op.name == "GLOBAL":  # arg "module name"
                mod, name = str(arg).split(" ", 1)
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                mod, name = strings[-2], strings[-1]
            else:
                if isinstance(arg, str):
                    strings.append(arg)
                continue
            if not mod.startswith(("torch._utils", "collections", "torch._tensor", "torch.storage", "builtins")) \
                    and not name.endswith("Storage"):
                return f"{mod}.{name}"
    except Exception:  # noqa: BLE001 - not a pickle we can read: say nothing about classes
        return None
    return None


class StateDict(dict):
    """name -> tensor. From a zip archive the tensors are meta tensors (shapes, dtypes, no data) until
    ``materialise`` loads the few the analysis reads (``archive``: analysis.archive.Archive, else None)."""

    archive = None


def read_state_dict(data: bytes, where: str) -> StateDict:
    """A state_dict from the bytes of a torch.save file, its tensors as meta tensors (nothing materialised: see
    ``analysis.archive``; a legacy non-zip file is loaded whole, bounded by its size); one-line ConfigError
    naming ``where`` otherwise."""
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: {len(data) / 2**20:.0f} MiB is over the {MAX_FILE_BYTES // 2**20} MiB limit")
    archive = None
    try:
        if is_zip(data):
            archive = Archive(data, where)  # zip records checked, then the structure with meta storages
            obj = archive.obj
        else:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except ConfigError as e:
        cls = _pickled_class(data) if "weights-only" in str(e) else None
        if cls is None:
            raise
        raise ConfigError(f"{where} holds a pickled object ({cls}), not a state_dict; nothing was unpickled: "
                          f"{SAVE_HINT}") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input problem
        cls = _pickled_class(data)
        if cls is not None:
            raise ConfigError(f"{where} holds a pickled object ({cls}), not a state_dict; nothing was unpickled: "
                              f"{SAVE_HINT}") from None
        raise ConfigError(f"{where} is not a torch state_dict file ({type(e).__name__}): {SAVE_HINT}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a checkpoint {"state_dict": ..., "epoch": ...}
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ConfigError(f"{where} holds a {type(obj).__name__}, not a state_dict (a dict of tensors): {SAVE_HINT}")
    sd = StateDict({k: v for k, v in obj.items() if isinstance(v, Tensor)})
    sd.archive = archive
    return sd


def materialise(fm: "FileModel", sd: dict, where: str = "state_dict") -> None:
    """Load, in place, the tensors ``fm`` holds (its recurrent module's expected keys, the named readout and
    embedding): their declared sizes are checked first and no other record of the file is read."""
    named = {f"rnn.{k}": v for k, v in fm.rnn.items()}
    if fm.readout is not None:
        named["readout.weight"] = fm.readout[0]
        if fm.readout[1] is not None:
            named["readout.bias"] = fm.readout[1]
    if fm.embedding is not None:
        named["embedding.weight"] = fm.embedding
    archive = getattr(sd, "archive", None)
    if archive is None:
        check_declared(named, where)
        return
    got = archive.load(named)
    fm.rnn = {k: got[f"rnn.{k}"] for k in fm.rnn}
    if fm.readout is not None:
        fm.readout = (got["readout.weight"], got.get("readout.bias"))
    if fm.embedding is not None:
        fm.embedding = got["embedding.weight"]


def read_file(path: str, where: str) -> bytes:
    """The bytes of a regular file (a FIFO or device would hang or never end), size-limited."""
    import os
    import stat

    try:
        st = os.stat(path)
    except OSError:
        if str(path).startswith(PYTHON):  # analyze()'s record of an object given in Python (own_model.python_record)
            raise ConfigError(f"{where}={path!r} records what was given to analyze() in Python, not a file: save it "
                              "(torch.save(model.state_dict(), PATH) for the model, np.save for an array) and give "
                              "its path") from None
        raise ConfigError(f"{where}={path!r}: no such file") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{where}={path!r} is not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{where}={path!r}: {st.st_size / 2**20:.0f} MiB is over the "
                          f"{MAX_FILE_BYTES // 2**20} MiB limit")
    with open(path, "rb") as fh:
        return fh.read()


def recurrent_prefixes(sd: dict) -> list[str]:
    """Prefixes p with p + 'weight_ih_l0' in sd: '' for a bare nn.LSTM's state_dict, 'rnn.' inside a model."""
    return sorted(k[: -len("weight_ih_l0")] for k in sd if k.endswith("weight_ih_l0"))


def _name(prefix: str) -> str:
    return prefix[:-1] if prefix.endswith(".") else prefix


@dataclass
class FileModel:
    """The recurrent module of a state_dict, its architecture and what was read beside it."""

    module: str  # the recurrent module's name in the file ('' = the file is the module itself)
    rnn: dict[str, Tensor]  # its own state_dict (prefix stripped)
    arch: dict  # ModelConfig fields: cell, hidden_size, input_size, num_layers, bidirectional
    readout: tuple[Tensor, Tensor | None] | None = None  # (W (O, D*H), b (O,))
    embedding: Tensor | None = None  # (V, I)
    notes: list[str] = field(default_factory=list)


def split_state_dict(sd: dict, module: str | None, where: str = "state_dict") -> FileModel:
    """Pick the recurrent module (by name when several) and read its architecture."""
    prefixes = recurrent_prefixes(sd)
    names = [_name(p) or "(top level)" for p in prefixes]
    if not prefixes:
        some = ", ".join(list(sd)[:4]) or "none"
        raise ConfigError(f"{where} has no recurrent module: no key ends in weight_ih_l0 (keys: {some}...); it must "
                          "hold a torch.nn.RNN/LSTM/GRU or a model containing one")
    if module is not None:
        prefix = module + "." if module else ""
        if prefix not in prefixes:
            raise ConfigError(f"module={module!r} is not a recurrent module of {where}: it has {', '.join(names)}")
    elif len(prefixes) > 1:
        raise ConfigError(f"{where} holds {len(prefixes)} recurrent modules ({', '.join(names)}): pick one with "
                          f"module= / --module NAME")
    else:
        prefix = prefixes[0]
    rnn = {k[len(prefix):]: v for k, v in sd.items()
           if k.startswith(prefix) and "." not in k[len(prefix):]}
    try:
        arch = infer_config_from_torch_state_dict(rnn)
    except ValueError as e:
        raise ConfigError(f"{where} module {_name(prefix) or '(top level)'!r}: {e}") from None
    rnn = {k: rnn[k] for k in expected_keys(arch) if k in rnn}  # never other keys without a "." (e.g. 'junk')
    fm = FileModel(module=_name(prefix), rnn=rnn, arch=arch)
    where_mod = f"{_name(prefix)!r}" if prefix else "the file's top level"
    fm.notes.append(f"the file decided: recurrent module {where_mod} = {describe(arch)}")
    return fm


def expected_keys(arch: dict) -> list[str]:
    """torch.nn.RNN/LSTM/GRU's state_dict keys for ``arch``: weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k},
    bias_hh_l{k} (+ '_reverse' for the backward direction)."""
    sfx = [""] + (["_reverse"] if arch["bidirectional"] else [])
    return [f"{n}_l{k}{s}" for k in range(arch["num_layers"]) for s in sfx
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def check_declared(named: dict, where: str) -> None:
    """The declared sizes (numel x element size) of tensors about to be copied, against the archive's limit."""
    total = sum(declared_bytes(t) for t in named.values())
    if total > MAX_LOAD_BYTES:
        raise ConfigError(f"{where}: the tensors the analysis reads declare {total / 2**20:,.0f} MiB, over the "
                          f"{MAX_LOAD_BYTES // 2**20} MiB limit")


def describe(arch: dict) -> str:
    return (f"{arch['cell']}, input_size={arch['input_size']}, hidden_size={arch['hidden_size']}, "
            f"num_layers={arch['num_layers']}, bidirectional={arch['bidirectional']}")


def linear_from(sd: dict, name: str, in_features: int, where: str = "state_dict") -> tuple[Tensor, Tensor | None]:
    """(W (O, in_features), b (O,) or None) of the nn.Linear ``name`` in a whole model's state_dict."""
    W = sd.get(f"{name}.weight")
    if W is None:
        lin = sorted({k[: -len(".weight")] for k, v in sd.items() if k.endswith(".weight") and v.dim() == 2
                      and v.shape[1] == in_features})
        raise ConfigError(f"readout={name!r}: {where} has no {name}.weight; 2-D weights reading {in_features} "
                          f"features: {', '.join(lin) or 'none'}")
    if W.dim() != 2 or W.shape[1] != in_features:
        raise ConfigError(f"readout={name!r}: {name}.weight has shape {tuple(W.shape)}, a Linear on the recurrent "
                          f"outputs needs (O, {in_features})")
    b = sd.get(f"{name}.bias")
    if b is not None and tuple(b.shape) != (W.shape[0],):
        raise ConfigError(f"readout={name!r}: {name}.bias has shape {tuple(b.shape)}, expected ({W.shape[0]},)")
    return W.detach(), (b.detach() if b is not None else None)


def embedding_from(sd: dict, name: str, input_size: int, where: str = "state_dict") -> Tensor:
    """The (V, I) table of the nn.Embedding ``name`` in a whole model's state_dict."""
    E = sd.get(f"{name}.weight")
    if E is None or E.dim() != 2:
        emb = sorted(k[: -len(".weight")] for k, v in sd.items() if k.endswith(".weight") and v.dim() == 2
                     and v.shape[1] == input_size)
        raise ConfigError(f"embedding={name!r}: {where} has no 2-D {name}.weight; candidates with {input_size} "
                          f"columns: {', '.join(emb) or 'none'}")
    if E.shape[1] != input_size:
        raise ConfigError(f"embedding={name!r}: {name}.weight has shape {tuple(E.shape)}, the recurrent module "
                          f"reads input_size={input_size}")
    return E.detach()


# ---- arrays: inputs, targets, h0 ------------------------------------------------------------------------
def read_array(data: bytes, where: str, suffix: str):
    """A numeric array from .npy bytes (no pickles) or a .pt tensor (or a tuple of tensors: (h0, c0))."""
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: {len(data) / 2**20:.0f} MiB is over the {MAX_FILE_BYTES // 2**20} MiB limit")
    suffix = suffix.lower()
    if suffix == ".npy":
        from .upload_limits import npy_shape
        npy_shape(data, where)  # the header's declared size against the bytes, before np.load allocates it
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"{where} could not be read as .npy ({_one_line(e)})") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iufb":
            raise ConfigError(f"{where} must hold one numeric array; it holds dtype {getattr(arr, 'dtype', '?')}")
        return torch.from_numpy(np.ascontiguousarray(arr))
    if suffix == ".pt":
        archive = None
        try:
            if is_zip(data):
                archive = Archive(data, where)  # zip records and declared sizes checked before any data is read
                obj = archive.obj
            else:
                obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"{where} could not be read as .pt ({type(e).__name__}): save a tensor with "
                              "torch.save(tensor, path)") from None
        ts = tensors_of(obj)
        if not ts or (not isinstance(obj, Tensor) and len(ts) != len(obj)):
            raise ConfigError(f"{where} holds a {type(obj).__name__}, not a tensor")
        named = {str(i): t for i, t in enumerate(ts)}
        if archive is None:
            check_declared(named, where)
        else:
            named = archive.load(named)
        ts = [named[str(i)] for i in range(len(ts))]
        return ts[0] if isinstance(obj, Tensor) else tuple(ts)
    raise ConfigError(f"{where}: unsupported extension {suffix!r}: must be .npy or .pt")


def read_array_file(path: str, where: str):
    import os
    return read_array(read_file(path, where), f"{where}={path!r}", os.path.splitext(path)[1])


# ---- flags/config against the file --------------------------------------------------------------------
def reconcile(d: dict, given: set[str], sd: dict | None = None) -> dict:
    """Fill the architecture fields of a config dict from its state_dict file, before validation.

    ``given``: fields the user set explicitly (command-line flags); a given value that contradicts the file is a
    one-line ConfigError naming both values. ``layer`` is checked against the file's layers.
    """
    if sd is None:
        sd = read_state_dict(read_file(d["state_dict_path"], "state_dict_path"), f"--load-state-dict "
                                                                                 f"{d['state_dict_path']}")
    fm = split_state_dict(sd, d.get("module"), f"--load-state-dict {d['state_dict_path']}")
    check_against_file(d, fm, given)
    d = {**d, **fm.arch}
    if "embedding" in d and d.get("embedding"):
        d.pop("input_size", None)
    L = fm.arch["num_layers"]
    layer = d.get("layer", -1)
    if isinstance(layer, int) and not -L <= layer <= L - 1:
        raise ConfigError(f"layer={layer} is out of range: the file's module {fm.module or '(top level)'!r} has "
                          f"{L} layer{'s' if L > 1 else ''}, so layer must be in [{-L}, {L - 1}]")
    return d


def check_against_file(d: dict, fm: FileModel, given: set[str]) -> None:
    for f in ARCH_FIELDS:
        if f in given and d.get(f) is not None and d[f] != fm.arch[f]:
            flag = "--" + f.replace("_", "-")
            shown = (flag if not isinstance(d[f], bool) else (flag if d[f] else "--no-" + flag[2:]))
            shown = shown if isinstance(d[f], bool) else f"{flag} {d[f]}"
            raise ConfigError(f"{shown} contradicts the file: its module {fm.module or '(top level)'!r} has "
                              f"{f}={fm.arch[f]} (leave the flag out to use the file's value)")


def with_file_arch(config):
    """``config`` with its state_dict file's architecture (cell, sizes, layers, direction), read from the file's
    metadata alone; ``config`` itself without a file, or where the file or the combination is invalid (the
    analysis then says why in its own words). For the limits' check before the run: the file decides the sizes."""
    if not config.state_dict_path:
        return config
    where = f"state_dict_path={config.state_dict_path!r}"
    try:
        fm = split_state_dict(read_state_dict(read_file(config.state_dict_path, "state_dict_path"), where),
                              config.module, where)
        return config.replace(**fm.arch)
    except ConfigError:
        return config


def fill_from_file(config, sd: dict, where: str, cost=None, load: bool = True):
    """(config with the file's architecture, FileModel with readout/embedding): the engine's side of reconcile.

    A config field that is not its default and contradicts the file is an error (it was asked for); a default
    one is replaced by the file's value and the notes say so. ``layer`` is checked against the file.
    ``cost(config)``, when given, is called on the file's architecture before any tensor is materialised (the
    limits' check: a file of zero-stride tensors declaring H = 4096 is refused there, its 2 KB never expanded);
    then only the tensors the analysis reads are loaded (``materialise``); ``load=False`` loads nothing (fm's
    tensors stay meta tensors, shapes only: what an admission check needs).
    """
    from .config import ExperimentConfig

    fm = split_state_dict(sd, config.module, where)
    defaults = ExperimentConfig()
    check_against_file(config.to_dict(), fm, {f for f in ARCH_FIELDS if getattr(config, f) != getattr(defaults, f)
                                             and not (f == "input_size" and config.input_size is None)})
    if config.layer_norm or config.peephole:
        raise ConfigError("layer_norm and peephole must be off with a state_dict: torch.nn models have neither")
    L = fm.arch["num_layers"]
    if not -L <= config.layer <= L - 1:
        raise ConfigError(f"layer={config.layer} is out of range: the file's module {fm.module or '(top level)'!r} "
                          f"has {L} layer{'s' if L > 1 else ''}, so layer must be in [{-L}, {L - 1}]")
    if "activation" in cell_type(fm.arch["cell"]).settings:  # the vanilla RNN
        fm.notes.append(f"nn.RNN does not store its nonlinearity in the state_dict: activation={config.activation!r} "
                        "was used (tanh unless set; --activation relu / activation='relu' for a ReLU model)")
    config = config.replace(**fm.arch)
    D = 2 if fm.arch["bidirectional"] else 1
    if config.readout:
        fm.readout = linear_from(sd, config.readout, D * fm.arch["hidden_size"], where)
        fm.notes.append(f"readout {config.readout!r} from the file: nn.Linear {tuple(fm.readout[0].shape[::-1])}")
    if config.embedding:
        fm.embedding = embedding_from(sd, config.embedding, fm.arch["input_size"], where)
        fm.notes.append(f"embedding {config.embedding!r} from the file: {fm.embedding.shape[0]} tokens x "
                        f"{fm.embedding.shape[1]}")
    if cost is not None:
        cost(config)
    if load:
        materialise(fm, sd, where)
    return config, fm
