"""The tiny study the study, runner, results, plot and CLI tests share, and how they compare results."""

from pathlib import Path

import xarray as xr

STUDY = """
name = "tiny"
description = "a tiny study"
model = "pr-quadratic"
p = 24
alpha = [2.0, 6.0]
seeds = 2
max_epochs = {max_epochs}

[[optimizer]]
algorithm = "gd"

[[optimizer]]
algorithm = "p-sgd"
update = "nesterov"
alpha = [2.0, 4.0]

[scale.quick]
seeds = 1
"""


def write_study(folder: Path, max_epochs: int = 300, text: str = STUDY) -> Path:
    path = folder / "tiny.toml"
    path.write_text(text.format(max_epochs=max_epochs))
    return path


def same_results(a: xr.Dataset, b: xr.Dataset) -> None:
    """Bit-identical but for the wall-clock times and the history line."""
    a, b = a.drop_vars("wall_seconds"), b.drop_vars("wall_seconds")
    a.attrs.pop("history"), b.attrs.pop("history")
    xr.testing.assert_identical(a, b)


def open_result(folder: Path) -> xr.Dataset:
    with xr.open_dataset(folder / "tiny.nc") as ds:
        return ds.load()


BASE = {"name": "s", "alpha": [1.0, 2.0], "p": 16, "max_epochs": 10, "optimizer": [{"algorithm": "gd"}]}
