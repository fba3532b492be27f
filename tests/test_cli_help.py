"""The command line as a new user meets it: --help names the program typed and describes every command, every flag
has help, choice flags list the values the config's validation accepts, output files get the user's umask, and
every problem with a file names the file (one line, exit 2)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import runpy
import stat
import sys
import typing
from pathlib import Path
from unittest import mock

import pytest

import gdlab
from analysis.__main__ import _write_atomic, build_parser, main
from analysis.config import FIELD_CHOICES, ExperimentConfig
from analysis.flag_help import FIELD_HELP
from rnn_models.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--seq-len", "5", "--hidden-size", "4", "--batch-size", "2"]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def gdlab_parser() -> argparse.ArgumentParser:
    p = build_parser(prog="gdlab")
    gdlab._add_dashboard(p)
    return p


def help_text(argv, capsys, entry=main) -> str:
    with pytest.raises(SystemExit) as e:
        entry(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_names_the_program_typed_and_describes_every_command(capsys):
    out = help_text(["--help"], capsys, gdlab.main)
    assert out.startswith("usage: gdlab ") and "python -m analysis" not in out
    assert "{run,train,export}" not in out
    for command in ("run", "train", "export", "sweep", "dashboard"):
        assert re.search(rf"^    {command}\b", out, re.M), command
    out = help_text(["--help"], capsys)
    assert out.startswith("usage: python -m analysis ")
    with pytest.raises(SystemExit) as e:  # `python -m gdlab run --help`: gdlab/__main__.py run here, as -m runs it
        with mock.patch.object(sys, "argv", [str(ROOT / "gdlab" / "__main__.py"), "run", "--help"]):
            runpy.run_module("gdlab", run_name="__main__", alter_sys=True)
    run_help = capsys.readouterr().out
    assert e.value.code == 0 and run_help.startswith("usage: python -m gdlab run "), run_help[:200]
    from rnn_models.cells import cell_names
    assert cell_names()[:3] == ("rnn", "lstm", "gru") and len(cell_names()) >= 7  # every registered kind offered
    assert f"[--cell {{{','.join(cell_names())}}}]" in run_help
    assert "--activation {tanh,relu,sigmoid,linear}" in run_help


def test_every_flag_of_every_command_has_help():
    assert set(FIELD_HELP) == {f.name for f in dataclasses.fields(ExperimentConfig)}
    for name, p in subparsers(gdlab_parser()).items():
        assert p.description, name
        for a in p._actions:
            assert a.help and a.help != argparse.SUPPRESS, (name, a.option_strings or a.dest)
        p.format_help()  # every help string formats (a stray % would raise here)


def _rejection(field: str) -> str | None:
    """The validation's message for a value no field accepts, when it is a 'choose one of' message."""
    try:
        ExperimentConfig(**{field: "no-such-value"})
    except ConfigError as e:
        return str(e) if "choose one of" in str(e) else None
    raise AssertionError(f"{field}='no-such-value' was accepted")


def test_choice_flags_list_exactly_what_the_validation_accepts():
    hints = typing.get_type_hints(ExperimentConfig)
    run = subparsers(build_parser())["run"]
    actions = {a.dest: a for a in run._actions}
    # every str field but the file paths (any string passes until the file is read) and compare (a comma list of
    # cells, checked value by value: its help names them)
    str_fields = [f.name for f in dataclasses.fields(ExperimentConfig)
                  if str in (typing.get_args(hints[f.name]) or (hints[f.name],)) and not f.name.endswith("_path")
                  and f.name != "compare"]
    for name in str_fields:
        msg = _rejection(name)
        if name not in FIELD_CHOICES:
            assert msg is None, f"{name} is validated against a list but its flag has no choices: {msg}"
            continue
        assert msg is not None and msg.endswith("choose one of " + ", ".join(FIELD_CHOICES[name])), msg
        assert tuple(actions[name].choices) == FIELD_CHOICES[name], name
        assert "{" + ",".join(FIELD_CHOICES[name]) + "}" in run.format_usage(), name
        for value in FIELD_CHOICES[name]:  # each listed value passes the field's own check
            try:
                ExperimentConfig(**{name: value})
            except ConfigError as e:
                assert "is not allowed" not in str(e), e
    assert set(FIELD_CHOICES) <= set(str_fields)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=["022", "077", "002"])
def test_outputs_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        out = tmp_path / "r.json"
        assert main(["run", *TINY, "--json", str(out)]) == 0
        _write_atomic(str(tmp_path / "direct.json"), "{}")
    finally:
        os.umask(old)
    assert _mode(out) == 0o666 & ~mask and _mode(tmp_path / "direct.json") == 0o666 & ~mask
    assert json.loads(out.read_text())["config"]["seq_len"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["direct.json", "r.json"]  # no temporary left behind


def test_export_files_follow_the_umask(tmp_path, capsys):
    old = os.umask(0o027)
    try:
        assert main(["export", *TINY, "--formats", "csv,json", "--out", str(tmp_path / "figs")]) == 0
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "figs").rglob("*") if p.is_file()]
    assert files and {_mode(p) for p in files} == {0o640}


def one_line_error(argv, capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_every_file_error_names_the_file(tmp_path, capsys):
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\x80\x81 not text")
    not_json = tmp_path / "words.json"
    not_json.write_text("cell = lstm\n")
    bad_field = tmp_path / "field.json"
    bad_field.write_text('{"cell": "tree"}')
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    out = tmp_path / "o.json"
    cases = [
        (["--config", str(binary)], str(binary), "UTF-8"),
        (["--config", str(not_json)], str(not_json), "JSON"),
        (["--config", str(bad_field)], str(bad_field), "cell"),
        (["--config", str(tmp_path)], str(tmp_path), "directory"),
        (["--config", str(tmp_path / "missing.json")], str(tmp_path / "missing.json"), "No such file"),
        (["--json", str(tmp_path)], str(tmp_path), "directory"),
        (["--json", str(a_file / "o.json")], str(a_file / "o.json"), "does not exist"),
    ]
    for flags, path, why in cases:
        argv = ["run", *TINY, *flags] + ([] if "--json" in flags else ["--json", str(out)])
        err = one_line_error(argv, capsys)
        assert path in err and why in err, (flags, err)
        assert "codec" not in err and not out.exists()


def test_a_binary_resume_file_is_named(tmp_path, capsys):
    resume = tmp_path / "points.jsonl"
    resume.write_bytes(b"\xff\xfe\x00binary")
    err = one_line_error(["sweep", *TINY, "--vary", "init_scale=0.5,1", "--quiet", "--resume", str(resume)], capsys)
    assert str(resume) in err and "UTF-8" in err


def test_an_unwritable_output_is_named(tmp_path, capsys, monkeypatch):
    """A write that the OS refuses (as root, permissions do not refuse: an OSError is raised instead)."""
    import analysis.__main__ as cli

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(cli.tempfile, "mkstemp", refuse)
    err = one_line_error(["run", *TINY, "--json", str(tmp_path / "o.json")], capsys)
    assert str(tmp_path / "o.json") in err and "Permission denied" in err
    assert list(tmp_path.iterdir()) == []
