"""SQuAD 2.0 (Rajpurkar et al. 2018): extractive QA with unanswerable questions; the official
metrics (exact, f1, HasAns_* / NoAns_*, best_f1 and its null-odds threshold) on dev.

Trains on the first 10 articles of SQuAD 2.0 train (4,719 questions) and evaluates on 5 dev
articles (1,407 questions, half unanswerable), read in place from ../shared/data/squad2.

bash scripts/finetune.sh --config=configs/finetune/squad2.py --config.init=runs/mlm
"""

from lm_jax.finetune.schema import finetuning_config, shared_data


def get_config():
    c = finetuning_config()
    c.name = "squad2"
    c.task = "question_answering"
    c.data.train_path = shared_data("squad2/train-subset.json")
    c.data.dev_path = shared_data("squad2/dev-subset.json")
    c.data.max_seq_length = 384  # BERT's SQuAD setting, with qa.doc_stride 128
    c.train.learning_rate = 3e-5
    c.epochs = 2.0  # Devlin et al. fine-tune SQuAD 2.0 for 2 epochs
    c.train.batch_size = 32
    c.text_to_text.max_target_length = 32  # answer tokens and eos, if text_to_text
    return c
