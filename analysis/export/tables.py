"""A figure's numbers as CSV and JSON (no browser needed).

    figure_csv(fig)     the traces' numbers, one row per point: trace,x,y (+ z, long form); table figures as rows
    figure_json(fig)    {"config", "meta", "title", "axes", "traces": [...]}, plain JSON (NaN -> null)
    figure_config(fig)  the experiment config a figure carries in layout.meta

Trace names lose plotly's HTML tags ("σ<sub>max</sub>" -> "σmax") and are made unique (a repeated or missing
name becomes "name (i)" / "trace i", i the trace's index), so the CSV's ``trace`` column matches the JSON's
``name`` field one to one.
"""
from __future__ import annotations

import base64
import csv
import datetime as _dt
import io
import json
import math
import re

import numpy as np
import plotly.graph_objects as go

# ---- trace data --------------------------------------------------------------------------------------------
_DTYPES = {"i1": "i1", "u1": "u1", "i2": "<i2", "u2": "<u2", "i4": "<i4", "u4": "<u4", "f4": "<f4", "f8": "<f8",
           "int8": "i1", "uint8": "u1", "int16": "<i2", "uint16": "<u2", "int32": "<i4", "uint32": "<u4",
           "float32": "<f4", "float64": "<f8"}


def _array(v):
    """A trace's data array as a numpy array or a (possibly nested) list; typed-array dicts decoded."""
    if v is None:
        return None
    if isinstance(v, dict) and "bdata" in v:
        raw = v["bdata"]
        buf = base64.b64decode(raw) if isinstance(raw, str) else bytes(raw)
        a = np.frombuffer(buf, dtype=np.dtype(_DTYPES.get(str(v.get("dtype", "f8")), "<f8")))
        shape = v.get("shape")
        if shape is not None:
            dims = [int(s) for s in (shape.split(",") if isinstance(shape, str) else shape) if str(s).strip()]
            a = a.reshape(dims)
        return a
    if isinstance(v, np.ndarray):
        return v
    if isinstance(v, (list, tuple)):
        return list(v)
    if hasattr(v, "tolist"):  # pandas / array-likes
        return v.tolist()
    return None  # a scalar or string is not point data


def _plain(v):
    """A JSON-ready Python value: NaN/inf -> None, numpy scalars -> Python, dates -> ISO strings."""
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, dict):
        if "bdata" in v:
            return _plain(_array(v))
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, (_dt.date, _dt.datetime)):
        return v.isoformat()
    return str(v)


def _cell(v) -> str:
    """A CSV field: floats at repr precision (round-trip exact), nan/inf spelled so float() reads them."""
    if v is None:
        return ""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (_dt.date, _dt.datetime)):
        return v.isoformat()
    return str(v)


def _seq(a) -> list | None:
    """A 1-D array as a list of Python scalars (nested data flattened row-major)."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return a.ravel().tolist()
    return list(a)


def _is_2d(a) -> bool:
    if isinstance(a, np.ndarray):
        return a.ndim == 2
    return isinstance(a, list) and bool(a) and all(isinstance(r, (list, tuple, np.ndarray)) for r in a)


def _implicit(trace, axis: str, n: int) -> list:
    """Coordinates plotly uses when x (or y) is absent: x0 + dx * i (0, 1, 2, ... by default)."""
    def num(name, default):
        try:
            v = getattr(trace, name, None)
        except Exception:  # noqa: BLE001 - traces without the attribute
            v = None
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else default
    start, step = num(f"{axis}0", 0), num(f"d{axis}", 1)
    return [start + step * i for i in range(n)]


_TAGS = re.compile(r"</?(?:br|sub|sup|b|i|em|span|a|s|u)\b[^>]*>", re.IGNORECASE)


def plain_name(name: str) -> str:
    """A trace name without plotly's HTML tags ("σ<sub>max</sub>" -> "σmax"), whitespace collapsed."""
    return " ".join(_TAGS.sub(lambda m: " " if m.group(0).lower().startswith("<br") else "", name).split())


def _traces(fig: go.Figure) -> list[dict]:
    """Each trace as {"name", "type", "x", "y", "z"?}: x/y lists, z a list (1-D) or a list of rows (2-D)."""
    out, seen = [], set()
    for i, tr in enumerate(fig.data):
        raw = getattr(tr, "name", None)
        name = (plain_name(raw) if isinstance(raw, str) else "") or f"trace {i}"
        if name in seen:
            name = f"{name} ({i})"
        seen.add(name)
        x = _array(getattr(tr, "x", None)) if "x" in tr else None
        y = _array(getattr(tr, "y", None)) if "y" in tr else None
        z = _array(getattr(tr, "z", None)) if "z" in tr else None
        d = {"name": name, "type": tr.type}
        if z is not None and _is_2d(z):
            rows = [(_seq(r) if not isinstance(r, np.ndarray) else r.tolist()) for r in z]
            ncol = max((len(r) for r in rows), default=0)
            d["x"] = _seq(x) if x is not None else _implicit(tr, "x", ncol)
            d["y"] = _seq(y) if y is not None else _implicit(tr, "y", len(rows))
            d["z"] = rows
        else:
            n = max((len(_seq(a)) for a in (x, y, z) if a is not None), default=0)
            if x is None and y is not None and tr.type in ("scatter", "scattergl", "bar", "box", "violin") \
                    and getattr(tr, "orientation", None) != "h":
                x = _implicit(tr, "x", n)
            elif y is None and x is not None and getattr(tr, "orientation", None) == "h":
                y = _implicit(tr, "y", n)
            d["x"], d["y"] = _seq(x), _seq(y)
            if z is not None:
                d["z"] = _seq(z)
        out.append(d)
    return out


def _at(seq, i):
    return seq[i] if seq is not None and i < len(seq) else None


def figure_csv(fig: go.Figure) -> str:
    """The figure's data, one row per point: ``trace,x,y`` (``trace,x,y,z`` when a trace has z; a 2-D z, as in
    a heatmap, in long form: one row per cell with its x and y). Floats at repr precision: ``float()`` of a
    field gives back exactly the trace's number (nan/inf spelled nan, inf, -inf; a missing value is empty)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if fig.data and all(tr.type == "table" for tr in fig.data):  # a table figure: its header and rows as they are
        for tr in fig.data:
            w.writerow([plain_name(str(h)) for h in (tr.header.values or [])])
            for row in zip(*[list(c) for c in (tr.cells.values or [])]):
                w.writerow([_cell(v) if isinstance(v, (int, float)) else v for v in row])
        return buf.getvalue()
    traces = _traces(fig)
    has_z = any("z" in t for t in traces)
    w.writerow(["trace", "x", "y", "z"] if has_z else ["trace", "x", "y"])
    for t in traces:
        name = t["name"]
        z = t.get("z")
        if z is not None and z and isinstance(z[0], list):  # 2-D: long form
            for r, row in enumerate(z):
                yv = _at(t["y"], r)
                for c, zv in enumerate(row):
                    w.writerow([name, _cell(_at(t["x"], c)), _cell(yv), _cell(zv)])
            continue
        n = max((len(a) for a in (t["x"], t["y"], z) if a is not None), default=0)
        for i in range(n):
            row = [name, _cell(_at(t["x"], i)), _cell(_at(t["y"], i))]
            if has_z:
                row.append(_cell(_at(z, i)))
            w.writerow(row)
    return buf.getvalue()


def figure_config(fig: go.Figure):
    """The experiment config a figure carries in ``layout.meta`` (None if it carries none)."""
    meta = fig.layout.meta
    if isinstance(meta, dict) and "config" in meta and "cell" not in meta:  # figures' {"config", "configs", ...}
        meta = meta["config"]
    return _plain(meta) if meta is not None else None


def _title(obj) -> str | None:
    try:
        t = obj.title.text
    except Exception:  # noqa: BLE001
        return None
    return t if isinstance(t, str) else None


def figure_json(fig: go.Figure) -> str:
    """``{"config", "meta", "title", "axes", "traces": [{"name", "type", "x", "y", "z"?, "meta"?}]}`` as plain
    JSON (NaN and infinities -> null; typed arrays decoded). ``config`` is the experiment config of
    ``layout.meta`` (its "config" entry when meta wraps it, as analysis.figures does: {"config", "configs",
    "view", "figure"}); ``meta`` is the whole of ``layout.meta``."""
    axes = {}
    for key in ("xaxis", "yaxis"):
        ax = fig.layout[key]
        axes[key] = {"title": _title(ax), "type": ax.type}
    traces = []
    for tr, t in zip(fig.data, _traces(fig)):
        t = _plain(t)
        if isinstance(tr.meta, dict):
            t["meta"] = _plain(tr.meta)
        traces.append(t)
    meta = fig.layout.meta
    doc = {"config": figure_config(fig), "meta": _plain(meta) if meta is not None else None,
           "title": _title(fig.layout), "axes": axes, "traces": traces}
    return json.dumps(doc, allow_nan=False)
