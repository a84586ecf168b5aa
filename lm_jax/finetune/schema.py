"""The fine-tuning configuration: every field, its meaning and default, and its validation.

Config files in `configs/finetune/` start from `finetuning_config()` and set their task's data;
the command line overrides any field (`--config.train.steps=300`). The defaults are the
standard recipe (Devlin et al. 2019, sec. 4 and appendix A.3): AdamW, linear warmup over 10% of
the steps then linear decay, learning rate 2e-5, 3 epochs, batch 32.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import ml_collections

from lm_jax.config_tools import Rule, check_fields
from lm_jax.errors import ConfigError
from lm_jax.finetune.data import (
    CLASSIFICATION,
    FORMATS,
    QUESTION_ANSWERING,
    REGRESSION,
    TFDS,
)
from lm_jax.generation.decoders import CAUSAL_MASKS
from lm_jax.pretrain.schema import pretraining_config
from lm_jax.pretrain.validation import MODEL_RULES
from lm_jax.train.settings import RULES as TRAINER_RULES
from lm_jax.train.settings import distributed_settings, mesh_settings, train_settings

TASKS = (CLASSIFICATION, REGRESSION, QUESTION_ANSWERING)
SCRATCH = "scratch"
TEXT_TO_TEXT_MASKS = ("", *CAUSAL_MASKS)


def finetuning_config() -> ml_collections.ConfigDict:
    """Defaults: classification of one text per example, from scratch, the standard recipe."""
    c = ml_collections.ConfigDict()
    c.name = "task"  # names the default output directory, runs/finetune/<name>
    # classification | regression (num_labels = 1, squared error) | question_answering
    # (extractive, SQuAD-format JSON files; the text / label columns are not read)
    c.task = CLASSIFICATION
    # Initial weights: "scratch" (random, a tokenizer trained on the task's training text), an
    # lm_jax pretraining run directory (its latest checkpoint and tokenizer), or a local Hugging
    # Face model folder (config.json + model.safetensors / pytorch_model.bin + vocab.txt).
    c.init = SCRATCH
    c.seed = 0  # data order, dropout, the new head's initialisation
    c.seeds = ()  # several seeds, one run each under output_dir/seed_<s>; () = config.seed only
    c.output_dir = ""  # "" -> runs/finetune/<name>
    c.epochs = 3.0  # passes over the training set when train.steps is 0
    c.warmup_fraction = 0.1  # share of the steps spent warming up when train.warmup_steps is -1
    # Layer-wise learning-rate decay (Clark et al. 2020, ELECTRA: 0.8): the head trains at lr,
    # layer l of L (1 = lowest) at lr * decay^(L + 2 - l), the embeddings at lr * decay^(L + 2).
    # 1 = none.
    c.layer_decay = 1.0

    c.data = ml_collections.ConfigDict()
    c.data.train_path = ""
    c.data.dev_path = ""  # "" -> hold out data.dev_fraction of the training file
    c.data.dev_fraction = 0.1
    # auto (from the extension) | tsv | csv | jsonl (QA: SQuAD-format JSON) | tfds (a prepared
    # TensorFlow Datasets dataset: data.tfds_name, e.g. glue/sst2 or squad/v2.0, its splits
    # data.train_split / data.dev_split, under data.tfds_data_dir; columns = feature names)
    c.data.format = "auto"
    c.data.tfds_name = ""
    c.data.tfds_data_dir = ""  # "" = TFDS's default data_dir
    c.data.train_split = "train"
    c.data.dev_split = "validation"  # "" -> hold out data.dev_fraction of the training split
    c.data.header = True  # TSV / CSV: the first row names the columns
    # Columns by header name, or by 0-based position ("7") in files without a header.
    c.data.text_column = "sentence"
    c.data.text_pair_column = ""  # the second text of sentence-pair tasks ("" = none)
    c.data.label_column = "label"
    c.data.labels = ()  # the label set in order; () = the sorted distinct training labels
    c.data.max_seq_length = 128  # [CLS] and [SEP] included; longer examples are truncated
    c.data.max_train_examples = 0  # use only the first N training examples (0 = all)

    # Extractive QA (BERT's run_squad.py settings): windows of data.max_seq_length tokens
    # starting every doc_stride context tokens, questions cut to max_query_length tokens; the
    # n_best_size best starts and ends, answers of at most max_answer_length tokens; no answer
    # when the null odds (no-answer score minus the best span's) exceed null_threshold.
    c.qa = ml_collections.ConfigDict()
    c.qa.doc_stride = 128
    c.qa.max_query_length = 64
    c.qa.n_best_size = 20
    c.qa.max_answer_length = 30
    c.qa.null_threshold = 0.0

    # Text-to-text (Raffel et al. 2020, T5 sec. 2.4): an encoder-decoder (T5, BART, MASS; from
    # scratch a T5 of config.model's shape) reads "<prefix> sentence: ..." (pairs: "sentence1:
    # ... sentence2: ...") and writes the label's word (STS-B: the score rounded to 0.2, as
    # text; QA: "question: ... context: ..." -> the answer or no_answer), scored by greedy
    # generation (or num_beams) with the heads' metrics (QA: SQuAD 2.0's); with
    # rank_classification, by the likelihood of each label's word instead.
    # LSTM_reg (Adhikari et al. 2019) instead of a Transformer: the non-pretrained floor
    # (from scratch; classification or regression). Hedwig's settings; its recipe also sets
    # train.learning_rate=1e-2, train.weight_decay=0 and train.ema_decay=0.99.
    c.lstm = ml_collections.ConfigDict()
    c.lstm.enabled = False
    c.lstm.embedding_size = 300
    c.lstm.hidden_size = 512  # per direction
    c.lstm.embedding_dropout = 0.2
    c.lstm.weight_drop = 0.1
    c.lstm.dropout = 0.5

    c.text_to_text = ml_collections.ConfigDict()
    c.text_to_text.enabled = False
    c.text_to_text.prefix = ""  # "" -> config.name
    c.text_to_text.label_words = ()  # each label's target text, in label order; () = the labels
    c.text_to_text.max_target_length = 8  # target tokens, end-of-sequence included
    c.text_to_text.num_beams = 1
    c.text_to_text.rank_classification = False
    c.text_to_text.no_answer = "unanswerable"  # QA: the target of an unanswerable question
    # A shared encoder generating under "causal", "prefix" or "unilm"; "" -> an encoder-decoder,
    # or the mask of the run's objective (clm, prefix_lm, unilm)
    c.text_to_text.mask = ""
    c.text_to_text.target_mask_prob = 0.7  # unilm: share of the answer masked (UniLM sec. 3.2)

    pretraining = pretraining_config()
    c.tokenizer = pretraining.tokenizer  # read when init is "scratch" (or to check a run's)
    c.tokenizer.extra_ids = 0
    c.tokenizer.vocab_size = 4000
    c.model = pretraining.model  # the shape when init is "scratch"; dropout and dtype always
    c.model.type_vocab_size = 2

    c.train = train_settings()
    c.train.steps = 0  # 0 -> epochs x training examples / batch_size
    c.train.warmup_steps = -1  # -1 -> warmup_fraction x steps
    c.train.learning_rate = 2e-5
    c.train.b2 = 0.999
    c.train.eps = 1e-8
    c.train.eval_every = 500
    c.train.eval_batches = 0  # 0 = the whole dev set at every evaluation
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 2
    c.mesh, c.distributed = mesh_settings(), distributed_settings()
    return c


_RULES: dict[str, Rule] = {
    **MODEL_RULES,
    **TRAINER_RULES,
    "task": (lambda x: x in TASKS, f"must be one of {TASKS}"),
    "init": (bool, 'must name "scratch", a pretraining run or a Hugging Face folder'),
    "seed": (lambda x: x >= 0, "must be >= 0"),
    "seeds": (
        lambda x: all(isinstance(s, int) and s >= 0 for s in x) and len(set(x)) == len(x),
        "must be distinct integers >= 0",
    ),
    "epochs": (lambda x: 0 < x < math.inf, "must be > 0"),
    "warmup_fraction": (lambda x: 0 <= x < 1, "must be in [0, 1)"),
    "layer_decay": (lambda x: 0 < x <= 1, "must be in (0, 1]"),
    "data.dev_fraction": (lambda x: 0 < x < 1, "must be in (0, 1)"),
    "data.format": (lambda x: x in FORMATS, f"must be one of {FORMATS}"),
    "data.text_column": (bool, "is required"),
    "data.label_column": (bool, "is required"),
    "data.max_seq_length": (lambda x: x >= 8, "must be >= 8"),
    "data.max_train_examples": (lambda x: x >= 0, "must be >= 0 (0 = all)"),
    "qa.doc_stride": (lambda x: x >= 1, "must be >= 1"),
    "qa.max_query_length": (lambda x: x >= 1, "must be >= 1"),
    "qa.n_best_size": (lambda x: x >= 1, "must be >= 1"),
    "qa.max_answer_length": (lambda x: x >= 1, "must be >= 1"),
    "qa.null_threshold": (math.isfinite, "must be finite"),
    "train.steps": (lambda x: x >= 0, "must be >= 0 (0: from config.epochs)"),
    "train.warmup_steps": (lambda x: x >= -1, "must be >= -1 (-1: config.warmup_fraction)"),
    "train.eval_batches": (lambda x: x >= 0, "must be >= 0 (0: the whole dev set)"),
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first unknown, mistyped or invalid field."""
    check_fields(config, finetuning_config(), _RULES)
    m = config.model
    if m.hidden_size % m.num_heads:
        raise ConfigError(
            f"config.model.hidden_size ({m.hidden_size}) must be divisible by "
            f"config.model.num_heads ({m.num_heads})"
        )
    if config.init != SCRATCH and not Path(config.init).is_dir():
        raise ConfigError(
            f'config.init: {config.init} is neither "scratch" nor a directory (an lm_jax '
            "pretraining run or a Hugging Face model folder)"
        )
    tfds = config.data.format == TFDS
    if tfds and not config.data.tfds_name:
        raise ConfigError("config.data.tfds_name is required with config.data.format=tfds")
    if not tfds and not config.data.train_path:
        raise ConfigError("config.data.train_path is required (or config.data.format=tfds)")
    if config.data.labels and config.task != CLASSIFICATION:
        raise ConfigError(f"config.data.labels is for classification; {config.task} has none")
    if config.task == QUESTION_ANSWERING:
        _validate_qa(config)
    _validate_text_to_text(config)
    _validate_lstm(config)
    if [config.mesh.data, config.mesh.fsdp, config.mesh.tensor].count(-1) > 1:
        raise ConfigError("config.mesh: at most one of data, fsdp, tensor may be -1")


def main_metric(config: ml_collections.ConfigDict) -> str:
    """The dev metric that picks the best model: accuracy, Pearson's r for regression, the
    official F1 for question answering."""
    return {REGRESSION: "pearson", QUESTION_ANSWERING: "f1"}.get(config.task, "accuracy")


def _validate_text_to_text(config: ml_collections.ConfigDict) -> None:
    t = config.text_to_text
    if not t.enabled:
        return
    if t.rank_classification and config.task != CLASSIFICATION:
        raise ConfigError("config.text_to_text.rank_classification is for classification")
    if t.max_target_length < 2:
        raise ConfigError("config.text_to_text.max_target_length must be >= 2 (a token and eos)")
    if t.num_beams < 1:
        raise ConfigError(f"config.text_to_text.num_beams must be >= 1, got {t.num_beams}")
    if config.layer_decay < 1:
        raise ConfigError("config.layer_decay is for encoders; text to text uses 1")
    if t.mask not in TEXT_TO_TEXT_MASKS:
        raise ConfigError(f"config.text_to_text.mask must be one of {TEXT_TO_TEXT_MASKS}")
    if not 0 < t.target_mask_prob <= 1:
        raise ConfigError("config.text_to_text.target_mask_prob must be in (0, 1]")


def _validate_lstm(config: ml_collections.ConfigDict) -> None:
    lstm = config.lstm
    if not lstm.enabled:
        return
    if config.init != SCRATCH:
        raise ConfigError("config.lstm.enabled: LSTM_reg trains from scratch (config.init=scratch)")
    if config.task == QUESTION_ANSWERING or config.text_to_text.enabled:
        raise ConfigError("config.lstm.enabled: LSTM_reg classifies or regresses; not QA or text")
    for field in ("embedding_dropout", "weight_drop", "dropout"):
        if not 0 <= lstm[field] < 1:
            raise ConfigError(f"config.lstm.{field} must be in [0, 1)")
    if lstm.embedding_size < 1 or lstm.hidden_size < 1:
        raise ConfigError("config.lstm.embedding_size and hidden_size must be >= 1")


def _validate_qa(config: ml_collections.ConfigDict) -> None:
    dev = config.data.dev_split if config.data.format == TFDS else config.data.dev_path
    if not dev:
        raise ConfigError(
            "config.data.dev_path (or, from TFDS, data.dev_split) is required for "
            "question_answering: a held-out fraction would split one context's questions "
            "between train and dev"
        )
    room = config.data.max_seq_length - config.qa.max_query_length - 3
    if room < 8:
        raise ConfigError(
            f"config.data.max_seq_length ({config.data.max_seq_length}) leaves {room} context "
            f"tokens after a config.qa.max_query_length ({config.qa.max_query_length}) question "
            "and [CLS] [SEP] [SEP]; at least 8 are needed"
        )


def resolve_schedule(config: ml_collections.ConfigDict, train_examples: int) -> None:
    """Fill `train.steps` from the epochs and `train.warmup_steps` from the warmup fraction
    (in place), once the number of training examples is known."""
    t = config.train
    if not t.steps:
        t.steps = max(1, math.ceil(config.epochs * train_examples / t.batch_size))
    if t.warmup_steps < 0:
        t.warmup_steps = int(config.warmup_fraction * t.steps)
    if t.warmup_steps > t.steps:
        raise ConfigError(
            f"config.train.warmup_steps ({t.warmup_steps}) exceeds config.train.steps ({t.steps})"
        )


DATA_VARIABLE = "LM_JAX_DATA_DIR"


def shared_data_dir() -> Path:
    """The project's shared task data (SST-2, RTE, STS-B, SQuAD 2.0, the Chinese review sets;
    read in place, never copied): $LM_JAX_DATA_DIR when set, else `../shared/data` next to the
    repository."""
    root = os.environ.get(DATA_VARIABLE)
    return Path(root) if root else Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_data(relative: str) -> str:
    """A file of `shared_data_dir()`, as a config field's string."""
    return str(shared_data_dir() / relative)
