"""The sidebar: every engine setting as a widget (keys = config field names) -> Settings."""
from __future__ import annotations

import math

import streamlit as st

from analysis.config import (
    DTYPES,
    LAG_MODES,
    LOSS_STEPS,
    MAX_SEQ_LEN,
    TASK_NAMES,
    TEXTS,
    ExperimentConfig,
)
from analysis.figures.activations import instead
from analysis.presets import DEFAULT_PRESET, PRESETS
from analysis.variant import variant_label
from rnn_models.cells import cell_names, cell_type
from rnn_models.config import ACTIVATIONS, CELLS, INITS, ConfigError

from .session import _on_preset, _on_upload
from .state import (
    CELL_NAMES,
    INIT_SCALE_MEANING,
    SETTINGS_UPLOAD_MB,
    Settings,
    parse_variant,
    state_to_config,
)

def _having(setting: str) -> list[str]:
    """The labels of the kinds a setting applies to (their ``settings``): ["LSTM"] for peephole."""
    return [cell_type(c).label for c in cell_names() if setting in cell_type(c).settings]


def _listed(items: list[str], last: str = "and") -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}" if items else ""


def _only(setting: str) -> str:
    """"the LSTM", "the RNN, the LSTM and the GRU": who a setting applies to."""
    return _listed([f"the {n}" for n in _having(setting)])


def _any(setting: str) -> str:
    """"LSTM", "RNN, LSTM or GRU": none of these is selected."""
    return _listed(_having(setting), "or")


def _selected(setting: str, cells: list[str]) -> bool:
    """Some selected cell takes the setting."""
    return any(setting in cell_type(c).settings for c in cells)


TEXT_NAMES = {"shipped": "shipped: Shakespeare's sonnets (V = 60)", "hello": "hello (V = 4: h, e, l, o)"}

def layer_control() -> None:
    """The analysed layer l of a stacked network, 0..L-1 as the API counts (default: the top). Widget value = the
    config's ``layer`` (0..L-2, or -1 for the top layer, so a preset's default -1 selects it)."""
    ss = st.session_state
    L = max(1, int(ss.get("num_layers") or 1))
    v = int(ss.get("layer", -1))
    v = v % L if -L <= v < L else L - 1
    ss["layer"] = -1 if v == L - 1 else v
    st.selectbox("Analysed layer l (Jacobians, gates, spectrum)", list(range(L - 1)) + [-1], key="layer",
                 format_func=lambda x: f"layer {L - 1}{' (top)' if L > 1 else ''}" if x == -1 else
                 f"layer {x}" + (" (bottom)" if x == 0 else ""),
                 disabled=L == 1, help="Numbered from 0 as the API, JSON and --layer count. Layer 0 reads x_t; the "
                                       "loss reads the top layer L-1. The Jacobians "
                                       "∂h_{T-1}/∂h_{T-1-k}, the gate maps and W_hh are those of this layer.")

def lru_controls() -> None:
    """The settings of the kinds that declare ``lru_*`` (the LRU's ring initialisation and its normalisation),
    drawn when such a kind is selected; keys = the config fields, so the URL carries them as any other."""
    who = _any("lru_r_min")
    st.caption(f"**{who}**: λ = r e^(iφ), r drawn uniformly in area on the ring r_min ≤ |λ| ≤ r_max, "
               "φ ~ U[0, phase max] (Orvieto et al. 2023)")
    c = st.columns(2)
    c[0].number_input("r_min", min_value=0.0, max_value=1.0, step=0.001, format="%.4f", key="lru_r_min",
                      help=f"{who}: the ring's inner radius, 0 <= r_min < r_max.")
    c[1].number_input("r_max", min_value=0.0, max_value=1.0, step=0.001, format="%.4f", key="lru_r_max",
                      help=f"{who}: the ring's outer radius, r_min < r_max <= 1. |λ|^k bounds the gradient's decay "
                           "over k steps: r_max near 1 keeps it.")
    st.number_input("phase max φ_max", min_value=0.0, max_value=2 * math.pi, step=0.1, format="%.3f",
                    key="lru_phase_max", help=f"{who}: arg λ ~ U[0, φ_max], 0 < φ_max <= 2π.")
    st.checkbox("γ normalisation", key="lru_gamma",
                help=f"{who}: the input is scaled by γ = √(1 − |λ|²), so E||h||² stays O(1) as |λ| → 1.")

def _note(text: str, active: bool = True) -> None:
    """A caption saying a setting does not apply; orange when the user actually set it."""
    st.caption(f":orange[{text}]" if active else text)

def sidebar() -> Settings:
    ss = st.session_state
    sb = st.sidebar
    with sb:
        st.header("Settings")
        # the box shows the preset's short name (a title of 50 characters was cut off in the sidebar's width);
        # its title is the line under it
        st.selectbox("Preset", list(PRESETS), key="preset", on_change=_on_preset,
                     help="Sets every setting at once to reproduce a classic result. " + " · ".join(
                         f"{n}: {p.title}" for n, p in PRESETS.items()))
        chosen = PRESETS.get(ss.get("preset"))
        title = "" if not chosen else chosen.title if chosen.title.endswith((".", "?", "!")) else chosen.title + "."
        st.caption((f"**{title}** " if title else "") + "Its two lines of what to look for are shown above the charts.")

        from dashboard import own_step  # "Your cell": the step this server was started with, if any
        diagonal = [CELL_NAMES[c] for c in CELLS if cell_type(c).diagonal]
        st.multiselect("Cells to compare (1-3)", list(CELLS) + own_step.choices(), key="cell_compare",
                       max_selections=3, format_func=lambda c: CELL_NAMES[c],
                       help="Analysed side by side on the same data and seed." + (
                           f" {', '.join(diagonal)}: diagonal recurrences without W_hh (∂h_t/∂h_(t-1) is diagonal: "
                           "linear in h, gates that read x_t only)." if diagonal else "") + (
                           " Your cell: the step this server was started with (gdlab dashboard --step), on the "
                           "task's inputs." if own_step.offered() else ""))
        cells = [c for c in CELLS if c in (ss.get("cell_compare") or [])]
        others = [c for c in cells if "activation" not in cell_type(c).settings]
        no_whh = [c for c in cells if not cell_type(c).gate_names]  # no W_hh: init and init_scale do not apply

        with st.expander("Model", expanded=True):
            st.selectbox("Activation φ (RNN)", list(ACTIVATIONS), key="activation",
                         help="h_t = φ(W_hh h_{t-1} + W_xh x_t + b); γ = sup|φ'| is 1 for tanh/relu/linear, "
                              "1/4 for sigmoid.")
            custom = ss.get("activation") != "tanh"
            if not _selected("activation", cells):
                _note(f"activation applies to {_only('activation')} only: no {_any('activation')} is selected",
                      custom)
            elif others:
                _note(f"activation applies to {_only('activation')} only; {instead(others)}", custom)
            st.selectbox("Initialization of W_hh", list(INITS), key="init")
            plain = [CELL_NAMES[c] for c in cells if "chrono" not in cell_type(c).settings and c not in no_whh]
            if ss.get("init") == "chrono" and plain:
                _note(f"chrono applies to {_only('chrono')} only: {_listed([f'the {n}' for n in plain])} "
                      f"{'uses' if len(plain) == 1 else 'use'} the default init")
            st.number_input("init_scale", min_value=0.0, max_value=100.0, step=0.1, key="init_scale",
                            format="%.3f")
            st.caption(f"init_scale: {INIT_SCALE_MEANING.get(ss.get('init'), '')}")
            if no_whh:
                names = _listed([f"the {CELL_NAMES[c]}" for c in no_whh])
                _note(f"{names} {'has' if len(no_whh) == 1 else 'have'} no W_hh: init and init_scale do not "
                      f"apply to {'it' if len(no_whh) == 1 else 'them'}",
                      ss.get("init") not in ("default", "chrono") or float(ss.get("init_scale") or 0) != 1.0)
            st.checkbox("Layer norm", key="layer_norm", help="Ba et al. 2016, on the summed pre-activation.")
            if ss.get("layer_norm") and not all("layer_norm" in cell_type(c).settings for c in cells):
                _note(f"layer norm applies to {_only('layer_norm')} only",
                      not _selected("layer_norm", cells))
            st.checkbox("Peepholes (LSTM)", key="peephole")
            if ss.get("peephole") and not _selected("peephole", cells):
                _note(f"peepholes apply to {_only('peephole')} only: no {_any('peephole')} is selected")
            st.checkbox("Set the forget-gate bias b_f (LSTM)", key="forget_bias_on")
            st.number_input("forget-gate bias b_f", min_value=-20.0, max_value=20.0, step=0.5, key="forget_bias",
                            disabled=not ss.get("forget_bias_on"))
            if ss.get("forget_bias_on") and not _selected("forget_bias", cells):
                _note(f"forget-gate bias applies to {_only('forget_bias')} only: no {_any('forget_bias')} is selected")
            elif ss.get("forget_bias_on") and not all("forget_bias" in cell_type(c).settings for c in cells):
                _note(f"forget-gate bias applies to {_only('forget_bias')} only", False)
            if _selected("lru_r_min", cells):
                lru_controls()
            st.slider("Hidden size H", 1, max(512, int(ss.get("hidden_size") or 1)), key="hidden_size")
            st.number_input("Layers", min_value=1, max_value=16, step=1, key="num_layers")
            layer_control()
            st.checkbox("Bidirectional", key="bidirectional",
                        help="A forward and a backward RNN (separate weights); each step's state is the "
                             "concatenation [h→_t; h←_t].")

        with st.expander("Data", expanded=True):
            st.selectbox("Task", list(TASK_NAMES), key="task",
                         help="random: a fixed random readout of the last step (a probe, no training); the others "
                              "are trainable tasks with a chance level.")
            st.slider("Sequence length T", 1, max(1000, int(ss.get("seq_len") or 1)), key="seq_len",
                      help="Up to 100000 through the link or a loaded config.")
            st.number_input("Batch B", min_value=1, max_value=4096, step=1, key="batch_size")
            st.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="seed")
            st.selectbox("Precision", list(DTYPES), key="dtype")
            if ss.get("task") == "charlm" or (ss.get("task") == "random" and ss.get("train_task") == "charlm"):
                st.selectbox("Text (character-level LM)", list(TEXTS), key="text", format_func=TEXT_NAMES.get,
                             help="The corpus the LM reads one character at a time; the uniform guess has "
                                  "perplexity V, the vocabulary size.")
            st.number_input("Input size (random task; 0 = 8)", min_value=0, max_value=100_000, step=1,
                            key="input_size")
            if ss.get("task") != "random" and ss.get("input_size"):
                _note("input size is fixed by the task; only the random task uses it")

        with st.expander("Truncated BPTT", expanded=bool(ss.get("truncate"))):
            st.number_input("k steps (0 = full BPTT)", min_value=0, max_value=MAX_SEQ_LEN, step=1, key="truncate",
                            help="Backpropagate through only k steps: the state is carried forward, the gradient "
                                 "is cut every k steps (windows ending at the last step). The gradient-flow view "
                                 "draws the truncated gradient beside the full one; live training uses it from "
                                 "the next step.")
            if ss.get("truncate") and int(ss["truncate"]) >= int(ss.get("seq_len") or 1):
                _note(f"k ≥ T = {ss.get('seq_len')}: nothing is cut, this is full BPTT")

        with st.expander("Analysis"):
            st.selectbox("Loss steps", list(LOSS_STEPS), key="loss_steps",
                         help="auto: as the task; last: the loss at t=T-1 only; all: summed over t.")
            st.radio("Jacobian lags", list(LAG_MODES), key="jacobian_lags", horizontal=True,
                     help="all: every lag 0..T-1; log: about num_log_lags log-spaced lags (exact there).")
            st.number_input("num_log_lags", min_value=2, max_value=10_000, step=1, key="num_log_lags",
                            disabled=ss.get("jacobian_lags") != "log")
            st.number_input("Jacobian batch subset (0 = all)", min_value=0, max_value=4096, step=1,
                            key="jacobian_batch")
            st.number_input("Top singular values kept", min_value=1, max_value=4096, step=1, key="n_singular")
            st.number_input("Memory-horizon threshold", min_value=1e-12, max_value=1.0, key="horizon_threshold",
                            format="%.1e", step=1e-4)
            st.number_input("Lyapunov exponents", min_value=0, max_value=8192, step=1, key="lyapunov_k")

        with st.expander("Compare with a variant"):
            st.text_input("Also run with (field=value, ...)", key="variant", placeholder="forget_bias=0",
                          help="A second run of the same cells with these settings changed, drawn in a lighter "
                               "colour, e.g. forget_bias=0 or layer_norm=false or init_scale=1.5.")

        from dashboard.own_model import sidebar_section
        sidebar_section()  # uploads of your own model (no server paths)

    settings = _build_settings()
    with sb:
        with st.expander("Share and save"):
            st.caption("The page address holds every setting: copy it to reopen this exact view.")
            st.download_button("Download settings (JSON)", data=settings.config.to_json(),
                               file_name="gradient-dynamics-config.json", mime="application/json",
                               key="config_download", on_click="ignore")
            st.file_uploader("Load settings (JSON)", type=["json"], key="config_upload", on_change=_on_upload,
                             max_upload_size=SETTINGS_UPLOAD_MB)
    return settings

def _build_settings() -> Settings:
    ss = st.session_state
    errors = []
    try:
        current = state_to_config().to_json()
    except ConfigError:
        current = None
    if ss.get("_msg_cfg") is not None and current is not None and ss["_msg_cfg"] != current:
        for k in ("url_error", "config_error", "_msg_cfg"):  # the user changed something: old messages go
            ss.pop(k, None)
    for k in ("url_error", "config_error"):
        if ss.get(k):
            errors.append(ss[k])
    last_good = ExperimentConfig.from_json(ss["last_good"]) if ss.get("last_good") else PRESETS[DEFAULT_PRESET].config
    try:
        cfg = state_to_config()
    except ConfigError as e:
        errors.append(f"These settings cannot be used: {e}. Showing the last good settings.")
        cfg = last_good
    variant, label = {}, ""
    try:
        variant = parse_variant(ss.get("variant", ""))
        if variant:
            cfg.replace(**variant)
            label = variant_label(variant)
    except ConfigError as e:
        errors.append(f"The variant is not used: {e}.")
        variant = {}
    return Settings(config=cfg, preset=ss.get("preset", DEFAULT_PRESET), variant=variant, variant_label=label,
                    errors=errors)

def accept(settings: Settings) -> None:
    """The config ran: remember it as the last good one and clear one-shot messages."""
    st.session_state["last_good"] = settings.config.to_json()

