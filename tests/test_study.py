"""Study files (:mod:`phaseret.study`): validation before any work, cells, axes, scales, groups."""

import pytest
from tiny_study import BASE, write_study

from phaseret.study import StudyError, build_study, load_study


@pytest.mark.parametrize(
    "change, key",
    [
        ({"colour": "red"}, "colour"),
        ({"name": "my study"}, "name"),
        ({"seeds": 0}, "seeds"),
        ({"seeds": 2.5}, "seeds"),
        ({"optimizer": []}, "optimizer"),
        ({"p": "big"}, "p"),
        ({"alpha": [1.0, -2.0]}, "alpha"),
        ({"alpha": []}, "alpha"),
        ({"lr": [0.1, 0.2], "optimizer": [{"algorithm": "gd"}]}, "lr"),
        ({"max_epochs": [10, 20]}, "max_epochs"),
        ({"optimizer": [{"algorithm": "gd", "lr": -0.1}]}, r"optimizer\[0\]\.lr"),
        ({"optimizer": [{"algorithm": "p-sgd", "tau": 0.001}]}, r"optimizer\[0\]\.lr, tau, batch_fraction"),
        ({"optimizer": [{"algorithm": "gd"}, {"algorithm": "gd"}]}, r"optimizer\[1\]\.label"),
        ({"optimizer": [{"algorithm": "gd", "speed": 3}]}, r"optimizer\[0\]\.speed"),
        ({"optimizer": [{"algorithm": "langevin"}]}, r"optimizer\[0\]\.noise"),
        ({"stop": {"test_error": "low"}}, "stop.test_error"),
        ({"seed": 3}, "seed"),
        ({"scale": {"quick": 3}}, "scale"),
        ({"model": "pr-cubic"}, "model"),
        ({"landscape": "global"}, "landscape"),
    ],
)
def test_invalid_study_tables_name_the_key(change, key):
    with pytest.raises(ValueError, match=rf"^{key}: "):
        build_study(BASE | change)


def test_unknown_scale_and_bad_toml_name_the_file(tmp_path):
    path = write_study(tmp_path)
    with pytest.raises(StudyError, match=rf"^{path}: scale: no \[scale.huge\]"):
        load_study(path, "huge")
    path.write_text("name = 'x'\nalpha = [1.0,\n")
    with pytest.raises(StudyError, match=rf"^{path}: not valid TOML"):
        load_study(path)


def test_cells_axes_scales_and_optimizer_lists(tmp_path):
    study = load_study(write_study(tmp_path))
    assert study.optimizers == ("gd", "p-sgd+nesterov")
    assert len(study.cells) == 2 * 2 * 2
    assert study.axis("alpha") == [2.0, 4.0, 6.0]
    assert len(load_study(write_study(tmp_path), "quick").cells) == 4
    expanded = build_study(BASE | {"optimizer": [{"algorithm": "p-sgd", "lr": [0.002, 0.005]}]})
    assert expanded.optimizers == ("p-sgd,lr=0.002", "p-sgd,lr=0.005")
    assert [c.config.lr for c in expanded.cells] == [0.002, 0.002, 0.005, 0.005]
    # The grid runs to the largest budget of the study.
    mixed = build_study(BASE | {"optimizer": [{"algorithm": "gd"}, {"algorithm": "sgd", "max_epochs": 50}]})
    assert mixed.grid[-1] == 50


def test_a_million_cells_are_built_only_when_asked_for():
    """Cells are lazy: a study of 1,000,000 cells is its 10 blocks; indexing, iterating and the
    groups give the cells a fully expanded study would hold, in the same order."""
    import dataclasses
    import tracemalloc

    table = BASE | {"alpha": [2.0, 3.0, 4.0, 5.0, 6.0], "seeds": 100_000,
                    "optimizer": [{"algorithm": "gd"}, {"algorithm": "p-sgd", "update": "nesterov"}]}
    tracemalloc.start()
    study = build_study(table)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(study.cells) == 1_000_000 and len(study.blocks) == 10
    assert held < 2**20  # a Cell takes about 400 bytes: 1,000,000 of them would be ~400 MB
    cells = study.cells
    for index in (0, 99_999, 100_000, 654_321, -1):
        cell = cells[index]
        position = index % 1_000_000
        block = study.blocks[position // 100_000]
        assert (cell.optimizer, cell.alpha, cell.seed) == (block.config.optimizer_label, block.config.alpha, position % 100_000)
        assert cell.config == dataclasses.replace(block.config, seed=cell.seed)
    with pytest.raises(IndexError):
        cells[1_000_000]
    small = build_study(BASE | {"alpha": 2.0, "seeds": 40, "optimizer": [{"algorithm": "gd"}, {"algorithm": "p-sgd"}]})
    groups = small.groups()
    assert [len(g) for g in groups] == [32, 32, 16]  # 16 seeds x 2 optimizers per group of 32 replicas
    assert sorted(c.name for g in groups for c in g) == sorted(c.name for c in small.cells)
    assert list(groups[0]) == groups[0] and groups[0] == tuple(groups[0]) and groups[0] != groups[1]
