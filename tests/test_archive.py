"""Uploads read safely (analysis.archive, own_files, upload_limits): sizes from the zip's metadata before any
tensor is loaded, only the recurrent module's keys (and the named readout / embedding) materialised, zero-stride
tensors counted at their declared size; issue 20's reproductions (a 2 KB file declaring an LSTM with H = 4096, a
zip bomb) refused in one line; the inputs file (inputs_path, analysis.input_files) read the same way."""
import io
import json
import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from analysis import ExperimentConfig, archive
from analysis.limits import LimitExceeded
from analysis.own_files import read_array, read_state_dict, split_state_dict
from analysis.own_model import analyse_files
from rnn_models.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def zero_stride_lstm(H: int = 4096, I: int = 4096) -> bytes:
    """Issue 20 (2): zero-stride tensors declaring an LSTM with hidden size H, a file of about 2 KB."""
    z = torch.zeros(1)
    return saved({"weight_ih_l0": z.expand(4 * H, I), "weight_hh_l0": z.expand(4 * H, H),
                  "bias_ih_l0": z.expand(4 * H), "bias_hh_l0": z.expand(4 * H)})


def bomb(junk_numel: int) -> bytes:
    """Issue 20 (3): a small LSTM's state_dict plus a top-level ``junk`` float32 tensor of ``junk_numel`` zeros,
    re-deflated (the pickle declares the storage; its record is written deflated: a few MB on disk)."""
    sd = nn.LSTM(3, 5).state_dict()
    sd["junk"] = torch.zeros(junk_numel, device="meta")  # torch.save writes no record for a meta storage
    return deflated(sd, junk_numel)


class ZerosDeflater:
    """zlib's raw deflate for a record of zeros written CHUNK bytes at a time: after a full flush every whole chunk
    deflates to the same bytes (the window is reset), so they are computed once; a partial chunk and the end go
    through zlib. 800 MB of zeros in ~0.3 s instead of ~2.3 s; the stream inflates back to the zeros
    (test_the_fast_deflate_of_zeros_inflates_to_zeros)."""
    CHUNK = 2**24

    def __init__(self):
        self._z = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._whole = None

    def compress(self, data: bytes) -> bytes:
        if len(data) != self.CHUNK:
            return self._z.compress(data)
        if self._whole is None:
            self._whole = self._z.compress(data) + self._z.flush(zlib.Z_FULL_FLUSH)
        return self._whole

    def flush(self) -> bytes:
        return self._z.flush()


def test_the_fast_deflate_of_zeros_inflates_to_zeros():
    d, n = ZerosDeflater(), 2 * ZerosDeflater.CHUNK + 1000
    stream = b"".join(d.compress(bytes(min(d.CHUNK, n - i))) for i in range(0, n, d.CHUNK)) + d.flush()
    inflate = zlib.decompressobj(-15)
    out = inflate.decompress(stream)
    assert inflate.eof and len(out) == n and not any(out)


def deflated(obj, numel: int) -> bytes:
    """``torch.save(obj)`` whose last storage, a meta float32 tensor of ``numel`` (no record written for it), gets
    its record of ``numel`` zeros written deflated (with ZerosDeflater in place of zipfile's compressor)."""
    src = zipfile.ZipFile(io.BytesIO(saved(obj)))
    names = src.namelist()
    prefix = next(n for n in names if n.endswith("data.pkl"))[: -len("data.pkl")]
    junk_key = str(len([n for n in names if "/data/" in n]))  # storages are numbered in order: junk is last
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for n in names:
            z.writestr(n, src.read(n))
        info = zipfile.ZipInfo(f"{prefix}data/{junk_key}")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as fh:
            assert hasattr(fh, "_compressor")  # zipfile's writer deflates through this object
            fh._compressor = ZerosDeflater()
            chunk, left = bytes(ZerosDeflater.CHUNK), numel * 4
            while left:
                fh.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
    return out.getvalue()


def test_the_zero_stride_lstm_is_refused_by_the_estimate_before_any_tensor_is_loaded(monkeypatch):
    data = zero_stride_lstm()
    assert len(data) < 3000
    loads = []
    monkeypatch.setattr(archive.Archive, "load", lambda self, named: loads.append(list(named)) or {})
    with pytest.raises(LimitExceeded) as e:
        analyse_files(ExperimentConfig(), data)
    msg = str(e.value)
    assert "\n" not in msg and "hidden_size=4096" in msg and "GFLOP" in msg
    assert loads == []  # refused on the declared shapes: nothing materialised


def test_the_zero_stride_lstm_on_the_command_line_is_one_line(tmp_path, cli_inproc):
    p = tmp_path / "wide.pt"
    p.write_bytes(zero_stride_lstm())
    r = cli_inproc("run", "--load-state-dict", p)  # python -m analysis, its main() in this process
    assert r.returncode == 2 and r.stdout == ""
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "hidden_size=4096" in err and "limit" in err


def test_declared_sizes_count_zero_strides():
    t = torch.zeros(1).expand(16384, 4096)
    assert archive.declared_bytes(t) == 16384 * 4096 * 4
    # materialising them goes through the cap on declared sizes, whatever the file's few bytes
    a = archive.Archive(zero_stride_lstm(H=64, I=8), "f")
    with pytest.raises(ConfigError, match="over the"):
        old, archive.MAX_LOAD_BYTES = archive.MAX_LOAD_BYTES, 1000
        try:
            a.load(dict(a.obj))
        finally:
            archive.MAX_LOAD_BYTES = old


def test_the_zip_bomb_is_refused_from_its_metadata_with_small_peak_memory(tmp_path):
    """A ~1 MB file declaring 800 MB of zeros (200 M float32, beside an LSTM's state_dict): refused from the zip
    records in one line, in a subprocess whose peak RSS grows by less than 50 MB."""
    data = bomb(200_000_000)
    assert len(data) < 5 * 2**20
    p = tmp_path / "bomb.pt"
    p.write_bytes(data)
    code = f"""
import json
from analysis import ExperimentConfig
from analysis.own_model import analyse_files
def hwm():  # this process's own peak (ru_maxrss would keep the parent's across fork and exec)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
data = open({str(p)!r}, "rb").read()
before = hwm()
try:
    analyse_files(ExperimentConfig(), data)
    msg = None
except ValueError as e:
    msg = str(e)
after = hwm()
print(json.dumps({{"msg": msg, "grew_kb": after - before}}))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["msg"] and "\n" not in out["msg"] and "declares" in out["msg"] and "nothing was loaded" in out["msg"]
    assert out["grew_kb"] < 50 * 1024, out


def test_junk_under_the_cap_is_never_read_nor_kept_in_the_module(monkeypatch):
    m = nn.LSTM(3, 5)
    sd = m.state_dict()
    sd["junk"] = torch.arange(1000.0)
    sd["decoder.weight"] = torch.randn(2, 5)
    data = saved(sd)
    read = []
    orig = archive.Archive._read
    monkeypatch.setattr(archive.Archive, "_read", lambda self, name: read.append(name) or orig(self, name))
    lazy = read_state_dict(data, "f")
    assert all(t.device.type == "meta" for t in lazy.values())  # structure only
    fm = split_state_dict(lazy, None, "f")
    assert sorted(fm.rnn) == sorted(k for k in m.state_dict())  # 'junk' has no "." but is not the module's
    from analysis.own_files import materialise
    read.clear()
    materialise(fm, lazy, "f")
    for k, v in m.state_dict().items():
        assert torch.equal(fm.rnn[k], v)
    assert len(read) == 4 and not any(n.endswith(("/data/4", "/data/5")) for n in read)  # junk, decoder unread


def test_a_deflated_state_dict_reads_the_same_numbers_as_torch_load():
    """A re-deflated archive (torch.load(mmap=True) refuses those) reads here, equal to torch.load."""
    m = nn.GRU(3, 4, num_layers=2, bidirectional=True)
    src = zipfile.ZipFile(io.BytesIO(saved(m.state_dict())))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for n in src.namelist():
            z.writestr(n, src.read(n))
    data = out.getvalue()
    ref = torch.load(io.BytesIO(data), weights_only=True)
    from analysis.own_files import materialise
    lazy = read_state_dict(data, "f")
    fm = split_state_dict(lazy, None, "f")
    materialise(fm, lazy, "f")
    assert set(fm.rnn) == set(ref) and all(torch.equal(fm.rnn[k], ref[k]) for k in ref)
    # views with offsets and strides come back as torch builds them
    base = torch.arange(24.0).view(4, 6)
    views = (base[1:, ::2], base.t(), base[2])
    got = read_array(saved(views), "v", ".pt")
    assert all(torch.equal(g, v) for g, v in zip(got, views))


def test_a_pickled_model_is_still_named_and_nothing_runs():
    with pytest.raises(ConfigError, match="pickled object .*LSTM.* nothing was unpickled"):
        read_state_dict(saved(nn.LSTM(3, 4)), "f")


def test_npy_headers_declaring_more_than_the_file_holds_are_refused():
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 3)))
    good = buf.getvalue()
    assert read_array(good, "x", ".npy").shape == (4, 3)
    bad = good.replace(b"'shape': (4, 3)", b"'shape': (9999999999, 3)")  # 240 GB declared, 96 bytes held
    with pytest.raises(ConfigError, match="declares shape"):
        read_array(bad, "x", ".npy")


def test_upload_config_reads_shapes_only(monkeypatch):
    from analysis.upload_limits import upload_config
    loads = []
    monkeypatch.setattr(archive.Archive, "load", lambda self, named: loads.append(list(named)) or {})
    buf = io.BytesIO()
    np.save(buf, np.zeros((7, 3, 4096), dtype=np.float32))
    c = upload_config(ExperimentConfig(), zero_stride_lstm(), (buf.getvalue(), ".npy"))
    assert (c.cell, c.hidden_size, c.input_size, c.seq_len, c.batch_size) == ("lstm", 4096, 4096, 7, 3)
    assert loads == []


def test_run_experiment_and_trainer_check_a_state_dict_files_own_sizes(tmp_path):
    """A file named in the config (API, CLI) is estimated on its own architecture, not the config's defaults."""
    from analysis import run_experiment
    from analysis.training import Trainer
    p = tmp_path / "wide.pt"
    p.write_bytes(zero_stride_lstm(H=4096, I=2))
    cfg = ExperimentConfig(task="adding", state_dict_path=str(p))  # hidden_size left at its default (64)
    with pytest.raises(LimitExceeded, match="hidden_size=4096"):
        run_experiment(cfg)
    with pytest.raises(LimitExceeded, match="hidden_size=4096"):
        Trainer(cfg.replace(train_steps=100000))


# ---- the inputs file (inputs_path, analysis.input_files): the same reader as the uploads -------------------------
def test_a_zero_stride_inputs_file_is_refused_before_anything_is_loaded(tmp_path, monkeypatch, cli_inproc):
    """Issue 20: a 2 KB .pt inputs file declaring (100000, 64, 32) (1.6 GB as float64: a zero-stride view of one
    float) is refused in one line naming the file, from its metadata: no storage record is read, through
    load_inputs (and its old import from analysis.tasks), run_experiment and the command line (exit 2)."""
    from analysis import run_experiment
    from analysis.input_files import load_inputs
    from analysis.tasks import load_inputs as old_import
    assert old_import is load_inputs
    p = tmp_path / "wide.pt"
    torch.save(torch.zeros(1).expand(100_000, 64, 32), p)
    assert p.stat().st_size < 3000
    loads = []
    monkeypatch.setattr(archive.Archive, "load", lambda self, named: loads.append(list(named)) or {})
    with pytest.raises(ValueError) as e:
        load_inputs(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "declares shape (100000, 64, 32)" in msg
    assert "nothing was loaded" in msg and f"{100_000 * 64 * 32 * 8 / 2**20:,.0f} MiB" in msg
    with pytest.raises(ConfigError, match="inputs_path: .*declares shape"):
        run_experiment(ExperimentConfig(inputs_path=str(p)))
    r = cli_inproc("run", "--inputs", p)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "declares shape" in r.stderr
    assert loads == []
    # a .npy header declaring more than the file holds: refused before np.load allocates it
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 3, 2)))
    bad = tmp_path / "bad.npy"
    bad.write_bytes(buf.getvalue().replace(b"'shape': (4, 3, 2)", b"'shape': (99999999, 3, 2)"))
    with pytest.raises(ValueError, match="declares shape") as e:
        load_inputs(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)


def test_an_inputs_zip_bomb_is_refused_from_its_metadata_with_small_peak_memory(tmp_path):
    """Two ~1 MB .pt inputs files of deflated zeros: 600 MB declared by the zip records (over the archive's cap)
    and 400 MB (under it, but 800 MB as the float64 copy the analysis makes): each refused in one line, in a
    subprocess whose peak RSS grows by less than 50 MB; a small honest file reads the same as torch.load."""
    files = {}
    for name, numel in (("records", 150_000_000), ("float64", 100_000_000)):
        data = deflated(torch.zeros(numel, 1, 1, device="meta"), numel)
        assert len(data) < 5 * 2**20
        files[name] = tmp_path / f"{name}.pt"
        files[name].write_bytes(data)
    code = f"""
import json
from analysis.input_files import load_inputs
def hwm():  # this process's own peak
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
out = {{}}
for name, path in {json.dumps({k: str(v) for k, v in files.items()})}.items():
    before = hwm()
    try:
        load_inputs(path)
        msg = None
    except ValueError as e:
        msg = str(e)
    out[name] = {{"msg": msg, "grew_kb": hwm() - before}}
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for name, got in out.items():
        assert got["msg"] and "\n" not in got["msg"] and str(files[name]) in got["msg"], (name, got)
        assert "nothing was loaded" in got["msg"] and got["grew_kb"] < 50 * 1024, (name, got)
    assert "uncompressed" in out["records"]["msg"] and "as float64" in out["float64"]["msg"]
    from analysis.input_files import load_inputs
    x = torch.randn(5, 3, 2)
    honest, packed = tmp_path / "x.pt", tmp_path / "packed.pt"
    torch.save(x, honest)
    src = zipfile.ZipFile(honest)
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as z:  # every record deflated
        for n in src.namelist():
            z.writestr(n, src.read(n))
    for f in (honest, packed):
        assert torch.equal(load_inputs(f, dtype=torch.float64), torch.load(honest, weights_only=True).double())
