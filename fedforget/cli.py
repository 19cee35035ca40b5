"""``fedforget`` command line: run scenarios, list methods, build reports."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from fedforget import registry
from fedforget.analysis import export
from fedforget.analysis.many_models import (
    SUMMARY_FILE,
    ManyModels,
    ManyModelsError,
    many_models,
)
from fedforget.analysis.tables import STUDY_FILE
from fedforget.config import ConfigError, load_scenario
from fedforget.data import DataUnavailableError
from fedforget.flower.deployment import flwr_run
from fedforget.protocol import ClientFailure, DivergenceError, RunsFailed
from fedforget.report import write_report
from fedforget.report.many_models import many_models_text
from fedforget.report.text import verdict_text
from fedforget.results import default_run_dir
from fedforget.runner import resume, run, run_seeds
from fedforget.sweep import STUDY_TABLE, sweep
from fedforget.unlearning import UnlearningMethod

EXIT_CONFIG = 2


def _guarded(action: Callable[[], int], failure_note: str = "", failures: tuple[type, ...] = ()) -> int:
    """Run a command: a bad input is one line and exit status 2; a run that
    failed (a client, divergence, data that cannot be fetched) one line and 1."""

    try:
        return action()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except (DataUnavailableError, ClientFailure, DivergenceError, RunsFailed, *failures) as err:
        note = "" if isinstance(err, DataUnavailableError) else failure_note
        print(f"error: {err}{note}", file=sys.stderr)
        return 1


def _cmd_run(args: argparse.Namespace) -> int:

    overrides = list(args.overrides)
    if args.keep_checkpoints:
        overrides.append("runtime.keep_checkpoints=true")
    if args.engine:
        overrides.append(f"runtime.engine={args.engine}")
    overrides += _track_overrides(args)
    if args.seeds < 1:
        print("error: --seeds must be >= 1", file=sys.stderr)
        return EXIT_CONFIG

    def action() -> int:
        sc = load_scenario(args.config, overrides)
        return _run_and_print(sc, Path(args.out) if args.out else default_run_dir(sc.name), args)

    return _guarded(action, f" (run directory {args.out or 'runs/...'} holds events.jsonl.partial; "
                            "`fedforget resume` continues it from its last complete round)")


def _track_overrides(args: argparse.Namespace) -> list[str]:
    """``--track NAME`` (repeatable) as the ``tracking.backends`` override."""
    return [f"tracking.backends={json.dumps(sorted(set(args.track)))}"] if args.track else []


def _run_and_print(sc, out: Path, args: argparse.Namespace) -> int:

    if args.seeds > 1:
        results = run_seeds(sc, args.seeds, out=out, progress=not args.no_progress, verbose=args.verbose)
        for r in results:
            print(f"seed {r.scenario.seed}: final test accuracy (original) {r.final():.4f}")
    else:
        result = run(sc, out=out, progress=not args.no_progress, verbose=args.verbose)
        out = result.run_dir
        print(f"final test accuracy (original): {result.final():.4f}")
    _print_verdicts(out)
    if args.seeds > 1 and sc.data.seed is not None:
        _print_many_models(out)
    print(f"run directory: {out}  (report: {out / 'report.html'})")
    return 0


def _print_many_models(out: Path) -> None:
    """ε and U-LiRA after a seeds run on fixed data, as the report wrote them
    (the reason, when there are none)."""

    try:
        result = ManyModels.read(out) if (out / SUMMARY_FILE).is_file() else many_models(out)
    except ManyModelsError as err:
        print(f"no ε or U-LiRA: {err}\n")
        return
    print(many_models_text(result) + "\n")


def _print_verdicts(run_dir: Path) -> None:
    """The terminal verdict table of a run with events (nothing without)."""

    text = verdict_text(run_dir)
    if text:
        print("\n" + text + "\n")


def _resumed_from(run_dir: Path) -> str:
    """Where the last resume continued from, as the events log recorded it."""
    rounds = [json.loads(line).get("after_round") for line in (run_dir / "events.jsonl").read_text().splitlines()
              if '"resumed"' in line]
    if rounds and rounds[-1] is not None:
        return f"resumed after round {rounds[-1]} (its last complete round) and finished"
    return "no complete round was checkpointed: the run started over and finished"


def _one_line_warnings() -> None:
    """Warnings on the command line as one line each, without source paths."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def _cmd_flwr_run(args: argparse.Namespace) -> int:

    def action() -> int:
        out = flwr_run(args.config, args.overrides, args.out, args.app_dir)
        print(f"run directory: {out}  (report: {out / 'report.html'})")
        return 0

    return _guarded(action, failures=(FileNotFoundError, RuntimeError))


def _cmd_resume(args: argparse.Namespace) -> int:

    def action() -> int:
        result = resume(args.run_dir, args.engine, progress=not args.no_progress, verbose=args.verbose)
        print(_resumed_from(result.run_dir))
        _print_verdicts(result.run_dir)
        print(f"run directory: {result.run_dir}  (report: {result.run_dir / 'report.html'})")
        return 0

    return _guarded(action, f" (the checkpoint in {args.run_dir} is kept)")


def _cmd_sweep(args: argparse.Namespace) -> int:

    def action() -> int:
        table = sweep(args.config, args.axes, args.seeds, args.out, args.zip,
                      overrides=[*args.fixed, *_track_overrides(args)],
                      engine=args.engine, progress=not args.no_progress, verbose=args.verbose)
        print(f"study directory: {args.out}  ({len(table)} rows in {Path(args.out) / STUDY_TABLE})")
        return 0

    return _guarded(action, f" (rerun the same command to continue the sweep in {args.out})")


def _cmd_export(args: argparse.Namespace) -> int:

    try:
        written = export(args.dir, args.format, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"wrote {len(written)} tables to {written[0].parent}: {', '.join(p.name for p in written)}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:

    try:
        if args.text:
            _print_verdicts(Path(args.run_dir))
            return 0
        path = write_report(args.run_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"report: {path}")
    return 0


def _cmd_epsilon(args: argparse.Namespace) -> int:

    root = Path(args.dir)
    if (root / STUDY_FILE).is_file():  # a sweep: every cell that is a seeds run on fixed data
        cells = json.loads((root / STUDY_FILE).read_text())["cells"]
        targets = [(root / c["dir"], ", ".join(f"{k} = {v}" for k, v in c["values"].items())) for c in cells]
    else:
        targets = [(root, "")]
    done = 0
    for path, label in targets:
        try:
            result = many_models(path, n_boot=args.n_boot)
        except (ManyModelsError, FileNotFoundError) as err:
            print(f"{'error: ' if not label else f'{label}: no estimate: '}{err}", file=sys.stderr)
            continue
        out = Path(args.out) / path.relative_to(root) if args.out else path
        out.mkdir(parents=True, exist_ok=True)
        print((f"{label}\n" if label else "") + many_models_text(result))
        print(f"\nwrote {', '.join(str(p) for p in result.write(out))}\n")
        done += 1
    return 0 if done else EXIT_CONFIG


METHODS_PREAMBLE = """\
Each method runs as its own arm. Its unlearning step happens between rounds t-1
and t of a withdrawal at round t; everything it does there is its cost (cost_*
metrics: wall s, client steps, bytes up/down, server storage, rounds). Every arm
then trains the same regular rounds t..T. Speed-ups divide retraining's cost to
the event (the retrain arm's rounds 1..t-1: client steps, bytes, wall s) by the
method's cost: speedup_steps, speedup_bytes, speedup_wall (inf: it cost nothing).
"""


#: ``fedforget <command>`` -> (registry attribute, help, heading, footer) of the registry listings.
LISTINGS = {
    "attacks": ("attacks", "list oracle attacks, their parameters and defaults",
                "Oracle attacks (oracle.attack; parameters in [oracle.<attack>] tables):", ""),
    "models": ("models", "list models (model.name)", "Models (model.name; widths in model.hidden):", ""),
    "datasets": ("datasets", "list embedded datasets (data.dataset) and their options",
                 "Datasets (data.dataset; options in the [data.<dataset>] table):",
                 "file:PATH: local .npz, .parquet, .csv or an image folder (offline); hf:<hub id>: a Hugging Face Hub image dataset (online)"),
    "partitioners": ("partitioners", "list partitioners (data.partitioner)",
                     "Partitioners (data.partitioner; alpha, classes_per_client, shards_per_client in [data]):", ""),
    "engines": ("engines", "list engines (runtime.engine)", "Engines (runtime.engine, --engine):", ""),
}


def _print_params(params_cls, indent: str = "  ") -> None:
    for field, info in params_cls.model_fields.items():
        desc = f" - {info.description}" if info.description else ""
        print(f"{indent}{field} = {info.default!r}{desc}")


def _summary(obj) -> str:
    """A registered object's one-line summary: its ``summary``, else its docstring's first line."""
    text = getattr(obj, "summary", "") or (obj.__doc__ or "").strip()
    return text.splitlines()[0] if text else ""


def _print_entry(reg, name: str) -> None:
    """Name and summary, where it came from, and its parameters (where it has a ``Params``)."""
    print(f"{name}: {_summary(reg.get(name))}")
    print(f"  from: {reg.origin(name)}")
    params = reg.params_model(name)
    if params is not None:
        _print_params(params)


def _print_listing(command: str) -> None:

    attr, _, heading, footer = LISTINGS[command]
    reg = getattr(registry, attr)
    print(heading)
    for name in reg.names():
        _print_entry(reg, name)
    if footer:
        print(footer)


def _plugin_errors(*regs) -> int:
    """Installed plugins of these registries that cannot be used, one
    ``error:`` line each on stderr: exit status 2 when there is any."""
    errors = [err for reg in regs for err in reg.plugin_errors()]
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    return EXIT_CONFIG if errors else 0


def _cmd_listing(args: argparse.Namespace) -> int:
    _print_listing(args.command)
    return _plugin_errors(getattr(registry, LISTINGS[args.command][0]))


def _add_model_shape_options(parser: argparse.ArgumentParser) -> None:
    """``fedforget models --input-shape C,H,W --classes K``: parameter counts for that input."""
    parser.add_argument("--input-shape", default="1,28,28", metavar="C,H,W",
                        help="input the parameter counts are for: C,H,W for images, F for tabular (default 1,28,28)")
    parser.add_argument("--classes", type=int, default=10, metavar="K", help="classes (default 10)")
    parser.set_defaults(func=_cmd_models)


def _model_size(name: str, shape: tuple[int, ...], classes: int, hidden: list[int]) -> str:
    """One line: the model's parameter count for that input, or why it does not fit it."""
    from fedforget.models import parameter_count

    try:
        n = parameter_count(name, shape, classes, hidden)
    except (ValueError, RuntimeError, TypeError) as err:  # a builder's refusal, said as it is
        return f"does not fit this shape: {err}"
    return f"parameters: {n:,} (input {','.join(map(str, shape))}, {classes} classes, model.hidden = {hidden})"


def _cmd_models(args: argparse.Namespace) -> int:
    """The models listing, each with its parameter count for ``--input-shape`` and ``--classes``."""
    from fedforget.config import ModelConfig

    try:
        shape = tuple(int(v) for v in args.input_shape.split(","))
    except ValueError:
        shape = ()
    if not shape or len(shape) not in (1, 3) or min(shape) < 1 or args.classes < 1:
        print(f"error: --input-shape must be C,H,W or F of positive integers and --classes >= 1, "
              f"got {args.input_shape!r} and {args.classes}", file=sys.stderr)
        return EXIT_CONFIG
    _, _, heading, footer = LISTINGS["models"]
    hidden = ModelConfig().hidden
    print(heading)
    for name in registry.models.names():
        _print_entry(registry.models, name)
        print(f"  {_model_size(name, shape, args.classes, hidden)}")
    if footer:
        print(footer)
    return _plugin_errors(registry.models)


def _cmd_methods(args: argparse.Namespace) -> int:

    print(METHODS_PREAMBLE)
    print("Methods ([unlearning.<method>] tables):")
    for name in registry.methods.names():
        cls = registry.methods.get(name)
        print(f"{name}: {cls.summary}")
        print(f"  from: {registry.methods.origin(name)}")
        print(f"  needs: {cls.needs}")
        plain = cls.recovery_epochs is UnlearningMethod.recovery_epochs
        print("  recovery: " + ("plain FedAvg (unlearning.recovery_rounds changes nothing)" if plain
                                else "its own protocol for the first unlearning.recovery_rounds rounds"))
        _print_params(cls.Params)
    print()
    _print_listing("attacks")
    return _plugin_errors(registry.methods, registry.attacks)


EXAMPLES = """examples:
  fedforget run configs/withdrawal.toml --engine inline      a withdrawal, ending with the verdict table
  fedforget run configs/withdrawal.toml --seeds 3            three seeds: paired verdicts against retrain
  fedforget run configs/withdrawal.toml train.rounds=20      any scenario key as key=value
  fedforget sweep configs/withdrawal.toml data.alpha=0.1,1,10 --set data.partitioner=dirichlet --seeds 3
  fedforget report runs/withdrawal-20261203-101500 --text   the verdict table again
  fedforget methods                                          methods and attacks with their parameters
  fedforget models | datasets | partitioners | engines | attacks   what else is registered, and where from
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedforget",
        description="Federated-unlearning simulator on Flower, PyTorch and Ray.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a scenario TOML file")
    r.add_argument("config", help="scenario TOML file")
    r.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.rounds=5")
    r.add_argument("--engine", choices=_engines(), help="override runtime.engine")
    r.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--verbose", action="store_true", help="show Ray and Flower logs")
    r.add_argument("--seeds", type=int, default=1, help="run N seeds (seed, seed+1, ...) in one runtime")
    r.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoint.pt when the run succeeds")
    r.add_argument("--track", action="append", choices=["tensorboard", "mlflow"],
                   help="log metrics live to TensorBoard / MLflow (repeatable; sets tracking.backends)")
    r.set_defaults(func=_cmd_run)
    fr = sub.add_parser(
        "flwr-run", help="run a scenario through `flwr run` (local SuperLink, one SuperNode per client)"
    )
    fr.add_argument("config", help="scenario TOML file")
    fr.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    fr.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    fr.add_argument("--app-dir", default=".", help="the Flower app (this checkout's root)")
    fr.set_defaults(func=_cmd_flwr_run)
    res = sub.add_parser("resume", help="continue an interrupted run from its last complete round")
    res.add_argument("run_dir", help="the interrupted run directory (it holds resolved.toml)")
    res.add_argument("--engine", choices=_engines(), help="engine to continue on (default: the run's)")
    res.add_argument("--no-progress", action="store_true", help="no progress bar")
    res.add_argument("--verbose", action="store_true", help="show Ray and Flower logs")
    res.set_defaults(func=_cmd_resume)
    sw = sub.add_parser("sweep", help="run a scenario over swept keys (Cartesian product) and seeds")
    sw.add_argument("config", help="scenario TOML file")
    sw.add_argument("axes", nargs="+", help='key=v1,v2,... (a bracketed value such as ["a","b"] is one value)')
    sw.add_argument("--set", dest="fixed", action="append", default=[], metavar="KEY=VALUE",
                    help="a fixed override for every cell, not an axis (repeatable)")
    sw.add_argument("--seeds", type=int, default=1, help="seeds per cell (seed, seed+1, ...)")
    sw.add_argument("--out", default="runs/sweep", help="study directory (a rerun continues it)")
    sw.add_argument("--zip", action="store_true", help="pair the lists instead of their Cartesian product")
    sw.add_argument("--engine", choices=_engines(), help="override runtime.engine")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    sw.add_argument("--verbose", action="store_true", help="show Ray and Flower logs")
    sw.add_argument("--track", action="append", choices=["tensorboard", "mlflow"],
                    help="log metrics live to TensorBoard / MLflow (repeatable; sets tracking.backends)")
    sw.set_defaults(func=_cmd_sweep)
    ex = sub.add_parser("export", help="write a run's, seeds' or study's tidy tables as CSV or JSON")
    ex.add_argument("dir", help="a run, seeds or sweep directory")
    ex.add_argument("--format", choices=["csv", "json"], default="csv",
                    help="CSV files, or JSON records (missing values null)")
    ex.add_argument("--out", help="directory for the tables (default: DIR itself)")
    ex.set_defaults(func=_cmd_export)
    rep = sub.add_parser("report", help="(re)build report.html of a run directory, or print its verdict table")
    rep.add_argument("run_dir", help="a run, seeds or sweep directory")
    rep.add_argument("--text", action="store_true",
                     help="print the terminal verdict table (what `fedforget run` ends with) instead")
    rep.set_defaults(func=_cmd_report)
    eps = sub.add_parser("epsilon", help="per-example epsilon and U-LiRA of every arm from a seeds run on fixed data")
    eps.add_argument("dir", help="a seeds directory (fedforget run CONFIG data.seed=0 --seeds 16), or a sweep "
                                 "(each cell)")
    eps.add_argument("--out", help="directory for many_models.csv and epsilon_examples.parquet (default: DIR)")
    eps.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates of U-LiRA's AUC interval")
    eps.set_defaults(func=_cmd_epsilon)
    m = sub.add_parser("methods", help="list unlearning methods and oracle attacks, their parameters and defaults")
    m.set_defaults(func=_cmd_methods)
    for command, (_, help_text, _, _) in LISTINGS.items():
        sub.add_parser(command, help=help_text).set_defaults(func=_cmd_listing)
    _add_model_shape_options(sub.choices["models"])
    return p


def _engines():
    """The engine registry as ``--engine`` choices: read (and its module
    imported) only when an ``--engine`` value is checked or help is shown."""

    return registry.engines


def main(argv: list[str] | None = None) -> int:
    # Overrides may come before or after options: argparse leaves the ones after
    # an option unparsed; they join the command's overrides.
    _one_line_warnings()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    target = next((k for k in ("overrides", "axes") if hasattr(args, k)), None)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or target is None]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        setattr(args, target, list(getattr(args, target)) + extra)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
