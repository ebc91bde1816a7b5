"""Running a study: groups of cells as idempotent tasks, in-process or on a Dask cluster (SPEC 7, 8).

A task runs one group and writes each of its cells atomically; a finished
cell is never computed twice, so an interrupted study resumes for free and a
task that a dying worker leaves half done is simply run again elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


from . import dmft_curves, results, sizes
from .devices import resolve
from .final_spectra import hessian_spectra
from .runs import run_replicas
from .study import Cell, Study

log = logging.getLogger("phaseret")
#: How long to try reaching an existing Dask scheduler (``--scheduler``) before giving up.
SCHEDULER_TIMEOUT = "10s"

#: Pinned to 1 in every local worker: one thread per worker, no oversubscription.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
#: The environment of every worker phaseret starts, set before the worker process spawns (Dask's
#: ``pre-spawn-environ``) so that glibc and BLAS read it at start-up. Dask's default
#: MALLOC_TRIM_THRESHOLD_=65536 makes glibc return and re-fault the batch copies of every step:
#: measured 2.7 s instead of 0.9 s for 3000 P-SGD epochs at p = 256 in a one-worker LocalCluster.
WORKER_ENVIRONMENT = {
    **{name: "1" for name in THREAD_VARIABLES},
    "MALLOC_TRIM_THRESHOLD_": str(2**30),
    "MALLOC_MMAP_THRESHOLD_": str(2**25),
}


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of each SLURM job that carries Dask workers (dask-jobqueue)."""

    queue: str | None = None
    walltime: str = "01:00:00"
    cores: int = 1
    memory: str = "4GB"
    jobs: int = 1


@dataclass(frozen=True)
class CellReport:
    name: str
    status: str  # a SPEC 6 status, "failed", or "done" (found finished)
    test_error: float
    seconds: float


class Stopped(BaseException):
    """The user stopped the run (SIGINT, SIGTERM). Not an ``Exception``: a group that is stopped is
    not recorded as failed, and nothing of it is written."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_signals():
    """While a study runs, SIGINT (Ctrl-C) and SIGTERM (SLURM's walltime warning) only note the
    request; yields ``interrupt()``, which raises :class:`Stopped` once one came. The engine calls it
    after every epoch: a signal never lands inside a Numba kernel. Outside the main thread (where
    Python cannot install handlers) the signals keep their handlers."""
    requested: list[int] = []

    def interrupt() -> None:
        if requested:
            raise Stopped(requested[0])

    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return
    previous = {s: signal.signal(s, lambda signum, frame: requested.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interrupt
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


#: The Dask event topic on which workers report their groups' progress, and how often (seconds).
PROGRESS_TOPIC = "phaseret-progress"
PROGRESS_EVERY = 0.5


def budget(group: Sequence[Cell]) -> int:
    """A group's seed-epochs: the sum of its cells' budgets (the progress bar's unit)."""
    return sum(cell.config.max_epochs for cell in group)


class GroupProgress:
    """Seed-epochs of running groups, forwarded to ``update`` (a progress bar's): a group advances
    as its live replicas run epochs, and on finishing jumps to its budget (replicas that stopped
    early); reports that arrive after a group finished are ignored. Thread-safe: Dask reports
    arrive on the client's event-loop thread."""

    def __init__(self, update):
        self.update = update
        self.done: dict[str, int] = {}
        self.finished: set[str] = set()
        self.lock = threading.Lock()

    def advance(self, key: str, seed_epochs: int) -> None:
        with self.lock:
            if key in self.finished:
                return
            self.done[key] = self.done.get(key, 0) + seed_epochs
            self.update(seed_epochs)

    def finish(self, key: str, total: int) -> None:
        with self.lock:
            self.finished.add(key)
            self.update(max(0, total - self.done.pop(key, 0)))


class WorkerProgress:
    """A group's progress on a Dask worker: seed-epochs gathered and published on
    ``PROGRESS_TOPIC`` as ``(key, seed_epochs)`` at most every ``PROGRESS_EVERY`` seconds (as set
    where the study runs: the value travels with the object)."""

    def __init__(self, key: str):
        self.key, self.every = key, PROGRESS_EVERY
        self.pending, self.last = 0, time.monotonic()

    def __call__(self, seed_epochs: int) -> None:
        self.pending += seed_epochs
        if time.monotonic() - self.last >= self.every:
            from distributed import get_worker

            get_worker().log_event(PROGRESS_TOPIC, (self.key, self.pending))
            self.pending, self.last = 0, time.monotonic()


def run_group(cells: Sequence[Cell], out_dir: str, grid, interrupt=None, progress=None) -> list[CellReport]:
    """Run a group (the unit of work) as one replica batch and store its unfinished cells.

    A group with a missing cell runs whole, so the missing cell comes out bit-identical to
    the run that was interrupted; cells already stored are not written again. A group that
    raises records each unfinished cell as failed, with the traceback, and the study goes on;
    ``interrupt`` (in-process runs) is called after every epoch and may raise :class:`Stopped`;
    ``progress`` is called before every epoch with the live replicas' count (seed-epochs).
    """
    out_dir = Path(out_dir)
    missing = [results.read_cell(out_dir, cell, grid) is None for cell in cells]
    if not any(missing):
        return [CellReport(cell.name, "done", math.nan, 0.0) for cell in cells]
    try:
        outcomes = run_replicas([cell.config for cell in cells], grid, record_gradient_jumps="gradient_jumps" in cells[0].record,
                                record_landscape="hessian_grid" in cells[0].record,
                                interrupt=interrupt, progress=progress)
    except Exception:
        trace = traceback.format_exc()
        reports = []
        for cell, todo in zip(cells, missing):
            if todo:
                results.write_failure(out_dir, cell, trace)
            reports.append(CellReport(cell.name, "failed" if todo else "done", math.nan, math.nan))
        return reports
    reports = []
    for cell, todo, result in zip(cells, missing, outcomes):
        if todo and "hessian" in cell.record:
            result.hessian_eigenvalues = hessian_spectra(cell.config, result)
        if todo:
            results.write_cell(out_dir, cell, result)
        reports.append(CellReport(cell.name, result.status if todo else "done", result.test_error, result.wall_seconds))
    return reports


def run_study(
    study: Study,
    out_dir: Path,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    slurm: SlurmOptions | None = None,
    progress: bool = True,
    history: str = "",
    wait: bool = False,
) -> Path:
    """Run the study's unfinished groups, then combine every cell into ``out_dir/<name>.nc``.
    ``history``: the line for the dataset's ``history`` attribute (default: when and what ran).

    The run holds ``out_dir``'s lock for its whole life (:func:`phaseret.results.folder_lock`): a
    second run on the folder is refused, or with ``wait`` waits. SIGINT and SIGTERM stop it after
    the current epoch (in-process) or at once (Dask), raising :class:`Stopped`; cells already
    written stay, and rerunning resumes."""
    from tqdm import tqdm

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    history = history or f"{now} phaseret run {study.source} --scale {study.scale} --out {out_dir}"

    out_dir = Path(out_dir)
    for backend in {c.backend for c in study.optimizer_settings}:
        resolve(backend)  # refuses cuda where no GPU is visible, before any work
    if slurm is not None and shutil.which("sbatch") is None:
        raise ValueError("slurm: no `sbatch` on PATH; --slurm starts workers as SLURM jobs and needs a SLURM cluster")
    groups = study.groups()
    if slurm is not None:
        groups = sizes.fit(groups, slurm_worker_bytes(slurm), f"each SLURM worker's memory (--slurm-memory {slurm.memory} "
                                                           f"over {slurm.cores} core(s))")
    elif scheduler is None:  # local processes: this machine's memory
        groups = sizes.fit(groups, *sizes.local_share(workers))
    dmft_curves.check_memory(study)  # the DMFT runs here, in this process
    with results.folder_lock(out_dir, wait), stop_signals() as interrupt:
        results.claim_folder(study, out_dir)
        results.remove_stale_temporaries(out_dir)  # left by a writer that died; only the lock's holder writes
        grid = study.grid
        pending = [g for g in groups if any(results.read_cell(out_dir, c, grid) is None for c in g)]
        done = len(study.cells) - sum(len(g) for g in pending)
        log.info("%s: %d cells, %d done, %d groups to run", study.name, len(study.cells), done, len(pending))
        total = budget(study.cells)
        finished = total - sum(budget(g) for g in pending)
        try:
            with tqdm(total=total, initial=finished, unit=" seed-epochs", unit_scale=True, disable=not progress,
                      smoothing=0.05) as bar:
                tracker = GroupProgress(bar.update)
                for reports in _execute(pending, str(out_dir), grid, workers, scheduler, slurm, interrupt, tracker):
                    for report in reports:
                        log.info("%s: %s, test error %.3g, %.1f s", report.name, report.status, report.test_error,
                                 report.seconds)
        finally:  # also when stopped: a worker killed or cancelled mid-write leaves its temporary
            results.remove_stale_temporaries(out_dir)
        if study.dmft:
            _write_dmft(study, out_dir, interrupt)
        path = out_dir / f"{study.name}.nc"
        results.write_dataset(results.combine(study, out_dir, history), path)
    return path


def _write_dmft(study: Study, out_dir: Path, interrupt) -> None:
    """Solve the study's ``[dmft]`` curves into ``out_dir/dmft.nc``, reusing the solutions already
    stored there with the same settings. The file is written after each solution and each replicate
    beside the cells (:class:`results.DmftReplicates`), so a stop keeps every solution and replicate
    finished before it, and a rerun solves only the rest."""
    path = out_dir / dmft_curves.FILE
    stored = results.load_or_none(path)  # missing or unreadable: solve everything again
    log.info("%s: DMFT curves of %s", study.name, ", ".join(study.dmft["optimizers"]))
    save = functools.partial(results.write_dataset, path=path)
    results.write_dataset(dmft_curves.curves(study, stored, interrupt, save, results.DmftReplicates(out_dir)), path)


def cell_states(study: Study, out_dir: Path) -> dict[str, list[str]]:
    """Cell names by state: ``done``, ``failed``, ``pending``."""
    states = {"done": [], "failed": [], "pending": []}
    for cell in study.cells:
        states[results.cell_state(out_dir, cell, study.grid)].append(cell.name)
    return states


def _execute(groups, out_dir, grid, workers, scheduler, slurm, interrupt, tracker: GroupProgress):
    """Yield the reports of each group as it finishes; ``interrupt()`` raises :class:`Stopped` when
    the user asked to stop (checked after every epoch in-process, every 0.2 s on Dask); ``tracker``
    follows the groups' seed-epochs (in-process after every epoch, from Dask workers' events)."""
    if not groups:
        return  # nothing to run: start no cluster
    if workers == 1 and scheduler is None and slurm is None:
        for group in groups:
            key = group[0].name
            reports = run_group(group, out_dir, grid, interrupt, functools.partial(tracker.advance, key))
            tracker.finish(key, budget(group))
            yield reports
        return
    from distributed import as_completed

    with _client(workers, scheduler, slurm) as client:
        if scheduler is not None:  # an existing cluster: its workers' memory limits, known once connected
            groups = sizes.fit(groups, smallest_worker_bytes(client), f"the smallest memory limit of the workers at {scheduler}")
        client.subscribe_topic(PROGRESS_TOPIC, lambda event: tracker.advance(*event[1]))
        keys = {}
        futures = []
        for g in groups:
            future = client.submit(run_group, g, out_dir, grid, None, WorkerProgress(g[0].name),
                                   key=f"phaseret-{g[0].name}", pure=False)
            keys[future.key] = g
            futures.append(future)
        finished = as_completed(futures)
        try:
            while not finished.is_empty():
                batch = finished.next_batch(block=False)
                if not batch:
                    interrupt()
                    time.sleep(0.2)
                for future in batch:
                    reports = future.result()
                    group = keys[future.key]
                    tracker.finish(group[0].name, budget(group))
                    yield reports
        except Stopped:
            _silence_dask(client)
            raise


def _silence_dask(client) -> None:
    """Mute Dask's own logs here and on the workers, so that a stopped run shuts its cluster down
    quietly (its tasks are cancelled mid-run; nothing half is written: cells are written atomically).
    The processes are about to end, so their unraisable-exception reports (a worker's client
    finalised after its event loop closed) are dropped too."""

    def silence() -> None:
        for name in ("distributed", "tornado", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        sys.unraisablehook = lambda report: None

    silence()
    with contextlib.suppress(Exception):
        client.run(silence)


@contextlib.contextmanager
def _client(workers: int, scheduler: str | None, slurm: SlurmOptions | None):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("workers: running on Dask needs the cluster extra: pip install 'phaseret[cluster]'") from None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT)
        except OSError as error:
            raise ValueError(f"scheduler: cannot reach the Dask scheduler at {scheduler} ({error})") from None
        with client:
            yield client
        return
    if slurm is not None:
        with slurm_cluster(slurm) as cluster, Client(cluster) as client:
            cluster.scale(jobs=slurm.jobs)
            yield client
        return
    import dask

    environment = {f"distributed.nanny.pre-spawn-environ.{name}": value for name, value in WORKER_ENVIRONMENT.items()}
    # Dask's nanny takes a variable from this process's os.environ before its own configuration,
    # and writes it into os.environ before it spawns a worker: set ours while the cluster lives,
    # and put this process's own back afterwards (else its Numba would later reload its
    # configuration with NUMBA_NUM_THREADS=1 and refuse to run).
    saved = {name: os.environ.get(name) for name in WORKER_ENVIRONMENT}
    os.environ.update(WORKER_ENVIRONMENT)
    try:
        with dask.config.set(environment), LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster, Client(cluster) as client:
            yield client
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def slurm_worker_bytes(options: SlurmOptions) -> int:
    """The memory of each SLURM worker: the job's memory over its single-threaded workers."""
    from dask.utils import parse_bytes

    try:
        return parse_bytes(options.memory) // max(1, options.cores)
    except ValueError:
        raise ValueError(f"slurm-memory: {options.memory!r} is not a size such as 4GB") from None


def smallest_worker_bytes(client) -> int | None:
    """The smallest memory limit among a Dask cluster's workers (None when none is set)."""
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info().get("workers", {}).values()]
    return min((limit for limit in limits if limit > 0), default=None)


def slurm_cluster(options: SlurmOptions):
    """A dask-jobqueue ``SLURMCluster``: one single-threaded worker per core, threads pinned."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ValueError("slurm: needs the cluster extra: pip install 'phaseret[cluster]'") from None
    return SLURMCluster(
        queue=options.queue,
        walltime=options.walltime,
        cores=options.cores,
        processes=options.cores,
        memory=options.memory,
        job_script_prologue=[f"export {name}={value}" for name, value in WORKER_ENVIRONMENT.items()]
        + [f"export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__{name}={value}" for name, value in WORKER_ENVIRONMENT.items()],
    )


def environment_is_pinned() -> bool:
    """Whether this process runs in phaseret's worker environment (true inside a local worker)."""
    return all(os.environ.get(name) == value for name, value in WORKER_ENVIRONMENT.items())
