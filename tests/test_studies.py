"""Every study file in ``studies/`` loads and validates at each of its scales, and runs end to end
with its figures drawn at a tiny size (p = 16, one seed, two alphas, a few epochs): a study file
that breaks fails the default suite."""

import tomllib
from pathlib import Path

import pytest

from phaseret import folders, runner
from phaseret.study import build_study, load_study

STUDIES = sorted((Path(__file__).parent.parent / "studies").glob("*.toml"))
TINY = {"p": 16, "seeds": 1, "max_epochs": 5, "n_test": 16}


def tiny(table: dict) -> dict:
    """The study at a tiny size: ``TINY`` everywhere, each alpha list cut to its last two values,
    a reference's budget cut to the tiny one."""
    def shrink(keys: dict) -> dict:
        keys = {k: v for k, v in keys.items() if k not in TINY}
        if isinstance(keys.get("alpha"), list):
            keys["alpha"] = keys["alpha"][-2:]
        if "reference" in keys:
            keys["reference"] = keys["reference"] | {"max_epochs": TINY["max_epochs"]}
        return keys

    shrunk = shrink({k: v for k, v in table.items() if k != "scale"}) | TINY
    shrunk["optimizer"] = [shrink(t) for t in table["optimizer"]]
    if "seeds" in shrunk.get("plot", {}):  # the runs a figure draws must be runs of the tiny study
        shrunk["plot"] = shrunk["plot"] | {"seeds": [s for s in shrunk["plot"]["seeds"] if s < TINY["seeds"]]}
    return shrunk


def test_the_study_folder_is_not_empty():
    assert len(STUDIES) >= 3


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_scale_of_every_study_file_validates(path):
    with open(path, "rb") as handle:
        table = tomllib.load(handle)
    for scale in ["full", *table.get("scale", {})]:
        assert load_study(path, scale).cells


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_study_file_runs_and_draws_at_a_tiny_size(path, tmp_path):
    with open(path, "rb") as handle:
        study = build_study(tiny(tomllib.load(handle)), source=str(path))
    out = tmp_path / study.name
    runner.run_study(study, out, progress=False)
    drawn = folders.plot_folder(out)
    assert drawn and all(p.stat().st_size > 1000 for p in drawn)
