"""TFDS task readers on locally built datasets: builders with GLUE's and SQuAD 2.0's exact
names, configs, versions and features (unregistered, so the registered `glue` / `squad`
builders read what they wrote), prepared offline as ArrayRecord; then read through
`tfds.data_source` by name as a prepared `glue/sst2` or `squad/v2.0` would be."""

import numpy as np
import pytest

from lm_jax.errors import DataError
from lm_jax.finetune.tfds_tasks import read_tfds_examples, read_tfds_squad

tfds = pytest.importorskip("tensorflow_datasets")

SST2 = {
    "train": [("a lovely film", 1), ("dull and grim", 0), ("superb cast", 1)],
    "validation": [("boring plot", 0), ("happy story", 1)],
}
CONTEXT = "Rollo agreed to swear fealty to King Charles III of West Francia in 911."
SQUAD = {
    "train": [("q1", "Who got fealty?", [("King Charles III", 32)], False)],
    "validation": [
        ("d1", "When?", [("911", 68), ("in 911", 65)], False),
        ("d2", "Who refused?", [], True),
    ],
}


class Glue(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """GLUE's SST-2 config, version and features (tensorflow_datasets/text/glue.py)."""

    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="sst2", version="2.0.0")]

    def _info(self):
        features = {
            "sentence": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=["negative", "positive"]),
            "idx": np.int32,
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(rows) for split, rows in SST2.items()}

    def _generate_examples(self, rows):
        for i, (sentence, label) in enumerate(rows):
            yield i, {"sentence": sentence, "label": label, "idx": i}


class Squad(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """SQuAD's v2.0 config, version and features (tensorflow_datasets/datasets/squad)."""

    VERSION = tfds.core.Version("3.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="v2.0")]

    def _info(self):
        answers = tfds.features.Sequence({"text": tfds.features.Text(), "answer_start": np.int32})
        features = {
            "id": np.str_,
            "title": tfds.features.Text(),
            "context": tfds.features.Text(),
            "plausible_answers": answers,
            "question": tfds.features.Text(),
            "is_impossible": np.bool_,
            "answers": answers,
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(rows) for split, rows in SQUAD.items()}

    def _generate_examples(self, rows):
        for qid, question, answers, impossible in rows:
            spans = {"text": [t for t, _ in answers], "answer_start": [s for _, s in answers]}
            yield (
                qid,
                {
                    "id": qid,
                    "title": "Normans",
                    "context": CONTEXT,
                    "plausible_answers": {"text": [], "answer_start": []},
                    "question": question,
                    "is_impossible": impossible,
                    "answers": spans,
                },
            )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    for builder in (
        Glue(config="sst2", data_dir=str(root), file_format="array_record"),
        Squad(config="v2.0", data_dir=str(root), file_format="array_record"),
    ):
        builder.download_and_prepare()
    return str(root)


def test_glue_examples_read_by_name(data_dir):
    train = read_tfds_examples("glue/sst2", "train", data_dir, "sentence", "label")
    assert train.pairs is None  # records come in TFDS's key-hash order
    assert sorted(zip(train.texts, train.labels)) == sorted((t, str(y)) for t, y in SST2["train"])
    dev = read_tfds_examples("glue/sst2", "validation", data_dir, "sentence", "label")
    assert len(dev) == 2 and "glue/sst2:validation" in dev.source
    with pytest.raises(DataError, match=r"no text feature 'text'; its features: \['idx'"):
        read_tfds_examples("glue/sst2", "train", data_dir, "text", "label")
    with pytest.raises(DataError, match="is not prepared under"):
        read_tfds_examples("glue/rte", "train", data_dir, "sentence1", "label")


def test_squad_v2_read_by_name(data_dir):
    train = read_tfds_squad("squad/v2.0", "train", data_dir, training=True)
    (example,) = train.examples
    assert example.context[example.answer_start : example.answer_end] == "King Charles III"
    dev = read_tfds_squad("squad/v2.0", "validation", data_dir, training=False)
    answers = {e.qid: e.answers for e in dev.examples}  # TFDS orders records by key hash
    assert answers == {"d1": ("911", "in 911"), "d2": ()}
    assert {e.qid for e in dev.examples if not e.answerable} == {"d2"}


def test_a_run_fine_tunes_from_tfds(data_dir, tmp_path):
    from lm_jax.finetune import finetune, finetuning_config

    c = finetuning_config()
    c.name, c.data.format, c.data.tfds_name = "tfds_sst2", "tfds", "glue/sst2"
    c.data.tfds_data_dir, c.data.max_seq_length = data_dir, 16
    c.tokenizer.vocab_size, c.tokenizer.model_type = 300, "word"
    c.model.update(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    c.model.max_position = 16
    c.train.update(steps=2, batch_size=2, eval_every=2, checkpoint_every=2)
    summary = finetune(c, tmp_path / "run", progress=False)
    assert summary.final_step == 2 and len(summary.predictions_path.read_text().splitlines()) == 3
