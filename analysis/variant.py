"""A variant: a second run of the same cells with a few settings changed, drawn beside the first (lighter colour).

    variant_label(variant, config=None, cell=None) -> str   "init_scale=0.9": a variant run's key suffix, legend
                                                            and file names; with ``config`` and ``cell``, only the
                                                            settings that change that cell's run ("" when none do)
    variant_cells(config, variant) -> {cell: label}          the cells the variant changes, each with its own label
    variant_config(config, variant) -> ExperimentConfig | None   the variant's run: those cells alone (None: none)
    variant_runs(config, variant) -> [(key, single-cell config)]  keyed "cell · label" as every view draws them
    variant_heading(config, variant) -> str                  the words of a heading: what each cell's variant
                                                            changes, and which cells have no variant run and why

A setting applies to a cell's run when it changes what that cell runs: a model field when its
``ModelConfig.in_effect`` (the registry's ``settings``, W_hh-less kinds ignoring init and init_scale) differs
between the base and the variant, any other field (T, B, the task, the analysis settings) when its value differs.
The curse-of-memory preset's variant {init_scale: 0.9, lru_r_min: 0.895, lru_r_max: 0.9} is "init_scale=0.9" for
the RNN and "lru_r_min=0.895, lru_r_max=0.9" for the LRU. A cell that none of the variant's settings change gets
no variant run (it would repeat its base run line for line); the heading says so once, naming the settings.
"""
from __future__ import annotations

import dataclasses

from rnn_models.cells import cell_type
from rnn_models.config import ModelConfig

from .config import ExperimentConfig

SEP = " · "  # between a cell and its variant's label in a results key: "lstm · forget_bias=0.0"
_MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))
_ORDER = {f.name: i for i, f in enumerate(dataclasses.fields(ExperimentConfig))}


def value_text(value) -> str:
    """A setting's value as the variant's text writes it (and the dashboard reads back): 0.9 -> "0.9",
    True -> "true", None -> "none", ("rnn", "lstm") -> "rnn,lstm"."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _split(config: ExperimentConfig, variant: dict, cell: str) -> tuple[dict, list[str], list[str]]:
    """({setting: value} of ``variant`` that changes ``cell``'s run, [the settings that do not apply to the cell],
    [the settings that apply but keep the base's value])."""
    base, other = config.for_cell(cell), config.replace(**variant).for_cell(cell)
    I = config.input_size or 8
    mb, mo = base.model_config(I, cell), other.model_config(I, cell)
    changed, ignored, same = {}, [], []
    for k, v in sorted(variant.items(), key=lambda kv: _ORDER.get(kv[0], len(_ORDER))):
        if k in _MODEL_FIELDS:
            was, now = mb.in_effect(k), mo.in_effect(k)
        else:
            was, now = getattr(base, k), getattr(other, k)
        if was != now:
            changed[k] = v
        elif k in _MODEL_FIELDS and was is None and getattr(mb, k) != getattr(mo, k):
            ignored.append(k)  # another value, which the cell ignores as it ignored the base's
        else:
            same.append(k)
    return changed, ignored, same


def variant_label(variant: dict, config: ExperimentConfig | None = None, cell: str | None = None) -> str:
    """{"forget_bias": 0.0} -> "forget_bias=0.0", the settings in ExperimentConfig's field order; with ``config``
    and ``cell``, only the settings that change that cell's run (the module docstring), "" when none do."""
    if config is not None and cell is not None:
        variant = _split(config, variant, cell)[0]
    # in the config's field order, whatever the dict's (a cache key's JSON sorts it): one run, one label
    items = sorted((variant or {}).items(), key=lambda kv: _ORDER.get(kv[0], len(_ORDER)))
    return ", ".join(f"{k}={value_text(v)}" for k, v in items)


def variant_cells(config: ExperimentConfig, variant: dict | None) -> dict[str, str]:
    """{cell: its variant label} of the cells of ``config`` the variant changes, in the config's order."""
    if not variant:
        return {}
    config.replace(**variant)  # a bad variant fails here, in one line naming the field
    labels = {cell: variant_label(variant, config, cell) for cell in config.cells}
    return {c: lab for c, lab in labels.items() if lab}


def variant_config(config: ExperimentConfig, variant: dict | None) -> ExperimentConfig | None:
    """The variant's run: ``config`` with the variant applied, comparing only the cells it changes (None: it
    changes none of them)."""
    cells = tuple(variant_cells(config, variant))
    if not cells:
        return None
    return config.replace(**variant).replace(cell=cells[0], compare=cells if len(cells) > 1 else ())


def variant_key(cell: str, label: str) -> str:
    """A variant run's results key: "lstm · forget_bias=0.0"."""
    return f"{cell}{SEP}{label}"


def variant_runs(config: ExperimentConfig, variant: dict | None) -> list[tuple[str, ExperimentConfig]]:
    """[("cell · label", that cell's single-cell config with the variant)] for each cell the variant changes."""
    other = variant_config(config, variant)
    if other is None:
        return []
    return [(variant_key(c, lab), other.for_cell(c)) for c, lab in variant_cells(config, variant).items()]


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def variant_heading(config: ExperimentConfig, variant: dict | None) -> str:
    """The variant in a heading: its label when it changes every cell alike ("forget_bias=0.0"); else each
    cell's own ("RNN: init_scale=0.9; LRU: lru_r_min=0.895, lru_r_max=0.9"), then the cells it changes nothing
    for, once ("no minGRU variant run: init, init_scale do not apply to it")."""
    if not variant:
        return ""
    labels = variant_cells(config, variant)
    whole = variant_label(variant)
    if len(labels) == len(config.cells) and set(labels.values()) == {whole}:
        return whole
    parts = [f"{cell_type(c).label}: {lab}" for c, lab in labels.items()]
    by_reason: dict[str, list[str]] = {}
    for c in (c for c in config.cells if c not in labels):
        _, ignored, same = _split(config, variant, c)
        why = [f"{', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply to"] if ignored else []
        why += [f"{', '.join(same)} {'keeps' if len(same) == 1 else 'keep'} the base's value for"] if same else []
        by_reason.setdefault(" and ".join(why), []).append(cell_type(c).label)
    for why, who in by_reason.items():
        them = "it" if len(who) == 1 else "them"
        parts.append(f"no {_names(who)} variant run ({why} {them}: it would repeat the base run)")
    return "; ".join(parts)


__all__ = ["value_text", "variant_label", "variant_cells", "variant_config", "variant_key", "variant_runs",
           "variant_heading", "SEP"]
