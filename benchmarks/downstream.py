"""Which objective gives the best model, at equal compute (issue 19; a benchmark, not a test).

Every row pretrains the same model size with the same tokenizer on the same corpus for the
same wall time on this machine (each objective's steady step time is measured first; the
tokens each saw are reported), then fine-tunes every task with one recipe and several seeds.
The corpus is gensim's offline Wikipedia sample plus the unlabeled training texts of the tasks
(task-adaptive pretraining, Gururangan et al. 2020: labels are never read). Rows: no
pretraining (the same architecture from random initialisation), the encoder objectives, and
T5 / BART through text-to-text fine-tuning. Results are cached per cell in `results.json`, so
an interrupted or extended table resumes; the table (mean +- standard deviation), the papers'
claims checked against it, and a bar chart with error bars are written next to it.

`--table chinese` is the ERNIE / BERT-wwm comparison: character MLM, whole-word masking with
jieba's words and ERNIE's entity masking, pretrained on People's Daily at equal budget, and no
pretraining, fine-tuned on ChnSentiCorp (character tokens).

    python benchmarks/downstream.py                    # every row, SST-2 / RTE / STS-B, 3 seeds
    python benchmarks/downstream.py --tasks squad2     # SQuAD 2.0 (its own run: 5x a cell)
    python benchmarks/downstream.py --budget 0.25 --rows none,mlm,electra --tasks sst2
    python benchmarks/downstream.py --rows none,mlm --tasks sst2 --pretraining-minutes 16 \
        --out runs/downstream/mlm16     # does more pretraining pay off?
    python benchmarks/downstream.py --table chinese
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lm_jax.config_tools import load_config_file, override  # noqa: E402
from lm_jax.data.sources import load_documents, wikipedia_sample  # noqa: E402
from lm_jax.data.tokenizer import train_sentencepiece  # noqa: E402
from lm_jax.errors import LmJaxError  # noqa: E402
from lm_jax.finetune import finetune  # noqa: E402
from lm_jax.finetune.qa import read_qa_splits  # noqa: E402
from lm_jax.finetune.sequence import read_splits  # noqa: E402
from lm_jax.pretrain.run import pretrain  # noqa: E402
from lm_jax.pretrain.schema import pretraining_config  # noqa: E402
from lm_jax.train.run_directory import RunDirectoryLock  # noqa: E402

# The one model shape (the pretraining default: hidden 128, 2 layers; T5 and BART get 2
# encoder and 2 decoder layers, and pay for them in steps at equal time) and tokenizer.
SHAPE = dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512, max_position=512)
SEQ_LEN, BATCH = 128, 32
# --budget 1: one minute of pretraining per row and enough fine-tuning steps to leave chance.
# The first default (150 steps a task, SQuAD 200, 2026-12-02, benchmarks/README.md) left every
# Transformer at chance; a probe at 600 SST-2 steps read 77-78%. SQuAD 2.0, the slowest cell by
# 5x, is its own run (`--tasks squad2`) so that the default table fits a session.
PRETRAIN_MINUTES = 1.0  # per row at --budget 1, after its compilation (--pretraining-minutes)
CALIBRATION_STEPS = 40
SEQ2SEQ = ("t5", "bart", "ul2")


@dataclasses.dataclass(frozen=True)
class Row:
    objective: str | None  # None: no pretraining
    paper: str  # what its paper says it is for, at equal compute where it compares
    lstm: bool = False  # LSTM_reg instead of the Transformer (classification / regression)


ENGLISH_ROWS = {
    "lstm_reg": Row(None, "LSTM_reg: the non-pretrained classifier (Adhikari et al. 2019)", True),
    "none": Row(None, "the floor: the same architecture from random initialisation"),
    "mlm": Row("mlm", "BERT's masked LM (Devlin et al. 2019)"),
    "wwm": Row("wwm", "whole-word masking: above token masking (Cui et al. 2019, BERT-wwm)"),
    "span": Row("span", "SpanBERT: span masking + SBO, best on span selection (Joshi et al. 2020)"),
    "electra": Row(
        "electra", "ELECTRA: above MLM at equal compute, most at small size (Clark et al. 2020)"
    ),
    "plm": Row("plm", "XLNet's permutation LM: above BERT (Yang et al. 2019)"),
    "mpnet": Row("mpnet", "MPNet: above MLM and PLM (Song et al. 2020, Table 3)"),
    "unilm": Row("unilm", "UniLM: on par with BERT on GLUE (Dong et al. 2019)"),
    "nsp": Row("nsp", "BERT's MLM + next sentence prediction (Devlin et al. 2019)"),
    "sop": Row("sop", "ALBERT's sentence order: above NSP (Lan et al. 2020, Table 5)"),
    "t5": Row("t5", "T5's span corruption: its best objective (Raffel et al. 2020, Table 4)"),
    "bart": Row("bart", "BART's text infilling: on par with RoBERTa (Lewis et al. 2020)"),
    "ul2": Row("ul2", "UL2's mixture of denoisers: above T5's span corruption (Tay et al. 2022)"),
}


@dataclasses.dataclass(frozen=True)
class Task:
    config: str  # configs/finetune/<config>.py
    steps: int  # at --budget 1
    max_seq_length: int
    metrics: tuple[str, ...]  # the first is the one ranked
    default: bool = True  # in the table when --tasks is not given


ENGLISH_TASKS = {
    "sst2": Task("sst2", 600, 64, ("accuracy",)),  # 0.3 epochs of 67k examples
    "rte": Task("rte", 300, 128, ("accuracy",)),  # 3.9 epochs of 2.5k
    "stsb": Task("stsb", 300, 64, ("pearson", "spearman")),  # 1.7 epochs of 5.7k
    "squad2": Task("squad2", 600, 256, ("f1", "HasAns_f1", "NoAns_f1"), default=False),
}
CHINESE_ROWS = {
    "none": ENGLISH_ROWS["none"],
    "mlm": Row("mlm", "BERT's masked LM on characters (the Chinese BERT)"),
    "wwm": Row("wwm", "whole-word masking with a segmenter: above characters (Cui et al. 2019)"),
    "entity": Row("entity", "ERNIE's entity masking: above BERT (Sun et al. 2019, Table 2)"),
}
CHINESE_TASKS = {"chnsenticorp": Task("chnsenticorp", 300, 128, ("accuracy",))}
# One fine-tuning recipe for every row: ELECTRA-Small's learning rate (Clark et al. 2020,
# Table 7), batch 32, 10% warmup; the last evaluation is reported.
FINETUNE = {"train.learning_rate": 3e-4, "train.batch_size": 32, "warmup_fraction": 0.1}
# LSTM_reg trains with its authors' recipe (hedwig's Reuters command: Adam at 1e-2, no weight
# decay, temporal averaging 0.99), the Transformer recipe's steps and batch, at the table's
# model width (128 per direction and embedding, as the Transformer's hidden size; hedwig's 512
# and 300 make a step 8x slower: benchmarks/lstm_step.py)
LSTM_REG = {
    "lstm.enabled": True,
    "lstm.embedding_size": SHAPE["hidden_size"],
    "lstm.hidden_size": SHAPE["hidden_size"],
    "train.learning_rate": 1e-2,
    "train.weight_decay": 0.0,
    "train.ema_decay": 0.99,
}
# (claim, row above, row below, task): checked on the ranked metric, from the measured means
ENGLISH_CLAIMS = [
    ("pretraining helps", "best", "none", "sst2"),
    ("a Transformer from scratch matches LSTM_reg", "none", "lstm_reg", "sst2"),
    ("ELECTRA above MLM", "electra", "mlm", "sst2"),
    ("whole-word above token masking", "wwm", "mlm", "sst2"),
    ("span masking helps span selection", "span", "mlm", "squad2"),
    ("MPNet above MLM", "mpnet", "mlm", "sst2"),
    ("MPNet above PLM", "mpnet", "plm", "sst2"),
    ("SOP above NSP", "sop", "nsp", "rte"),
    ("UL2's mixture above T5's span corruption", "ul2", "t5", "sst2"),
]
CHINESE_CLAIMS = [
    ("pretraining helps", "best", "none", "chnsenticorp"),
    ("whole-word above character masking", "wwm", "mlm", "chnsenticorp"),
    ("entity masking above character masking", "entity", "mlm", "chnsenticorp"),
]


@dataclasses.dataclass(frozen=True)
class Table:
    """One comparison: its rows, tasks and claims; `corpus(out)` prepares its pretraining
    corpus and returns the pretraining configs' data fields; `texts(out)` the tokenizer's
    training texts (read only when it is trained); `tokenizer` its settings (model type,
    pieces, T5 sentinels)."""

    rows: dict[str, Row]
    tasks: dict[str, Task]
    claims: list[tuple[str, str, str, str]]
    corpus: Callable[[Path], dict]
    texts: Callable[[Path], list[str]]
    tokenizer: dict


def task_config(name: str):
    return load_config_file(ROOT / "configs" / "finetune" / f"{name}.py")


def objective_config(objective: str):
    """The objective's default pretraining config; "ul2": the mixture of configs/ul2.py
    with the other rows' recipe (T5's model family)."""
    if objective != "ul2":
        return pretraining_config(objective)
    c = load_config_file(ROOT / "configs" / "ul2.py", "tiny")
    c.train = pretraining_config("t5").train
    return c


def task_texts(name: str) -> list[str]:
    """The task's unlabeled training text, one document per example (pairs: two lines)."""
    config = task_config(name)
    if config.task == "question_answering":
        train, _ = read_qa_splits(config)
        contexts = list(dict.fromkeys(e.context for e in train.examples))
        return contexts + [e.question for e in train.examples]
    train, _ = read_splits(config)
    pairs = train.pairs or [None] * len(train)
    return [a if b is None else f"{a}\n{b}" for a, b in zip(train.texts, pairs)]


def english_corpus(out: Path) -> dict:
    """Wikipedia and every English task's training text, written once as text files under
    out/corpus; the pretraining configs' data fields."""
    corpus = out / "corpus"
    if not (corpus / "done").exists():
        corpus.mkdir(parents=True, exist_ok=True)
        (corpus / "wikipedia.txt").write_text("\n\n".join(wikipedia_sample()) + "\n")
        for name in ENGLISH_TASKS:
            (corpus / f"{name}.txt").write_text("\n\n".join(task_texts(name)) + "\n")
        (corpus / "done").write_text("")
    return {"data.corpus": "text", "data.path": str(corpus)}


def english_texts(out: Path) -> list[str]:
    return [p.read_text() for p in sorted((out / "corpus").glob("*.txt"))]


def chinese_texts(out: Path) -> list[str]:
    """People's Daily and the reviews' characters (never their labels)."""
    return load_documents("peoples_daily") + task_texts("chnsenticorp")


TABLES = {
    "english": Table(
        ENGLISH_ROWS,
        ENGLISH_TASKS,
        ENGLISH_CLAIMS,
        english_corpus,
        english_texts,
        dict(model_type="unigram", vocab_size=8000, extra_ids=100),
    ),
    "chinese": Table(
        CHINESE_ROWS,
        CHINESE_TASKS,
        CHINESE_CLAIMS,
        lambda out: {"data.corpus": "peoples_daily"},  # its entity annotations for ERNIE
        chinese_texts,
        dict(model_type="char", vocab_size=6000, extra_ids=0),
    ),
}


def prepare_data(table: Table, out: Path) -> tuple[dict, Path]:
    """(the pretraining configs' data fields, the one tokenizer every row uses)."""
    data, tokenizer = table.corpus(out), out / "tokenizer.model"
    if not tokenizer.exists():
        lines = [line for d in table.texts(out) for line in d.splitlines() if line.strip()]
        train_sentencepiece(lines, tokenizer, **table.tokenizer)
    return data, tokenizer


def pretraining(
    table: Table, objective: str, data: dict, tokenizer: Path, steps: int, workdir: Path
):
    c = objective_config(objective)
    fields = {
        **data,
        "data.seq_len": SEQ_LEN,
        "tokenizer.path": str(tokenizer),
        "tokenizer.extra_ids": table.tokenizer["extra_ids"],
        "train.steps": steps,
        "train.batch_size": BATCH,
        "train.warmup_steps": max(1, steps // 10),
        "train.log_every": 10,
        "train.eval_every": steps,
        "train.checkpoint_every": max(10, steps // 4),
        "output_dir": str(workdir),
        **{f"model.{k}": v for k, v in SHAPE.items()},
    }
    return override(c, fields)


def step_seconds(metrics_path: Path) -> float:
    """The steady step time: between the first and the last logged training step after
    the first (which pays for compilation)."""
    records = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    train = [r for r in records if r.get("split") == "train"][1:]
    return (train[-1]["time"] - train[0]["time"]) / (train[-1]["step"] - train[0]["step"])


@dataclasses.dataclass
class Experiment:
    """One table's run: where it writes, its budget, its data and tokenizer, its results."""

    table: Table
    out: Path
    budget: float
    minutes: float  # of pretraining per row at budget 1
    data: dict
    tokenizer: Path
    results: dict

    def save(self) -> None:
        path = self.out / "results.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1))
        os.replace(tmp, path)


def calibrate(x: Experiment, name: str) -> None:
    """The row's steady step time, from CALIBRATION_STEPS steps, and the steps that fill
    minutes x budget with it (every row is calibrated before any trains, so that
    all step times are read under the same conditions)."""
    objective = x.table.rows[name].objective
    if objective is None or name in x.results["pretraining"]:
        return
    probe_dir = x.out / "calibrate" / name
    probe = pretraining(x.table, objective, x.data, x.tokenizer, CALIBRATION_STEPS, probe_dir)
    pretrain(probe, progress=False)
    seconds = step_seconds(probe_dir / "metrics.jsonl")
    steps = max(50, int(x.minutes * 60 * x.budget / seconds))
    record = {"step_seconds": seconds, "steps": steps, "tokens": steps * BATCH * SEQ_LEN}
    x.results["pretraining"][name] = record
    x.save()


def stop_if_interrupted(summary, what: str) -> None:
    """A run stopped by SIGTERM / SIGINT (it saved a checkpoint) ends the table without
    recording it: the same command resumes it where it stopped."""
    if summary.interrupted:
        raise SystemExit(f"{what}: stopped by {summary.signal}; rerun the command to resume")


def pretrain_row(x: Experiment, name: str) -> Path | None:
    """The row's pretraining run directory (None for no pretraining), trained for its
    calibrated steps; its loss and wall time go into the results."""
    objective = x.table.rows[name].objective
    if objective is None:
        return None
    record = x.results["pretraining"][name]
    workdir = x.out / "pretrain" / name
    # A table whose run directories are gone (results.json carried to another machine)
    # pretrains them again for the recorded steps, from the same seed.
    if not record.get("done") or not (workdir / "checkpoints").is_dir():
        start = time.time()
        config = pretraining(x.table, objective, x.data, x.tokenizer, record["steps"], workdir)
        summary = pretrain(config, progress=False)
        stop_if_interrupted(summary, f"pretraining {name}")
        record.update(
            done=True,
            wall_seconds=round(time.time() - start, 1),
            first_eval_loss=summary.first_eval_loss,
            last_eval_loss=summary.last_eval_loss,
        )
        x.save()
    return workdir


def finetuning_steps(task: Task, budget: float) -> int:
    return max(20, int(task.steps * budget))


def finetuning(x: Experiment, task: str, row: str, init: Path | None, seed: int, workdir: Path):
    spec = x.table.tasks[task]
    c = task_config(spec.config)
    fields = {
        **FINETUNE,
        "seed": seed,
        "init": str(init) if init else "scratch",
        "output_dir": str(workdir),
        "train.steps": finetuning_steps(spec, x.budget),
        "data.max_seq_length": spec.max_seq_length,
        "text_to_text.enabled": row in SEQ2SEQ,
    }
    fields["train.eval_every"] = fields["train.steps"]
    if x.table.rows[row].lstm:
        fields.update(LSTM_REG)
    if init is None:  # the same tokenizer and shape, from random initialisation
        extra_ids = x.table.tokenizer["extra_ids"]
        fields.update({"tokenizer.path": str(x.tokenizer), "tokenizer.extra_ids": extra_ids})
        fields.update({f"model.{k}": v for k, v in SHAPE.items()}, **{"model.type_vocab_size": 4})
    return override(c, fields)


def finetune_cell(x: Experiment, task: str, row: str, init: Path | None, seed: int) -> dict:
    """The last dev evaluation's metrics of one fine-tuning run."""
    workdir = x.out / "finetune" / row / task / f"seed_{seed}"
    summary = finetune(finetuning(x, task, row, init, seed, workdir), progress=False)
    stop_if_interrupted(summary, f"{row}/{task}/{seed}")
    evaluations = json.loads(summary.eval_results_path.read_text())["evaluations"]
    return {k: v for k, v in evaluations[-1].items() if k != "time" and isinstance(v, int | float)}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation; both NaN when a value is (an undefined correlation)."""
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(table: Table, results: dict, rows: list[str], tasks: list[str]) -> dict:
    """row -> task -> metric -> (mean, std, n) over the seeds measured."""
    out = {}
    for row in rows:
        for task in tasks:
            cells = [v for k, v in results["cells"].items() if k.startswith(f"{row}/{task}/")]
            for metric in table.tasks[task].metrics:
                values = [c[metric] for c in cells if metric in c]
                if values:
                    measured = (*mean_std(values), len(values))
                    out.setdefault(row, {}).setdefault(task, {})[metric] = measured
    return out


def markdown(table: Table, summary: dict, results: dict, rows: list[str], tasks: list[str]) -> str:
    """The table; a correlation undefined for some seed (its model wrote one score for every
    pair: scipy's NaN) reads "undefined"."""
    metrics = [(t, m) for t in tasks for m in table.tasks[t].metrics]
    header = ["row", "pretraining steps (tokens)"] + [f"{t} {m}" for t, m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        pre = results["pretraining"].get(row)
        cells = [row, f"{pre['steps']} ({pre['tokens'] / 1e6:.1f}M)" if pre else "0"]
        for task, metric in metrics:
            m = summary.get(row, {}).get(task, {}).get(metric)
            scale = 100 if metric in ("accuracy", "pearson", "spearman") else 1
            if m and math.isnan(m[0]):
                cells.append(f"undefined (n={m[2]})")
            else:
                cells.append(f"{m[0] * scale:.1f} +- {m[1] * scale:.1f} (n={m[2]})" if m else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_claims(table: Table, summary: dict) -> list[str]:
    """Each claim: agrees / disagrees with the measured means, and whether the difference
    is outside the two rows' combined seed spread (inside it decides nothing)."""
    lines = []
    for claim, above, below, task in table.claims:
        metric = table.tasks[task].metrics[0]
        means = {r: t[task][metric][0] for r, t in summary.items() if metric in t.get(task, {})}
        if above == "best":
            pretrained = {r: v for r, v in means.items() if table.rows[r].objective}
            above = max(pretrained, key=pretrained.get) if pretrained else None
        if above not in means or below not in means:
            lines.append(f"- {claim} ({task}): not measured")
            continue
        a, b = summary[above][task][metric], summary[below][task][metric]
        spread = math.hypot(a[1], b[1])
        verdict = "agrees" if a[0] > b[0] else "disagrees"
        outside = "outside" if abs(a[0] - b[0]) > spread else "inside"
        lines.append(
            f"- {claim} ({task} {metric}): {above} {a[0]:.4f} vs {below} {b[0]:.4f}: {verdict}, "
            f"difference {a[0] - b[0]:+.4f}, {outside} the combined spread {spread:.4f}"
        )
    return lines


def plot(table: Table, summary: dict, rows: list[str], tasks: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric = table.tasks[task].metrics[0]
        measured = {r: summary.get(r, {}).get(task, {}).get(metric) for r in rows}
        shown = [r for r, m in measured.items() if m and not math.isnan(m[0])]
        means = [measured[r][0] for r in shown]
        stds = [measured[r][1] for r in shown]
        colours = ["grey" if r == "none" else "tab:blue" for r in shown]
        ax.bar(shown, means, yerr=stds, capsize=3, color=colours)
        ax.set_title(f"{task}: dev {metric} (mean +- sd over seeds)")
        ax.tick_params(axis="x", rotation=60)
        if means:
            low = min(m - s for m, s in zip(means, stds))
            ax.set_ylim(max(0.0, low - 0.05 * abs(low)), None)
        undefined = [r for r, m in measured.items() if m and math.isnan(m[0])]
        if undefined:
            note = f"undefined (constant predictions): {', '.join(undefined)}"
            ax.text(0.99, 0.98, note, ha="right", va="top", fontsize=8, transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(
    table: Table,
    out: Path,
    rows: list[str],
    tasks: list[str],
    seeds: int,
    budget: float,
    minutes: float = PRETRAIN_MINUTES,
) -> dict:
    """Fill every missing cell of the (rows x tasks x seeds) table, then write its summary.
    One process at a time per `out` (two would each save the cells the other lacks)."""
    with RunDirectoryLock(out, option="--out"):
        return _fill_table(table, out, rows, tasks, seeds, budget, minutes)


def _fill_table(
    table: Table,
    out: Path,
    rows: list[str],
    tasks: list[str],
    seeds: int,
    budget: float,
    minutes: float,
) -> dict:
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if results.setdefault("budget", budget) != budget:
        raise SystemExit(f"{path} was measured at --budget {results['budget']}; use another --out")
    if results.setdefault("pretraining_minutes", minutes) != minutes:
        raise SystemExit(
            f"{path} was measured at --pretraining-minutes {results['pretraining_minutes']}; "
            "use another --out"
        )
    steps = results.setdefault("finetuning_steps", {})
    for task in tasks:
        if steps.setdefault(task, finetuning_steps(table.tasks[task], budget)) != steps[task]:
            raise SystemExit(
                f"{path} fine-tuned {task} for {steps[task]} steps, this recipe for "
                f"{finetuning_steps(table.tasks[task], budget)}; use another --out"
            )
    results.setdefault("pretraining", {})
    results.setdefault("cells", {})
    share_compilations(out / "jax_cache")
    data, tokenizer = prepare_data(table, out)
    x = Experiment(table, out, budget, minutes, data, tokenizer, results)
    for row in rows:
        calibrate(x, row)
    for row in rows:
        missing = [
            (task, seed)
            for task in tasks
            if supports(table, row, task)
            for seed in range(seeds)
            if f"{row}/{task}/{seed}" not in results["cells"]
        ]
        init = pretrain_row(x, row) if missing else None  # a finished row is not pretrained again
        for task, seed in missing:
            start = time.time()
            cell = finetune_cell(x, task, row, init, seed)
            key = f"{row}/{task}/{seed}"
            results["cells"][key] = {**cell, "wall_seconds": round(time.time() - start, 1)}
            x.save()
            print(f"{key}: {cell}", flush=True)
    return report(table, results, rows, tasks, out)


def share_compilations(cache: Path) -> None:
    """Every cell of a task compiles the same programs (the seeds, and the rows of one
    architecture, differ only in values): JAX's persistent compilation cache compiles each once."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def supports(table: Table, row: str, task: str) -> bool:
    """Whether the row's model does the task (LSTM_reg has no span head for QA)."""
    return not (table.rows[row].lstm and task == "squad2")


def report(table: Table, results: dict, rows: list[str], tasks: list[str], out: Path) -> dict:
    summary = summarize(table, results, rows, tasks)
    lines = [markdown(table, summary, results, rows, tasks), "", *check_claims(table, summary)]
    skipped = [f"{r} / {t}" for r in rows for t in tasks if not supports(table, r, t)]
    if skipped:
        lines.append(f"- not run: {', '.join(skipped)} (LSTM_reg has no span head)")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    picture = plot(table, summary, rows, tasks, out / "downstream.png")
    print("\n".join(lines))
    print(f"results: {out / 'results.json'}\ntable: {out / 'table.md'}\nplot: {picture}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", choices=sorted(TABLES), default="english")
    parser.add_argument("--out", type=Path, help="default runs/downstream/<table>")
    parser.add_argument(
        "--budget", type=float, default=1.0, help="scales pretraining time and fine-tuning steps"
    )
    parser.add_argument(
        "--pretraining-minutes",
        type=float,
        default=PRETRAIN_MINUTES,
        help="of pretraining per row at --budget 1 (fine-tuning unchanged)",
    )
    parser.add_argument("--rows", help="comma-separated; default every row of the table")
    parser.add_argument(
        "--tasks", help="comma-separated; default the table's default tasks (not squad2)"
    )
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    table = TABLES[args.table]
    rows = args.rows.split(",") if args.rows else list(table.rows)
    defaults = [name for name, task in table.tasks.items() if task.default]
    tasks = args.tasks.split(",") if args.tasks else defaults
    unknown = sorted(set(rows) - set(table.rows)) + sorted(set(tasks) - set(table.tasks))
    if unknown:
        parser.error(
            f"unknown rows / tasks {unknown}; rows: {list(table.rows)}, tasks: {list(table.tasks)}"
        )
    out = args.out or ROOT / "runs" / "downstream" / args.table
    if args.pretraining_minutes <= 0:
        parser.error("--pretraining-minutes must be > 0")
    try:
        run(table, out, rows, tasks, args.seeds, args.budget, args.pretraining_minutes)
    except LmJaxError as e:  # bad input or a busy --out: the message, no traceback
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
