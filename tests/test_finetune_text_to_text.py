"""Text-to-text fine-tuning (T5's casting): a tiny T5 from scratch learns the synthetic
sentiment task by writing the label's word, rank classification scores the label words, and
the export generates the same text in transformers."""

import json

import jax
import numpy as np
import pytest
from test_finetune_run import synthetic_tsv, tiny_finetune

from lm_jax.config_tools import override
from lm_jax.data.tokenizer import load_tokenizer
from lm_jax.errors import ConfigError
from lm_jax.finetune import finetune
from lm_jax.finetune.schema import validate
from lm_jax.finetune.text_to_text import score_text, t5_input, text_to_float


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("t2t")
    return synthetic_tsv(folder / "train.tsv", 400, 0), synthetic_tsv(folder / "dev.tsv", 60, 1)


def text_to_text(task_files, **overrides):
    fields = {
        "text_to_text.enabled": True,
        "text_to_text.label_words": ("bad", "good"),
        "text_to_text.max_target_length": 10,
        "data.max_seq_length": 48,
        "model.max_position": 64,
        "train.steps": 200,
        "train.eval_every": 100,
        **overrides,
    }
    return tiny_finetune(task_files, **fields)


def test_t5_casting():
    assert t5_input("sst2", "a fine film", None) == "sst2 sentence: a fine film"
    assert t5_input("rte", "A", "B") == "rte sentence1: A sentence2: B"
    assert [score_text(x) for x in (3.8, 3.9, 0.0, 4.99)] == ["3.8", "4.0", "0.0", "5.0"]
    assert text_to_float("2.4") == 2.4 and text_to_float("positive") == -1.0


def test_a_t5_from_scratch_learns_to_write_the_label(task_files, tmp_path):
    summary = finetune(text_to_text(task_files), tmp_path / "run", progress=False)
    assert summary.best["accuracy"] > 0.9 and summary.best["invalid"] < 0.1
    results = json.loads(summary.eval_results_path.read_text())
    assert [e["step"] for e in results["evaluations"]] == [0, 100, 200]
    rows = summary.predictions_path.read_text().splitlines()
    assert rows[0] == "input\ttarget\tprediction" and len(rows) == 61
    assert rows[1].split("\t")[0].startswith("synthetic sentence: ")
    assert sum(r.split("\t")[2] in ("bad", "good") for r in rows[1:]) > 54
    exported = json.loads((summary.export_dir / "config.json").read_text())
    assert exported["architectures"] == ["T5ForConditionalGeneration"]
    assert_transformers_writes_the_same(summary.export_dir, rows[1:])


def assert_transformers_writes_the_same(folder, rows, tokenizer=None):
    """The exported folder, loaded by transformers, greedily generates our predictions."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if tokenizer is None:  # as the run trained it
        tokenizer = load_tokenizer(folder / "tokenizer.model", extra_ids=0)
    peer = transformers.T5ForConditionalGeneration.from_pretrained(folder).eval()
    vocab = tokenizer.vocab
    for row in rows[:8]:
        source, _, ours = row.split("\t")
        ids = torch.tensor([[*tokenizer.encode(source).ids, vocab.eos_id]])
        with torch.no_grad():
            out = peer.generate(input_ids=ids, max_new_tokens=10, do_sample=False, num_beams=1)
        new = out[0, 1:].tolist()
        new = new[: new.index(vocab.eos_id)] if vocab.eos_id in new else new
        assert tokenizer.decode(new) == ours


def test_rank_classification_scores_each_label_word(task_files, tmp_path):
    config = text_to_text(task_files, **{"text_to_text.rank_classification": True})
    summary = finetune(config, tmp_path / "run", progress=False)
    assert summary.best["accuracy"] > 0.9 and summary.best["invalid"] == 0.0


def test_text_to_text_settings_are_checked(task_files):
    with pytest.raises(ConfigError, match="rank_classification is for classification"):
        validate(
            text_to_text(
                task_files, task="regression", **{"text_to_text.rank_classification": True}
            )
        )
    with pytest.raises(ConfigError, match="max_target_length must be >= 2"):
        validate(text_to_text(task_files, **{"text_to_text.max_target_length": 1}))


def test_a_label_word_longer_than_the_target_is_refused(task_files, tmp_path):
    config = text_to_text(task_files, **{"text_to_text.max_target_length": 3})
    with pytest.raises(ConfigError, match="the target 'bad' is 4 tokens"):
        finetune(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("objective", ["t5", "bart", "mass"])
def test_a_seq2seq_pretraining_run_fine_tunes_text_to_text(objective, task_files, tmp_path):
    """The run's whole encoder-decoder (BART's final_logits_bias included) arrives unchanged;
    rows are `source </s>` (BART `<s> source </s>`), the decoder starts from T5's pad or
    BART's </s>, and the export is the family's ...ForConditionalGeneration. MASS trains a
    BART-shaped model and fine-tunes as BART."""
    from conftest import tiny_config
    from flax import nnx

    from lm_jax.finetune import finetuning_config
    from lm_jax.finetune.run import build_model
    from lm_jax.finetune.text_to_text import TextToTextTaskData
    from lm_jax.finetune.weights import initial_weights
    from lm_jax.pretrain.run import pretrain
    from lm_jax.pretrain.schema import pretraining_config

    pre = tiny_config(**{"train.steps": 2, "tokenizer.extra_ids": 20})
    pre.objective = objective
    pre.objective_options = pretraining_config(objective).objective_options
    run = pretrain(pre, tmp_path / "pre", progress=False)
    config = text_to_text(task_files, init=str(run.workdir), **{"train.steps": 2})
    config.model = finetuning_config().model  # the shape comes from the run
    initial = initial_weights(config)
    family = "t5" if objective == "t5" else "bart"
    assert initial.family == family and ("bias" in initial.encoder) == (family == "bart")
    data = TextToTextTaskData(config, initial, tmp_path / "ft", resuming=False)
    vocab = data.tokenizer.vocab
    model = build_model(config, initial, vocab, data.model)
    for ours, theirs in zip(
        jax.tree.leaves(nnx.state(model.encoder, nnx.Param)), jax.tree.leaves(run.state.params)
    ):
        np.testing.assert_array_equal(ours, theirs)
    row = data.train.row(0)
    real = row["segment_ids"].sum()
    assert row["input_ids"][real - 1] == vocab.eos_id
    assert (row["input_ids"][0] == vocab.bos_id) == (family == "bart")
    start = vocab.pad_id if family == "t5" else vocab.eos_id
    assert row["decoder_inputs"][0] == start
    summary = finetune(config, tmp_path / "ft", progress=False)
    exported = json.loads((summary.export_dir / "config.json").read_text())
    name = "T5" if family == "t5" else "Bart"
    assert exported["architectures"] == [f"{name}ForConditionalGeneration"]


def test_a_t5_from_scratch_answers_squad_format_questions_as_text(tmp_path):
    """`question: Q context: C` -> the answer or "unanswerable": the official SQuAD 2.0
    metrics on dev, well above always abstaining (50), and the official predictions.json."""
    from test_finetune_qa import tiny_qa

    fields = {
        "text_to_text.enabled": True,
        "text_to_text.max_target_length": 6,
        "model.max_position": 64,
        "train.eval_every": 150,
        "train.learning_rate": 3e-3,
    }
    config = override(tiny_qa(tmp_path, steps=300), fields)
    summary = finetune(config, tmp_path / "run", progress=False)
    best = summary.best
    assert best["f1"] > 70 and best["HasAns_f1"] > 40 and best["NoAns_f1"] > 70, best
    answers = json.loads((summary.workdir / "predictions.json").read_text())
    assert len(answers) == 80 and "" in answers.values()
    rows = summary.predictions_path.read_text().splitlines()
    assert rows[1].startswith("question: what is the ")
    results = json.loads(summary.eval_results_path.read_text())
    assert results["metric"] == "f1" and {"exact", "HasAns_f1", "NoAns_f1"} <= set(best)


def test_regression_writes_scores_as_text(task_files, tmp_path):
    """STS-B's casting on the synthetic labels read as scores: targets "0.0" / "1.0", the
    Pearson / Spearman metrics and the share of answers that are no number."""
    config = text_to_text(task_files, task="regression", **{"train.steps": 20})
    config.text_to_text.label_words = ()
    summary = finetune(config, tmp_path / "run", progress=False)
    assert {"pearson", "spearman", "invalid"} <= set(summary.best)
    assert 0.0 <= summary.best["invalid"] <= 1.0
    targets = {r.split("\t")[1] for r in summary.predictions_path.read_text().splitlines()[1:]}
    assert targets == {"0.0", "1.0"}


def test_a_hugging_face_t5_folder_fine_tunes_text_to_text(task_files, tmp_path):
    """A `T5ForConditionalGeneration` folder with T5's own tokenizer (pad, </s>, unk and
    sentinels; no [CLS] or [MASK]): its weights arrive unchanged, rows are `source </s>`, the
    decoder starts from pad, and the export generates our predictions in transformers."""
    transformers = pytest.importorskip("transformers")
    from conftest import t5_tokenizer_folder
    from flax import nnx

    from lm_jax.data.hf_tokenizers import load_hugging_face_tokenizer
    from lm_jax.finetune import finetuning_config
    from lm_jax.finetune.weights import initial_weights
    from lm_jax.models.convert import load_hf_checkpoint

    texts = [line.split("\t")[1] for line in open(task_files[0]).read().splitlines()[1:]]
    sources = [t5_input("synthetic", t, None) for t in texts] + ["bad", "good"] * 20
    folder = t5_tokenizer_folder(tmp_path / "t5", sources, 50, fast=True)
    hf = transformers.T5Config(
        vocab_size=64,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    transformers.T5ForConditionalGeneration(hf).save_pretrained(folder)
    config = text_to_text(task_files, init=str(folder), **{"train.learning_rate": 1e-2})
    config.model = finetuning_config().model  # the shape comes from the folder
    initial = initial_weights(config)
    assert initial.family == "t5" and initial.tokenizer.vocab.eos_id == 1
    expected = nnx.state(load_hf_checkpoint(folder), nnx.Param)
    for ours, theirs in zip(jax.tree.leaves(initial.encoder), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(ours, theirs)
    summary = finetune(config, tmp_path / "run", progress=False)
    assert summary.best["accuracy"] > 0.6, summary.best
    rows = summary.predictions_path.read_text().splitlines()[1:]
    tokenizer = load_hugging_face_tokenizer(summary.export_dir)
    assert_transformers_writes_the_same(summary.export_dir, rows, tokenizer)


def test_a_hugging_face_bart_folder_fine_tunes_text_to_text(task_files, tmp_path):
    """A `BartForConditionalGeneration` folder with its byte-level BPE (vocab.json +
    merges.txt): rows `<s> source </s>`, the decoder starts from </s>, the export generates
    our predictions in transformers (the words learned; 100 steps are too few for the labels)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from test_finetune_run import BAD, FILLER, GOOD
    from tokenizers import ByteLevelBPETokenizer

    from lm_jax.data.hf_tokenizers import load_hugging_face_tokenizer
    from lm_jax.finetune import finetuning_config

    folder = tmp_path / "bart"
    folder.mkdir()
    bpe = ByteLevelBPETokenizer()
    sentences = [" ".join(GOOD + BAD + FILLER + ["synthetic", "sentence:"])] * 5
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(sentences, vocab_size=300, special_tokens=specials)
    bpe.save_model(str(folder))
    hf = transformers.BartConfig(
        vocab_size=bpe.get_vocab_size(),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
    )
    transformers.BartForConditionalGeneration(hf).save_pretrained(folder)
    config = text_to_text(task_files, init=str(folder), **{"train.steps": 100})
    config.model = finetuning_config().model  # the shape comes from the folder
    summary = finetune(config, tmp_path / "run", progress=False)
    assert summary.best["invalid"] < 0.1, summary.best  # it writes label words
    exported = json.loads((summary.export_dir / "config.json").read_text())
    assert exported["architectures"] == ["BartForConditionalGeneration"]
    tokenizer = load_hugging_face_tokenizer(summary.export_dir)
    vocab = tokenizer.vocab
    peer = transformers.BartForConditionalGeneration.from_pretrained(summary.export_dir).eval()
    for row in summary.predictions_path.read_text().splitlines()[1:9]:
        source, _, ours = row.split("\t")
        ids = torch.tensor([[vocab.bos_id, *tokenizer.encode(source).ids, vocab.eos_id]])
        with torch.no_grad():
            out = peer.generate(input_ids=ids, max_new_tokens=10, do_sample=False, num_beams=1)
        new = out[0, 1:].tolist()
        if new and new[0] == vocab.bos_id:  # BART's forced first token
            new = new[1:]
        new = new[: new.index(vocab.eos_id)] if vocab.eos_id in new else new
        assert tokenizer.decode(new) == ours
