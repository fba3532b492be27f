"""A session's start and the URL: presets, query parameters -> widget state, settings -> query parameters."""
from __future__ import annotations

import streamlit as st

from analysis.config import ExperimentConfig
from analysis.presets import DEFAULT_PRESET, PRESETS
from rnn_models.config import ConfigError, shown

from .state import (
    STATE_KEYS,
    URL_RESERVED,
    Settings,
    _to_text,
    apply_config,
    config_from_text,
    diff,
    parse_value,
    parse_variant,
    state_to_config,
    variant_text,
)

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
        errors.append(f"preset={shown(name)} in the link is not known: choose one of {', '.join(PRESETS)}")
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
    twice = [k for k in st.query_params.keys() if len(st.query_params.get_all(k)) > 1]
    name, cfg, variant, errors = settings_from_params(params)
    if twice:
        errors.append(f"The link gives {shown(twice[0])} more than once: the last value is used.")
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
