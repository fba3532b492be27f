"""Command line: ``python -m analysis {run,train,export,sweep} ...`` (and ``gdlab``, which adds ``dashboard``).

    run      analyse one configuration; --json PATH writes the result (the JSON contract), else a summary
    train    train step by step, printing one line per step; --json PATH writes the history
    export   the dashboard's figures of one configuration as PNG/SVG/PDF + CSV/JSON + a zip, into --out DIR,
             and/or a slide deck (--pptx FILE.pptx); a progress bar on stderr
    sweep    one or two settings (--vary FIELD=SPEC) over seeds, locally or on Ray (see analysis/sweep.py)

Flags are built from ``ExperimentConfig``'s fields (``--seq-len`` for ``seq_len``), with their help line
(``flag_help.FIELD_HELP``) and, for a field that takes one of a few values, the values its validation accepts
(``config.FIELD_CHOICES``); ``--config FILE`` reads a JSON config (or a result file), ``--preset NAME`` starts from
a preset; flags given on the line override them. Bad input exits with status 2 and ONE line on stderr naming the
problem (and the file, for a file's problem); nothing is written. Files are written with the user's umask.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import typing

from rnn_models.cells import cell_type
from rnn_models.config import ConfigError

from .config import FIELD_CHOICES, ExperimentConfig
from .flag_help import FIELD_HELP

# flag names fixed by the contract where they differ from the field names
RENAMES = {"state_dict_path": "load-state-dict", "inputs_path": "inputs", "targets_path": "targets", "h0_path": "h0"}
PATH_FIELDS = ("inputs_path", "state_dict_path", "targets_path", "h0_path")
DESCRIPTION = ("gradient-dynamics lab: exact gradient norms, Jacobian products and spectra of RNNs, LSTMs and GRUs "
               "(run), training (train), slide-ready figures and decks (export), phase diagrams (sweep). "
               "'%(prog)s COMMAND --help' lists a command's flags.")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"error: {message}\n")


def _flag(name: str) -> str:
    return "--" + RENAMES.get(name, name.replace("_", "-"))


def _field_help(f: dataclasses.Field) -> str:
    """FIELD_HELP's line and the field's default unless the line says it (argparse %-formats help: a literal %
    is doubled)."""
    text = FIELD_HELP[f.name]
    if "default" not in text:
        default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        shown = "none" if default in (None, "") else str(default).lower() if isinstance(default, bool) else default
        text += f" (default: {shown})"
    return text.replace("%", "%%")


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ExperimentConfig field: its help line, its type, and for a field that takes one of a few
    values the values its validation accepts (``FIELD_CHOICES``, shown as {a,b,c})."""
    hints = typing.get_type_hints(ExperimentConfig)
    for f in dataclasses.fields(ExperimentConfig):
        t = hints[f.name]
        kw = {"dest": f.name, "default": None, "help": _field_help(f)}
        if t is bool:
            p.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kw)
            continue
        base = next((a for a in typing.get_args(t) if a is not type(None)), t) if typing.get_args(t) else t
        if f.name == "compare":
            p.add_argument("--compare", metavar="CELL,CELL", **kw)
        elif f.name in FIELD_CHOICES:
            p.add_argument(_flag(f.name), type=base, choices=FIELD_CHOICES[f.name], **kw)
        else:
            meta = "PATH" if f.name in PATH_FIELDS else "NAME" if base is str else "N" if base is int else "X"
            p.add_argument(_flag(f.name), type=base, metavar=meta, **kw)
    p.add_argument("--config", dest="config_file", default=None, metavar="PATH",
                   help="a JSON config or a result file to start from; flags override it")
    from .presets import PRESETS
    p.add_argument("--preset", dest="preset", default=None, metavar="NAME", choices=tuple(PRESETS),
                   help=f"start from a preset's settings, one of {', '.join(PRESETS)}; --config and flags override it")
    p.add_argument("--no-limits", action="store_true",
                   help="skip the cost check (GDLAB_MAX_MEMORY_MB / GDLAB_MAX_GFLOP, see analysis/limits.py)")


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    if getattr(args, "step_state", None):
        raise ConfigError("--step-state gives the weights of a --step module: give --step FILE.py:NAME too")
    base = {}
    if getattr(args, "preset", None):
        from .presets import PRESETS
        if args.preset not in PRESETS:
            raise ConfigError(f"--preset {args.preset!r} is not known: choose one of {', '.join(PRESETS)}")
        base = PRESETS[args.preset].config.to_dict()
    if args.config_file:
        base.update(_read_config_file(args.config_file).to_dict())
    given = {f.name for f in dataclasses.fields(ExperimentConfig) if getattr(args, f.name) is not None}
    base.update({f: getattr(args, f) for f in given})
    if base.get("state_dict_path") and base.get("task", "random") == "random":
        from .own_files import reconcile  # flags that contradict the file: one line naming both values
        base = reconcile(base, given)
    return ExperimentConfig.from_dict(base)


def _read_config_file(path: str) -> ExperimentConfig:
    """``--config PATH``: every problem with the file is one line that names it."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        return ExperimentConfig.from_json(data.decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"--config {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path}: not UTF-8 text (give a JSON config or a result file)") from None
    except ConfigError as e:
        raise ConfigError(f"--config {path}: {e}") from None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomic(path: str, text: str, flag: str = "--json") -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename (a reader never sees
    half a file), with the permissions a plain open() would give: 0o666 & ~umask (mkstemp makes it 0o600)."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise ConfigError(f"{flag} {path}: directory {d} does not exist")
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path}: is a directory (give a file name)")
    try:
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot write in {d}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _task(d: dict) -> str:
    """"task adding", or for a model's own loss what the file and flags decided (loss and where it is taken)."""
    t = d.get("task") or {}
    name = t.get("name") or d["config"]["task"]
    if d["config"].get("state_dict_path") and d["config"]["task"] == "random":
        name = {"random": "the random probe u.h", "own loss": "your loss function",
                "own readout": "your readout's loss"}.get(name, name)
        return f"own model, {name} at {'the last step' if d.get('loss_steps') == 'last' else 'every step'}"
    return f"task {name}"


def _norm_text(v, d: dict, t: int) -> str:
    """A norm as '1.2e-05', or from its exact log10 where it is below float's range ('10^-399.6', never '0')."""
    lg = (d.get("log10_grad_norm") or [None])[t] if d.get("log10_grad_norm") else None
    if v is None and lg is None:
        return "nan"
    if (v is None or v == 0) and lg is not None:
        return f"10^{lg:.4g} (below float's range; exact in log10)"
    return f"{v:.3g}"


def _bare(note: str) -> str:
    """"uses sigmoid/tanh gates" -> "sigmoid/tanh gates": a kind's activation note as a parenthesis."""
    return note.removeprefix("uses ").removeprefix("is ")


def _summary(d: dict) -> str:
    c, j = d["config"], d["jacobian"]
    gn = d["grad_norm"]
    kind = cell_type(c["cell"])
    lines = [
        f"{c['cell']} ({c['activation'] if 'activation' in kind.settings else _bare(kind.activation_note)}), "
        + (f"init {c['init']} x{c['init_scale']}, " if kind.gate_names else "")  # a W_hh scheme, where one applies
        + f"H={c['hidden_size']}, T={c['seq_len']}, B={c['batch_size']}, {_task(d)}, {c['dtype']}",
        f"||dL/dh_t||: t=T-1 {_norm_text(gn[-1], d, -1)}, t=0 {_norm_text(gn[0], d, 0)}",
        (f"||dh_T-1/dh_T-1-k||_2 at lag {j['lag'][-1]}: {j['spectral_norm'][-1]!s}"
         f" (log10 {j['log10_spectral_norm'][-1]!s})") if j else "Jacobians: not computed (--views)",
        (d.get("memory_horizon_detail") or {}).get("text", f"memory horizon: {d['memory_horizon']}") if j else
        "memory horizon: not computed (--views)",
        f"spectral radius of W_hh: {d['spectral_radius']}",
    ] + ([f"parameter sensitivity log10 S_T-1/E_T-1: {d['param_sensitivity']['log10_ratio'][-1]!s} "
          f"({d['param_sensitivity']['method']})"] if d.get("param_sensitivity") else []) + [
        f"non-finite: {d['nonfinite']}",
    ] + [f"note: {n}" for n in d["notes"]]
    return "\n".join(lines)


def cmd_run(args) -> int:
    from .compute_views import ESTIMATE_SINK, PRINT_ABOVE_SECONDS, estimate_seconds, estimate_text
    from .experiment import run_experiment
    from .progress import StderrBar
    config = config_from_args(args) if not args.step else None  # --step: your own recurrence (analysis.step_cli)
    bar = StderrBar()

    def say(cost):  # before a run longer than ~10 s: the estimate on its own line
        if estimate_seconds(cost) > PRINT_ABOVE_SECONDS:
            print(estimate_text(cost), file=sys.stderr, flush=True)

    token = ESTIMATE_SINK.set(say)
    try:
        if config is None:
            from .step_cli import step_result
            d = step_result(args, bar, args.views).to_dict()
        elif len(config.cells) > 1:  # --compare: every cell, on the same data and settings
            from .experiment import run_comparison
            ds = {k: r.to_dict() for k, r in run_comparison(config, progress=bar, views=args.views).items()}
        else:
            d = run_experiment(config, progress=bar, views=args.views).to_dict()
    finally:
        ESTIMATE_SINK.reset(token)
        bar.close()
    if config is not None and len(config.cells) > 1:
        if args.json:  # {"comparison": [cells], "results": {cell: the one-run JSON}}
            _write_atomic(args.json, json.dumps({"comparison": list(ds), "results": ds}, allow_nan=False))
            print(f"wrote {args.json} ({sum(d['timings']['total_s'] for d in ds.values()):.2f} s, {len(ds)} cells)")
        else:
            print("\n\n".join(f"== {k} ==\n" + _summary(d) for k, d in ds.items()))
        return 0
    text = json.dumps(d, allow_nan=False)
    if args.json:
        _write_atomic(args.json, text)
        print(f"wrote {args.json} ({d['timings']['total_s']:.2f} s)")
    else:
        from .step_cli import step_summary
        print(_summary(d) if config is not None else step_summary(d, _summary))
    return 0


def cmd_train(args) -> int:
    from .training import Trainer
    config = config_from_args(args)
    tr = Trainer(config, on_nonfinite=args.on_nonfinite)
    steps = config.train_steps or 100
    lm = config.task == "charlm"
    samples = []
    for _ in range(steps):
        r = tr.step()
        ppl = f" perplexity {r.perplexity:.4g} (uniform {math.exp(tr.chance_loss):.4g})" if lm else ""
        print(f"step {r.step:5d} loss {r.loss:.4g} (chance {tr.chance_loss:.4g}){ppl} |g| {r.grad_norm_before:.3g}"
              f" -> {r.grad_norm_after:.3g}{' clipped' if r.clipped else ''}"
              f"{' NONFINITE ' + json.dumps(r.nonfinite) if r.nonfinite else ''}")
        if lm and not tr.stopped and args.sample_every and (r.step + 1) % args.sample_every == 0:
            text = tr.sample(args.sample_chars, temperature=args.temperature, seed=r.step)
            samples.append({"step": r.step, "temperature": args.temperature, "text": text})
            print(f"  sample (T={args.temperature:g}): {text!r}")
        if tr.stopped:
            print(f"stopped: non-finite value at step {r.step}: {json.dumps(tr.stopped)}")
            break
    if args.json:
        _write_atomic(args.json, json.dumps({"config": tr.config.to_dict(), "chance_loss": tr.chance_loss,
                                             "steps": [r.to_dict() for r in tr.records], "stopped": tr.stopped,
                                             "samples": samples},
                                            allow_nan=False))
    return 0


def cmd_export(args) -> int:
    from .export import export_all, scaled
    if not args.out and not args.pptx:
        raise ValueError("export needs --out DIR (figure files) and/or --pptx FILE.pptx (a slide deck)")
    results = None
    if args.step:  # your own recurrence, analysed first: its figures are drawn from the result
        from .step_cli import step_result
        results = {"own": step_result(args, views=args.views)}
        config = results["own"].config
    else:
        config = config_from_args(args)
    if args.out:
        from .export.bundles import _check_out_dir
        _check_out_dir(args.out)  # before the deck is written
    from .progress import StderrBar
    bar = StderrBar(lines=True)  # one line per update in logs, redrawn in place on a terminal
    both = bool(args.out and args.pptx)
    if args.pptx:
        from .deck import write_deck
        from .presets import PRESETS
        variant = PRESETS[args.preset].variant if args.preset else None
        deck = write_deck(config, args.pptx, preset=args.preset, variant=variant,
                          progress=scaled(bar, 0.0, 0.5) if both else bar, views=args.views, results=results)
        if not both:
            bar.close()
        print(deck)
    if args.out:
        paths = export_all(config, args.out, formats=tuple(args.formats.split(",")),
                           progress=scaled(bar, 0.5, 1.0) if both else bar, views=args.views, results=results)
        bar.close()
        for p in paths:
            print(p)
    bar.close()
    return 0


COMMANDS = {"run": cmd_run, "train": cmd_train, "export": cmd_export}


def build_parser(prog: str = "python -m analysis") -> argparse.ArgumentParser:
    """The parser of every subcommand (``gdlab`` adds ``dashboard`` to it); each subcommand's handler is
    ``COMMANDS[args.command]``."""
    from . import __version__
    parser = OneLineParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"gradient-dynamics lab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")

    p_run = command("run", "analyse one configuration: a summary, or the result JSON with --json")
    add_config_flags(p_run)
    from .step_cli import add_step_flags
    add_step_flags(p_run)
    p_run.add_argument("--json", default=None, metavar="PATH", help="write the result JSON here")
    p_run.add_argument("--views", default=None, metavar="VIEWS",
                       help="what to compute, comma-separated: gradients, activations, jacobians, spectrum, "
                            "cell-state, sensitivity, all (default: all but sensitivity, which is opt-in; "
                            "gradients alone costs about one forward+backward)")
    p_train = command("train", "train step by step, one line per step (--train-steps, default 100)")
    add_config_flags(p_train)
    p_train.add_argument("--json", default=None, metavar="PATH", help="write the training history JSON here")
    p_train.add_argument("--on-nonfinite", choices=("stop", "skip"), default="stop",
                         help="on a non-finite loss or gradient: stop, or skip the step (default: stop)")
    p_train.add_argument("--temperature", type=float, default=1.0, metavar="X",
                         help="charlm: sampling temperature (default: 1)")
    p_train.add_argument("--sample-every", type=int, default=25, metavar="N",
                         help="charlm: sample every N steps (0 = never; default: 25)")
    p_train.add_argument("--sample-chars", type=int, default=80, metavar="N",
                         help="charlm: characters per sample (default: 80)")
    p_exp = command("export", "export the figures of one configuration (--out DIR) and/or a slide deck (--pptx)")
    add_config_flags(p_exp)
    add_step_flags(p_exp)
    p_exp.add_argument("--out", default=None, metavar="DIR", help="write every figure's files here")
    p_exp.add_argument("--formats", default="png,svg,pdf,csv,json", metavar="FMT,FMT",
                       help="comma-separated, from png,svg,pdf,csv,json (default: all of them)")
    p_exp.add_argument("--pptx", default=None, metavar="FILE.pptx",
                       help="write a slide deck: a title slide, then one 16:9 slide per figure of every view")
    p_exp.add_argument("--views", default=None, metavar="VIEWS",
                       help="what to compute and draw, as run --views (e.g. all: the opt-in sensitivity too)")
    from .sweep_cli import add_sweep_parser
    add_sweep_parser(sub, add_config_flags)
    return parser


def cmd_sweep(args) -> int:
    from .sweep_cli import cmd_sweep as sweep
    return sweep(args, config_from_args, _write_atomic)


COMMANDS["sweep"] = cmd_sweep


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed subcommand; bad input -> one line on stderr and status 2."""
    from .progress import init_threads
    init_threads(getattr(args, "threads", None) or 0)  # once per process: --threads, else every core
    try:
        from . import limits
        limits.configure(limits.Limits(None, None, "--no-limits") if args.no_limits else None)
        return COMMANDS[args.command](args)
    except (ConfigError, ValueError, RuntimeError) as e:  # RuntimeError: ExportUnavailable, render errors
        msg = " ".join(str(e).split())
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # a file read or written (--out, --pptx, --figure, --resume...): named
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{' '.join(str(e.strerror or e).split())}", file=sys.stderr)
        return 2


def main(argv=None, prog: str = "python -m analysis") -> int:
    return dispatch(build_parser(prog).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
