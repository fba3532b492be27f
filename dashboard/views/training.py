"""Live training: one Trainer per cell (and per preset training variant) in st.session_state, stepped by a
fragment every 0.5 s while running, so the rest of the page is not blocked. Clipping, threshold, optimizer and
learning rate may change while it runs (Trainer.update: effective at the next step, marked on the plots).
Each tick (and a single step) passes the scheduler's door with its estimate, bounded per tick and per session
(dashboard/training_door.py); its place in line is drawn while it waits."""
from __future__ import annotations

import json

import streamlit as st

from analysis.alerts import training_alerts
from analysis.figures import label_of, view_figures
from analysis.guides import VIEW_GUIDES
from analysis.limits import LimitExceeded
from analysis.presets import PRESETS
from rnn_models.cells import cell_names
from rnn_models.config import ConfigError

from .. import compute, controls, scheduler, training_door
from ..exporting import chart, deck_button, provenance_of, zip_button
from .common import guide

TITLE = "Live training"
VIEW = "training"
GUIDE = VIEW_GUIDES[VIEW] + " Training advances while this tab is open."
LIVE_SETTINGS = ("clip", "clip_threshold", "optimizer", "lr", "truncate")


# ---- trainers in session state ------------------------------------------------------------------------------
def trainer_configs(config, preset: str) -> dict:
    """{key: config} of the trainers: one per cell, or one per cell and preset training variant."""
    p = PRESETS.get(preset)
    variants = (p.train or {}).get("variants") if p is not None else None
    out = {}
    for cell in config.cells:
        base = config.for_cell(cell)
        if variants:
            for label, over in variants.items():
                out[f"{cell} · {label}"] = base.replace(**over)
        else:
            out[cell] = base
    return out


def _key(configs: dict) -> str:
    """Identity of a training run: everything except the settings that may change while it runs."""
    strip = set(LIVE_SETTINGS) | {"train_steps"}
    return json.dumps({k: {f: v for f, v in c.to_dict().items() if f not in strip} for k, c in configs.items()},
                      sort_keys=True)


def _build(configs: dict) -> None:
    from analysis.training import Trainer
    ss = st.session_state
    ss["trainers"] = {k: Trainer(c) for k, c in configs.items()}
    ss["train_key"] = _key(configs)
    ss["train_applied"] = None
    ss["train_running"] = False
    ss["train_samples"] = {}
    ss.pop("train_error", None)


def ensure_trainers(configs: dict) -> dict | None:
    """The session's trainers for these configs (rebuilt when the run's identity changed)."""
    ss = st.session_state
    if ss.get("train_key") != _key(configs) or "trainers" not in ss:
        if any(tr.records for tr in (ss.get("trainers") or {}).values()):
            ss["train_notice"] = "The model or data settings changed, so training starts afresh with them."
        try:
            _build(configs)
        except (ConfigError, ValueError) as e:
            ss["trainers"], ss["train_key"], ss["train_running"] = {}, _key(configs), False
            ss["train_error"] = str(e)
    return ss.get("trainers")


def live_settings() -> dict:
    ss = st.session_state
    return {"clip": ss.get("clip"), "clip_threshold": float(ss.get("clip_threshold")), "optimizer": ss.get("optimizer"),
            "lr": float(ss.get("lr")), "truncate": int(ss.get("truncate") or 0)}


def apply_live_settings() -> list[str]:
    """Hand changed widget settings to every trainer (Trainer.update: next step); returns what changed."""
    ss = st.session_state
    want = live_settings()
    applied = ss.get("train_applied")
    if applied is None:  # the trainers start from their own configs (variants may differ): nothing to apply
        ss["train_applied"] = want
        return []
    changed = {k: v for k, v in want.items() if applied.get(k) != v}
    if changed:
        for tr in (ss.get("trainers") or {}).values():
            tr.update(**changed)
        ss["train_applied"] = want
    return list(changed)


def _active(tr, max_steps: int) -> bool:
    return tr.stopped is None and (max_steps <= 0 or len(tr.records) < max_steps)


def step_all(n: int, max_steps: int) -> None:
    for _ in range(n):
        for tr in (st.session_state.get("trainers") or {}).values():
            if _active(tr, max_steps):
                tr.step()


def history(tr, samples: list | None = None) -> dict:
    h = tr.history()
    h["settings"] = [r.settings for r in tr.records]
    h["nonfinite"] = [r.nonfinite for r in tr.records]
    h["chance_loss"] = tr.chance_loss
    h["task"] = tr.config.task
    if tr.config.task == "charlm":
        h["perplexity"] = [r.perplexity for r in tr.records]
        h["vocab_size"] = tr.spec.output_size
        h["vocab"] = vocabulary(tr.config.text)
        h["samples"] = list(samples or [])
    return h


def histories() -> dict:
    samples = st.session_state.get("train_samples") or {}
    return {k: history(tr, samples.get(k)) for k, tr in (st.session_state.get("trainers") or {}).items()
            if tr.records}


# ---- samples of the character-level LM ------------------------------------------------------------------------
SAMPLE_EVERY = 10  # steps between samples while training runs (and one at every pause)
SAMPLE_CHARS = 80


def vocabulary(text: str) -> list[str]:
    """The LM's characters in the order they first appear in its text ("hello" -> h, e, l, o)."""
    from analysis.tasks import char_corpus
    corpus, vocab = char_corpus(text)
    return [("↵" if ch == "\n" else "␣" if ch == " " else ch) for ch in dict.fromkeys(corpus)][:vocab.size]


def can_sample(tr) -> bool:
    return tr.config.task == "charlm" and not tr.config.bidirectional


def sample_due(last: dict | None, step: int, temperature: float, running: bool) -> bool:
    """A new sample is due every SAMPLE_EVERY steps while running, and at a pause (or a new temperature) once."""
    if step <= 0:
        return False
    if last is None:
        return not running or step >= SAMPLE_EVERY
    if running:
        return step // SAMPLE_EVERY > last["step"] // SAMPLE_EVERY
    return last["step"] != step or last["temperature"] != temperature


def take_samples(running: bool) -> None:
    """Sample SAMPLE_CHARS characters from each charlm trainer when due: Trainer.sample(seed=step)."""
    ss = st.session_state
    temperature = float(ss.get("temperature", controls.DEFAULT_TEMPERATURE))
    store = ss.setdefault("train_samples", {})
    for k, tr in (ss.get("trainers") or {}).items():
        if not can_sample(tr) or tr.stopped is not None:
            continue
        step = len(tr.records)
        got = store.setdefault(k, [])
        if sample_due(got[-1] if got else None, step, temperature, running):
            text = tr.sample(SAMPLE_CHARS, temperature=temperature, seed=step)
            got.append({"step": step, "temperature": temperature, "text": text})


# ---- button callbacks (run before the script, then the whole page reruns) ------------------------------------
def _start():
    st.session_state["train_running"] = True


def _pause():
    st.session_state["train_running"] = False


def _step():
    st.session_state["train_running"] = False
    apply_live_settings()
    st.session_state["train_single"] = True  # taken by the next _live, through the door


def _reset():
    st.session_state.pop("train_key", None)
    st.session_state["train_running"] = False


# ---- the tab ------------------------------------------------------------------------------------------------
def render(ctx) -> None:
    guide(GUIDE)
    if ctx.config.cell not in cell_names():  # a kind no config builds: Your cell alone (dashboard/own_step.py)
        st.info("Live training trains the built-in cells: choose one beside Your cell in the sidebar. Your cell is "
                "analysed with the weights its file gives.")
        return
    ss = st.session_state
    cfg = controls.training_task_control(ctx.config)
    configs = trainer_configs(cfg, ctx.settings.preset)
    p = PRESETS.get(ctx.settings.preset)
    if p is not None and p.train and p.train.get("variants"):
        st.caption("This preset trains each cell once per variant: " + "; ".join(
            f"{k}: {controls.variant_text(v)}" for k, v in p.train["variants"].items()))
    ensure_trainers(configs)
    if ss.get("train_notice"):
        st.info(ss.pop("train_notice"))
    if ss.get("train_error"):
        st.error(f"Training cannot start with these settings: {ss['train_error']}")
        return
    running = bool(ss.get("train_running"))
    b = st.columns([1, 1, 1.3, 1, 5])
    b[0].button("Start", key="train_start", on_click=_start, disabled=running, type="primary")
    b[1].button("Pause", key="train_pause", on_click=_pause, disabled=not running)
    b[2].button("Single step", key="train_step", on_click=_step)
    b[3].button("Reset", key="train_reset", on_click=_reset)
    st.fragment(run_every=0.5 if running else None)(_live)(ctx)


def _live(ctx) -> None:
    ss = st.session_state
    controls.training_controls()
    max_steps, per_tick = controls.training_run_controls()
    changed = apply_live_settings()
    trainers = ss.get("trainers") or {}
    if changed:
        st.toast(f"Changed {', '.join(changed)}: takes effect at the next step")
    lm = [tr for tr in trainers.values() if tr.config.task == "charlm"]
    if lm:
        controls.temperature_control()
    single = ss.pop("train_single", False)
    if ss.get("train_running") or single:
        _tick(trainers, 1 if single else per_tick, 0 if single else max_steps)
        if ss.get("train_running") and not any(_active(tr, max_steps) for tr in trainers.values()):
            ss["train_running"] = False
            take_samples(False)
            st.rerun(scope="app")  # stop ticking
    if lm:
        take_samples(bool(ss.get("train_running")))
    steps = max((len(tr.records) for tr in trainers.values()), default=0)
    if ss.get("train_running"):
        state = "running"
    elif not steps:
        state = "ready: press Start or Single step"
    elif trainers and all(tr.stopped is not None for tr in trainers.values()):
        state = "stopped: a NaN/Inf appeared (see below); Reset to start again"
    elif max_steps and not any(_active(tr, max_steps) for tr in trainers.values()):
        state = f"finished: reached {max_steps} steps"
    else:
        state = "paused"
    st.markdown(f"**Step {steps}** · {state}")
    lines = []
    for k, tr in trainers.items():
        if tr.records:
            r = tr.records[-1]
            loss = "NaN/Inf" if r.loss is None or r.loss != r.loss or abs(r.loss) == float("inf") else f"{r.loss:.4g}"
            ppl = ""
            if tr.config.task == "charlm" and r.perplexity is not None:
                ppl = f", perplexity {r.perplexity:.3g} (uniform {tr.spec.output_size})"
            k_text = f", truncated k={r.settings['truncate']}" if r.settings.get("truncate") else ""
            lines.append(f"{label_of(k)}: loss {loss} (chance {tr.chance_loss:.3g}){ppl}, ‖g‖ {r.grad_norm_before:.3g}"
                         f"{' clipped' if r.clipped else ''}, settings {r.settings['clip']}/"
                         f"{r.settings['clip_threshold']:g}{k_text}")
    if lines:
        st.caption(" · ".join(lines))
    if lm:
        _show_samples(trainers)
    hs = histories()
    for k, tr in trainers.items():
        for a in training_alerts(hs.get(k), tr.stopped, label_of(k)):
            (st.error if a.level == "error" else st.warning)(a.message)
    if not hs:
        return
    figs = view_figures(VIEW, ctx.results, hs)
    for name, fig in figs.items():
        chart(VIEW, name, fig)
    zip_button(VIEW, figs, ctx.config)
    steps = sum(len(h.get("step", [])) for h in hs.values())  # a deck built earlier is offered only until the next step
    deck_button(VIEW, {VIEW: figs}, ctx.settings, "Slide deck of this view (.pptx)", f"{VIEW}.pptx",
                config=ctx.config, stamp=f"{ctx.config.to_json()}|{ctx.settings.variant}|{steps}",
                provenance=provenance_of(ctx.results))


def _tick(trainers: dict, per_tick: int, max_steps: int) -> None:
    """Step every active trainer ``per_tick`` times (fewer when the tick or the session's budget says so) in one
    slot of the scheduler's door; a refusal stops training with one line."""
    ss = st.session_state
    configs = [tr.config for tr in trainers.values() if _active(tr, max_steps)]
    if not configs:
        return
    try:
        plan = training_door.plan_tick(configs, per_tick, ss.get("train_flops", 0.0))
    except LimitExceeded as e:
        ss["train_running"] = False
        st.error(f"Training stopped: {' '.join(str(e).split())}")
        return
    line = st.empty()

    def wait(position: int) -> None:
        line.caption(f"Training waits for a free slot: {scheduler.SLOTS.line_text(position)}"[:300])

    with scheduler.SLOTS.hold(wait, visitor=compute.visitor(), kind=scheduler.INTERACTIVE, cost=plan.cost(),
                              label="this training tick"):
        step_all(plan.per_tick, max_steps)
    line.empty()
    ss["train_flops"] = ss.get("train_flops", 0.0) + plan.cost().flops
    left = "" if plan.budget_steps is None else (f"this session's budget: {plan.budget_steps - plan.per_tick:,} more "
                                                 "steps (GDLAB_MAX_GFLOP)")
    st.caption(" · ".join(list(plan.notes) + ([left] if left else [])))


def _show_samples(trainers: dict) -> None:
    """The newest sample of each charlm model (the table of all samples is the charlm_samples figure)."""
    store = st.session_state.get("train_samples") or {}
    blocks = []
    for k, tr in trainers.items():
        if not can_sample(tr):
            blocks.append(f"{label_of(k)}: a bidirectional model reads the future, so it cannot generate text")
            continue
        got = store.get(k)
        if got:
            s = got[-1]
            blocks.append((f"{label_of(k)} · step {s['step']} · temperature {s['temperature']:g}", s["text"]))
    if not blocks:
        st.caption(f"Samples of {SAMPLE_CHARS} characters from each model appear every {SAMPLE_EVERY} steps and "
                   "whenever training pauses.")
        return
    st.markdown("**Sampled text** (x<sub>t+1</sub> ~ softmax(y<sub>t</sub> / temperature), fed back as the next "
                "input)", unsafe_allow_html=True)
    for b in blocks:
        if isinstance(b, str):
            st.caption(b)
        else:
            st.caption(b[0])
            st.code(b[1], language=None, wrap_lines=True)
