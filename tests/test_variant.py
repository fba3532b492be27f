"""A preset's variant (a second run of the same cells, drawn lighter): each run's label names only the settings
that change that run's cell (analysis.variant, ModelConfig.in_effect); a cell the variant changes nothing for gets
no variant run, and the heading says so once; notes shared by several runs are said once (alerts.said_once)."""
from __future__ import annotations

import dataclasses

import pytest

from analysis.alerts import said_once
from analysis.config import ExperimentConfig
from analysis.presets import PRESETS
from analysis.variant import variant_cells, variant_config, variant_heading, variant_label, variant_runs
from rnn_models.cells import cell_names, cell_type
from rnn_models.config import ModelConfig

SMALL = dict(seq_len=12, hidden_size=6, batch_size=4, jacobian_batch=2)
CURSE = PRESETS["curse-of-memory"]
MINGRU = PRESETS["mingru"]


# ---- which settings apply: ModelConfig.in_effect agrees with inapplicable() ----------------------------------
# a non-default value of every setting some kinds ignore (inapplicable() names each when given)
GIVEN = {"activation": "relu", "peephole": True, "forget_bias": 2.0, "layer_norm": True, "lru_r_min": 0.5,
         "lru_r_max": 0.95, "lru_phase_max": 3.0, "lru_gamma": False}


@pytest.mark.parametrize("cell", cell_names())
@pytest.mark.parametrize("field", list(GIVEN))
def test_in_effect_is_none_exactly_where_inapplicable_names_the_setting(cell, field):
    m = ModelConfig(cell=cell, hidden_size=4, **{field: GIVEN[field]})
    said = any(n.startswith(field) for n in m.inapplicable())
    assert (m.in_effect(field) is None) == said
    assert said == (field not in cell_type(cell).settings)  # the registry decides


@pytest.mark.parametrize("cell", cell_names())
def test_init_and_init_scale_apply_to_the_kinds_with_a_w_hh(cell):
    has_w = bool(cell_type(cell).gate_names)
    spectral = ModelConfig(cell=cell, hidden_size=4, init="spectral", init_scale=5.0)
    assert (spectral.in_effect("init"), spectral.in_effect("init_scale")) == (
        ("spectral", 5.0) if has_w else (None, None))
    # init_scale is read by xavier/orthogonal/identity/spectral only: with the default init it changes nothing
    assert ModelConfig(cell=cell, hidden_size=4, init_scale=5.0).in_effect("init_scale") is None
    assert spectral.in_effect("hidden_size") == 4 and spectral.in_effect("seed") == 0  # sizes apply to every kind


def test_chrono_is_the_default_init_for_a_kind_without_it():
    assert ModelConfig(cell="rnn", init="chrono").in_effect("init") == "default"
    assert ModelConfig(cell="lstm", init="chrono").in_effect("init") == "chrono"
    assert ModelConfig(cell="rnn", init="chrono").in_effect("chrono_tmax") is None


# ---- one label per run ---------------------------------------------------------------------------------------
def test_curse_of_memory_labels_each_cell_with_its_own_settings():
    """Before: both runs read "· init_scale=0.9, lru_r_min=0.895, lru_r_max=0.9" (the whole dict)."""
    assert variant_cells(CURSE.config, CURSE.variant) == {"rnn": "init_scale=0.9",
                                                          "lru": "lru_r_min=0.895, lru_r_max=0.9"}
    assert variant_label(CURSE.variant) == "init_scale=0.9, lru_r_min=0.895, lru_r_max=0.9"  # the variant itself
    assert variant_heading(CURSE.config, CURSE.variant) == "RNN: init_scale=0.9; LRU: lru_r_min=0.895, lru_r_max=0.9"
    runs = dict(variant_runs(CURSE.config, CURSE.variant))
    assert set(runs) == {"rnn · init_scale=0.9", "lru · lru_r_min=0.895, lru_r_max=0.9"}
    assert runs["rnn · init_scale=0.9"] == CURSE.config.replace(**CURSE.variant).for_cell("rnn")  # what runs is kept


def test_a_cell_the_variant_does_not_change_gets_no_variant_run_and_the_heading_says_why():
    assert variant_cells(MINGRU.config, MINGRU.variant) == {"gru": "init=spectral, init_scale=5.0"}
    other = variant_config(MINGRU.config, MINGRU.variant)
    assert other.cells == ("gru",) and other.init == "spectral" and other.init_scale == 5.0
    assert variant_heading(MINGRU.config, MINGRU.variant) == (
        "GRU: init=spectral, init_scale=5.0; no minGRU variant run (init, init_scale do not apply to it: it would "
        "repeat the base run)")
    c = ExperimentConfig(cell="rnn", compare=("rnn", "lstm"))
    assert variant_config(c, {"lru_r_min": 0.5}) is None and variant_runs(c, {"lru_r_min": 0.5}) == []
    assert variant_heading(c, {"lru_r_min": 0.5}) == (
        "no RNN and LSTM variant run (lru_r_min does not apply to them: it would repeat the base run)")
    assert "forget_bias keeps the base's value" in variant_heading(c.replace(forget_bias=1.0), {"forget_bias": 1.0})
    assert variant_heading(PRESETS["forget-bias"].config, {"forget_bias": 0.0}) == "forget_bias=0.0"  # one cell


def test_exported_figures_and_the_deck_heading_use_each_runs_own_label():
    from analysis.deck import heading
    from analysis.export.bundles import view_figures_of
    cfg = CURSE.config.replace(**SMALL)
    records: dict = {}
    views = view_figures_of(cfg, variant=CURSE.variant, records=records, views="gradients")
    assert set(records) == {"rnn", "lru", "rnn · init_scale=0.9", "lru · lru_r_min=0.895, lru_r_max=0.9"}
    names = [t.name for t in views["gradient-flow"]["grad_norm"].data if t.name]
    assert "RNN · init_scale=0.9 ‖∂L/∂h<sub>t</sub>‖" in names
    assert "LRU · lru_r_min=0.895, lru_r_max=0.9 ‖∂L/∂h<sub>t</sub>‖" in names
    assert not any(n.startswith("RNN") and "lru_" in n for n in names)
    assert not any(n.startswith("LRU") and "init_scale" in n for n in names)
    assert heading(CURSE.config, "curse-of-memory", CURSE.variant)[1][-1].endswith(
        "variant (lighter colour): RNN: init_scale=0.9; LRU: lru_r_min=0.895, lru_r_max=0.9")
    m = view_figures_of(MINGRU.config.replace(**SMALL), variant=MINGRU.variant, records=(rec := {}),
                        views="gradients")
    assert set(rec) == {"gru", "mingru", "gru · init=spectral, init_scale=5.0"} and m


def test_the_estimate_counts_only_the_variant_runs_that_run():
    from analysis.limits import estimate
    c = MINGRU.config
    assert estimate(c, MINGRU.variant).flops == estimate(c).flops + estimate(c.for_cell("gru").replace(
        init="spectral", init_scale=5.0)).flops


# ---- notes said once -----------------------------------------------------------------------------------------
def test_the_same_note_of_several_runs_is_said_once_naming_its_cells():
    """Before: "RNN (linear), RNN · init_scale=0.9, lru_r_min=0.895, lru_r_max=0.9: lru_r_min applies to ...": the
    note once per run."""
    note = "lru_r_min applies to the LRU only; ignored for rnn"
    got = said_once([("rnn", f"RNN (linear): {note}"), ("lru", "LRU: other"), ("rnn · init_scale=0.9",
                     f"RNN · init_scale=0.9: {note}"), ("lstm", "LSTM: other"), ("rnn · init_scale=0.9",
                     "RNN · init_scale=0.9: its own")])
    assert got == [f"RNN (linear): {note}", "LRU, LSTM: other", "RNN · init_scale=0.9: its own"]


def test_a_variant_run_repeats_its_base_runs_notes():
    """What said_once merges really happens: the base and variant runs of the RNN carry the same inapplicable notes."""
    base = CURSE.config.for_cell("rnn")
    other = CURSE.config.replace(**CURSE.variant).for_cell("rnn")
    notes = base.model_config(8).inapplicable()
    assert notes and notes == other.model_config(8).inapplicable()
    assert dataclasses.replace(base) == base  # (frozen configs: nothing above changed them)
