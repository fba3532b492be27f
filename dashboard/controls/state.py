"""Widget state <-> ExperimentConfig: the fields, their text form (URL), Settings, variants, uploaded configs."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

import streamlit as st

from analysis.config import ExperimentConfig
from analysis.own_cell import OwnCell
from analysis.variant import value_text
from rnn_models.cells import by_kind
from rnn_models.config import CELLS, ConfigError, shown

FIELDS = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
FIELD_TYPES = typing.get_type_hints(ExperimentConfig)
# config fields edited by one widget of the same key
PLAIN_FIELDS = [n for n in FIELDS if n not in ("cell", "compare", "forget_bias", "input_size", "inputs_path",
                                               "state_dict_path", "module", "readout", "embedding", "targets_path",
                                               "h0_path", "batch_first")]  # own-model fields: dashboard/own_model
# fields that change during training (Trainer.update) and never change the analysis
TRAINING_FIELDS = ("optimizer", "lr", "clip", "clip_threshold", "train_steps")
# every widget key whose value must survive runs where its widget is not drawn
STATE_KEYS = tuple(PLAIN_FIELDS) + ("cell_compare", "forget_bias_on", "forget_bias", "input_size", "preset",
                                     "own_module", "own_readout", "own_embedding", "own_batch_first",
                                     "variant", "display_log", "display_band",
                                     "display_log_jac", "display_gate", "train_task", "train_steps_per_tick",
                                     "temperature")
URL_RESERVED = ("view", "atlas")  # bound by Streamlit itself: the tabs, the Atlas preset
CELL_NAMES = by_kind("label")  # kind -> its label, as the cell classes declare it

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
    return value_text(value)  # the variant labels' form too (analysis.variant)

PATH_FIELDS = ("inputs_path", "state_dict_path", "targets_path", "h0_path")
PATH_MESSAGE = ("cannot be set in the dashboard (from a link, a variant or an uploaded config): nothing a visitor "
                "types names a file on the server")
MAX_VALUE_CHARS = 200  # a URL / variant value longer than this is refused without being read


def parse_value(name: str, text: str):
    """A config field's value from its URL / variant text; ConfigError naming the field."""
    if name not in FIELDS:
        raise ConfigError(f"unknown setting {shown(name)}: allowed are {', '.join(FIELDS)}")
    if name in PATH_FIELDS:
        raise ConfigError(f"{name} {PATH_MESSAGE}")
    if len(str(text)) > MAX_VALUE_CHARS:
        raise ConfigError(f"{name}: the value is {len(str(text)):,} characters long (at most {MAX_VALUE_CHARS})")
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
        raise ConfigError(f"{name}={shown(s)} must be true or false")
    if base is int:
        try:
            return int(s)
        except ValueError:
            raise ConfigError(f"{name}={shown(s)} must be an integer") from None
    if base is float:
        try:
            return float(s)
        except ValueError:
            raise ConfigError(f"{name}={shown(s)} must be a number") from None
    return s

def diff(config: ExperimentConfig, base: ExperimentConfig) -> dict[str, str]:
    a, b = config.to_dict(), base.to_dict()
    return {k: _to_text(k, config.__dict__[k]) for k in a if a[k] != b[k]}

def parse_variant(text: str) -> dict:
    """'forget_bias=0, layer_norm=false' -> {'forget_bias': 0.0, 'layer_norm': False}; ConfigError on bad text."""
    out = {}
    if len(str(text or "")) > 20 * MAX_VALUE_CHARS:
        raise ConfigError(f"variant: the text is {len(str(text)):,} characters long (at most {20 * MAX_VALUE_CHARS})")
    for part in (p.strip() for p in str(text or "").replace(";", ",").split(",")):
        if not part:
            continue
        if "=" not in part:
            raise ConfigError(f"variant: {shown(part)} must look like field=value, e.g. forget_bias=0")
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
    for name in ("init_scale", "horizon_threshold", "lr", "clip_threshold", "forget_bias"):
        ss[name] = float(ss[name])

def state_to_config() -> ExperimentConfig:
    """The widgets' config; ConfigError (one line naming the field) if they are invalid together."""
    ss = st.session_state
    cells = [c for c in CELLS if c in (ss.get("cell_compare") or [])]
    if not cells and OwnCell.name in (ss.get("cell_compare") or []):  # Your cell alone (dashboard/own_step.py): the
        # settings keep the last good cells (drawn only if your cell cannot be analysed)
        cells = list(ExperimentConfig.from_json(ss["last_good"]).cells) if ss.get("last_good") else [CELLS[0]]
    if not cells:
        raise ConfigError(f"cells: choose at least one of {', '.join(CELL_NAMES.values())} to analyse")
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
    if len(text) > MAX_UPLOAD_BYTES:
        raise ConfigError(f"the uploaded file has {len(text):,} bytes: a settings file is at most "
                          f"{SETTINGS_UPLOAD_MB} MiB ({MAX_UPLOAD_BYTES:,} bytes)")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError("the uploaded file is not UTF-8 text: upload a JSON config") from None
    cfg = ExperimentConfig.from_json(text)
    for name in PATH_FIELDS:
        if getattr(cfg, name) is not None:
            raise ConfigError(f"{name} {PATH_MESSAGE}")
    return cfg


SETTINGS_UPLOAD_MB = 1  # MiB: the settings uploader shows it (max_upload_size) and this check enforces it
MAX_UPLOAD_BYTES = SETTINGS_UPLOAD_MB * 2**20

# ---- callbacks ----------------------------------------------------------------------------------------------
