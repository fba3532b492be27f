"""Bundles of exported figures: a zip of one view, and every view of one configuration into a folder.

    view_zip(figs, config, formats)                every figure in every format + config.json, as zip bytes
    view_figures_of(config, progress)              {view: {name: figure}}: the command line's analysis + figures
    export_all(config, out_dir, formats, progress) every view of one configuration into out_dir (+ figures.zip)

Formats missing a browser, by function:
    view_zip      leaves PNG/SVG/PDF out and writes README.txt (what is missing, how to install it) into the
                  zip beside the CSV/JSON files and config.json, as long as at least one requested format can
                  be produced without a browser; if only browser formats were requested (e.g. ("png",)),
                  it raises ExportUnavailable instead of returning a zip without figures.
    export_all    strict: if any of png/svg/pdf was requested, raises ExportUnavailable before writing
                  anything (ask for ``formats=("csv", "json")`` to export data alone).

``progress`` is a callable ``progress(fraction in [0, 1], message)`` (``analysis.progress.Progress``), called
as cells are analysed and images rendered ("rendered 7/24 images (jacobians/singular_values.png)").
"""
from __future__ import annotations

import io
import json
import os
import re
import zipfile

import plotly.graph_objects as go

from .images import BROWSER_FORMATS, ExportUnavailable, export_available, render, slide_figure
from .tables import _plain, figure_config, figure_csv, figure_json

FORMATS = ("png", "svg", "pdf", "csv", "json")


def scaled(progress, lo: float, hi: float):
    """``progress`` mapped onto [lo, hi] of an outer task (None stays None)."""
    if progress is None:
        return None
    return lambda f, msg: progress(lo + (hi - lo) * min(max(float(f), 0.0), 1.0), msg)


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


def _render_files(named: dict[str, dict[str, go.Figure]], formats: tuple[str, ...],
                  progress=None) -> dict[str, bytes]:
    """{"<folder>/<name>.<fmt>": bytes} for every figure of every folder ("" = top level); the images of all
    figures rendered in batches, each figure laid out on its slide once for all its image formats.
    ``progress(fraction, message)`` after each batch: images done / total."""
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
        def done(n, total):
            if progress is not None:
                progress(n / total, f"rendered {n}/{total} images ({jobs[n - 1][0]})")
        for (key, _, _), data in zip(jobs, render([(spec, fmt) for _, spec, fmt in jobs], on_done=done)):
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


def exported_config(config, records: dict, given: bool = False) -> dict:
    """config.json of an export: {"config": what ran, "provenance": {run: analysis.provenance record}}; ``--config``
    reads it back. A user's model (files) records the resolved config (its T, B, loss steps, architecture and
    Jacobian detail, as the files decided); a task's config is the one given (the same numbers when re-run)."""
    own = bool(config.state_dict_path and config.task == "random") or given  # given: results analysed already
    first = next(iter(records.values()), None)
    out = first["config"] if own and first is not None else config.to_dict()
    return {"config": _plain(out), "provenance": _plain({k: v["provenance"] for k, v in records.items()})}


def _is_training_view(view: str) -> bool:
    return "train" in str(view).lower()


def view_figures_of(config, progress=None, *, variant: dict | None = None, records: dict | None = None, views=None,
                    results: dict | None = None) -> dict[str, dict[str, go.Figure]]:
    """Every view's figures of ``config``: {file-safe view name: {file-safe figure name: figure}}.

    Runs ``run_experiment`` for each cell of ``config.cells`` (and, with ``variant``, for each cell the variant
    changes, keyed "cell · its label" and drawn beside it as the dashboard does: ``analysis.variant.variant_runs``);
    the training view only if
    ``config.train_steps > 0`` (each cell trained for ``train_steps`` steps by ``analysis.training.Trainer``;
    its ``history()`` per cell is passed as ``histories``). A bad config raises ConfigError before any work.
    ``records`` (a dict, filled when given): {run key: {"config": what ran, "provenance": analysis.provenance}}.
    ``views`` (analysis.compute_views): None = the default views; given, only those are computed and drawn (e.g.
    "all": the opt-in sensitivity view too).
    ``results``: {key: ExperimentResult} analysed already (your own step, ``--step``): drawn as they are, nothing
    run or trained.
    """
    from .. import figures
    from ..experiment import run_experiment

    trainers = None
    if results is not None:
        config = config.replace(train_steps=0)  # nothing to run: the given results are drawn
    if config.train_steps > 0:
        from ..training import Trainer
        trainers = {cell: Trainer(config.for_cell(cell)) for cell in config.cells}  # bad settings fail here
    runs = [(cell, config.for_cell(cell)) for cell in config.cells] if results is None else []
    if variant:
        from ..variant import variant_runs
        runs += variant_runs(config, variant)  # a bad variant fails here
    steps = max(1, len(runs) + (len(trainers) if trainers else 0))
    done = 0

    def tick(msg):
        if progress is not None:
            progress(done / steps, msg)

    results = dict(results or {})
    if records is not None:
        records.update({k: {"config": r.config.to_dict(), "provenance": r.provenance} for k, r in results.items()})
    for key, cfg in runs:
        tick(f"analysing {key} ({done + 1}/{steps})")
        results[key] = run_experiment(cfg, views=views)  # views: None = the default ones (compute_views)
        if records is not None:
            records[key] = {"config": results[key].config.to_dict(), "provenance": results[key].provenance}
        done += 1
    histories = None
    if trainers is not None:
        histories = {}
        for cell, tr in trainers.items():
            tick(f"training {cell} for {config.train_steps} steps ({done + 1}/{steps})")
            tr.run(config.train_steps)
            histories[cell] = tr.history()
            done += 1
    tick("drawing the figures")
    computed = None  # views given: draw only those (the engine's "gradients" is the figures' "gradient-flow")
    if views is not None:
        from ..compute_views import parse_views
        computed = {"gradient-flow" if v == "gradients" else v for v in parse_views(views)}
    views = {}
    for view in figures.ALL_VIEWS:  # an opt-in view that was not computed draws nothing
        if _is_training_view(view) and histories is None:
            continue
        if computed is not None and view not in computed and not _is_training_view(view):
            continue
        figs = figures.view_figures(view, results, histories=histories)
        if figs:
            views[_safe_name(view)] = _named(figs)
    return views


def export_all(config, out_dir: str, formats=FORMATS, progress=None, views=None,
               results: dict | None = None) -> list[str]:
    """Every view's figures of ``config`` (``view_figures_of``) into ``out_dir/<view>/<name>.<fmt>``, plus
    ``out_dir/config.json`` and ``out_dir/figures.zip`` (the same files, ``<view>/<name>.<fmt>`` and
    config.json). Returns the paths written.

    Everything is computed and rendered in memory first: a bad ``out_dir`` or ``formats`` (ValueError), a bad
    config (ConfigError) or a missing Chromium for png/svg/pdf (ExportUnavailable) raise before anything is
    written. ``progress``: analysis up to 30 %, then images rendered / total. ``results``: analysed already
    (``view_figures_of``), and config.json records what they ran.
    """
    formats = _check_formats(formats)
    out_dir = _check_out_dir(out_dir)
    if any(f in BROWSER_FORMATS for f in formats):
        ok, hint = export_available()
        if not ok:
            raise ExportUnavailable(hint)
    records: dict = {}
    drawn = view_figures_of(config, scaled(progress, 0.0, 0.3), records=records, views=views, results=results)
    files = _render_files(drawn, formats, scaled(progress, 0.3, 1.0))
    files["config.json"] = (json.dumps(exported_config(config, records, given=results is not None), indent=2,
                                       allow_nan=False)
                            + "\n").encode("utf-8")

    zipped = _zip(files)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for rel, data in list(files.items()) + [("figures.zip", zipped)]:
        path = os.path.join(out_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        written.append(path)
    if progress is not None:
        progress(1.0, f"wrote {len(written)} files into {out_dir}")
    return written
