"""Fine-tuning pretrained encoders on labelled tasks: single-sentence and sentence-pair
classification, and regression (GLUE SST-2, RTE, STS-B; Chinese sentiment).

    from lm_jax.finetune import finetune, finetuning_config
    config = finetuning_config()  # or a file in configs/finetune/
    summary = finetune(config)    # summary.best, summary.eval_results_path, ...
"""

from lm_jax.finetune.run import FinetuneSummary, finetune
from lm_jax.finetune.schema import finetuning_config

__all__ = ["FinetuneSummary", "finetune", "finetuning_config"]
