"""The downstream table's bookkeeping (`benchmarks/downstream.py`): seeds summarised as mean
and standard deviation, the papers' claims read from the measured means, the table and the
picture written, cells of a resumed table kept and the budget of a table checked."""

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def downstream():
    spec = importlib.util.spec_from_file_location(
        "downstream", ROOT / "benchmarks" / "downstream.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["downstream"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def results_of(cells: dict[str, list[float]]) -> dict:
    """Results with SST-2 accuracies per row over seeds, and MLM / ELECTRA pretraining."""
    out = {"budget": 1.0, "pretraining": {}, "cells": {}}
    for row, values in cells.items():
        for seed, value in enumerate(values):
            out["cells"][f"{row}/sst2/{seed}"] = {"accuracy": value}
        if row != "none":
            out["pretraining"][row] = {"steps": 100, "tokens": 409600}
    return out


def test_seeds_become_mean_and_standard_deviation(downstream):
    results = results_of({"none": [0.70, 0.72, 0.74], "mlm": [0.80, 0.82, 0.81]})
    english = downstream.TABLES["english"]
    summary = downstream.summarize(english, results, ["none", "mlm"], ["sst2"])
    mean, std, n = summary["mlm"]["sst2"]["accuracy"]
    assert (mean, n) == (pytest.approx(0.81), 3)
    assert std == pytest.approx(statistics.stdev([0.80, 0.82, 0.81]))
    text = downstream.markdown(english, summary, results, ["none", "mlm"], ["sst2"])
    assert "| mlm | 100 (0.4M) | 81.0 +- 1.0 (n=3) |" in text
    assert "| none | 0 | 72.0 +- 2.0 (n=3) |" in text


def test_a_correlation_undefined_for_a_seed_reads_undefined(downstream, tmp_path, monkeypatch):
    """A model that writes one score for every STS-B pair has no correlation (scipy's NaN):
    the table says so, and the picture leaves its bar out and names it."""
    from matplotlib.axes import Axes

    notes = []
    draw_text = Axes.text
    monkeypatch.setattr(
        Axes, "text", lambda ax, x, y, s, **kw: notes.append(s) or draw_text(ax, x, y, s, **kw)
    )
    results = {"budget": 1.0, "pretraining": {}, "cells": {}}
    for seed, pearson in enumerate([0.2, float("nan"), 0.3]):
        results["cells"][f"t5/stsb/{seed}"] = {"pearson": pearson, "spearman": 0.1}
        results["cells"][f"none/stsb/{seed}"] = {"pearson": 0.25, "spearman": 0.2}
    english = downstream.TABLES["english"]
    summary = downstream.report(english, results, ["none", "t5"], ["stsb"], tmp_path)
    text = (tmp_path / "table.md").read_text()
    assert "| t5 | 0 | undefined (n=3) | 10.0 +- 0.0 (n=3) |" in text
    assert "| none | 0 | 25.0 +- 0.0 (n=3) |" in text
    assert summary["none"]["stsb"]["pearson"][0] == pytest.approx(0.25)
    assert (tmp_path / "downstream.png").read_bytes()[:4] == b"\x89PNG"
    assert notes == ["undefined (constant predictions): t5"]


def test_claims_are_read_from_the_means_with_their_spread(downstream):
    results = results_of(
        {"none": [0.70, 0.72, 0.74], "mlm": [0.80, 0.82, 0.81], "electra": [0.79, 0.81, 0.80]}
    )
    english = downstream.TABLES["english"]
    summary = downstream.summarize(english, results, ["none", "mlm", "electra"], ["sst2"])
    claims = {line.split(" (")[0][2:]: line for line in downstream.check_claims(english, summary)}
    assert "mlm 0.8100 vs none 0.7200: agrees" in claims["pretraining helps"]
    assert "outside the combined spread" in claims["pretraining helps"]
    assert "electra 0.8000 vs mlm 0.8100: disagrees" in claims["ELECTRA above MLM"]
    assert "inside the combined spread" in claims["ELECTRA above MLM"]
    assert claims["SOP above NSP"].endswith("not measured")


def test_the_report_writes_the_table_and_the_picture(downstream, tmp_path):
    results = results_of({"none": [0.70, 0.72], "mlm": [0.80, 0.82]})
    downstream.report(downstream.TABLES["english"], results, ["none", "mlm"], ["sst2"], tmp_path)
    assert "| mlm |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "downstream.png").read_bytes()[:4] == b"\x89PNG"


def test_a_table_measured_at_another_budget_is_refused(downstream, tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(results_of({"none": [0.7]})))
    with pytest.raises(SystemExit, match="measured at --budget 1.0"):
        downstream.run(downstream.TABLES["english"], tmp_path, ["none"], ["sst2"], 1, budget=0.5)


def test_a_table_measured_at_other_pretraining_minutes_is_refused(downstream, tmp_path):
    results = {**results_of({"none": [0.7]}), "pretraining_minutes": 1.0}
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit, match="measured at --pretraining-minutes 1.0"):
        downstream.run(
            downstream.TABLES["english"], tmp_path, ["none"], ["sst2"], 1, 1.0, minutes=16.0
        )


def test_a_row_with_every_cell_done_is_not_pretrained_again(downstream, tmp_path, monkeypatch):
    """A resumed table (its run directories gone) pretrains only the rows it still fine-tunes."""
    results = results_of({"mlm": [0.8], "wwm": [0.8]})
    results["finetuning_steps"] = {"sst2": 600}
    del results["cells"]["wwm/sst2/0"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    pretrained, tuned = [], []
    monkeypatch.setattr(downstream, "prepare_data", lambda table, out: ({}, out / "tok.model"))
    monkeypatch.setattr(downstream, "share_compilations", lambda cache: None)
    monkeypatch.setattr(downstream, "pretrain_row", lambda x, row: pretrained.append(row))
    monkeypatch.setattr(
        downstream,
        "finetune_cell",
        lambda x, task, row, init, seed: tuned.append(row) or {"step": 600, "accuracy": 0.8},
    )
    monkeypatch.setattr(downstream, "report", lambda *args: None)
    downstream.run(downstream.TABLES["english"], tmp_path, ["mlm", "wwm"], ["sst2"], 1, 1.0)
    assert pretrained == tuned == ["wwm"]


def test_an_interrupted_cell_ends_the_table_without_being_recorded(
    downstream, tmp_path, monkeypatch
):
    """SIGTERM stops a fine-tuning run with a checkpoint; the table stops too, and does not
    cache the run's partial metrics as the cell's result."""
    from types import SimpleNamespace

    interrupted = SimpleNamespace(interrupted=True, signal="SIGTERM")
    monkeypatch.setattr(downstream, "prepare_data", lambda table, out: ({}, out / "tok.model"))
    monkeypatch.setattr(downstream, "share_compilations", lambda cache: None)
    monkeypatch.setattr(downstream, "finetune", lambda config, progress: interrupted)
    english = downstream.TABLES["english"]
    with pytest.raises(SystemExit, match="none/sst2/0: stopped by SIGTERM; rerun"):
        downstream.run(english, tmp_path, ["none"], ["sst2"], 1, budget=1.0)
    saved = tmp_path / "results.json"
    assert not saved.exists() or json.loads(saved.read_text())["cells"] == {}


def test_a_table_in_use_by_another_process_is_refused(downstream, tmp_path):
    """Two processes filling one --out would each overwrite the cells the other saved."""
    from lm_jax.errors import OutputError
    from lm_jax.train.run_directory import RunDirectoryLock

    with (
        RunDirectoryLock(tmp_path),
        pytest.raises(OutputError, match="in use by another.*choose another --out"),
    ):
        downstream.run(downstream.TABLES["english"], tmp_path, ["none"], ["sst2"], 1, 1.0)
    assert not (tmp_path / "results.json").exists()
