"""Notebooks run: their code cells execute top to bottom (display cells excepted)."""

import json
from pathlib import Path

import pytest
from conftest import ROOT, run_python


@pytest.mark.slow  # each notebook pretrains; the README main job test covers the same path
@pytest.mark.parametrize(
    "notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name
)
def test_notebook_code_runs(notebook: Path):
    cells = json.loads(notebook.read_text())["cells"]
    code = ["NOTEBOOK_STEPS = 10"]
    code += [
        "".join(c["source"])
        for c in cells
        if c["cell_type"] == "code" and "IPython.display" not in "".join(c["source"])
    ]
    out = run_python("\n\n".join(code))
    assert "held-out loss" in out
