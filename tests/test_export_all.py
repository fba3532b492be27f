"""analysis.export's export_all and the command line's ``export``: every view's figures written into a folder, its
zip and config.json, one-line refusals of a bad folder or format (helpers and file checks from test_export)."""
from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest

from analysis import export
from analysis.config import ExperimentConfig
from test_export import CHECK, figures_or_skip, needs_browser, tiny_config

def test_export_all_rejects_bad_out_dir_and_formats(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    for bad in (str(f), str(f / "sub"), ""):
        with pytest.raises(ValueError) as e:
            export.export_all(tiny_config(), bad, formats=("csv",))
        assert "\n" not in str(e.value) and "out_dir" in str(e.value)
    with pytest.raises(ValueError, match="'bmp'"):
        export.export_all(tiny_config(), str(tmp_path / "o"), formats=("csv", "bmp"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def check_export_dir(out: Path, paths: list[str], formats, config: ExperimentConfig):
    figures = figures_or_skip()
    assert (out / "config.json").is_file() and (out / "figures.zip").is_file()
    assert ExperimentConfig.from_json((out / "config.json").read_text()) == config
    written = {Path(p).resolve() for p in paths}
    files = [p for p in out.rglob("*") if p.is_file()]
    assert written == {p.resolve() for p in files}
    views = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert views and set(views) <= {export.bundles._safe_name(v) for v in figures.VIEWS}
    n_figs = 0
    for view in views:
        stems = {p.name.rsplit(".", 1)[0] for p in (out / view).iterdir()}
        for stem in stems:
            n_figs += 1
            for fmt in formats:
                CHECK[fmt]((out / view / f"{stem}.{fmt}").read_bytes())
            if "json" in formats:
                doc = json.loads((out / view / f"{stem}.json").read_text())
                assert doc["config"]["seq_len"] == config.seq_len and doc["traces"]
                assert doc["config"]["hidden_size"] == config.hidden_size
    assert n_figs > 0
    z = zipfile.ZipFile(out / "figures.zip")
    rel = {p.relative_to(out).as_posix() for p in files} - {"figures.zip"}
    assert set(z.namelist()) == rel
    for name in rel:
        assert z.read(name) == (out / name).read_bytes()
    return n_figs


@needs_browser
def test_export_all_end_to_end(tmp_path):
    """Every figure of every view in every format, for one RNN (9 figures, 27 renders: each ~0.2 s of Chromium
    here, whatever the format; the comparison's 14 figures are rendered by the deck tests and, in each format, the
    figures of figure_bytes and view_zip)."""
    figures_or_skip()
    config = ExperimentConfig(seq_len=12, hidden_size=8, cell="rnn", batch_size=4)
    out = tmp_path / "new" / "dir"
    paths = export.export_all(config, str(out), formats=export.FORMATS)
    check_export_dir(out, paths, export.FORMATS, config)
    assert not any("train" in p.name for p in out.iterdir())  # train_steps = 0: no training view


def test_command_line_export_with_training_and_no_browser(tmp_path, cli_inproc):
    """``python -m analysis export`` (its main() in this process, conftest.run_main) with BROWSER_PATH pointing
    nowhere: CSV/JSON need no browser, and train_steps > 0 adds the training view. (The images of export_all are
    checked by test_export_all_end_to_end.)"""
    figures = figures_or_skip()
    config = tiny_config(task="adding", train_steps=2)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(config.to_json())
    out = tmp_path / "out"
    r = cli_inproc("export", "--config", cfg, "--out", out, "--formats", "csv,json",
                   env={"BROWSER_PATH": str(tmp_path / "none")})
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    check_export_dir(out, paths, ("csv", "json"), config)
    views = {p.name for p in out.iterdir() if p.is_dir()}
    assert {v for v in figures.VIEWS if export.bundles._is_training_view(v)} <= views
    for p in out.rglob("*.csv"):
        fig_json = json.loads(p.with_suffix(".json").read_text())
        rows = list(csv.DictReader(io.StringIO(p.read_text())))
        assert {r["trace"] for r in rows} <= {t["name"] for t in fig_json["traces"]}


def test_command_line_bad_out_dir_is_one_line(tmp_path, capsys):
    from analysis.__main__ import main
    f = tmp_path / "file"
    f.write_text("x")
    rc = main(["export", "--seq-len", "12", "--hidden-size", "8", "--out", str(f), "--formats", "csv"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "out_dir" in err


