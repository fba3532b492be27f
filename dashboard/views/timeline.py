"""Timeline: watched training runs (``analysis.watch``) over training, side by side.

Runs come from uploads (a .zip / .tar.gz of one run directory each; read in memory, size-capped, only the four
run files) or, when the server was started with ``gdlab dashboard --runs DIR``, from DIR's run directories
(chosen by name from a list: nothing a visitor types names a file). Reading a run is parsing a few JSON lines,
cached per file; nothing is computed here. This session's Live training runs join them (``analysis.training_run``:
the trainer records the total dL/dh_t per time step of the analysed layer at every step, and a probe every few
steps), so a built-in run and a watched one compare on the same axes.
"""
from __future__ import annotations

import hashlib
import os

import streamlit as st

from analysis.figures.timeline import ZMAX, ZMIN, timeline_figures
from analysis.run_files import MAX_RUN_BYTES, load_run, read_run_archive

from ..exporting import MIME, chart, export_status

TITLE = "Timeline"
VIEW = "timeline"
GUIDE = ("A watched training run (analysis.watch) over training: log10 ‖dL/dh_t‖ of the training loss at every "
         "recorded step and time step (the total derivative through the recurrence, geometric mean over the batch) "
         f"on a fixed colour scale [{ZMIN:g}, {ZMAX:g}] shared by every run, so runs compare by colour; the loss "
         "with clipping events, the memory horizon and σ_max over training; the W_hh eigenvalues animated. "
         "Upload runs (zip or tar.gz of a run directory) to put them side by side; this session's Live training runs "
         "are listed too.")
RUNS_ENV = "GDLAB_RUNS"
MAX_RUNS = 6


@st.cache_data(max_entries=32, show_spinner=False)
def _parse_upload(digest: str, name: str, _data: bytes):
    return read_run_archive(_data, name)


@st.cache_data(max_entries=32, show_spinner=False, ttl=5)
def _parse_local(path: str, _mtime: float):
    return load_run(path)


def local_runs() -> dict[str, str]:
    """{name: path} of the run directories under the --runs folder (those holding a run.json)."""
    root = os.environ.get(RUNS_ENV)
    if not root or not os.path.isdir(root):
        return {}
    out = {}
    for name in sorted(os.listdir(root)):
        p = os.path.join(root, name)
        if os.path.isfile(os.path.join(p, "run.json")):
            out[name] = p
    return out


def _gather() -> tuple[dict, list[str]]:
    runs, errors = {}, []
    files = st.file_uploader("Watched runs: a .zip or .tar.gz of each run directory (written by analysis.watch)",
                             type=["zip", "tar", "gz", "tgz"], accept_multiple_files=True, key="timeline_upload",
                             help=f"at most {MAX_RUN_BYTES >> 20} MB each; only run.json and the three .jsonl "
                                  "files are read")
    for f in files or []:
        data = f.getvalue()
        try:
            run = _parse_upload(hashlib.sha256(data).hexdigest(), f.name, data)
        except ValueError as e:  # ConfigError: one line naming the file
            errors.append(" ".join(str(e).split())[:300])
            continue
        runs[_unique(runs, run.name)] = run
    local = local_runs()
    if local:
        pick = st.multiselect(f"Runs in {os.environ.get(RUNS_ENV)}", list(local), default=list(local)[:2],
                              key="timeline_local")
        for name in pick:
            p = local[name]
            try:
                run = _parse_local(p, os.path.getmtime(os.path.join(p, "records.jsonl"))
                                   if os.path.exists(os.path.join(p, "records.jsonl")) else 0.0)
            except ValueError as e:
                errors.append(" ".join(str(e).split())[:300])
                continue
            runs[_unique(runs, name)] = run
    trainers = {k: tr for k, tr in (st.session_state.get("trainers") or {}).items() if tr.records}
    if trainers and st.checkbox(f"This session's Live training ({', '.join(trainers)})", value=True,
                                key="timeline_live"):
        from analysis.training_run import trainer_run
        for k, tr in trainers.items():
            runs[_unique(runs, f"live: {k}")] = trainer_run(tr, f"live: {k}")
    return runs, errors


def _unique(runs: dict, name: str) -> str:
    key, i = name, 2
    while key in runs:
        key, i = f"{name} ({i})", i + 1
    return key


def render(ctx=None) -> None:
    st.caption(GUIDE)
    runs, errors = _gather()
    for e in errors:
        st.error(e)
    if len(runs) > MAX_RUNS:
        st.warning(f"{len(runs)} runs: the first {MAX_RUNS} are drawn side by side.")
        runs = dict(list(runs.items())[:MAX_RUNS])
    if not runs:
        st.info("No watched run yet. Record one with `w = analysis.watch(model, log_dir='runs/lm', every=100)` in a "
                "training loop (see examples/word_lm/), then upload a zip of the run directory here, or start the "
                "dashboard with `gdlab dashboard --runs runs/`. Runs trained in the Live training tab appear here "
                "once they have a step.")
        return
    layers = list(dict.fromkeys(l for r in runs.values() for l in r.layers))
    common = [l for l in layers if all(l in r.layers for r in runs.values())]
    opts = common or [f"layer {i}" for i in range(-1, -min(len(r.layers) for r in runs.values()) - 1, -1)]
    choice = st.selectbox("Layer", opts, index=len(opts) - 1 if common else 0, key="timeline_layer")
    layer = choice if common else int(choice.split()[1])
    for name, r in runs.items():
        for m in r.messages[:5]:
            st.caption(f"{name}: {m}")
        if len(r.messages) > 5:
            st.caption(f"{name}: … and {len(r.messages) - 5} more messages (the run's records.jsonl / probes.jsonl)")
        if not len(r.steps):
            st.caption(f"{name}: no step recorded yet")
    try:
        figs = timeline_figures(runs, layer)
    except ValueError as e:
        st.error(" ".join(str(e).split())[:300])
        return
    for name, fig in figs.items():
        chart(VIEW, name, fig)
    st.download_button("Download the timeline's figures (zip: CSV, JSON, and PNG/SVG/PDF where the server can)",
                       data=lambda: _zip(figs), file_name="timeline.zip", mime=MIME["zip"], key="dl_timeline_zip",
                       on_click="ignore")
    ok, hint = export_status()
    if ok:
        st.download_button("Slide deck of the timeline (.pptx)", data=lambda: deck(figs, list(runs)),
                           file_name="timeline.pptx", mime=MIME["pptx"], key="dl_timeline_pptx", on_click="ignore")
    else:
        st.caption(f"Slide decks need PNG images, which cannot be made on this server: {hint}.")


def deck(figs: dict, names: list[str], render_images=None) -> bytes:
    """A .pptx: a title slide naming the runs, then one slide per figure with its caption."""
    from analysis import deck as decks
    return decks.deck_bytes({VIEW: figs}, None, title="Gradient dynamics over training",
                            lines=["Watched runs: " + ", ".join(names)], render_images=render_images)


def _zip(figs: dict) -> bytes:
    import analysis.export as export
    ok, _ = export.export_available()
    fmts = ("png", "svg", "pdf", "csv", "json") if ok else ("csv", "json")
    return export.view_zip(figs, {"view": "timeline"}, fmts)
