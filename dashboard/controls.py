"""The only place where widgets become an ExperimentConfig (and where the URL's query parameters are read/written).

Flow of one script run::

    init_session()      first run of a session: preset + URL query parameters -> widget state (bad link -> message)
    sidebar()           the widgets (keys = config field names, plus cell_compare / forget_bias_on / preset /
                        variant) -> Settings(config, variant, ...); an invalid combination keeps the last good
                        config and says which field is wrong
    sync_url(settings)  the settings that differ from the preset -> st.query_params (a link reopens them)

Widget values live in ``st.session_state`` under their keys; ``persist()`` re-assigns them at the top of every
run so widgets in closed tabs keep their values.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

import streamlit as st

from analysis.config import (CLIP_MODES, DTYPES, LAG_MODES, LOSS_STEPS, MAX_SEQ_LEN, OPTIMIZERS, TASK_NAMES, TEXTS,
                             ExperimentConfig)
from analysis.presets import DEFAULT_PRESET, PRESETS
from rnn_models.config import ACTIVATIONS, CELLS, INITS, ConfigError

FIELDS = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
FIELD_TYPES = typing.get_type_hints(ExperimentConfig)
# config fields edited by one widget of the same key
PLAIN_FIELDS = [n for n in FIELDS if n not in ("cell", "compare", "forget_bias", "input_size", "inputs_path",
                                               "state_dict_path")]
# fields that change during training (Trainer.update) and never change the analysis
TRAINING_FIELDS = ("optimizer", "lr", "clip", "clip_threshold", "train_steps")
# every widget key whose value must survive runs where its widget is not drawn
STATE_KEYS = tuple(PLAIN_FIELDS) + ("cell_compare", "forget_bias_on", "forget_bias", "input_size", "inputs_path",
                                     "state_dict_path", "preset", "variant", "display_log", "display_band",
                                     "display_log_jac", "display_gate", "train_task", "train_steps_per_tick",
                                     "temperature")
URL_RESERVED = ("view",)  # bound to the tabs by Streamlit itself
CELL_NAMES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}

INIT_SCALE_MEANING = {
    "default": "not used by init 'default' (U(-1/sqrt(H), 1/sqrt(H)))",
    "xavier": "the gain of Xavier-uniform W_hh",
    "orthogonal": "the gain: W_hh = scale * Q, Q orthogonal",
    "identity": "W_hh = scale * I (IRNN)",
    "spectral": "the spectral radius max|lambda(W_hh)|",
    "chrono": "not used by init 'chrono' (keep-gate biases ~ log U[1, T-1])",
}


@dataclass
class Settings:
    config: ExperimentConfig  # the config in force (the last good one if the widgets' is invalid)
    preset: str
    variant: dict = field(default_factory=dict)  # overrides of a second run drawn beside the first
    variant_label: str = ""
    errors: list[str] = field(default_factory=list)


# ---- values <-> text (URL) ----------------------------------------------------------------------------------
def _to_text(name: str, value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_value(name: str, text: str):
    """A config field's value from its URL / variant text; ConfigError naming the field."""
    if name not in FIELDS:
        raise ConfigError(f"unknown setting {name!r}: allowed are {', '.join(FIELDS)}")
    t = FIELD_TYPES[name]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    optional = type(None) in typing.get_args(t)
    base = args[0] if args and t is not tuple and typing.get_origin(t) is not tuple else t
    s = str(text).strip()
    if optional and s.lower() in ("none", "null", ""):
        return None
    if typing.get_origin(t) is tuple or name == "compare":
        return tuple(x.strip() for x in s.split(",") if x.strip())
    if base is bool:
        if s.lower() in ("true", "1", "yes", "on"):
            return True
        if s.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name}={s!r} must be true or false")
    if base is int:
        try:
            return int(s)
        except ValueError:
            raise ConfigError(f"{name}={s!r} must be an integer") from None
    if base is float:
        try:
            return float(s)
        except ValueError:
            raise ConfigError(f"{name}={s!r} must be a number") from None
    return s


def diff(config: ExperimentConfig, base: ExperimentConfig) -> dict[str, str]:
    a, b = config.to_dict(), base.to_dict()
    return {k: _to_text(k, config.__dict__[k]) for k in a if a[k] != b[k]}


def parse_variant(text: str) -> dict:
    """'forget_bias=0, layer_norm=false' -> {'forget_bias': 0.0, 'layer_norm': False}; ConfigError on bad text."""
    out = {}
    for part in (p.strip() for p in str(text or "").replace(";", ",").split(",")):
        if not part:
            continue
        if "=" not in part:
            raise ConfigError(f"variant: {part!r} must look like field=value, e.g. forget_bias=0")
        k, v = (x.strip() for x in part.split("=", 1))
        if k in ("cell", "compare"):
            raise ConfigError("variant: cell/compare cannot vary: the variant runs the same cells")
        out[k] = parse_value(k, v)
    return out


def variant_text(overrides: dict | None) -> str:
    return ", ".join(f"{k}={_to_text(k, v)}" for k, v in (overrides or {}).items())


# ---- config <-> widget state --------------------------------------------------------------------------------
def config_to_state(cfg: ExperimentConfig) -> None:
    ss = st.session_state
    for name in PLAIN_FIELDS:
        ss[name] = getattr(cfg, name)
    ss["cell_compare"] = list(cfg.cells)
    ss["forget_bias_on"] = cfg.forget_bias is not None
    ss["forget_bias"] = float(cfg.forget_bias) if cfg.forget_bias is not None else 1.0
    ss["input_size"] = int(cfg.input_size or 0)
    ss["inputs_path"] = cfg.inputs_path or ""
    ss["state_dict_path"] = cfg.state_dict_path or ""
    for name in ("init_scale", "horizon_threshold", "lr", "clip_threshold", "forget_bias"):
        ss[name] = float(ss[name])


def state_to_config() -> ExperimentConfig:
    """The widgets' config; ConfigError (one line naming the field) if they are invalid together."""
    ss = st.session_state
    cells = [c for c in CELLS if c in (ss.get("cell_compare") or [])]
    if not cells:
        raise ConfigError("cells: choose at least one of RNN, LSTM, GRU to analyse")
    d = {}
    for name in PLAIN_FIELDS:
        v = ss.get(name)
        t = FIELD_TYPES[name]
        if t is int and isinstance(v, float) and v.is_integer():
            v = int(v)
        if t is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        d[name] = v
    d["cell"] = cells[0]
    d["compare"] = tuple(cells) if len(cells) > 1 else ()
    d["forget_bias"] = float(ss.get("forget_bias", 1.0)) if ss.get("forget_bias_on") else None
    d["input_size"] = int(ss.get("input_size") or 0) or None
    d["inputs_path"] = (ss.get("inputs_path") or "").strip() or None
    d["state_dict_path"] = (ss.get("state_dict_path") or "").strip() or None
    return ExperimentConfig.from_dict(d)


def apply_config(cfg: ExperimentConfig, preset: str | None = None, variant: dict | None = None) -> None:
    """Set every widget from ``cfg`` (and the preset / variant fields)."""
    config_to_state(cfg)
    if preset is not None:
        st.session_state["preset"] = preset
    st.session_state["variant"] = variant_text(variant)
    st.session_state["last_good"] = cfg.to_json()


def config_from_text(text: str | bytes) -> ExperimentConfig:
    """An uploaded JSON config (or result file) -> ExperimentConfig; ConfigError with the field's message."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError("the uploaded file is not UTF-8 text: upload a JSON config") from None
    return ExperimentConfig.from_json(text)


# ---- callbacks ----------------------------------------------------------------------------------------------
DEFAULT_TEMPERATURE = 0.8  # sampling temperature of the character-level LM (0.1..2.0)


def preset_steps_per_tick(name: str) -> int:
    """Training steps per 0.5 s tick a preset asks for (its ``train["steps_per_tick"]``; 1 by default)."""
    p = PRESETS.get(name)
    return int(((p.train or {}) if p is not None else {}).get("steps_per_tick", 1))


def _on_preset():
    name = st.session_state.get("preset", DEFAULT_PRESET)
    p = PRESETS.get(name, PRESETS[DEFAULT_PRESET])
    apply_config(p.config, None, p.variant)
    st.session_state.pop("config_error", None)
    st.session_state["train_task"] = "adding"
    st.session_state["train_steps_per_tick"] = preset_steps_per_tick(name)


def _on_upload():
    f = st.session_state.get("config_upload")
    if f is None:
        return
    try:
        cfg = config_from_text(f.getvalue())
    except ConfigError as e:
        st.session_state["config_error"] = (f"The uploaded settings were not applied: {e}. "
                                            "The dashboard keeps the last good settings.")
        try:
            st.session_state["_msg_cfg"] = state_to_config().to_json()
        except ConfigError:
            st.session_state["_msg_cfg"] = None
        return
    apply_config(cfg)
    st.session_state.pop("config_error", None)


# ---- session start: preset + URL ----------------------------------------------------------------------------
def settings_from_params(params: dict) -> tuple[str, ExperimentConfig, dict, list[str]]:
    """(preset, config, variant, errors) from URL query parameters; a bad parameter falls back to the preset."""
    errors = []
    name = params.get("preset", DEFAULT_PRESET)
    if name not in PRESETS:
        errors.append(f"preset={name!r} in the link is not known: choose one of {', '.join(PRESETS)}")
        name = DEFAULT_PRESET
    p = PRESETS[name]
    base = p.config.to_dict()
    over = {}
    try:
        for k, v in params.items():
            if k in ("preset", "variant") + URL_RESERVED:
                continue
            over[k] = parse_value(k, v)
        if "compare" in over and "cell" not in over and over["compare"]:
            over["cell"] = over["compare"][0]
        if "cell" in over and "compare" not in over:
            over["compare"] = ()
        cfg = ExperimentConfig.from_dict({**base, **over})
    except ConfigError as e:
        errors.append(f"The link's settings are invalid: {e}. Showing the preset {name!r} instead.")
        cfg = p.config
    variant = p.variant
    if "variant" in params:
        try:
            variant = parse_variant(params["variant"])
            if variant:
                cfg.replace(**variant)
        except ConfigError as e:
            errors.append(f"The link's variant is invalid: {e}. It is left out.")
            variant = None
    return name, cfg, variant or {}, errors


def init_session() -> None:
    ss = st.session_state
    if ss.get("_initialized"):
        return
    params = {k: st.query_params.get(k) for k in st.query_params.keys()}
    name, cfg, variant, errors = settings_from_params(params)
    apply_config(cfg, name, variant)
    ss["display_log"] = True
    ss["display_band"] = True
    ss["display_log_jac"] = True
    ss["train_task"] = "adding"
    ss["train_steps_per_tick"] = preset_steps_per_tick(name)
    ss["temperature"] = DEFAULT_TEMPERATURE
    if errors:
        ss["url_error"] = " ".join(errors)
        ss["_msg_cfg"] = state_to_config().to_json()  # as the widgets spell it
    ss["_initialized"] = True


def persist() -> None:
    """Keep the widget values of widgets not drawn in this run (closed tabs)."""
    ss = st.session_state
    for k in STATE_KEYS:
        if k in ss:
            ss[k] = ss[k]


# ---- the sidebar --------------------------------------------------------------------------------------------
TEXT_NAMES = {"shipped": "shipped: Shakespeare's sonnets (V = 60)", "hello": "hello (V = 4: h, e, l, o)"}


def layer_control() -> None:
    """The analysed layer l of a stacked network, 1..L (default: the top). Widget value = the config's ``layer``
    (0..L-2, or -1 for the top layer, so a preset's default -1 selects it)."""
    ss = st.session_state
    L = max(1, int(ss.get("num_layers") or 1))
    v = int(ss.get("layer", -1))
    v = v % L if -L <= v < L else L - 1
    ss["layer"] = -1 if v == L - 1 else v
    st.selectbox("Analysed layer l (Jacobians, gates, spectrum)", list(range(L - 1)) + [-1], key="layer",
                 format_func=lambda x: f"layer {L}{' (top)' if L > 1 else ''}" if x == -1 else
                 f"layer {x + 1}" + (" (bottom)" if x == 0 else ""),
                 disabled=L == 1, help="Layer 1 reads x_t; the loss reads the top layer L. The Jacobians "
                                       "∂h_{T-1}/∂h_{T-1-k}, the gate maps and W_hh are those of this layer.")


def _note(text: str, active: bool = True) -> None:
    """A caption saying a setting does not apply; orange when the user actually set it."""
    st.caption(f":orange[{text}]" if active else text)


def sidebar() -> Settings:
    ss = st.session_state
    sb = st.sidebar
    with sb:
        st.header("Settings")
        st.selectbox("Preset", list(PRESETS), key="preset", on_change=_on_preset,
                     format_func=lambda n: f"{n}: {PRESETS[n].title}",
                     help="Sets every setting at once to reproduce a classic result.")
        st.caption("Its two lines of what to look for are shown above the charts.")

        st.multiselect("Cells to compare (1-3)", list(CELLS), key="cell_compare", max_selections=3,
                       format_func=lambda c: CELL_NAMES[c],
                       help="Analysed side by side on the same data and seed.")
        cells = [c for c in CELLS if c in (ss.get("cell_compare") or [])]
        gated = [CELL_NAMES[c] for c in cells if c != "rnn"]

        with st.expander("Model", expanded=True):
            st.selectbox("Activation φ (RNN)", list(ACTIVATIONS), key="activation",
                         help="h_t = φ(W_hh h_{t-1} + W_xh x_t + b); γ = sup|φ'| is 1 for tanh/relu/linear, "
                              "1/4 for sigmoid.")
            custom = ss.get("activation") != "tanh"
            if "rnn" not in cells:
                _note("activation applies to the RNN only: no RNN is selected", custom)
            elif gated:
                _note(f"activation applies to the RNN only; {', '.join(gated)} use sigmoid gates and tanh", custom)
            st.selectbox("Initialization of W_hh", list(INITS), key="init")
            if ss.get("init") == "chrono" and "rnn" in cells:
                _note("chrono applies to gated cells only: the RNN uses the default init")
            st.number_input("init_scale", min_value=0.0, max_value=100.0, step=0.1, key="init_scale",
                            format="%.3f")
            st.caption(f"init_scale: {INIT_SCALE_MEANING.get(ss.get('init'), '')}")
            st.checkbox("Layer norm", key="layer_norm", help="Ba et al. 2016, on the summed pre-activation.")
            st.checkbox("Peepholes (LSTM)", key="peephole")
            if ss.get("peephole") and "lstm" not in cells:
                _note("peepholes apply to the LSTM only: no LSTM is selected")
            st.checkbox("Set the forget-gate bias b_f (LSTM)", key="forget_bias_on")
            st.number_input("forget-gate bias b_f", min_value=-20.0, max_value=20.0, step=0.5, key="forget_bias",
                            disabled=not ss.get("forget_bias_on"))
            if ss.get("forget_bias_on") and "lstm" not in cells:
                _note("forget-gate bias applies to the LSTM only: no LSTM is selected")
            elif ss.get("forget_bias_on") and cells != ["lstm"]:
                _note("forget-gate bias applies to the LSTM only", False)
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

        with st.expander("Files (optional)"):
            st.text_input("Inputs file (.npy/.pt, T x B x I; random task)", key="inputs_path")
            st.text_input("torch RNN/LSTM/GRU state_dict file", key="state_dict_path")

    settings = _build_settings()
    with sb:
        with st.expander("Share and save"):
            st.caption("The page address holds every setting: copy it to reopen this exact view.")
            st.download_button("Download settings (JSON)", data=settings.config.to_json(),
                               file_name="gradient-dynamics-config.json", mime="application/json",
                               key="config_download", on_click="ignore")
            st.file_uploader("Load settings (JSON)", type=["json"], key="config_upload", on_change=_on_upload)
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
            label = variant_text(variant)
    except ConfigError as e:
        errors.append(f"The variant is not used: {e}.")
        variant = {}
    return Settings(config=cfg, preset=ss.get("preset", DEFAULT_PRESET), variant=variant, variant_label=label,
                    errors=errors)


def accept(settings: Settings) -> None:
    """The config ran: remember it as the last good one and clear one-shot messages."""
    st.session_state["last_good"] = settings.config.to_json()


def sync_url(settings: Settings) -> None:
    """Write the settings that differ from the preset into the URL (only what changed)."""
    p = PRESETS.get(settings.preset, PRESETS[DEFAULT_PRESET])
    want = {"preset": settings.preset, **diff(settings.config, p.config)}
    if "compare" in want or "cell" in want:
        want["compare"] = _to_text("compare", settings.config.cells)
        want.pop("cell", None)
    vt = variant_text(settings.variant)
    if vt != variant_text(p.variant):
        want["variant"] = vt
    qp = st.query_params
    have = {k: qp.get(k) for k in qp.keys() if k not in URL_RESERVED}
    for k in have:
        if k not in want:
            del qp[k]
    for k, v in want.items():
        if have.get(k) != v:
            qp[k] = v


# ---- training-tab widgets (they feed Trainer.update, and the config's training fields) -----------------------
def training_task_control(config: ExperimentConfig) -> ExperimentConfig:
    """The config to train: the random probe cannot be trained, so a task is chosen for it here."""
    if config.task != "random":
        return config
    trainable = [t for t in TASK_NAMES if t != "random"]
    st.selectbox("Task to train on (the random probe has no target)", trainable, key="train_task")
    return config.replace(task=st.session_state.get("train_task", "adding"))


def training_controls() -> dict:
    """Clip mode, threshold, optimizer and lr widgets; they may change while training runs."""
    c = st.columns(4)
    c[0].selectbox("Clipping", list(CLIP_MODES), key="clip",
                   help="norm: g <- threshold * g / ||g|| when ||g|| > threshold; value: clamp each component.")
    c[1].number_input("Clip threshold", min_value=1e-6, max_value=1e12, key="clip_threshold", format="%.3g")
    c[2].selectbox("Optimizer", list(OPTIMIZERS), key="optimizer")
    c[3].number_input("Learning rate", min_value=1e-7, max_value=100.0, key="lr", format="%.2e", step=1e-4)
    ss = st.session_state
    return {"clip": ss["clip"], "clip_threshold": float(ss["clip_threshold"]), "optimizer": ss["optimizer"],
            "lr": float(ss["lr"])}


def training_run_controls() -> tuple[int, int]:
    c = st.columns(2)
    c[0].number_input("Stop after N steps (0 = no limit)", min_value=0, max_value=1_000_000, step=10,
                      key="train_steps")
    c[1].number_input("Steps per tick (every 0.5 s)", min_value=1, max_value=50, step=1, key="train_steps_per_tick")
    ss = st.session_state
    return int(ss["train_steps"]), int(ss["train_steps_per_tick"])


def temperature_control() -> float:
    """The sampling temperature of the character-level LM (display only: it never changes the training)."""
    st.slider("Sampling temperature", 0.1, 2.0, step=0.1, key="temperature",
              help="x_{t+1} ~ softmax(y_t / temperature): below 1 the likeliest characters win more often, "
                   "above 1 the choice grows more random.")
    return float(st.session_state["temperature"])


def display_toggle(label: str, key: str, help: str | None = None) -> bool:
    """A display-only switch (never recomputes the analysis)."""
    return st.toggle(label, key=key, help=help)


def gate_choice(options: list[str]) -> str | None:
    if not options:
        return None
    if st.session_state.get("display_gate") not in options:
        st.session_state["display_gate"] = options[0]
    return st.segmented_control("Gate shown", options, key="display_gate", required=True)


__all__ = ["Settings", "init_session", "persist", "sidebar", "sync_url", "accept", "parse_value", "parse_variant",
           "settings_from_params", "config_from_text", "apply_config", "state_to_config", "training_controls",
           "training_task_control", "training_run_controls", "TRAINING_FIELDS", "display_toggle", "gate_choice",
           "layer_control", "temperature_control"]
