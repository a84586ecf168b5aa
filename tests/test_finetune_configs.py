"""configs/finetune/: every task config reads its real data with the columns and labels it
names (the sizes of ../shared/data/README.md), without training."""

import importlib.util

import numpy as np
import pytest
from conftest import ROOT

from lm_jax.finetune.data import label_ids, label_set
from lm_jax.finetune.qa_data import read_squad
from lm_jax.finetune.schema import validate
from lm_jax.finetune.sequence import read_splits

# task: (train examples, dev examples, labels or None for regression)
SIZES = {
    "sst2": (67349, 872, ["0", "1"]),
    "rte": (2490, 277, ["0", "1"]),
    "stsb": (4249, 1500, None),
    "chnsenticorp": (6989, 777, ["0", "1"]),
    "waimai": (10788, 1199, ["0", "1"]),
    "squad2": (4719, 1407, None),
}


def load(name):
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "configs" / "finetune" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_every_task_config_is_listed():
    assert sorted(p.stem for p in (ROOT / "configs" / "finetune").glob("*.py")) == sorted(SIZES)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_task_config_reads_its_data(name, data_dir, monkeypatch):
    monkeypatch.setenv("LM_JAX_DATA_DIR", str(data_dir))
    config = load(name)
    validate(config)
    n_train, n_dev, labels = SIZES[name]
    if config.task == "question_answering":
        train = read_squad(config.data.train_path, training=True)
        dev = read_squad(config.data.dev_path, training=False)
        assert (len(train), len(dev), train.skipped) == (n_train, n_dev, 0)
        assert sum(not e.answerable for e in train.examples) == 348
        assert sum(not e.answers for e in dev.examples) == 702
        return
    train, dev = read_splits(config)
    assert (len(train), len(dev)) == (n_train, n_dev)
    assert (train.pairs is None) == (name not in ("rte", "stsb"))
    if labels is None:
        scores = label_ids(dev, "regression", [])
        assert 0 <= scores.min() and scores.max() <= 5
    else:
        assert label_set(train, config.data.labels) == labels
        counts = np.bincount(label_ids(dev, "classification", labels))
        assert len(counts) == 2 and counts.min() > 0.3 * len(dev)  # both classes present
