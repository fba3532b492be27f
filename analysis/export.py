"""Static exports of the dashboard's figures: PNG/SVG/PDF (slide-ready, 1920x1080) + CSV/JSON data + zips.

    figure_bytes(fig, "png"|"svg"|"pdf")  the figure on a 16:9 1920x1080 slide (``figures.slide_layout`` on a
                                          copy), rendered by kaleido in a headless Chromium
    figure_csv(fig)                       the traces' numbers, one row per point: trace,x,y (+ z, long form)
    figure_json(fig)                      {"config": from layout.meta, "traces": [...]}, plain JSON (NaN -> null)
    view_zip(figs, config, formats)       every figure in every format + config.json, as zip bytes
    export_all(config, out_dir, formats)  the command line's ``export``: every view of one configuration

Rendering (kaleido 1.x): PNG, SVG and PDF all need a Chromium binary on the machine (``BROWSER_PATH``,
``/usr/bin/chromium``, ``chromium`` on PATH, or kaleido's own lookup). Without one they raise
``ExportUnavailable`` with a one-line install hint; nothing silently falls back. CSV and JSON never need it.
The first render starts kaleido's sync server once (one browser with two tabs, MathJax disabled: it would be
fetched from the internet) and every later render reuses it: about 0.3-1 s per image instead of 2-8 s for a
fresh browser. ``view_zip`` and ``export_all`` hand all their images to the server in one batch, which its two
tabs render concurrently. Renders are serialized by a lock, so Streamlit sessions may call ``figure_bytes``
from several threads; the server's thread is watched, so a browser that fails to start or crashes raises
ExportUnavailable instead of hanging the caller.

Formats missing a browser, by function:
    figure_bytes  raises ExportUnavailable.
    view_zip      leaves PNG/SVG/PDF out and writes README.txt (what is missing, how to install it) into the
                  zip beside the CSV/JSON files and config.json, as long as at least one requested format can
                  be produced without a browser; if only browser formats were requested (e.g. ("png",)),
                  it raises ExportUnavailable instead of returning a zip without figures.
    export_all    strict: if any of png/svg/pdf was requested, raises ExportUnavailable before writing
                  anything (ask for ``formats=("csv", "json")`` to export data alone).

Trace names in CSV and JSON lose plotly's HTML tags ("σ<sub>max</sub>" -> "σmax") and are made unique (a
repeated or missing name becomes "name (i)" / "trace i", i the trace's index), so the CSV's ``trace`` column
matches the JSON's ``name`` field one to one.
"""
from __future__ import annotations

import base64
import csv
import datetime as _dt
import importlib
import io
import json
import math
import os
import re
import shutil
import struct
import tempfile
import threading
import time
import zipfile

import numpy as np
import plotly.graph_objects as go

FORMATS = ("png", "svg", "pdf", "csv", "json")
BROWSER_FORMATS = ("png", "svg", "pdf")
SLIDE_WIDTH, SLIDE_HEIGHT = 1920, 1080
RENDER_TIMEOUT_S = 180.0
RENDER_TABS = 2  # browser tabs of the kaleido server: a batch (export_all, view_zip) renders two at a time

INSTALL_HINT = ("PNG/SVG/PDF export needs Chromium: install it with apt-get install -y chromium (Debian/Ubuntu) "
                "or set BROWSER_PATH to a Chrome/Chromium binary; CSV/JSON export works without it")

# names tried on PATH, in order, after BROWSER_PATH and /usr/bin/chromium
_BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_DEFAULT_BROWSER = "/usr/bin/chromium"


class ExportUnavailable(RuntimeError):
    """A static format cannot be produced here; the message says what is missing and how to install it."""


# ---- browser lookup ----------------------------------------------------------------------------------------
def _is_exe(path: str | None) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def _find_browser() -> str | None:
    """The Chromium binary kaleido will use, or None. Cheap: looks at files, starts nothing.

    ``BROWSER_PATH`` when set (and only it: a wrong BROWSER_PATH is reported, not silently bypassed), then
    /usr/bin/chromium, then the usual names on PATH, then kaleido's (choreographer's) own lookup, which also
    finds a browser downloaded with ``kaleido_get_chrome``.
    """
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env if _is_exe(env) else None
    if _is_exe(_DEFAULT_BROWSER):
        return _DEFAULT_BROWSER
    for name in _BROWSER_NAMES:
        p = shutil.which(name)
        if _is_exe(p):
            return p
    try:
        from choreographer.browsers.chromium import Chromium
        p = Chromium.find_browser(skip_local=False)
    except Exception:  # noqa: BLE001 - kaleido's lookup is best effort; None means "not found"
        return None
    return p if _is_exe(p) else None


def _missing_hint() -> str:
    env = os.environ.get("BROWSER_PATH")
    if env and not _is_exe(env):
        return f"BROWSER_PATH={env!r} is not an executable file; " + INSTALL_HINT
    return INSTALL_HINT


def export_available() -> tuple[bool, str]:
    """(True, "") when PNG/SVG/PDF can be rendered here, else (False, the one-line install hint)."""
    if _find_browser():
        return True, ""
    return False, _missing_hint()


# ---- rendering ---------------------------------------------------------------------------------------------
_LOCK = threading.Lock()


def _server():
    import kaleido
    return getattr(kaleido, "_global_server", None)


def _server_thread_dead() -> bool:
    t = getattr(_server(), "_thread", None)
    return t is not None and not t.is_alive()


def _ensure_server(browser: str) -> None:
    """Start kaleido's sync server once (MathJax off, our browser); restart it if its thread died."""
    import kaleido
    srv = _server()
    if srv is not None and srv.is_running():
        if not _server_thread_dead():
            return
        kaleido.stop_sync_server(silence_warnings=True)
    kaleido.start_sync_server(mathjax=False, path=browser, n=RENDER_TABS, silence_warnings=True)


def _watched(call, timeout: float):
    """``call()`` on kaleido's sync server, which blocks forever once the server's thread died (a browser
    that did not start or crashed): it runs in a helper thread while this one watches the server."""
    import kaleido
    box: dict = {}
    done = threading.Event()

    def work():
        try:
            box["out"] = call()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["err"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="analysis-export-render", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not done.wait(0.05):
        if _server_thread_dead():
            kaleido.stop_sync_server(silence_warnings=True)  # the next call starts a fresh one
            raise ExportUnavailable("Chromium did not start or crashed while rendering (see the log above); "
                                    "check that it runs headless, or reinstall it: apt-get install -y chromium")
        if time.monotonic() > deadline:
            raise ExportUnavailable(f"Chromium did not answer within {timeout:.0f} s; PNG/SVG/PDF export is "
                                    "unavailable until the process restarts")
    if "err" in box:
        e = box["err"]
        raise RuntimeError(f"kaleido could not render the figure: {type(e).__name__}: "
                           f"{' '.join(str(e).split())}") from e
    return box["out"]


def _opts(fmt: str) -> dict:
    return {"format": fmt, "width": SLIDE_WIDTH, "height": SLIDE_HEIGHT, "scale": 1}


def _render(jobs: list[tuple[dict, str]]) -> list[bytes]:
    """Render (figure dict, format) jobs; one job by ``calc_fig``, several in one ``write_fig_from_object``
    call (the server's tabs render them concurrently) into a temporary folder."""
    import kaleido
    browser = _find_browser()
    if browser is None:
        raise ExportUnavailable(_missing_hint())
    with _LOCK:
        _ensure_server(browser)
        if len(jobs) == 1:
            spec, fmt = jobs[0]
            return [bytes(_watched(lambda: kaleido.calc_fig_sync(spec, opts=_opts(fmt)), RENDER_TIMEOUT_S))]
        with tempfile.TemporaryDirectory(prefix="analysis-export-") as d:
            objs = [{"fig": spec, "path": os.path.join(d, f"{i}.{fmt}"), "opts": _opts(fmt)}
                    for i, (spec, fmt) in enumerate(jobs)]
            _watched(lambda: kaleido.write_fig_from_object_sync(objs, cancel_on_error=True),
                     RENDER_TIMEOUT_S + 20.0 * len(jobs))
            out = []
            for o in objs:
                with open(o["path"], "rb") as fh:
                    out.append(fh.read())
            return out


def _local_slide_layout(fig: go.Figure) -> go.Figure:
    """A 16:9 1920x1080 slide with projector-sized fonts (used until analysis.figures provides one)."""
    fig.update_layout(
        width=SLIDE_WIDTH, height=SLIDE_HEIGHT, template="plotly_white",
        font=dict(size=26, family="Arial, Helvetica, sans-serif"), title_font_size=36,
        legend_font_size=24, margin=dict(l=130, r=60, t=120, b=110),
    )
    return fig


def _figures_module():
    """analysis.figures, or None while it does not exist (an error inside it is raised, not hidden)."""
    name = f"{__package__}.figures"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            return None
        raise


def slide_figure(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` on a 1920x1080 slide (``figures.slide_layout`` if present); ``fig`` is untouched."""
    copy = go.Figure(fig)
    figures = _figures_module()
    if figures is not None and hasattr(figures, "slide_layout"):
        out = figures.slide_layout(copy)
        return out if out is not None else copy
    return _local_slide_layout(copy)


def figure_bytes(fig: go.Figure, fmt: str) -> bytes:
    """``fig`` as PNG (exactly 1920x1080 pixels), SVG or PDF, on a slide layout applied to a copy.

    Raises ValueError for another ``fmt`` and ExportUnavailable when no Chromium is installed.
    """
    if fmt not in BROWSER_FORMATS:
        raise ValueError(f"fmt={fmt!r} is not an image format: choose {', '.join(BROWSER_FORMATS)} "
                         "(figure_csv / figure_json give the data)")
    if _find_browser() is None:
        raise ExportUnavailable(_missing_hint())
    return _render([(slide_figure(fig).to_dict(), fmt)])[0]  # the dict built here, not in the server's thread


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


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


# ---- zips and files ----------------------------------------------------------------------------------------
def _check_formats(formats) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = tuple(f for f in formats.split(",") if f)
    formats = tuple(dict.fromkeys(str(f).strip().lower() for f in formats))
    if not formats:
        raise ValueError(f"formats is empty: choose any of {', '.join(FORMATS)}")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"format {bad[0]!r} is not supported: choose any of {', '.join(FORMATS)}")
    return formats


def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "figure"
    return s


def _named(figs: dict) -> dict[str, go.Figure]:
    """Figures keyed by file-safe unique names."""
    out = {}
    for name, fig in figs.items():
        base = s = _safe_name(name)
        k = 2
        while s in out:
            s, k = f"{base}_{k}", k + 1
        out[s] = fig
    return out


def _config_dict(config) -> dict:
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return _plain(config)


def _readme(skipped: tuple[str, ...], reason: str) -> str:
    return ("This archive has no " + "/".join(f.upper() for f in skipped) + " files: the machine that made it "
            "could not render images.\n" + reason + "\n\nThe CSV and JSON files hold every number of every "
            "figure, and config.json the experiment's settings (python -m analysis export --config "
            "config.json --out DIR redraws them where Chromium is installed). In the dashboard, the camera "
            "button of each chart's toolbar also downloads a PNG rendered by your own browser.\n")


def _render_files(named: dict[str, dict[str, go.Figure]], formats: tuple[str, ...]) -> dict[str, bytes]:
    """{"<folder>/<name>.<fmt>": bytes} for every figure of every folder ("" = top level); the images of all
    figures rendered in one batch, each figure laid out on its slide once for all its image formats."""
    files, jobs = {}, []
    images = [f for f in formats if f in BROWSER_FORMATS]
    for folder, figs in named.items():
        for name, fig in figs.items():
            stem = f"{folder}/{name}" if folder else name
            spec = slide_figure(fig).to_dict() if images else None
            for fmt in formats:
                files[f"{stem}.{fmt}"] = b""  # keeps the order: figure by figure, formats as asked
                if fmt == "csv":
                    files[f"{stem}.csv"] = figure_csv(fig).encode("utf-8")
                elif fmt == "json":
                    files[f"{stem}.json"] = figure_json(fig).encode("utf-8")
                else:
                    jobs.append((f"{stem}.{fmt}", spec, fmt))
    if jobs:
        for (key, _, _), data in zip(jobs, _render([(spec, fmt) for _, spec, fmt in jobs])):
            files[key] = data
    return files


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for arcname, data in files.items():
            z.writestr(arcname, data)
    return buf.getvalue()


def view_zip(figs: dict[str, go.Figure], config: dict | None, formats=FORMATS) -> bytes:
    """A zip with every figure in every format (``name.png``, ``name.svg``, ...) and ``config.json``.

    ``config`` None: the first figure's ``layout.meta``. Without Chromium, PNG/SVG/PDF are left out and
    README.txt says why and how to install it, unless no requested format could be produced at all (only
    image formats were asked for): then ExportUnavailable.
    """
    formats = _check_formats(formats)
    named = _named(figs)
    if config is None:
        config = next((figure_config(f) for f in named.values() if figure_config(f) is not None), None)
    images = tuple(f for f in formats if f in BROWSER_FORMATS)
    data_only = tuple(f for f in formats if f not in BROWSER_FORMATS)
    readme = None
    if images:
        ok, hint = export_available()
        if not ok:
            if not data_only:
                raise ExportUnavailable(hint)
            readme, formats = _readme(images, hint), data_only
    try:
        files = _render_files({"": named}, formats)
    except ExportUnavailable as e:  # the browser was found but failed: keep the data
        if not data_only:
            raise
        readme = _readme(images, str(e))
        files = _render_files({"": named}, data_only)
    files["config.json"] = json.dumps(_config_dict(config), indent=2, allow_nan=False).encode("utf-8")
    if readme:
        files["README.txt"] = readme.encode("utf-8")
    return _zip(files)


def _check_out_dir(out_dir) -> str:
    """out_dir as a str, or ValueError (one line) if it cannot become a writable directory."""
    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise ValueError(f"out_dir={out_dir!r} must be a directory path")
    path = os.fspath(out_dir)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(f"out_dir {path!r} exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"out_dir {path!r} is not writable")
        return path
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"out_dir {path!r} cannot be created: {parent!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"out_dir {path!r} cannot be created: {parent!r} is not writable")
    return path


def _is_training_view(view: str) -> bool:
    return "train" in str(view).lower()


def export_all(config, out_dir: str, formats=FORMATS) -> list[str]:
    """Every view's figures of ``config`` into ``out_dir/<view>/<name>.<fmt>``, plus ``out_dir/config.json``
    and ``out_dir/figures.zip`` (the same files, ``<view>/<name>.<fmt>`` and config.json). Returns the paths
    written.

    Runs ``run_comparison(config)``; the training view only if ``config.train_steps > 0`` (each cell trained
    for ``train_steps`` steps by ``analysis.training.Trainer``; its ``history()`` per cell is passed as
    ``histories``). Everything is computed and rendered in memory first: a bad ``out_dir`` or ``formats``
    (ValueError), a bad config (ConfigError) or a missing Chromium for png/svg/pdf (ExportUnavailable) raise
    before anything is written.
    """
    formats = _check_formats(formats)
    out_dir = _check_out_dir(out_dir)
    if any(f in BROWSER_FORMATS for f in formats):
        ok, hint = export_available()
        if not ok:
            raise ExportUnavailable(hint)
    figures = _figures_module()
    if figures is None:
        raise RuntimeError("analysis.figures is missing: export_all needs it to draw the views")
    from .experiment import run_comparison

    trainers = None
    if config.train_steps > 0:
        from .training import Trainer
        trainers = {cell: Trainer(config.for_cell(cell)) for cell in config.cells}  # bad settings fail here
    results = run_comparison(config)
    histories = None
    if trainers is not None:
        histories = {}
        for cell, tr in trainers.items():
            tr.run(config.train_steps)
            histories[cell] = tr.history()

    views = {}
    for view in figures.VIEWS:
        if _is_training_view(view) and histories is None:
            continue
        figs = figures.view_figures(view, results, histories=histories)
        if figs:
            views[_safe_name(view)] = _named(figs)
    files = _render_files(views, formats)
    files["config.json"] = (config.to_json() + "\n").encode("utf-8")

    zipped = _zip(files)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for rel, data in list(files.items()) + [("figures.zip", zipped)]:
        path = os.path.join(out_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        written.append(path)
    return written


__all__ = ["ExportUnavailable", "export_available", "figure_bytes", "figure_csv", "figure_json", "view_zip",
           "export_all", "slide_figure", "figure_config", "png_size", "FORMATS", "BROWSER_FORMATS",
           "INSTALL_HINT"]
