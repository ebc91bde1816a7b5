"""The ``phaseret`` command: run a study, show its state, draw its figures."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from .results import load_folder
from .runner import SlurmOptions, Stopped, cell_states, run_study
from .study import load_study


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("phaseret").setLevel(logging.INFO)  # one line per finished cell
    try:
        return args.command(args)
    except ValueError as error:
        print(f"phaseret: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the file system refused: read-only folder, full disk, ...
        where = f"{error.filename}: " if error.filename else ""
        resume = "; cells not written stay pending: rerun the same command to resume" if args.command is _run else ""
        print(f"phaseret: error: {where}{error.strerror or error}{resume}", file=sys.stderr)
        return 2


def _run(args) -> int:
    study = load_study(args.study, args.scale, args.backend)  # the whole file is validated before any work
    if args.workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {args.workers}")
    out = Path(args.out) if args.out else Path("results") / (study.name if args.scale == "quick" else f"{study.name}_{args.scale}")
    slurm = None
    if args.slurm:
        slurm = SlurmOptions(args.slurm_queue, args.slurm_walltime, args.slurm_cores, args.slurm_memory, args.slurm_jobs)
    history = f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} phaseret {shlex.join(args.argv)}"
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            path = run_study(study, out, workers=args.workers, scheduler=args.scheduler, slurm=slurm,
                             progress=not args.no_progress, history=history, wait=args.wait)
    except Stopped as stop:
        states = cell_states(study, out)
        print(f"phaseret: stopped by {stop}: {len(states['done'])} of {len(study.cells)} cells done in {out}; "
              "rerun the same command to resume", file=sys.stderr)
        return 128 + stop.signum
    print(f"dataset: {path}")
    return 0


def _status(args) -> int:
    study = load_folder(Path(args.dir))
    states = cell_states(study, Path(args.dir))
    print(f"{study.name} ({study.scale}): {len(states['done'])} done, {len(states['failed'])} failed, "
          f"{len(states['pending'])} pending of {len(study.cells)} cells")
    for state in ("failed", "pending"):
        for name in states[state]:
            print(f"  {state}: {name}")
    return 0


def _plot(args) -> int:
    from .folders import plot_folder, plot_folders

    if len(args.dirs) > 1 and args.out is None:
        raise ValueError("--out: several folders are drawn together into a folder of their own; name it with --out")
    if args.out is None:
        paths = plot_folder(Path(args.dirs[0]))
    else:
        paths = plot_folders([Path(d) for d in args.dirs], Path(args.out))
    for path in paths:
        print(path)
    return 0


def _analyze(args) -> int:
    from . import analysis, analysis_figures
    from .folders import combine_datasets, open_folder

    if len(args.dirs) > 1 and args.out is None:
        raise ValueError("--out: several folders are analysed together into a folder of their own; name it with --out")
    opened = [open_folder(Path(d)) for d in args.dirs]
    ds = opened[0][1] if len(opened) == 1 else combine_datasets([(Path(d), ds) for d, (_, ds) in zip(args.dirs, opened)])
    budgets = {key: value for study, _ in opened for key, value in study.budgets().items()}
    out = Path(args.out) if args.out else Path(args.dirs[0])
    result = analysis.analyze(ds, budgets, args.link)
    paths = analysis.write(result, out)
    paths += analysis_figures.draw(ds, result, budgets, out, opened[0][0].name if args.out is None else out.name)
    print(analysis.markdown(result))
    for path in paths:
        print(path)
    return 0


def _compare(args) -> int:
    from . import dmft_agreement
    from .folders import open_folder

    _, ds = open_folder(Path(args.dir))
    runs = open_folder(Path(args.runs))[1] if args.runs else None
    result = dmft_agreement.agreement(ds, runs)
    paths = dmft_agreement.write(result, Path(args.runs or args.dir))
    print(dmft_agreement.markdown(result))
    for path in paths:
        print(path)
    return 0


def _table(args) -> int:
    from .tables import write_table

    markdown, path = write_table(Path(args.dir))
    print(markdown)
    print(f"\ncsv: {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phaseret", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a study file (resumes where it stopped)")
    run.add_argument("study", help="the study's TOML file")
    run.add_argument("--scale", default="full", help="full (the file's own values) or a [scale.NAME] table, e.g. quick")
    run.add_argument("--out", help="results folder (default results/NAME for --scale quick, results/NAME_SCALE otherwise)")
    run.add_argument("--backend", choices=("cpu", "cuda", "auto"),
                     help="replaces the study's backend key: cpu, cuda (a GPU), auto (cuda when a GPU is visible)")
    run.add_argument("--workers", type=int, default=1, help="1: in-process; N: a local Dask cluster of N single-threaded workers")
    run.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://HOST:8786")
    run.add_argument("--slurm", action="store_true", help="start Dask workers as SLURM jobs (dask-jobqueue)")
    run.add_argument("--slurm-queue", help="SLURM partition")
    run.add_argument("--slurm-walltime", default="01:00:00", help="walltime of each job")
    run.add_argument("--slurm-cores", type=int, default=1, help="cores (= single-threaded workers) per job")
    run.add_argument("--slurm-memory", default="4GB", help="memory per job")
    run.add_argument("--slurm-jobs", type=int, default=1, help="number of jobs")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    run.add_argument("--wait", action="store_true", help="if another run holds the results folder, wait for it instead of refusing")
    run.set_defaults(command=_run)

    status = commands.add_parser("status", help="list done / failed / pending cells of a results folder")
    status.add_argument("dir")
    status.set_defaults(command=_status)

    plot = commands.add_parser("plot", help="draw a results folder's figures into it (PNG and PDF), or several "
                                             "folders together into --out")
    plot.add_argument("dirs", nargs="+", metavar="DIR")
    plot.add_argument("--out", help="the folder for the figures of several folders drawn together (named after it)")
    plot.set_defaults(command=_plot)

    analyze = commands.add_parser("analyze", help="thresholds with 95%% intervals, finite size and time to solution "
                                                  "(SPEC 13): thresholds.nc, thresholds.md and figures")
    analyze.add_argument("dirs", nargs="+", metavar="DIR")
    analyze.add_argument("--out", help="where to write (default: the one DIR; required for several)")
    analyze.add_argument("--link", default="logistic", help="logistic (default) or probit")
    analyze.set_defaults(command=_analyze)

    compare = commands.add_parser("compare", help="the DMFT against the runs: gaps in standard errors, momentum's "
                                                  "paired gain (dmft_agreement.nc and .md beside the runs)")
    compare.add_argument("dir", help="a results folder whose study has a [dmft] table")
    compare.add_argument("--runs", help="the runs from this folder of the same study instead (e.g. its full scale)")
    compare.set_defaults(command=_compare)

    table = commands.add_parser("table", help="epochs to converge per optimizer and alpha (thesis table 4.1): "
                                              "Markdown on stdout, CSV beside the dataset")
    table.add_argument("dir")
    table.set_defaults(command=_table)
    return parser
