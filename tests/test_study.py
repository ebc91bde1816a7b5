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
