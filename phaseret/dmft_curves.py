"""DMFT curves beside a study's simulations (SPEC 14): the ``[dmft]`` table, one p -> infinity
solution per optimizer and alpha, stored as ``DIR/dmft.nc`` and merged into the study's dataset
as ``dmft_<name>_trajectory`` on the study's epoch grid.

``[dmft]`` keys: ``optimizers`` (labels of the study's optimizers; default every one the equations
cover), ``epochs`` (the DMFT's horizon; default, and at most, each optimizer's budget: the
solutions cost O(paths T^3)), ``paths`` (the sample side's paths, default 65,536), ``sampler``
(``sobol`` or ``random``), ``memory`` (the Jacobians' window in steps; default all, exact),
``refresh`` (with ``memory``: whole Jacobian rows every this many steps, R_f's tail stretched from
the last one; default none, the tail cut), ``refresh_growth`` (with ``refresh``: the whole rows
thin out, the next ``max(refresh, floor(g t))`` steps after step t; default none), ``smoothing``
(finite differences' half-width for the spiking Jacobians; default none), ``teacher_estimate``
(``"stein"``, ``"average"`` or ``"difference"``, the last with ``smoothing``: how E[f lambda*] is
averaged over the paths; default :func:`phaseret.dmft.default_teacher_estimate`) and ``replicates``
(independent solutions averaged, default 1; from 2 on the overlap, the training loss and the
test error carry the theory's own standard errors, ``dmft_overlap_trajectory_stderr`` and so on,
drawn as bands). A sub-table named by an optimizer's label, ``[dmft."p-sgd"]``, sets any of these
keys but ``optimizers`` for that optimizer alone (a noisier solution can take more replicates, a
costlier one a shorter horizon); the table's own keys hold for the rest. The equations start from
a fixed overlap (at p -> infinity a random start has 0), so a study with ``[dmft]`` starts its runs
at ``init = "overlap"`` and the DMFT at the same overlap.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from . import dmft
from .config import RunConfig
from .sizes import available_bytes

KEYS = ("optimizers", "epochs", "paths", "sampler", "memory", "replicates", "smoothing", "refresh", "refresh_growth",
        "teacher_estimate")
#: The keys an optimizer's own sub-table ``[dmft."LABEL"]`` may set.
PER_OPTIMIZER = KEYS[1:]
#: Keys passed to the solver only where the table sets them: stored solutions solved before they
#: existed keep matching their settings.
OPTIONAL = ("smoothing", "refresh", "refresh_growth", "teacher_estimate")
#: The file of a results folder that holds its DMFT curves.
FILE = "dmft.nc"


def uncovered(config: RunConfig) -> str | None:
    """Why the DMFT does not cover a cell's optimizer and setting, or None."""
    c = config
    if c.hidden != 1:
        return f"hidden = {c.hidden} (the equations are for the single-layer student)"
    if c.algorithm not in dmft.ALGORITHMS:
        return f"algorithm = {c.algorithm!r} (covered: {', '.join(dmft.ALGORITHMS)})"
    if c.update not in dmft.UPDATES:
        return f"update = {c.update!r} (covered: {', '.join(dmft.UPDATES)})"
    if c.init != "overlap":
        return f"init = {c.init!r} (the DMFT starts at a fixed overlap: set init = 'overlap' and init_overlap)"
    if c.teacher != "sphere":
        return f"teacher = {c.teacher!r} (the equations take |w*|^2 = p)"
    return None


def check_table(table, configs: dict[str, RunConfig]) -> dict:
    """The ``[dmft]`` table against the study's optimizers (label -> a representative cell
    config); returns ``{"optimizers": labels, "settings": {label: {"epochs", "paths", "sampler",
    "memory", "replicates", "smoothing", "refresh", "refresh_growth", "teacher_estimate"}}}`` (an
    optimizer's sub-table over the table's keys over the defaults), or {} without it."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ValueError('dmft: must be a table, e.g. [dmft] optimizers = ["gd", "p-sgd"]')
    for key, value in table.items():
        if key in configs:
            if not isinstance(value, dict):
                raise ValueError(f'dmft."{key}": must be a table of that optimizer\'s DMFT settings '
                                 f'({", ".join(PER_OPTIMIZER)}), e.g. [dmft."{key}"] replicates = 4')
        elif key not in KEYS:
            raise ValueError(f"dmft.{key}: unknown key; [dmft] takes {', '.join(KEYS)} and sub-tables named by "
                             f"optimizer labels ({', '.join(configs)})")
    labels = table.get("optimizers", [label for label, c in configs.items() if uncovered(c) is None])
    if "optimizers" not in table and not labels:
        reasons = "; ".join(f"{label}: {uncovered(c)}" for label, c in configs.items())
        raise ValueError(f"dmft.optimizers: the DMFT covers none of this study's optimizers ({reasons})")
    if not isinstance(labels, list) or not labels:
        raise ValueError(f"dmft.optimizers: must be a non-empty list of the study's optimizer labels, got {labels!r}")
    for label in labels:
        if label not in configs:
            raise ValueError(f"dmft.optimizers: {label!r} is not an optimizer of this study ({', '.join(configs)})")
        reason = uncovered(configs[label])
        if reason:
            raise ValueError(f"dmft.optimizers: the DMFT does not cover {label!r}: {reason}")
    shared = {key: value for key, value in table.items() if key in PER_OPTIMIZER}
    common = _numerics(shared, "dmft.")
    settings = {label: common for label in labels}
    for label, own in table.items():
        if label in configs:
            if label not in labels:
                raise ValueError(f'dmft."{label}": {label!r} has no DMFT here (dmft.optimizers: {", ".join(labels)})')
            for key in own:
                if key not in PER_OPTIMIZER:
                    raise ValueError(f'dmft."{label}".{key}: unknown key; an optimizer\'s sub-table takes '
                                     f'{", ".join(PER_OPTIMIZER)}')
            settings[label] = _numerics(shared | own, f'dmft."{label}".')
    for label in labels:  # Stein's direction needs the optimizer's model: refused naming the table that asked
        own = "teacher_estimate" in table.get(label, {})
        dmft.check_teacher_estimate(f'dmft."{label}".' if own else "dmft.", settings[label]["teacher_estimate"],
                                    configs[label].model)
    return {"optimizers": tuple(labels), "settings": settings}


def _numerics(table: dict, field: str) -> dict:
    """``table``'s solver settings with their defaults, checked, each refused naming ``field + key``."""
    paths, sampler = table.get("paths", 65_536), table.get("sampler", "sobol")
    memory, replicates = table.get("memory"), table.get("replicates", 1)
    smoothing, refresh, growth = table.get("smoothing"), table.get("refresh"), table.get("refresh_growth")
    teacher = table.get("teacher_estimate")
    dmft.check_numerics(field, paths, sampler, memory, replicates, smoothing, refresh, growth, teacher)
    epochs = table.get("epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"{field}epochs: must be an integer >= 1 (the DMFT's horizon), got {epochs!r}")
    return {"epochs": epochs, "paths": paths, "sampler": sampler, "memory": memory, "replicates": replicates,
            "smoothing": smoothing, "refresh": refresh, "refresh_growth": growth, "teacher_estimate": teacher}


def _settings(config: RunConfig) -> dict:
    """The keyword arguments of :func:`phaseret.dmft.solve` for one cell's configuration."""
    c = config
    return dict(model=c.model, alpha=c.alpha, lr=c.step_size, epochs=c.max_epochs, algorithm=c.algorithm,
                update=c.update, momentum=c.momentum, batch_fraction=c.batch_fraction, tau=c.tau,
                overlap0=c.init_overlap, projection=c.projection, loss_eps=c.loss_eps, K=c.K)


def solutions(study) -> list[tuple[str, float, dict]]:
    """``(optimizer, alpha, solve's settings)`` of every DMFT the study asks for (one per
    optimizer and alpha: the DMFT does not depend on p or the seed)."""
    table, found = study.dmft, {}
    for block in study.blocks:
        c = block.config
        if table and c.optimizer_label in table["optimizers"] and uncovered(c) is None:
            own = table["settings"][c.optimizer_label]
            horizon = min(c.max_epochs, own["epochs"] or c.max_epochs)
            optional = {key: own[key] for key in OPTIONAL if own[key] is not None}
            found.setdefault((c.optimizer_label, c.alpha), _settings(c) | optional | {
                "epochs": horizon, **{key: own[key] for key in ("paths", "sampler", "memory", "replicates")}})
    return [(label, alpha, settings) for (label, alpha), settings in found.items()]


def check_memory(study) -> None:
    """Refuse, before any work, a DMFT that does not fit in this machine's memory."""
    available = available_bytes()
    for label, alpha, settings in solutions(study):
        steps = settings["epochs"] * dmft.steps_per_epoch(settings["algorithm"], settings["batch_fraction"])
        needed = dmft.solution_bytes(settings["paths"], steps, settings["memory"], settings.get("smoothing"),
                                     settings.get("refresh"), settings.get("teacher_estimate") == "difference")
        if available is not None and needed > available:
            raise ValueError(f"dmft.paths: the DMFT of {label} at alpha {alpha:g} needs about {needed / 2**30:.1f} GiB "
                             f"({settings['paths']} paths, {steps} steps) but {available / 2**30:.1f} GiB is available; "
                             "lower dmft.paths or max_epochs")


def curves(study, stored: xr.Dataset | None = None, between=None, save=None, replicates=None) -> xr.Dataset:
    """The DMFT of every (optimizer, alpha) of ``[dmft]`` over ``optimizer, alpha, epoch`` on the
    study's grid (NaN past an optimizer's budget). ``stored``: a previous ``dmft.nc``; its
    solutions of the same settings and solver revision (``dmft.REVISION``) are reused, not solved
    again (a variable added since they were stored, such as a standard error, stays NaN for them,
    unless ``replicates`` still holds all of a solution's replicates: then it is put together again
    from them, nothing solved).
    ``between()`` is called before each solution (a run's stop check); ``save(ds)`` after each, with
    the solutions so far (those not yet solved NaN and not listed as done).
    ``replicates``: a store of single replicates (:class:`phaseret.results.DmftReplicates`): those
    stored are reused, each one solved is kept as it finishes, and ``between()`` is called after it
    too, so a stop costs at most the replicate at hand."""
    grid = study.grid
    current = stored is not None and stored.attrs.get("revision") == dmft.REVISION  # else solved by an older solver
    done = json.loads(stored.attrs.get("solutions", "[]")) if current else []
    wanted = solutions(study)
    labels = list(dict.fromkeys(label for label, _, _ in wanted))
    alphas = sorted({alpha for _, alpha, _ in wanted})
    values = {name: np.full((len(labels), len(alphas), len(grid)), np.nan) for name in dmft.TRAJECTORIES}
    most = max(settings["replicates"] for _, _, settings in wanted)
    by_replicate = {name: np.full((len(labels), len(alphas), most, len(grid)), np.nan)  # NaN past a solution's own
                    for name in dmft.BY_REPLICATE}
    finished = []
    for label, alpha, settings in wanted:
        index = (labels.index(label), alphas.index(alpha))
        entry = [label, alpha, settings]
        if entry in done and not _assembled_anew(stored, label, alpha, settings, replicates):
            old = stored.sel(optimizer=label, alpha=alpha)
            for name in values:
                if name in old:  # a variable added since that solution was stored stays NaN
                    values[name][index] = old[name].values
            for name in by_replicate:
                if name in old:
                    kept = old[name].values[:settings["replicates"]]
                    by_replicate[name][index][:len(kept)] = kept
            finished.append(entry)
    for label, alpha, settings in wanted:
        entry = [label, alpha, settings]
        if entry in finished:
            continue
        if between is not None:
            between()
        found = replicates.load(label, alpha, settings) if replicates is not None else None

        def keep(seed, arrays, label=label, alpha=alpha, settings=settings):
            if replicates is not None:
                replicates.keep(label, alpha, settings, seed, arrays)
            if between is not None:
                between()

        ds = dmft.solve(**settings, stored=found, on_replicate=keep)
        index = (labels.index(label), alphas.index(alpha))
        on_grid = np.isin(grid, ds.epoch.values)
        for name in values:
            values[name][index][on_grid] = ds[name].sel(epoch=grid[on_grid]).values
        for name in by_replicate:
            by_replicate[name][index][:ds.sizes["replicate"], on_grid] = ds[name].sel(epoch=grid[on_grid]).values
        finished.append(entry)
        if save is not None and len(finished) < len(wanted):
            save(_dataset(study, labels, alphas, values, by_replicate, finished))
    return _dataset(study, labels, alphas, values, by_replicate, finished)


def _assembled_anew(stored: xr.Dataset, label: str, alpha: float, settings: dict, replicates) -> bool:
    """Whether a stored solution lacks a by-replicate variable added since (``dmft.BY_REPLICATE``)
    while the store of single ``replicates`` still holds all of its replicates: it is then put
    together again from them (nothing solved) instead of reused with that variable NaN."""
    if all(name in stored for name in dmft.BY_REPLICATE) or replicates is None:
        return False
    return len(replicates.load(label, alpha, settings)) == settings["replicates"]


def _dataset(study, labels: list, alphas: list, values: dict, by_replicate: dict, finished: list) -> xr.Dataset:
    """The curves ``values`` (name -> optimizer x alpha x epoch) and each replicate's own
    ``by_replicate`` (name -> optimizer x alpha x replicate x epoch) as the ``dmft.nc`` Dataset,
    with the ``finished`` solutions' settings in its ``solutions`` attribute."""
    data = {name: (("optimizer", "alpha", "epoch"), array, dmft.TRAJECTORIES[name]) for name, array in values.items()}
    data |= {name: (("optimizer", "alpha", "replicate", "epoch"), array, dmft.BY_REPLICATE[name])
             for name, array in by_replicate.items()}
    most = next(iter(by_replicate.values())).shape[2]
    coords = {"optimizer": ("optimizer", labels, {"long_name": "optimizer"}),
              "alpha": ("alpha", alphas, {"long_name": "sample ratio alpha = n/p", "units": "1"}),
              "replicate": ("replicate", np.arange(most), {"long_name": "solver seed of a replicate"}),
              "epoch": ("epoch", study.grid, {"long_name": "epoch", "units": "1"})}
    attrs = {"title": f"DMFT (p -> infinity) of study {study.name}", "Conventions": "CF-1.8",
             "solutions": json.dumps(finished), "revision": dmft.REVISION,
             "references": "Gerbelot et al. 2022 (arXiv 2210.06591); Mignacco et al. 2020, 2021"}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def merged(ds: xr.Dataset, curves_ds: xr.Dataset) -> xr.Dataset:
    """The study's dataset with the DMFT's variables as ``dmft_<name>`` over its optimizers and
    alphas (NaN elsewhere), on the same epoch grid; the replicates' dimension as ``dmft_replicate``."""
    extra = curves_ds.rename({name: f"dmft_{name}" for name in curves_ds.data_vars})
    if "replicate" in extra.dims:  # dmft.nc written before the replicates' overlaps were kept has none
        extra = extra.rename({"replicate": "dmft_replicate"})
    extra = extra.reindex(optimizer=ds.optimizer.values, alpha=ds.alpha.values)
    extra.attrs = {}
    kept = ("optimizer", "alpha", "epoch", "dmft_replicate")
    return xr.merge([ds, extra.drop_vars([c for c in extra.coords if c not in kept])], combine_attrs="override")
