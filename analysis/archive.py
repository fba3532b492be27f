r"""Reading a ``torch.save`` archive without trusting it: sizes from its metadata first, then only the tensors asked.

A ``.pt`` file is a zip: ``<name>/data.pkl`` (the pickled structure; tensors refer to storages by key) and one
record ``<name>/data/<key>`` per storage. Reading it here takes three steps, none of which allocates more than
the limits below, whatever the file declares:

1. the zip's central directory (``zipfile.infolist``): every record's declared uncompressed size, summed and
   capped (``MAX_UNCOMPRESSED_BYTES``) before anything is decompressed; a re-deflated 3 MB file that declares
   3 GB of zeros stops here;
2. ``data.pkl`` through torch's weights-only unpickler (no code runs), with every storage standing in as a
   ``meta`` storage of its declared size: shapes, strides and dtypes of every tensor, no data;
3. ``load(names)``: only the named tensors, each counted at its declared size ``numel x element size`` (a
   zero-stride ``torch.zeros(1).expand(16384, 4096)`` saves 4 bytes and counts 256 MiB: materialising it makes
   the full copy), capped (``MAX_LOAD_BYTES``) before a record is read; their storages are read with Python's
   ``zipfile`` (which stops at the declared size and checks the CRC), the other records are never read.

Every refusal is a ``ConfigError`` with one line naming the file (``where``), the size and the limit.
"""
from __future__ import annotations

import io
import sys
import zipfile

import torch
from torch import Tensor

from rnn_models.config import ConfigError

MAX_UNCOMPRESSED_BYTES = 512 * 2**20  # all records of one archive, as declared by its zip directory
MAX_LOAD_BYTES = 512 * 2**20  # the tensors materialised from one archive, at their declared sizes
MAX_RECORDS = 100_000


def declared_bytes(t: Tensor) -> int:
    """numel x element size: what materialising ``t`` costs, whatever its storage holds (zero strides, views)."""
    return t.numel() * t.element_size()


def _mb(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB" if b >= 2**20 else f"{b / 2**10:,.1f} KiB"


class Archive:
    """The tensors of a torch.save zip as meta tensors (``tensors``: the unpickled object, with every tensor on
    the meta device), and ``load`` to materialise some of them."""

    def __init__(self, data: bytes, where: str):
        self.where = where
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise ConfigError(f"{where} is not a readable zip archive ({type(e).__name__})") from None
        self._check_records(infos)
        pkl = [i for i in infos if i.filename.endswith("data.pkl")]
        if len(pkl) != 1:
            raise ConfigError(f"{where} is not a torch.save archive (it holds {len(pkl)} data.pkl records)")
        self.prefix = pkl[0].filename[: -len("data.pkl")]
        self.sizes = {i.filename: i.file_size for i in infos}
        self._keys: dict[int, tuple[str, torch.dtype, int]] = {}  # meta storage -> (record key, dtype, numel)
        self._check_byteorder()
        self.obj = self._unpickle(self._read(pkl[0].filename))

    def _check_records(self, infos) -> None:
        if len(infos) > MAX_RECORDS:
            raise ConfigError(f"{self.where}: the archive holds {len(infos):,} records, over the {MAX_RECORDS:,} "
                              "limit; nothing was loaded")
        total = sum(i.file_size for i in infos)
        if total > MAX_UNCOMPRESSED_BYTES:
            big = max(infos, key=lambda i: i.file_size)
            raise ConfigError(f"{self.where}: the archive declares {_mb(total)} uncompressed (its largest record "
                              f"{big.filename.split('/', 1)[-1]!r}: {_mb(big.file_size)}), over the "
                              f"{_mb(MAX_UNCOMPRESSED_BYTES)} limit; nothing was loaded: save only the model's "
                              "state_dict")

    def _read(self, name: str) -> bytes:
        try:
            return self.zip.read(name)  # stops at the declared size; a CRC mismatch raises
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as e:
            raise ConfigError(f"{self.where}: record {name.rsplit('/', 1)[-1]!r} could not be read "
                              f"({type(e).__name__})") from None

    def _check_byteorder(self) -> None:
        name = self.prefix + "byteorder"
        if name in self.sizes and self.sizes[name] <= 16:
            order = self._read(name).decode("ascii", "replace").strip()
            if order != sys.byteorder:
                raise ConfigError(f"{self.where} was saved on a {order}-endian machine: load and re-save it with "
                                  "torch on this kind of machine")

    def _storage(self, pid):
        """persistent_load: a meta storage of the declared size, remembered with its record key."""
        try:
            _, storage_type, key, _location, numel = pid
            dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
            numel = int(numel)
        except (TypeError, ValueError, AttributeError):
            raise ConfigError(f"{self.where}: a storage reference is malformed") from None
        name = f"{self.prefix}data/{key}"
        nbytes = numel * torch._utils._element_size(dtype)
        if self.sizes.get(name) != nbytes:
            raise ConfigError(f"{self.where}: storage {key!r} declares {nbytes} bytes, its record holds "
                              f"{self.sizes.get(name)}")
        us = torch.UntypedStorage(nbytes, device="meta")
        self._keys[us._cdata] = (str(key), dtype, numel)
        return torch.storage.TypedStorage(wrap_storage=us, dtype=dtype, _internal=True)

    def _unpickle(self, raw: bytes):
        from torch import _weights_only_unpickler as wo
        u = wo.Unpickler(io.BytesIO(raw), encoding="utf-8")
        u.persistent_load = self._storage
        try:
            return u.load()
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - anything the restricted unpickler refuses is the file's problem
            raise ConfigError(f"{self.where} could not be read as a weights-only torch file ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:160]})") from None

    def load(self, named: dict[str, Tensor]) -> dict[str, Tensor]:
        """Materialise the meta tensors ``named`` (name -> a tensor of ``self.obj``), checking their declared
        total first; only their storages' records are read."""
        total = sum(declared_bytes(t) for t in named.values())
        if total > MAX_LOAD_BYTES:
            big = max(named, key=lambda k: declared_bytes(named[k]))
            raise ConfigError(f"{self.where}: the tensors the analysis reads declare {_mb(total)} ({big} "
                              f"{tuple(named[big].shape)}: {_mb(declared_bytes(named[big]))}), over the "
                              f"{_mb(MAX_LOAD_BYTES)} limit; nothing was loaded")
        storages: dict[str, Tensor] = {}
        out = {}
        for name, t in named.items():
            if t.device.type != "meta":  # already real
                out[name] = t
                continue
            key, dtype, numel = self._keys[t.untyped_storage()._cdata]
            if key not in storages:
                raw = self._read(f"{self.prefix}data/{key}")
                storages[key] = (torch.frombuffer(bytearray(raw), dtype=dtype) if numel else
                                 torch.empty(0, dtype=dtype))
            base = storages[key]
            if t.dtype != base.dtype:
                base = base.view(t.dtype) if base.numel() else torch.empty(0, dtype=t.dtype)
            try:
                out[name] = base.as_strided(t.shape, t.stride(), t.storage_offset()).clone()
            except RuntimeError:
                raise ConfigError(f"{self.where}: tensor {name!r} {tuple(t.shape)} reaches outside its "
                                  "storage") from None
        return out


def tensors_of(obj) -> list[Tensor]:
    """The tensors of an unpickled object (a tensor, or a tuple / list of them)."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for t in obj if isinstance(t, Tensor)]
    return []


def is_zip(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04"
