r"""The run directory that ``watch`` writes and ``load_run`` reads: an open, append-only format.

    run.json        written once, atomically (temp file + rename), before the first record:
                    {"format": "gdlab-run", "version": 1, "layers": ["rnn.l0", ...], "every": 100,
                     "horizon_threshold": 1e-3, "modules": {"rnn": {"cell": "lstm", "hidden_size": 200, ...}},
                     "created": "2026-12-03T08:00:00Z"}
    records.jsonl   one JSON object per recorded training step:
                    {"step": 12, "loss": 5.31, "T": 35,
                     "log10_grad_norm": {"rnn.l0": [T numbers], ...}, "messages": ["..."]   (optional)}
                    log10_grad_norm[layer][t] = mean over the batch of log10 ||dL/dh_t|| (the log of the geometric
                    mean, as analyze().grad.grad_norm), dL/dh_t the TOTAL derivative of the training loss
    probes.jsonl    every ``every`` steps, one sequence (the batch's first):
                    {"step": 100, "lags": [0, 1, 2, 4, ...],
                     "log10_sigma_max": {"rnn.l0": [per lag]}    log10 sigma_max of d h_{T-1} / d h_{T-1-k}
                     "horizon": {"rnn.l0": k or null}            first lag with sigma_max < horizon_threshold
                     "eigenvalues": {"rnn.l0": {"i": [[re...], [im...]], "f": ...}},   W_hh per gate block
                     "messages": ["..."]}   (optional: a layer whose probe failed or was skipped is null)
    notes.jsonl     what the loop passed to ``note``: {"step": 12, "grad_norm": 0.8, "clipped": false}
                    (a record whose loss is null takes the loss noted at its step, as the Lightning callback writes it)

Every line is written whole and flushed at once, so a killed process (kill -9) leaves every record before the kill;
a reader skips a last line cut short. Non-finite numbers are written as null (JSON has no NaN); eigenvalues are
rounded to 6 significant digits. ``load_run`` / ``parse_run`` give a ``RunData``; ``read_run_archive`` reads an
uploaded .zip or .tar(.gz) of one run directory without extracting anything to disk, size-capped.
"""
from __future__ import annotations

import io
import json
import math
import os
import tarfile
import time
import zipfile
from dataclasses import dataclass, field

import numpy as np

from rnn_models.config import ConfigError

FORMAT, VERSION = "gdlab-run", 1
FILES = ("run.json", "records.jsonl", "probes.jsonl", "notes.jsonl")
MAX_RUN_BYTES = 64 * 2**20  # an uploaded archive, and everything it declares unpacked


def clean(x):
    """JSON-safe copy: non-finite floats -> None, numpy/torch scalars -> Python numbers."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if hasattr(x, "item") and getattr(x, "ndim", 0) == 0 and not isinstance(x, (int, float, str)):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


class RunWriter:
    """Appends one JSON line per call, flushed at once; ``run.json`` is written first, atomically."""

    def __init__(self, path: str, header: dict, *, overwrite: bool = False):
        os.makedirs(path, exist_ok=True)
        self.path = path
        if os.path.exists(os.path.join(path, "run.json")):
            if not overwrite:
                raise ConfigError(f"log_dir={path!r} already holds a run (run.json): choose a new directory or "
                                  "pass overwrite=True")
            for f in FILES:
                if os.path.exists(os.path.join(path, f)):
                    os.remove(os.path.join(path, f))
        head = {"format": FORMAT, "version": VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **header}
        tmp = os.path.join(path, "run.json.tmp")
        with open(tmp, "w") as f:
            json.dump(clean(head), f, indent=1)
        os.replace(tmp, os.path.join(path, "run.json"))
        self._files = {k: open(os.path.join(path, f"{k}.jsonl"), "a") for k in ("records", "probes", "notes")}

    def append(self, kind: str, obj: dict) -> None:
        f = self._files[kind]
        f.write(json.dumps(clean(obj), allow_nan=False, separators=(",", ":")) + "\n")
        f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()


class LayerDict(dict):
    """A dict keyed by layer name ("rnn.l0") that also takes the layer's index (0, 1, ..., -1)."""

    def __getitem__(self, key):
        if isinstance(key, int) and not isinstance(key, bool):
            names = list(self)
            if not -len(names) <= key < len(names):
                raise KeyError(f"layer index {key} out of range: the run has layers {names}")
            key = names[key]
        return super().__getitem__(key)


@dataclass
class RunData:
    """A watched run. Arrays are NaN where a value is missing or was not finite.

    steps           (N,) recorded training steps;  loss (N,)
    grad_norm       {layer: (N, T)} ||dL/dh_t||, geometric mean over the batch (T: the longest record; shorter
                    sequences are NaN-padded);  log10_grad_norm the same in log10 (exact, no underflow)
    probe_steps     (P,);  lags (K,) every lag any probe used;  log10_sigma_max {layer: (P, K)} (NaN at a lag that
                    probe did not use: a shorter sequence has fewer lags);  horizon {layer: (P,)} (NaN: none within
                    the sequence);  eigenvalues {layer: [ {gate: complex array} per probe ]}
    notes           [{"step": s, ...}] what the loop noted;  note_series(key) -> (steps, values)
    messages        what the watcher said about the run (assumptions, skipped parts)
    """

    name: str
    header: dict
    steps: np.ndarray
    loss: np.ndarray
    log10_grad_norm: LayerDict
    probe_steps: np.ndarray
    lags: np.ndarray
    log10_sigma_max: LayerDict
    horizon: LayerDict
    eigenvalues: LayerDict
    notes: list[dict]
    messages: list[str] = field(default_factory=list)

    @property
    def layers(self) -> list[str]:
        return list(self.header.get("layers", []))

    @property
    def grad_norm(self) -> LayerDict:
        with np.errstate(over="ignore", under="ignore"):
            return LayerDict({k: np.power(10.0, v) for k, v in self.log10_grad_norm.items()})

    def note_series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        rows = [n for n in self.notes if key in n]
        vals = [np.nan if n[key] is None else float(n[key]) for n in rows]
        return np.array([n["step"] for n in rows], dtype=float), np.array(vals, dtype=float)


def _lines(text: str, fname: str, where: str) -> list[dict]:
    """JSON objects, one a line; a last line cut short (a killed writer) is dropped, any other bad line refused."""
    out = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:  # no newline after it: the write was cut short
                break
            raise ConfigError(f"{where}: {fname} line {i + 1} is not a JSON record: not a watched run, or damaged")
        if not isinstance(obj, dict) or not isinstance(obj.get("step"), int):
            raise ConfigError(f"{where}: {fname} line {i + 1} has no integer 'step': not a watched run")
        out.append(obj)
    return out


def _arr(v) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in v], dtype=float)


def _padded(rows: list, T: int) -> np.ndarray:
    out = np.full((len(rows), T), np.nan)
    for i, r in enumerate(rows):
        if r:
            out[i, :len(r)] = _arr(r)
    return out


def _at_lags(rows: list, lags: np.ndarray) -> np.ndarray:
    """(P, K): row i holds probe i's values at its own lags' columns of ``lags`` (NaN elsewhere)."""
    out = np.full((len(rows), len(lags)), np.nan)
    col = {float(k): j for j, k in enumerate(lags)}
    for i, (own, vals) in enumerate(rows):
        if vals:
            if len(vals) != len(own):
                raise ValueError(f"{len(vals)} values for {len(own)} lags")
            out[i, [col[float(k)] for k in own]] = _arr(vals)
    return out


def parse_run(texts: dict[str, str], name: str, where: str | None = None) -> RunData:
    """A RunData from the files' texts ({"run.json": ..., "records.jsonl": ...}); ``where`` names it in errors."""
    where = where or name
    if "run.json" not in texts:
        raise ConfigError(f"{where}: no run.json: not a run directory written by analysis.watch")
    try:
        header = json.loads(texts["run.json"])
    except ValueError:
        raise ConfigError(f"{where}: run.json is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ConfigError(f"{where}: run.json is not a {FORMAT} header (format={header.get('format') if isinstance(header, dict) else None!r})")
    if header.get("version") != VERSION:
        raise ConfigError(f"{where}: run format version {header.get('version')!r}; this reader knows {VERSION}")
    layers = header.get("layers")
    if not isinstance(layers, list) or not layers or not all(isinstance(l, str) for l in layers):
        raise ConfigError(f"{where}: run.json has no list of layer names")
    recs = _lines(texts.get("records.jsonl", ""), "records.jsonl", where)
    probes = _lines(texts.get("probes.jsonl", ""), "probes.jsonl", where)
    notes = _lines(texts.get("notes.jsonl", ""), "notes.jsonl", where)
    try:
        T = max([int(r.get("T") or 0) for r in recs] + [0])
        lg = LayerDict({l: _padded([r.get("log10_grad_norm", {}).get(l) for r in recs], T) for l in layers})
        # probes of sequences of different lengths have different lags (a shorter last window): the columns are
        # the union of every probe's lags, each probe's values at its own lags, NaN at the others
        lags = np.array(sorted({float(k) for p in probes for k in p.get("lags", [])}), dtype=float)
        sig = LayerDict({l: _at_lags([(p.get("lags", []), p.get("log10_sigma_max", {}).get(l)) for p in probes],
                                     lags) for l in layers})
        hz = LayerDict({l: _arr([p.get("horizon", {}).get(l) for p in probes]) for l in layers})
        eig = LayerDict({l: [{g: np.array(v[0], dtype=float) + 1j * np.array(v[1], dtype=float)
                              for g, v in (p.get("eigenvalues", {}).get(l) or {}).items()} for p in probes]
                         for l in layers})
        loss = _arr([r.get("loss") for r in recs])
    except (TypeError, ValueError, IndexError, AttributeError) as e:
        raise ConfigError(f"{where}: a record has the wrong shape ({str(e)[:80]}): not a run this reader knows") from None
    noted = {n["step"]: n["loss"] for n in notes if isinstance(n.get("loss"), (int, float))}
    for i, r in enumerate(recs):  # a record without its loss (Lightning's hook order): the loss noted at its step
        if np.isnan(loss[i]) and r["step"] in noted:
            loss[i] = noted[r["step"]]
    messages = [m for r in recs + probes for m in (r.get("messages") or []) if isinstance(m, str)]
    return RunData(name=name, header=header, steps=np.array([r["step"] for r in recs], dtype=int), loss=loss,
                   log10_grad_norm=lg, probe_steps=np.array([p["step"] for p in probes], dtype=int), lags=lags,
                   log10_sigma_max=sig, horizon=hz, eigenvalues=eig, notes=notes, messages=messages)


def load_run(path: str) -> RunData:
    """Read a run directory (also while the run is still being written)."""
    if not os.path.isdir(path):
        raise ConfigError(f"load_run: {path!r} is not a directory")
    texts = {}
    for f in FILES:
        p = os.path.join(path, f)
        if os.path.exists(p):
            with open(p, encoding="utf-8", errors="replace") as fh:
                texts[f] = fh.read()
    return parse_run(texts, os.path.basename(os.path.normpath(path)), where=path)


def _member_file(name: str) -> str | None:
    """The run file a member stands for ('x/records.jsonl' -> 'records.jsonl'), or None for anything else."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or len(parts) > 2:
        return None
    return parts[-1] if parts[-1] in FILES else None


def read_run_archive(data: bytes, filename: str) -> RunData:
    """A run from an uploaded .zip / .tar / .tar.gz of one run directory: only the four run files are read (at
    most one folder deep), each checked against MAX_RUN_BYTES before it is decompressed; nothing touches disk."""
    where = f"upload {filename!r}"
    if len(data) > MAX_RUN_BYTES:
        raise ConfigError(f"{where}: {len(data) / 2**20:.1f} MB; a run archive may be at most {MAX_RUN_BYTES >> 20} MB")
    texts: dict[str, str] = {}
    total = 0
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for info in z.infolist():
                    f = _member_file(info.filename)
                    if f is None or info.is_dir():
                        continue
                    total += info.file_size
                    if total > MAX_RUN_BYTES:
                        raise ConfigError(f"{where}: declares more than {MAX_RUN_BYTES >> 20} MB unpacked")
                    texts[f] = z.read(info).decode("utf-8", errors="replace")
        else:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as t:
                for m in t.getmembers():
                    f = _member_file(m.name)
                    if f is None or not m.isfile():
                        continue
                    total += m.size
                    if total > MAX_RUN_BYTES:
                        raise ConfigError(f"{where}: declares more than {MAX_RUN_BYTES >> 20} MB unpacked")
                    texts[f] = t.extractfile(m).read().decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: not a readable .zip or .tar(.gz) of a run directory") from None
    stem = os.path.basename(filename)
    for ext in (".tar.gz", ".tgz", ".zip", ".tar"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    return parse_run(texts, stem or "run", where=where)
