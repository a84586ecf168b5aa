"""Fine-tuning runs end to end on a tiny synthetic task: outputs, learning, exact resumption,
initial weights from a pretraining run and from a Hugging Face folder, seeds, bad input."""

import json
import os
import signal

import jax
import numpy as np
import pytest
from conftest import ROOT, run_module, tiny_config, train_xlnet_spiece
from flax import nnx

from lm_jax.config_tools import override
from lm_jax.errors import CheckpointError, ConfigError, DataError
from lm_jax.finetune import finetune, finetuning_config
from lm_jax.finetune.run import build_model
from lm_jax.finetune.weights import initial_weights
from lm_jax.models.encoder import EncoderForSequenceClassification

GOOD = ["great", "lovely", "superb", "fine", "happy", "bright"]
BAD = ["awful", "dull", "poor", "sad", "grim", "boring"]
FILLER = ["the", "film", "was", "a", "story", "of", "plot", "and", "cast", "with"]


def synthetic_tsv(path, n: int, seed: int):
    """Sentences whose label is which word list their one sentiment word comes from."""
    rng = np.random.default_rng(seed)
    lines = ["label\tsentence"]
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILLER, int(rng.integers(3, 8))))
        words.insert(int(rng.integers(len(words) + 1)), rng.choice(GOOD if label else BAD))
        lines.append(f"{label}\t{' '.join(words)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("task")
    return synthetic_tsv(folder / "train.tsv", 400, 0), synthetic_tsv(folder / "dev.tsv", 60, 1)


def tiny_finetune(task_files, **overrides):
    c = finetuning_config()
    c.name = "synthetic"
    c.data.train_path, c.data.dev_path = task_files
    c.data.max_seq_length = 16
    c.tokenizer.vocab_size = 300
    c.model.update(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    c.model.max_position = 32
    c.train.update(steps=40, batch_size=16, learning_rate=3e-3, log_every=5, eval_every=10)
    c.train.checkpoint_every = 10
    return override(c, overrides)


def changed(config, **fields):
    """A copy of `config` with dotted `fields` set (`override` changes its argument)."""
    return override(config.copy_and_resolve_references(), fields)


def two_labels(cfg, rngs):
    return EncoderForSequenceClassification(cfg, 2, rngs=rngs)


def eval_records(workdir):
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in records if r["split"] == "eval"]


def test_scratch_run_learns_and_writes_its_outputs(task_files, tmp_path):
    summary = finetune(tiny_finetune(task_files), tmp_path / "run", progress=False)
    assert summary.best["accuracy"] > 0.9  # the sentiment word decides the label
    results = json.loads(summary.eval_results_path.read_text())
    assert (
        results["metric"] == "accuracy" and results["best"]["accuracy"] == summary.best["accuracy"]
    )
    assert [e["step"] for e in results["evaluations"]] == [0, 10, 20, 30, 40]
    assert {"accuracy", "f1", "loss"} <= set(results["evaluations"][-1])
    rows = summary.predictions_path.read_text().splitlines()
    assert rows[0].split("\t") == ["index", "text", "label", "prediction", "p_0", "p_1"]
    assert len(rows) == 61
    assert set(summary.plots) == {"dev metric", "loss", "confusion matrix"}
    assert set(summary.files) == {"predictions", *summary.plots}
    assert all(p.stat().st_size > 1000 for p in summary.plots.values())
    exported = json.loads((summary.export_dir / "config.json").read_text())
    assert exported["architectures"] == ["BertForSequenceClassification"]
    assert (summary.export_dir / "tokenizer.model").is_file()


def test_the_predictions_are_the_best_evaluations_outputs_not_computed_again(
    task_files, tmp_path, monkeypatch
):
    from lm_jax.finetune.evaluation import Evaluator

    scored, outputs = [], Evaluator.outputs

    def counted(self, params, full=False):
        scored.append(full)
        return outputs(self, params, full)

    monkeypatch.setattr(Evaluator, "outputs", counted)
    summary = finetune(tiny_finetune(task_files), tmp_path / "run", progress=False)
    assert scored == [False] * 5  # steps 0, 10, 20, 30, 40; none again at the end
    rows = [r.split("\t") for r in summary.predictions_path.read_text().splitlines()[1:]]
    accuracy = np.mean([label == prediction for _, _, label, prediction, *_ in rows])
    assert accuracy == pytest.approx(summary.best["accuracy"])


def test_sigterm_then_resume_continues_exactly(task_files, tmp_path, monkeypatch):
    config = tiny_finetune(task_files, **{"train.steps": 20, "train.eval_every": 4})
    straight = finetune(config, tmp_path / "straight", progress=False)

    from lm_jax.finetune import evaluation

    original = evaluation.Evaluator.__call__

    def stop_at_8(self, params, step):
        if step == 8:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, params, step)

    monkeypatch.setattr(evaluation.Evaluator, "__call__", stop_at_8)
    stopped = finetune(config, tmp_path / "resumed", progress=False)
    assert stopped.interrupted and stopped.final_step == 8
    monkeypatch.setattr(evaluation.Evaluator, "__call__", original)
    resumed = finetune(config, tmp_path / "resumed", progress=False)
    assert resumed.final_step == 20 and resumed.trained_steps == 12
    assert eval_records(tmp_path / "resumed") == eval_records(tmp_path / "straight")
    assert resumed.best == straight.best
    read = lambda s: s.predictions_path.read_text()
    assert read(resumed) == read(straight)


def test_initial_weights_from_a_pretraining_run(task_files, tmp_path):
    from lm_jax.pretrain.run import pretrain

    run = pretrain(tiny_config(**{"train.steps": 4}), tmp_path / "pre", progress=False)
    config = tiny_finetune(task_files, init=str(run.workdir))
    config.model = finetuning_config().model  # the shape comes from the run
    initial = initial_weights(config)
    assert "pretraining run" in initial.description and initial.tokenizer is not None
    model = build_model(config, initial, initial.tokenizer.vocab, two_labels)
    trained = run.state.params["encoder"]
    for (path, ours), theirs in zip(
        jax.tree_util.tree_flatten_with_path(nnx.state(model.encoder, nnx.Param))[0],
        jax.tree.leaves(trained),
    ):
        np.testing.assert_array_equal(ours, theirs, err_msg=jax.tree_util.keystr(path))
    assert model.encoder.cfg.hidden_size == 64  # the run's shape
    with pytest.raises(ConfigError, match="hidden_size=48 differs from the pretrained"):
        wider = changed(config, **{"model.hidden_size": 48})
        build_model(wider, initial, initial.tokenizer.vocab, two_labels)
    other = tmp_path / "other.model"
    other.write_bytes(b"not the run's")
    with pytest.raises(DataError, match="is not the tokenizer the pretraining run"):
        initial_weights(changed(config, **{"tokenizer.path": str(other)}))
    summary = finetune(changed(config, **{"train.steps": 4}), tmp_path / "ft", progress=False)
    assert summary.final_step == 4 and summary.eval_results_path.is_file()
    # A run recorded before a group or field existed reads them at their defaults.
    record = run.workdir / "run_config.json"
    older = json.loads(record.read_text())
    del older["model_options"], older["train"]["keep_checkpoints"]
    record.write_text(json.dumps(older))
    assert initial_weights(config).encoder is not None


@pytest.mark.slow  # XLNet's model and step: test_finetune_parity; its rows: test_finetune_data
def test_an_xlnet_pretraining_run_fine_tunes_with_xlnets_rows_and_summary(task_files, tmp_path):
    """Rows `A <sep> <cls>`, the last token's sequence summary; the transformer's weights
    arrive unchanged (not the LM bias); exported as XLNetForSequenceClassification."""
    from lm_jax.finetune.sequence import SequenceTaskData
    from lm_jax.models.xlnet import XLNetForSequenceClassification
    from lm_jax.pretrain.run import pretrain
    from lm_jax.pretrain.schema import pretraining_config

    xlnet = tiny_config(**{"train.steps": 4})
    xlnet.objective, xlnet.objective_options = "plm", pretraining_config("plm").objective_options
    run = pretrain(xlnet, tmp_path / "pre", progress=False)
    config = tiny_finetune(task_files, init=str(run.workdir), **{"train.steps": 4})
    config.model = finetuning_config().model
    initial = initial_weights(config)
    assert initial.family == "xlnet" and "bias" not in initial.encoder
    summary = finetune(config, tmp_path / "ft", progress=False)
    assert summary.final_step == 4
    exported = json.loads((summary.export_dir / "config.json").read_text())
    assert exported["architectures"] == ["XLNetForSequenceClassification"]

    data = SequenceTaskData(config, initial, tmp_path / "ft", resuming=True)
    first = data.train.row(0)
    real = first["segment_ids"].sum()
    vocab = initial.tokenizer.vocab
    assert first["input_ids"][real - 1] == vocab.cls_id and first["token_type_ids"][real - 1] == 2
    assert first["input_ids"][real - 2] == vocab.sep_id and first["input_ids"][0] != vocab.cls_id
    model = data.model(initial.encoder_cfg, nnx.Rngs(0))
    assert isinstance(model, XLNetForSequenceClassification)


def test_a_bart_pretraining_run_fine_tunes_from_the_decoders_last_state(task_files, tmp_path):
    """Rows `<s> A </s>`, BART's classifier on the decoder's state at the last </s>; the
    encoder-decoder's weights arrive unchanged (not final_logits_bias); exported as
    BartForSequenceClassification (its logits against ours: test_finetune_parity)."""
    transformers = pytest.importorskip("transformers")
    import torch

    from lm_jax.finetune.sequence import SequenceTaskData
    from lm_jax.models.seq2seq import BartForSequenceClassification
    from lm_jax.pretrain.run import pretrain
    from lm_jax.pretrain.schema import pretraining_config

    bart = tiny_config(**{"train.steps": 4})
    bart.objective, bart.objective_options = "bart", pretraining_config("bart").objective_options
    run = pretrain(bart, tmp_path / "pre", progress=False)
    config = tiny_finetune(task_files, init=str(run.workdir), **{"train.steps": 4})
    config.model = finetuning_config().model
    initial = initial_weights(config)
    assert initial.family == "bart" and "bias" not in initial.encoder
    vocab = initial.tokenizer.vocab
    with_head = lambda cfg, rngs: BartForSequenceClassification(cfg, 2, vocab.eos_id, rngs=rngs)
    model = build_model(config, initial, vocab, with_head)
    trained = run.state.params
    np.testing.assert_array_equal(
        model.encoder.word.embedding[...], trained["word"]["embedding"][...]
    )
    summary = finetune(config, tmp_path / "ft", progress=False)
    assert summary.final_step == 4

    data = SequenceTaskData(config, initial, tmp_path / "ft", resuming=True)
    first = data.train.row(0)
    real = first["segment_ids"].sum()
    assert first["input_ids"][0] == vocab.bos_id and first["input_ids"][real - 1] == vocab.eos_id
    assert isinstance(data.model(initial.encoder_cfg, nnx.Rngs(0)), BartForSequenceClassification)
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(summary.export_dir)
    assert type(loaded).__name__ == "BartForSequenceClassification"
    with torch.no_grad():
        logits = loaded.eval()(
            input_ids=torch.tensor(first["input_ids"][None]).long(),
            attention_mask=torch.tensor(first["segment_ids"][None]).long(),
        ).logits
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


@pytest.mark.slow  # Hugging Face loading itself is in the default run (test_parity.py)
def test_initial_weights_from_a_hugging_face_folder(task_files, tmp_path):
    transformers = pytest.importorskip("transformers")
    words = sorted(set(GOOD + BAD + FILLER))
    (tmp_path / "hf").mkdir()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(specials + words) + "\n")
    hf_config = transformers.BertConfig(
        vocab_size=len(specials) + len(words),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    peer = transformers.BertForMaskedLM(hf_config)
    peer.save_pretrained(tmp_path / "hf")
    config = tiny_finetune(task_files, init=str(tmp_path / "hf"), **{"train.steps": 4})
    initial = initial_weights(config)
    model = build_model(config, initial, initial.tokenizer.vocab, two_labels)
    word = model.encoder.embeddings.word.embedding[...]
    np.testing.assert_array_equal(word, peer.bert.embeddings.word_embeddings.weight.detach())
    summary = finetune(config, tmp_path / "ft", progress=False)
    assert summary.final_step == 4
    assert (summary.export_dir / "vocab.txt").read_text().split() == specials + words
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(summary.export_dir)
    assert loaded.config.num_labels == 2 and loaded.config.id2label == {0: "0", 1: "1"}
    gpt = tmp_path / "gpt"
    transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2)
    ).save_pretrained(gpt)
    with pytest.raises(CheckpointError, match="unsupported"):
        initial_weights(changed(config, init=str(gpt)))


def test_an_electra_folder_fine_tunes_with_electras_heads(task_files, tmp_path):
    """The discriminator's encoder with ELECTRA's dense + GeLU classifier (no pooler), exported
    as ElectraForSequenceClassification."""
    transformers = pytest.importorskip("transformers")
    from lm_jax.finetune.sequence import SEQUENCE_CLASSIFICATION
    from lm_jax.models.heads import FirstTokenClassificationHead

    words = sorted(set(GOOD + BAD + FILLER))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    hf_config = transformers.ElectraConfig(
        vocab_size=len(specials) + len(words),
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    peer = transformers.ElectraForPreTraining(hf_config)
    peer.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(specials + words) + "\n")
    config = tiny_finetune(task_files, init=str(tmp_path / "hf"))
    initial = initial_weights(config)
    assert initial.family == "electra" and "(electra)" in initial.description
    model = build_model(
        config,
        initial,
        initial.tokenizer.vocab,
        lambda cfg, rngs: EncoderForSequenceClassification(cfg, 2, initial.family, rngs=rngs),
    )
    assert isinstance(model.head, FirstTokenClassificationHead)
    assert model.encoder.cfg.embedding_width == 16
    assert SEQUENCE_CLASSIFICATION[initial.family] == "ElectraForSequenceClassification"


def test_a_roberta_folder_fine_tunes_with_its_bpe_rows_and_head(task_files, tmp_path):
    """Byte-level BPE from vocab.json + merges.txt, rows `<s> A </s>`, RoBERTa's dense + tanh
    first-token head; a few steps train."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import ByteLevelBPETokenizer

    from lm_jax.finetune.sequence import SequenceTaskData
    from lm_jax.models.heads import FirstTokenClassificationHead

    folder = tmp_path / "hf"
    folder.mkdir()
    bpe = ByteLevelBPETokenizer()
    sentences = [" ".join(GOOD + BAD + FILLER)] * 5
    bpe.train_from_iterator(
        sentences, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    bpe.save_model(str(folder))
    hf_config = transformers.RobertaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=34,
        type_vocab_size=1,
    )
    transformers.RobertaForMaskedLM(hf_config).save_pretrained(folder)
    config = tiny_finetune(task_files, init=str(folder), **{"train.steps": 4})
    config.model = finetuning_config().model  # the shape comes from the folder
    initial = initial_weights(config)
    assert initial.family == "roberta" and initial.tokenizer.vocab.cls_id == 0
    data = SequenceTaskData(config, initial, tmp_path / "ft", resuming=False)
    row = data.train.row(0)
    assert row["input_ids"][0] == 0 and row["input_ids"][row["segment_ids"].sum() - 1] == 2
    assert not row["token_type_ids"].any()
    model = build_model(config, initial, initial.tokenizer.vocab, data.model)
    assert isinstance(model.head, FirstTokenClassificationHead)
    summary = finetune(config, tmp_path / "ft", progress=False)
    assert summary.final_step == 4
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(summary.export_dir)
    assert type(loaded).__name__ == "RobertaForSequenceClassification"


@pytest.mark.slow  # the XLNet fine-tuning path itself runs in the default suite (the plm run)
def test_an_xlnet_folder_fine_tunes_with_its_spiece_model(task_files, tmp_path, wiki_docs):
    """XLNetLMHeadModel weights and spiece.model (<sep>, <cls>, <mask> pieces): rows
    `A <sep> <cls>` with XLNet's ids, a few steps train."""
    transformers = pytest.importorskip("transformers")
    import sentencepiece as spm

    folder = tmp_path / "hf"
    folder.mkdir()
    sentences = wiki_docs[:200] + [" ".join(GOOD + BAD + FILLER)] * 20
    train_xlnet_spiece(folder / "spiece.model", sentences)
    hf_config = transformers.XLNetConfig(
        vocab_size=500, d_model=32, n_layer=1, n_head=2, d_inner=64
    )
    transformers.XLNetLMHeadModel(hf_config).save_pretrained(folder)
    config = tiny_finetune(task_files, init=str(folder), **{"train.steps": 4})
    config.model = finetuning_config().model  # the shape comes from the folder
    initial = initial_weights(config)
    assert initial.family == "xlnet" and "bias" not in initial.encoder
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    assert initial.tokenizer.vocab.cls_id == sp.piece_to_id("<cls>")
    summary = finetune(config, tmp_path / "ft", progress=False)
    assert summary.final_step == 4


@pytest.mark.slow
def test_several_seeds_report_each_and_mean_std(task_files, tmp_path):
    config = tiny_finetune(task_files, seeds=(1, 2), **{"train.steps": 10, "train.eval_every": 5})
    summary = finetune(config, tmp_path / "seeds", progress=False)
    assert set(summary["seeds"]) == {"1", "2"}
    values = [summary["seeds"][s]["accuracy"] for s in ("1", "2")]
    assert summary["mean_std"]["accuracy"]["mean"] == pytest.approx(np.mean(values))
    assert summary["mean_std"]["accuracy"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert (tmp_path / "seeds" / "seed_1" / "eval_results.json").is_file()
    assert json.loads((tmp_path / "seeds" / "seeds.json").read_text()) == summary


def cli(*args):
    return run_module("lm_jax.finetune", *args)


def test_command_line_bad_data_exits_2_and_writes_nothing(task_files, tmp_path):
    """The default run's one fine-tuning subprocess (the full set of cases: the next test)."""
    fresh = tmp_path / "fresh"
    bad = cli(
        f"--config={ROOT / 'configs' / 'finetune' / 'sst2.py'}",
        f"--config.data.train_path={task_files[0]}",
        f"--config.data.dev_path={task_files[1]}",
        "--config.data.text_column=review",
        f"--config.output_dir={fresh}",
    )
    assert bad.returncode == 2 and "no text column 'review'" in bad.stderr, bad.stderr[-1500:]
    assert bad.stderr.strip().splitlines()[-1].startswith("lm_jax: error:")
    assert [p.name for p in fresh.iterdir()] == [".lock"]


def test_command_line_bad_input_exits_2_and_keeps_outputs(task_files, tmp_path):
    flags = [
        f"--config={ROOT / 'configs' / 'finetune' / 'sst2.py'}",
        f"--config.data.train_path={task_files[0]}",
        f"--config.data.dev_path={task_files[1]}",
        "--config.data.text_column=sentence",
        "--config.data.label_column=label",
        "--config.model.num_layers=1",
        "--config.model.hidden_size=32",
        "--config.model.num_heads=2",
        "--config.model.intermediate_size=64",
        "--config.tokenizer.vocab_size=300",
        "--config.data.max_seq_length=16",
        "--config.train.steps=2",
        f"--config.output_dir={tmp_path / 'run'}",
    ]
    ok = cli(*flags)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "eval results" in ok.stdout and str(tmp_path / "run") in ok.stdout
    files = lambda: {
        p: p.read_bytes()
        for p in (tmp_path / "run").rglob("*")
        if p.is_file() and p.name != ".lock"
    }
    before = files()
    cases = {
        "--config.data.text_column=review": "no text column 'review'",
        "--config.train.learning_rate=-1": "config.train.learning_rate must be > 0",
        "--config.data.max_seq_lenght=8": "did you mean config.data.max_seq_length",
        f"--config.init={tmp_path / 'nowhere'}": 'neither "scratch" nor a directory',
        "--config.train.batch_size=8": "different configuration",  # another run, same dir
    }
    for flag, message in cases.items():
        bad = cli(*flags, flag)
        assert bad.returncode == 2 and message in bad.stderr, (flag, bad.stderr[-1500:])
        assert bad.stderr.strip().splitlines()[-1].startswith("lm_jax: error:")
    assert files() == before
    fresh = tmp_path / "fresh"
    bad = cli(*flags, "--config.data.labels=('neg','pos')", f"--config.output_dir={fresh}")
    assert bad.returncode == 2 and "labels ['0', '1'] are outside the label set" in bad.stderr
    assert [p.name for p in fresh.iterdir()] == [".lock"]  # nothing written


def test_a_fresh_start_drops_the_best_model_of_a_run_that_crashed_early(task_files, tmp_path):
    """A run killed before its first checkpoint restarts from step 0: the best model it kept
    belongs to that lost attempt and must not outlive it."""
    from lm_jax.finetune.best import BestModel

    stale = BestModel(tmp_path / "run" / "best", "accuracy", fresh=False)
    stale.offer(99, {"accuracy": 1.0, "loss": 0.0}, {"w": np.zeros(3, np.float32)})
    summary = finetune(tiny_finetune(task_files, **{"train.steps": 4}), tmp_path / "run")
    assert summary.best["step"] in (0, 4) and summary.best["accuracy"] < 1.0
    assert BestModel(tmp_path / "run" / "best", "accuracy", fresh=False).step in (0, 4)
