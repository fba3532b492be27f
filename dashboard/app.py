"""Gradient-dynamics lab: see why recurrent networks forget.  ``streamlit run dashboard/app.py``

A thin layer: widgets (dashboard/controls.py) -> ExperimentConfig -> cached run_comparison (dashboard/compute.py)
-> figures (analysis/figures.py), one tab per view (dashboard/views/), alerts from analysis/alerts.py.
A long analysis is computed per view: the gradient pass first, the Jacobian products in a background job
(dashboard/background.py) or before a view that reads them (see ``_page``).
"""
from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

# the tab's icon: an emoji, which Streamlit draws; a plain character such as "∇" is taken for an image's URL (a
# broken icon, and ~8 ms of failed image decoding on every run of the page)
st.set_page_config(page_title="Gradient-dynamics lab", page_icon="📉", layout="wide")

from analysis.progress import init_threads  # noqa: E402

init_threads(1)  # once per process: concurrent sessions get their cores through config.threads (pools), not this
from analysis.alerts import alerts, said_once  # noqa: E402
from analysis.guides import describe  # noqa: E402
from analysis.config import ExperimentConfig  # noqa: E402
from analysis.figures import CELL_LABELS, label_of  # noqa: E402
from analysis.presets import DEFAULT_PRESET, PRESETS  # noqa: E402
from analysis.variant import variant_heading  # noqa: E402
from dashboard import controls, own_model, own_step  # noqa: E402
from dashboard import compute  # noqa: E402
from dashboard.compute import analyse  # noqa: E402
from dashboard import background  # noqa: E402
from dashboard.views import TABS, Context, needs_full  # noqa: E402
from analysis import __version__  # noqa: E402
from analysis.figures import VIEWS, view_figures  # noqa: E402
from dashboard.exporting import deck_button, provenance_of  # noqa: E402
from dashboard.views import atlas as atlas_view  # noqa: E402
from dashboard.views import sensitivity as sensitivity_view  # noqa: E402
from dashboard.views import training as training_view  # noqa: E402


CSS = """<style>
.block-container {padding-top: 2.2rem; padding-bottom: 2rem;}
h2 {padding-top: 0 !important;}
</style>"""


def _message(e: BaseException) -> str:
    """One plain sentence from an engine error, cut to a readable length (never a traceback)."""
    if isinstance(e, ValueError):  # ConfigError / LimitExceeded included: one line naming the field
        msg = " ".join(str(e).split())
    else:
        msg = f"the analysis failed ({type(e).__name__}: {' '.join(str(e).split())})"
    return msg if len(msg) <= 400 else msg[:400] + "…"


def _run(settings):
    """Results for the settings; on an engine error, the last good settings (and the message). No exception of
    the engine reaches the page: if the fallback fails too, the default preset; if that fails, a message."""
    try:
        return analyse(settings.config, settings.variant, settings.variant_label), None
    except Exception as e:  # noqa: BLE001 - an engine failure must not take the page down
        msg = _message(e)
    fallbacks = []
    last = st.session_state.get("last_good")
    if last:
        try:
            fallbacks.append(ExperimentConfig.from_json(last))
        except ValueError:
            pass
    fallbacks.append(PRESETS[DEFAULT_PRESET].config)
    for fallback in fallbacks:
        if fallback == settings.config:
            continue
        try:
            results = analyse(fallback)
        except Exception:  # noqa: BLE001 - try the next fallback
            continue
        settings.config, settings.variant, settings.variant_label = fallback, {}, ""
        return results, f"These settings cannot be analysed: {msg}. Showing the last good settings."
    st.error(f"These settings cannot be analysed: {msg}.")
    st.stop()


def _session() -> str:
    """This browser session's id as a watcher of background jobs (dashboard/background.py)."""
    if "gdlab_session" not in st.session_state:
        st.session_state["gdlab_session"] = uuid.uuid4().hex
    return st.session_state["gdlab_session"]


def _gradients_first(settings):
    """For a long analysis not cached yet: the gradient pass alone (about one forward and backward pass), the page
    is drawn from it and the full analysis follows (``_await_full``). None for a short or cached analysis (one
    full computation, as before), or when the gradient pass fails (the full analysis reports the error)."""
    s = settings
    if not compute.wants_first_chart(s.config, s.variant):
        return None
    if st.session_state.get("full_done") == compute.full_key(s.config, s.variant, s.variant_label):
        return None  # finished in the background but too big for the cache: compute it in line, never loop
    try:
        return analyse(s.config, s.variant, s.variant_label, only="gradients", what="Gradient pass (first chart): ")
    except ValueError:  # settings that cannot run: the full analysis says why, in one line
        return None
    except Exception as e:  # noqa: BLE001 - an engine failure of the gradient pass: said, then the full analysis
        st.caption(f"The gradient pass alone failed ({_message(e)}); computing the full analysis at once instead.")
        return None


HEARTBEAT_S = 2.0  # a watching page redraws an unchanged bar this often (it waits in line for minutes)


def _await_full(settings, what: str, slot=None) -> None:
    """Watch the full analysis of the settings (a background job: it goes on when this script run stops, e.g. on
    a tab switch, and is dropped when the settings change) with a progress bar naming ``what``; when it has
    finished, rerun the page (cached now: drawn at once with the complete results)."""
    s = settings
    where = slot if slot is not None else st.empty()
    try:
        job = compute.full_job(s.config, s.variant, s.variant_label, _session())
    except ValueError as e:
        where.error(f"The Jacobian products and spectra cannot be computed: {_message(e)}.")
        return
    shown, beat = None, 0.0
    while not job.poll(0.25):
        bar = (round(job.fraction, 2), job.text)
        # a message to the browser only when the bar changes, and a heartbeat every HEARTBEAT_S: each is where
        # Streamlit stops this run when the tab closes (then nobody polls the job and its lease runs out)
        if bar != shown or time.monotonic() - beat > HEARTBEAT_S:
            where.progress(job.fraction, text=f"{what}: {job.text}"[:200])
            shown, beat = bar, time.monotonic()
    if job.error is not None:
        where.error(f"The Jacobian products and spectra stopped: {_message(job.error)}. Change a setting or "
                    "reload the page to try again.")
        return
    where.progress(1.0, text=f"{what}: done")
    st.session_state["full_done"] = job.key
    st.rerun()


def _all_views(results: dict, histories: dict | None) -> dict:
    """{view: figures} of every view that draws something (training only once it has run)."""
    views = {v: view_figures(v, results, histories) for v in VIEWS}
    return {v: figs for v, figs in views.items() if figs}


def main() -> None:
    _session()  # this visitor's id at the scheduler's door (one slot per visitor) and as a watcher of jobs
    controls.init_session()
    controls.persist()
    settings = controls.sidebar()

    st.markdown(CSS, unsafe_allow_html=True)
    st.markdown("## ∇ Gradient-dynamics lab")
    st.caption("Why do recurrent networks forget? Follow the gradient back through time in a vanilla RNN, an "
               "LSTM and a GRU: where it vanishes, where it explodes, and what keeps it alive.")
    for e in settings.errors:
        st.error(e)
    own = _own(settings)
    if own is not None:  # an uploaded model: that one model in every view
        background.drop(_session())
        return _page(settings, own, own=True)
    mine = _step(settings)  # Your cell (the server's --step), when chosen: {"own": result}, else {}
    if mine and own_step.alone():
        background.drop(_session())
        return _page(settings, mine, own=True)
    s = settings
    try:
        keep = compute.full_key(s.config, s.variant, s.variant_label)
    except Exception:  # noqa: BLE001 - a variant that cannot apply: the analysis below says why
        keep = None
    background.drop(_session(), keep=keep)  # a new setting supersedes the session's running full analysis
    # before its gradient pass starts (no queueing behind it); the same settings keep it (a tab switch)
    if st.session_state.get("full_done") != keep:
        st.session_state.pop("full_done", None)  # other settings: the next long analysis draws its first chart
    with st.spinner(f"Analysing {', '.join(CELL_LABELS[c] for c in settings.config.cells)} "
                    f"(T={settings.config.seq_len}, H={settings.config.hidden_size})…"):
        results, error = _gradients_first(settings), None
        if results is None:
            results, error = _run(settings)
    if error:
        st.error(error)
    else:
        controls.accept(settings)
    controls.sync_url(settings)
    cfg = settings.config

    preset = PRESETS.get(settings.preset, PRESETS[DEFAULT_PRESET])
    st.markdown(f"**{preset.title}** · {describe(cfg)}"
                + (f" · variant (lighter colour): {variant_heading(cfg, settings.variant)}" if settings.variant else ""))
    changed = " *(settings changed since this preset was chosen)*" if cfg != preset.config else ""
    st.info("**What to look for.** " + "  \n".join(preset.lines) + changed)
    _page(settings, {**results, **mine})


def _own(settings):
    """The uploaded model's results, or None (none uploaded, or it could not be analysed: the error is shown)."""
    try:
        return own_model.analyse_upload(settings.config)
    except ValueError as e:  # ConfigError included: one line
        st.error(f"Your model cannot be analysed: {' '.join(str(e).split())}. Showing the preset instead.")
    return None


def _step(settings) -> dict:
    """Your cell's results when it is chosen, else {}; a step that cannot be analysed: one line, the rest goes on."""
    if not own_step.chosen():
        return {}
    try:
        return own_step.results(settings.config)
    except ValueError as e:  # ConfigError / LimitExceeded: one line
        alone = " Showing the built-in cells instead." if own_step.alone() else ""
        st.error(f"Your cell cannot be analysed: {' '.join(str(e).split())}.{alone}")
    return {}


def _horizons(results: dict, cfg, pending: bool) -> None:
    th = cfg.horizon_threshold
    head = f"Memory horizon (first lag k where ‖∂h<sub>T-1</sub>/∂h<sub>T-1-k</sub>‖ < {th:g}): "
    if pending:
        st.markdown(head + "**computing…** (this page is drawn from the gradient pass; the Jacobian products, "
                    "spectra and memory horizon follow, progress below)", unsafe_allow_html=True)
        return
    horizons = []
    for key, r in results.items():
        d = r.horizon_detail  # the horizon with its resolution: the sampled lags and the sequences it rests on
        hz = f"k = {d['lag']}" if d["lag"] is not None else f"none within {r.config.seq_len - 1} lags"
        how = []
        if d["lag"] is not None and d["after_lag"] is not None and d["after_lag"] < d["lag"] - 1:
            how.append(f"crossed between lags {d['after_lag'] + 1} and {d['lag']}: log-spaced lags")
        if d["sequences"] < d["of"]:
            how.append(f"from {d['sequences']} of {d['of']} sequences")
        horizons.append(f"{label_of(key)} **{hz}**" + (f" ({'; '.join(how)})" if how else ""))
    st.markdown(head + " · ".join(horizons), unsafe_allow_html=True)


def _alerts(results: dict, pending: bool) -> None:
    notes = []
    for key, r in results.items():
        for a in alerts(r, None if key in CELL_LABELS else label_of(key)):
            if a.level == "error":
                st.error(a.message)
            elif a.level == "warning":
                st.warning(a.message)
            elif not (pending and "gradients only" in a.message):  # the header says what is pending
                notes.append((key, a.message))
    if notes:  # the same note for several runs is said once, naming their cells
        st.caption("Notes: " + " · ".join(said_once(notes)))


def _page(settings, results: dict, own: bool = False) -> None:
    """The header, alerts and tabs. With results of the gradient pass alone (``pending``): the open tab is drawn
    at once if it needs no Jacobian products, else it waits for them; the full analysis then runs with its bar
    in ``later`` (below the header) and the page is drawn again when it has finished."""
    t0 = time.perf_counter()
    cfg = next(iter(results.values())).config if own else settings.config
    pending = not own and compute.partial(results)
    if own_step.OWN in results:
        own_step.header(results, alone=own)
    elif own:
        own_model.header(results)
    _horizons(results, cfg, pending)
    later = st.empty() if pending else None
    _alerts(results, pending)

    histories = None
    trainers = st.session_state.get("trainers")
    if trainers and any(tr.records for tr in trainers.values()):
        histories = training_view.histories()
    ctx = Context(settings=settings, config=cfg, results=results, histories=histories, own=own)
    s = settings

    atlas = atlas_view.deck_figures()  # the sweep drawn last in the Atlas tab (read now, in the script run)
    trained = sum(len(h.get("step", [])) for h in (histories or {}).values())  # a built deck holds these steps
    sens = None if own and own_step.OWN not in results else \
        sensitivity_view.deck_figures(sensitivity_view.stamp_of(ctx))  # drawn in its tab

    drawn: dict = {}  # the results the deck was drawn from: their provenance goes into the notes

    def deck_views() -> dict:  # called at click time: the full results, never partial; the Atlas when it has run
        drawn["results"] = full = {**compute.full_results(s.config, s.variant, s.variant_label), **{
            k: r for k, r in results.items() if k == own_step.OWN}} if pending else results
        return {**_all_views(full, histories), **({"sensitivity": sens} if sens else {}),
                **({"atlas": atlas[2]} if atlas else {})}
    deck_button("all_views", deck_views, settings, "Slide deck of all views (.pptx)", "gradient-dynamics.pptx",
                config=cfg, stamp=f"{cfg.to_json()}|{s.variant}|{atlas[3] if atlas else ''}|{trained}|{bool(sens)}",
                provenance=lambda: provenance_of(drawn.get("results", results)))
    if atlas is None:
        st.caption("The Atlas joins the deck of all views once a sweep has been drawn in its tab.")
    tabs = st.tabs([m.TITLE for m in TABS], key="view", bind="query-params")
    for module, tab in zip(TABS, tabs):
        if tab.open is False:
            continue
        with tab:
            if pending and needs_full(module):
                st.caption(module.GUIDE)
                return _await_full(settings, f"{module.TITLE}: computing the Jacobian products and spectra")
            module.render(ctx)
    total = sum(r.timings.get("total_s", 0.0) for r in results.values())
    what = "Gradient pass" if pending else "Analysis"
    st.caption(f"{what} {total:.2f} s when first computed (cached since) · this page "
               f"{time.perf_counter() - t0:.2f} s · gradient-dynamics lab {__version__}")
    if pending:
        _await_full(settings, "Jacobian spectra for the other views", later)

main()
