"""Study files (SPEC 10): TOML -> validated cells, before any work starts.

A study is a set of cells, one run each, over ``optimizer x p x hidden x
alpha x seed``. ``alpha``, ``p`` and ``hidden`` may be lists (axes of the
results); a list inside an ``[[optimizer]]`` table (``lr = [0.002, 0.005]``)
expands into one optimizer per value, labelled with the value. Cells are
grouped into units of work deterministically from the file (SPEC 7).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import math
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import dmft_curves
from .config import BASELINES, OPTIMIZER_KEYS, RUN_KEYS, RunConfig, validate
from .data import n_samples
from .records import epoch_grid

AXES = ("p", "hidden", "alpha")
#: The most cells a study may hold: one file each in one folder, and each a Python object while it runs.
MAX_CELLS = 1_000_000
STUDY_KEYS = ("name", "description", "seeds", "optimizer", "record", "plot", "dmft", "scale")
#: Figures a ``[plot]`` table may ask for (``figures``) and what may split them into panels
#: (``panels``: the optimizer, its coordinates, the model, or the p / hidden axes).
FIGURES = ("success", "diverged", "test_error", "train_error", "errors", "trajectories", "dynamics", "hessian",
           "gradient_jumps", "dmft", "momentum_gain")
DEFAULT_FIGURES = ("success", "test_error", "trajectories")
PANEL_KEYS = ("optimizer", "model", "algorithm", "update", "momentum", "lr", "lr_scaling", "batch_fraction", "tau",
              "p", "hidden")
PLOT_KEYS = ("figures", "panels", "error_scale", "theory", "seeds")
#: ``[record]`` keys this version records, beyond the finals and trajectories (SPEC 8, 10).
RECORD_KEYS = {"gradient_jumps": "true: the jumps |g_t - g_(t-1)|_F between consecutive batch gradients, "
                                 "as gradient_jump_trajectory",
               "weights": "true: the final W, as weights over unit and feature",
               "hessian": '"end": the Hessian spectra at the final W, as hessian_eigenvalues; "grid": also the '
                          "Riemannian Hessian's extremes and negative count on the epoch grid"}


class StudyError(ValueError):
    """A study file that cannot run; the message names the file, the key and the reason."""


def file_safe(text: str) -> str:
    """``text`` with every character but letters, digits and ``.+=_-`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9.+=_-]", "_", text)


@dataclasses.dataclass(frozen=True, slots=True)
class Cell:
    """One run of a study: its coordinates and its validated configuration."""

    optimizer: str
    p: int
    hidden: int
    alpha: float
    seed: int
    config: RunConfig
    record: tuple[str, ...] = ()  # the [record] keys set to true, sorted

    @property
    def name(self) -> str:
        """A file-safe name that says what the cell is."""
        return file_safe(f"{self.optimizer}__p{self.p}_h{self.hidden}_a{self.alpha:g}_s{self.seed}")

    def config_json(self) -> str:
        """What the cell computes: its configuration, and what it records beyond the defaults (a
        stored cell of another configuration or record is not this cell's result)."""
        extra = {"record": {name: True for name in self.record}} if self.record else {}
        return json.dumps(self.config.to_dict() | extra, sort_keys=True)


@dataclasses.dataclass(frozen=True, slots=True)
class Block:
    """One optimizer at one ``(p, hidden, alpha)``: the cells ``0 .. seeds-1`` that differ only in
    their seed, kept as one configuration (seed 0) until a cell is asked for."""

    config: RunConfig
    seeds: int
    record: tuple[str, ...] = ()

    def cell(self, seed: int) -> Cell:
        c = self.config
        return Cell(c.optimizer_label, c.p, c.hidden, c.alpha, seed, dataclasses.replace(c, seed=seed), self.record)


class Cells(Sequence):
    """Cells built when they are asked for: spans ``(block, first seed, stop seed)`` in order.

    A study's cells and each of its groups are such sequences, so a study of a million cells is
    its few blocks until it runs (a :class:`Cell` costs about 13 us and 400 bytes to build); it
    compares equal to any sequence of the same cells."""

    __slots__ = ("spans", "_ends")

    def __init__(self, spans):
        self.spans = tuple(spans)
        self._ends = tuple(itertools.accumulate(stop - first for _, first, stop in self.spans))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __iter__(self):
        for block, first, stop in self.spans:
            for seed in range(first, stop):
                yield block.cell(seed)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"cell {index} of {len(self)}")
        span = bisect.bisect_right(self._ends, index)
        block, first, stop = self.spans[span]
        return block.cell(stop - (self._ends[span] - index))

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __reduce__(self):
        return Cells, (self.spans,)

    def __repr__(self) -> str:
        return f"Cells({len(self)} cells in {len(self.spans)} spans)"


@dataclasses.dataclass(frozen=True)
class Study:
    """A validated study: its cells (in a fixed order, built lazily from its blocks), axes and
    trajectory grid."""

    name: str
    description: str
    source: str
    scale: str
    raw_table: dict  # the file's table as written (all scales)
    settings: dict  # the resolved study table (scale applied), for the results' attributes
    optimizers: tuple[str, ...]
    optimizer_settings: tuple[RunConfig, ...]  # one representative config per optimizer
    blocks: tuple[Block, ...]  # by optimizer, then (p, hidden, alpha) in the file's order
    seeds: int
    plot: dict = dataclasses.field(default_factory=dict)  # the checked [plot] table
    record: tuple[str, ...] = ()  # the [record] keys set to true
    dmft: dict = dataclasses.field(default_factory=dict)  # the checked [dmft] table ({}: no DMFT curves)

    @property
    def cells(self) -> Cells:
        """Every cell: by optimizer, then (p, hidden, alpha), then seed."""
        return Cells((block, 0, block.seeds) for block in self.blocks)

    @property
    def grid(self) -> np.ndarray:
        """One trajectory grid for the whole study, to its largest budget (SPEC 10)."""
        return epoch_grid(max(block.config.max_epochs for block in self.blocks))

    def budgets(self) -> dict[tuple[str, int, int, float], int]:
        """``(optimizer, p, hidden, alpha) -> max_epochs`` of the study's cells, in the study's order."""
        return {(c.optimizer_label, c.p, c.hidden, c.alpha): c.max_epochs for c in (b.config for b in self.blocks)}

    def axis(self, name: str) -> list:
        """The sorted values of ``p``, ``hidden`` or ``alpha`` over all cells."""
        return sorted({getattr(block.config, name) for block in self.blocks})

    def groups(self) -> list[Cells]:
        """Units of work and of writing, a deterministic function of the study (SPEC 7): the cells
        that share their data and budget (every run key but ``seed``; the baselines apart), all
        their optimizers together so that the replicas of one ``X`` share its products, cut into
        batches of consecutive seeds (:func:`group_seeds`); inside a group the cells go by optimizer,
        then seed. Each group is a lazy :class:`Cells`."""
        landscapes: dict[str, list[Block]] = {}
        for block in self.blocks:
            landscapes.setdefault(_landscape_key(block), []).append(block)
        groups = []
        for blocks in landscapes.values():  # one block per optimizer: the same landscape means the same (p, hidden, alpha)
            for first in range(0, len(blocks), MAX_OPTIMIZERS):
                chosen = blocks[first : first + MAX_OPTIMIZERS]
                size = group_seeds(chosen[0].config, len(chosen))
                for start in range(0, max(b.seeds for b in chosen), size):
                    groups.append(Cells((b, start, min(start + size, b.seeds)) for b in chosen if start < b.seeds))
        return groups


def _landscape_key(block: Block) -> str:
    """What the cells of one group share: every run key but ``seed``, what they record, and whether
    they are a baseline (baselines run one by one, apart from the replica engine)."""
    c = block.config
    keys = {k: v for k, v in c.to_dict().items() if k not in OPTIMIZER_KEYS and k != "seed"}
    return json.dumps(keys | {"record": block.record, "baseline": c.algorithm in BASELINES}, sort_keys=True)


#: At most this many replicas advance together, and per-seed instances take at most this many
#: bytes, by the study's ``backend`` key (not by the machine: grouping is a function of the file).
#: ``auto`` groups as ``cpu``, so a study means the same groups everywhere.
MAX_REPLICAS = {"cpu": 32, "auto": 32, "cuda": 1024}
MAX_REPLICA_BYTES = {"cpu": 2**30, "auto": 2**30, "cuda": 8 * 2**30}
#: A group holds at most this many optimizers; a study with more splits them into blocks.
MAX_OPTIMIZERS = 32


def group_seeds(config: RunConfig, optimizers: int = 1) -> int:
    """How many seeds of a cell's ``optimizers`` run as one replica batch: at most 32 replicas
    (1024 with ``backend = "cuda"``), at least one seed, and in the ``per-seed`` landscape no more
    than 1 GiB (8 GiB) of inputs (each seed has its own X, which its optimizers share)."""
    seeds = max(1, MAX_REPLICAS[config.backend] // optimizers)
    if config.landscape == "shared":
        return seeds
    itemsize = 4 if config.dtype == "float32" else 8
    per_seed = (n_samples(config.alpha, config.p) + config.test_size) * config.p * itemsize
    return max(1, min(seeds, MAX_REPLICA_BYTES[config.backend] // per_seed))


def load_study(path: str | Path, scale: str = "full", backend: str | None = None) -> Study:
    """Read and validate a study file; raise ``StudyError`` naming the file, the key and the reason.
    ``backend`` (the CLI's ``--backend``) replaces the file's ``backend`` for every optimizer."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle)
    except OSError as error:
        raise StudyError(f"{path}: cannot read the study file ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise StudyError(f"{path}: not valid TOML ({error})") from None
    try:
        return build_study(table, scale, source=str(path), backend=backend)
    except StudyError:
        raise
    except ValueError as error:
        raise StudyError(f"{path}: {error}") from None


def build_study(table: dict, scale: str = "full", source: str = "<table>", backend: str | None = None) -> Study:
    """Validate a parsed study table and expand it into cells (raises ``ValueError``). A bad value
    that the chosen ``[scale.NAME]`` table sets is named as ``scale.NAME.key``."""
    scaled, overrides = _apply_scale(table, scale)
    try:
        return _build_study(table, scaled, scale, source, backend)
    except ValueError as error:
        field = str(error).split(":", 1)[0].split(",", 1)[0].split(".", 1)[0]
        if field in overrides:
            raise ValueError(f"scale.{scale}.{error}") from None
        raise


def _build_study(raw_table: dict, table: dict, scale: str, source: str, backend: str | None) -> Study:
    """The study of ``raw_table`` (as written) with its scale applied (``table``)."""
    if backend is not None:
        table = {**table, "backend": backend}
        if isinstance(table.get("optimizer"), list):
            table["optimizer"] = [{k: v for k, v in t.items() if k != "backend"} if isinstance(t, dict) else t
                                  for t in table["optimizer"]]
    allowed = set(STUDY_KEYS) | set(RUN_KEYS) - {"seed"}
    if "seed" in table or any("seed" in t for t in table.get("optimizer", []) if isinstance(t, dict)):
        raise ValueError("seed: not a study key; runs are numbered 0 .. seeds-1 by `seeds`")
    for key in table:
        if key not in allowed:
            raise ValueError(f"{key}: unknown key; study keys are {', '.join(STUDY_KEYS)} and the run keys {', '.join(RUN_KEYS)}")
    name = table.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"name: required, a file-safe string (letters, digits, '_', '.', '-'), got {name!r}")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"description: must be a string, got {description!r}")
    seeds = table.get("seeds", 1)
    for count in seeds.values() if isinstance(seeds, dict) else [seeds]:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"seeds: must be an integer >= 1 (or a table of them by p), got {seeds!r}")
    tables = table.get("optimizer")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ValueError("optimizer: at least one [[optimizer]] table is required")
    shared = {k: v for k, v in table.items() if k in RUN_KEYS}
    _check_lists(shared, "")
    record = _check_record(table.get("record", {}))
    plot = _check_plot(table.get("plot", {}))

    blocks, labels, settings = [], [], []
    for index, optimizer_table in enumerate(tables):
        where = f"optimizer[{index}]."
        for key in optimizer_table:
            if key not in OPTIMIZER_KEYS and key not in RUN_KEYS:
                raise ValueError(f"{where}{key}: unknown key; optimizer keys are {', '.join(OPTIMIZER_KEYS)} plus run keys")
        for keys in _expand(optimizer_table, where):
            run_keys = shared | keys
            label, representative, new_blocks = _optimizer_blocks(run_keys, seeds, where, record)
            if label in labels:
                raise ValueError(f"{where}label: duplicate optimizer label {label!r}; give each optimizer a distinct `label`")
            labels.append(label)
            settings.append(representative)
            blocks.extend(new_blocks)
    _check_cell_names(blocks)
    baselines = sorted({b.config.algorithm for b in blocks if b.config.algorithm in BASELINES})
    if "hessian" in record and baselines:
        raise ValueError(f"record.hessian: the {' and '.join(baselines)} baseline has no training trajectory whose "
                         "final Hessian phaseret records; record Hessians in a study of gradient methods")
    dmft = dmft_curves.check_table(table.get("dmft"), dict(zip(labels, settings)))
    if "dmft" in plot["figures"] and not dmft:
        raise ValueError("plot.figures: the dmft figure draws the DMFT of a [dmft] table; add one, e.g. "
                         "[dmft] optimizers = [\"gd\"]")
    runs = max(block.seeds for block in blocks)
    if any(seed >= runs for seed in plot["seeds"]):
        raise ValueError(f"plot.seeds: {max(plot['seeds'])} is not a run of this study (it runs seeds 0 .. {runs - 1})")
    return Study(
        name=name, description=description, source=source, scale=scale, raw_table=raw_table, settings=table,
        optimizers=tuple(labels), optimizer_settings=tuple(settings), blocks=tuple(blocks),
        seeds=runs, plot=plot, record=record, dmft=dmft,
    )


def _check_record(record) -> tuple[str, ...]:
    """The ``[record]`` table; returns the names set to true, sorted."""
    if not isinstance(record, dict):
        raise ValueError("record: must be a table, e.g. [record] gradient_jumps = true")
    for key, value in record.items():
        if key not in RECORD_KEYS:
            raise ValueError(f"record.{key}: not recorded by this version; [record] takes "
                             + "; ".join(f"{k} ({v})" for k, v in RECORD_KEYS.items()))
        if key == "hessian":
            if value not in ("end", "grid"):
                raise ValueError(f"record.hessian: must be 'end' or 'grid', got {value!r}")
        elif not isinstance(value, bool):
            raise ValueError(f"record.{key}: must be true or false, got {value!r}")
    names = {name for name, on in record.items() if on}
    if record.get("hessian") == "grid":
        names.add("hessian_grid")  # the extremes on the grid, and the spectra at the end
    return tuple(sorted(names))


def _check_plot(plot) -> dict:
    """The ``[plot]`` table: ``figures`` (a list of FIGURES), ``panels`` (at most two PANEL_KEYS: rows,
    then columns), ``error_scale`` (log or linear, the mean-error axes), ``theory`` (draw state
    evolution's lines; default: when the study runs GAMP), ``seeds`` (the runs the ``dynamics``
    figure draws; default the first)."""
    if not isinstance(plot, dict):
        raise ValueError('plot: must be a table, e.g. [plot] panels = ["update"]')
    for key in plot:
        if key not in PLOT_KEYS:
            raise ValueError(f"plot.{key}: unknown key; [plot] takes {', '.join(PLOT_KEYS)}")
    figures = plot.get("figures", list(DEFAULT_FIGURES))
    if not isinstance(figures, list) or not figures or any(f not in FIGURES for f in figures):
        raise ValueError(f"plot.figures: must be a non-empty list of {', '.join(FIGURES)}, got {figures!r}")
    panels = plot.get("panels", [])
    if (not isinstance(panels, list) or len(panels) > 2 or len(set(panels)) != len(panels)
            or any(k not in PANEL_KEYS for k in panels)):
        raise ValueError(f"plot.panels: must list at most two distinct of {', '.join(PANEL_KEYS)} (rows, then columns), "
                         f"got {panels!r}")
    scale = plot.get("error_scale", "log")
    if scale not in ("log", "linear"):
        raise ValueError(f"plot.error_scale: must be 'log' or 'linear', got {scale!r}")
    theory = plot.get("theory")
    if theory is not None and not isinstance(theory, bool):
        raise ValueError(f"plot.theory: must be true or false, got {theory!r}")
    seeds = plot.get("seeds", [])
    if not isinstance(seeds, list) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in seeds):
        raise ValueError(f"plot.seeds: must be a list of run indices (integers >= 0), got {seeds!r}")
    return {"figures": tuple(figures), "panels": tuple(panels), "error_scale": scale, "theory": theory,
            "seeds": tuple(seeds)}


def _check_cell_names(blocks: list[Block]) -> None:
    """Refuse two cells whose file names coincide (also on file systems that ignore case): each
    would overwrite the other's results. A name ends in ``_s<seed>``, so two blocks' cells collide
    at some seed exactly when their seed-0 cells do."""
    seen = {}
    for cell in (block.cell(0) for block in blocks):
        other = seen.setdefault(cell.name.lower(), cell)
        if other is cell:
            continue
        if other.optimizer != cell.optimizer:
            raise ValueError(f"label: optimizers {other.optimizer!r} and {cell.optimizer!r} name the same cell files "
                             f"({cell.name!r}); give them labels that differ in letters, digits or . + = _ -")
        raise ValueError(f"alpha: {other.alpha!r} and {cell.alpha!r} name the same cell file ({cell.name!r}); "
                         "use alphas that differ in their first 6 significant digits")


def _apply_scale(table: dict, scale: str) -> tuple[dict, dict]:
    """The table with the ``[scale.NAME]`` overrides applied, and the overrides. The keys of every
    scale table are checked, whichever scale runs, so that a typo in ``[scale.quick]`` shows at once."""
    scales = table.get("scale", {})
    if not isinstance(scales, dict) or not all(isinstance(v, dict) for v in scales.values()):
        raise ValueError("scale: must hold tables such as [scale.quick]")
    allowed = set(STUDY_KEYS) | set(RUN_KEYS) - {"seed", "scale", "name"}
    for name, overrides in scales.items():
        for key in overrides:
            if key in ("scale", "name"):
                raise ValueError(f"scale.{name}.{key}: a scale may not change `scale` or `name`")
            if key not in allowed:
                raise ValueError(f"scale.{name}.{key}: unknown key; a scale overrides the study keys "
                                 f"{', '.join(k for k in STUDY_KEYS if k not in ('scale', 'name'))} and the run keys")
    if scale not in scales and scale != "full":
        raise ValueError(f"scale: no [scale.{scale}] table in this study (it has: {', '.join(scales) or 'none'})")
    overrides = scales.get(scale, {})
    return {k: v for k, v in table.items() if k != "scale"} | overrides, overrides


def _check_lists(keys: dict, where: str) -> None:
    """Only the axes may be lists among run keys; an empty axis is refused."""
    for key, value in keys.items():
        if isinstance(value, list):
            if key not in AXES:
                raise ValueError(f"{where}{key}: only {', '.join(AXES)} may be lists (axes); use separate study files")
            if not value:
                raise ValueError(f"{where}{key}: an empty list leaves nothing to run")
            if len(set(value)) != len(value):
                raise ValueError(f"{where}{key}: repeated values {value}")


def _expand(optimizer_table: dict, where: str) -> list[dict]:
    """One dict per optimizer: lists among optimizer keys expand, labelled with their values."""
    _check_lists({k: v for k, v in optimizer_table.items() if k in RUN_KEYS}, where)
    varied = [k for k in OPTIMIZER_KEYS if isinstance(optimizer_table.get(k), list)]
    for key in varied:
        if not optimizer_table[key]:
            raise ValueError(f"{where}{key}: an empty list leaves nothing to run")
    fixed = {k: v for k, v in optimizer_table.items() if k not in varied}
    if not varied:
        return [fixed]
    expanded = []
    for values in itertools.product(*(optimizer_table[k] for k in varied)):
        keys = fixed | dict(zip(varied, values))
        config_label = _base_label(keys)
        suffix = ",".join(f"{k}={v}" for k, v in zip(varied, values))
        keys["label"] = f"{fixed.get('label', config_label)},{suffix}"
        expanded.append(keys)
    return expanded


def _base_label(keys: dict) -> str:
    algorithm, update = keys.get("algorithm", "gd"), keys.get("update", "plain")
    return algorithm if update == "plain" else f"{algorithm}+{update}"


def _optimizer_blocks(run_keys: dict, seeds, where: str, record: tuple[str, ...]) -> tuple[str, RunConfig, list[Block]]:
    """Validate every (p, hidden, alpha) of one optimizer and list its blocks of cells; ``seeds`` and run
    keys given as tables by p (:func:`_at_p`) take their value at each cell's p."""
    if "alpha" not in run_keys:
        raise ValueError(f"{where}alpha: required (top level or in the optimizer table)")
    axes = {axis: _as_list(run_keys[axis]) for axis in AXES if axis in run_keys}
    most = max(seeds.values()) if isinstance(seeds, dict) else seeds
    count = most * math.prod(len(values) for values in axes.values())
    if count > MAX_CELLS:
        raise ValueError(f"seeds: {most} seeds make {count:,} cells for one optimizer; a study holds at most "
                         f"{MAX_CELLS:,} cells (one file each)")
    rest = {k: v for k, v in run_keys.items() if k not in AXES and k != "seed"}
    blocks = []
    for combo in itertools.product(*axes.values()):
        point = dict(zip(axes, combo))
        p = point.get("p", RunConfig.p)
        at_p = {k: _at_p(k, v, p, where if k in OPTIMIZER_KEYS else "") if k in BY_P_KEYS else v for k, v in rest.items()}
        try:
            config = validate(**at_p, **point)
        except ValueError as error:
            raise ValueError(f"{where}{error}" if _from_optimizer(error) else str(error)) from None
        blocks.append(Block(config, _at_p("seeds", seeds, p, ""), record))
    representative = blocks[0].config
    return representative.optimizer_label, representative, blocks


#: Keys whose value may be a table by p (``max_epochs = {512 = 18005, 1024 = 20002}``): every run
#: and optimizer key whose own value is not a table, and ``seeds``.
BY_P_KEYS = frozenset(k for k in RUN_KEYS + OPTIMIZER_KEYS if k not in ("stop", "reference")) | {"seeds"}


def _at_p(key: str, value, p: int, where: str):
    """``value`` at ``p``: itself, or from a table by p (keys are the p values, ``{512 = 18005,
    1024 = 20002}``): settings that vary with the system size, such as fig 4.2's budgets and
    seeds, in one file."""
    if not isinstance(value, dict):
        return value
    table, values = value, {}
    for name, value in table.items():
        if not re.fullmatch(r"[0-9]+", name):
            raise ValueError(f"{where}{key}: a table by p takes the p values as keys (e.g. {{512 = ..., 1024 = ...}}), "
                             f"got the key {name!r}")
        values[int(name)] = value
    if p not in values:
        raise ValueError(f"{where}{key}: no value for p = {p} (the table gives p = {', '.join(map(str, sorted(values)))})")
    return values[p]


def _from_optimizer(error: ValueError) -> bool:
    """Whether a validation error concerns an optimizer key (so the message points at its table)."""
    field = str(error).split(":", 1)[0].split(".", 1)[0].split(",", 1)[0]
    return field in OPTIMIZER_KEYS


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]
