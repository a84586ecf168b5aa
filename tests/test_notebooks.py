"""The notebooks (notebooks/build.py): each runs end to end at a few training steps with no
cell raising and every picture cell drawing; the committed ones are the built cells, run."""

import importlib.util
import json

import pytest
from conftest import ROOT

NOTEBOOKS = ["quickstart", "objectives", "finetune", "generate"]


def build_module():
    spec = importlib.util.spec_from_file_location("build", ROOT / "notebooks" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_cells(notebook: dict) -> list[dict]:
    return [c for c in notebook["cells"] if c["cell_type"] == "code"]


def drew(cell: dict) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell["outputs"])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_runs_and_draws(name, tmp_path, data_dir):
    path = build_module().build(name, tmp_path, steps=4)
    cells = code_cells(json.loads(path.read_text()))
    assert not [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    figures = [c for c in cells if "figure" in c["metadata"].get("tags", [])]
    assert all(drew(c) for c in figures)
    assert figures or name == "generate"  # generate shows text only


def test_a_picture_cell_without_a_picture_fails_the_build(tmp_path):
    build = build_module()
    nb = build.notebook([("code", "x = 1"), ("figure", "x + 1")], steps=1)
    with pytest.raises(RuntimeError, match="cell 1 drew no picture"):
        build.execute(nb, tmp_path)


def test_the_committed_notebooks_are_the_built_cells_with_their_outputs():
    build = build_module()
    for name in NOTEBOOKS:
        committed = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
        expected = build.notebook(build.NOTEBOOKS[name](), build.STEPS)
        assert ["".join(c["source"]) for c in committed["cells"]] == [
            c.source for c in expected.cells
        ], f"{name}.ipynb is stale: python notebooks/build.py --only {name}"
        cells = code_cells(committed)
        assert all(c["execution_count"] for c in cells), f"{name}.ipynb was saved unrun"
        assert all(drew(c) for c in cells if "figure" in c["metadata"].get("tags", []))
