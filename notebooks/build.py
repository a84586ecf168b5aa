"""Write and run the notebooks: each is built from the cells below, executed top to bottom in a
fresh kernel, and saved with its outputs (pictures included), so they read on the web and in
Colab without running.

    python notebooks/build.py                    # every notebook, at its default step counts
    python notebooks/build.py --only objectives  # one of them
    python notebooks/build.py --steps 10 --out /tmp/nb   # a quick run elsewhere (the tests)

A cell tagged "figure" must leave an image among its outputs; a cell that raises stops the
build with the cell named. `LM_JAX_NOTEBOOK_STEPS` sets the notebooks' training steps.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = 200  # training steps of each pretraining / fine-tuning run in the committed notebooks

SETUP = """\
# Colab or a fresh kernel: install lm_jax where it is missing (LM_JAX_SOURCE: a clone's
# folder, a wheel or a git URL; by default a clone in ./lm_jax).
import importlib.util
import os
import subprocess
import sys
import warnings

if importlib.util.find_spec("lm_jax") is None:
    source = os.environ.get("LM_JAX_SOURCE", "./lm_jax")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", source])
STEPS = int(os.environ.get("LM_JAX_NOTEBOOK_STEPS", "{steps}"))  # the tests run a few
warnings.filterwarnings("ignore", "IProgress not found")  # tqdm without ipywidgets
%matplotlib inline"""

QUICKSTART = [
    (
        "md",
        """\
# lm_jax quickstart

Train a tokenizer, look at what an objective does to a row, pretrain a small BERT with masked
LM and read its loss curve, all offline on the Wikipedia sample bundled with gensim. Runs on
CPU, GPU or TPU (Colab included); nothing to set up by hand.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
import tempfile

from lm_jax.data.sources import wikipedia_sample
from lm_jax.data.tokenizer import train_sentencepiece

docs = wikipedia_sample()
out = tempfile.mkdtemp(prefix="lm_jax_quickstart_")
tokenizer = train_sentencepiece(docs, f"{out}/tokenizer.model", vocab_size=8000)
print(len(docs), "documents;", tokenizer.vocab.size, "ids, [MASK] =", tokenizer.vocab.mask_id)""",
    ),
    (
        "md",
        """\
## An objective is a function: key and rows in, batch out

Every objective in `lm_jax.objectives` has the same shape, `fn(key, tokens, *, vocab,
segment_ids, **options)`, and returns inputs, targets, the predicted positions and a compact
attention mask. `lm_jax.viz` draws them: each token by its role, the piece predicted under it,
and the mask as a picture (here BERT's 15%: 80% [MASK], 10% random, 10% kept).""",
    ),
    (
        "code",
        """\
from lm_jax.viz import objective_example, plot_attention, show_batch

texts = [docs[1][:300], docs[2][:300]]
batch, rows = objective_example("mlm", texts, tokenizer, seq_len=48, seed=0)
show_batch(batch, tokenizer, title="mlm: BERT's masked LM")""",
    ),
    ("figure", "plot_attention(batch, 0, tokenizer)"),
    (
        "md",
        """\
## Pretrain

`pretrain` runs the loop of `bash scripts/pretrain.sh` (another objective:
`pretraining_config("wwm")`, `"electra"`, ...): it resumes from the latest checkpoint of its
run directory, evaluates on held-out documents and writes metrics and a loss plot.""",
    ),
    (
        "code",
        """\
from lm_jax.pretrain import pretrain, pretraining_config

config = pretraining_config("mlm")
config.tokenizer.path = f"{out}/tokenizer.model"  # the tokenizer trained above
config.train.steps = STEPS
config.train.warmup_steps = max(1, STEPS // 10)
config.train.eval_every = config.train.checkpoint_every = max(1, STEPS // 4)
run = pretrain(config, f"{out}/run", progress=False)
print(f"held-out loss {run.first_eval_loss:.3f} -> {run.last_eval_loss:.3f} "
      f"(unigram baseline {run.unigram_baseline:.3f}); run directory {run.workdir}")""",
    ),
    (
        "figure",
        """\
from IPython.display import Image

Image(filename=str(run.plot_path))""",
    ),
]

# (name, one sentence on what it is for, after its paper; the reference behaviour it matches)
OBJECTIVES = [
    (
        "mlm",
        "BERT (Devlin et al. 2019): predict 15% of the tokens from both sides.",
        "google-research/bert: 15% of tokens, of them 80% [MASK], 10% random, 10% kept.",
    ),
    (
        "wwm",
        "Whole-word masking (Cui et al. 2019): mask every piece of a chosen word.",
        "words chosen until the 15% budget is met; all their pieces masked alike.",
    ),
    (
        "ngram",
        "ALBERT's n-gram masking (Lan et al. 2020): spans of up to 3 words.",
        "span length n with probability proportional to 1/n.",
    ),
    (
        "span",
        "SpanBERT (Joshi et al. 2020): mask spans, predict them from their boundaries.",
        "geometric span lengths (p = 0.2, at most 10 words); span-boundary objective.",
    ),
    (
        "entity",
        "ERNIE (Sun et al. 2019): mask entities and phrases whole.",
        "annotated spans masked as units, other tokens as words.",
    ),
    (
        "electra",
        "ELECTRA (Clark et al. 2020): a generator's MLM, then replaced-token detection.",
        "the generator's masks here; the discriminator labels every token replaced or not.",
    ),
    (
        "plm",
        "XLNet (Yang et al. 2019): predict tokens in a random factorisation order.",
        "two streams: the query stream sees the content before it in the order, not itself.",
    ),
    (
        "mpnet",
        "MPNet (Song et al. 2020): permuted prediction that still sees every position.",
        "predicted tokens appended as [MASK]s with their positions (position compensation).",
    ),
    (
        "clm",
        "GPT (Radford et al. 2018): predict the next token, left to right.",
        "causal mask within each packed document.",
    ),
    (
        "prefix_lm",
        "Prefix LM (Raffel et al. 2020): a bidirectional prefix, a causal rest.",
        "the prefix sees all of itself; the rest sees its past.",
    ),
    (
        "unilm",
        "UniLM (Dong et al. 2019): one Transformer under four masks.",
        "bidirectional, left-to-right, right-to-left or seq2seq, chosen per row.",
    ),
    (
        "nsp",
        "BERT's next sentence prediction (Devlin et al. 2019).",
        "B follows A half the time, else comes from another document.",
    ),
    (
        "sop",
        "ALBERT's sentence order prediction (Lan et al. 2020).",
        "two consecutive segments, swapped half the time.",
    ),
    (
        "structbert",
        "StructBERT (Wang et al. 2020): next, previous or random sentence.",
        "three classes, a third each.",
    ),
    (
        "tlm",
        "XLM's translation LM (Conneau & Lample 2019): MLM over a sentence and its translation",
        "positions restart at the translation; language embeddings per side.",
    ),
    (
        "bart",
        "BART (Lewis et al. 2020): reconstruct text from a corrupted copy.",
        "text infilling: Poisson(3) spans, 30% of tokens, each span one [MASK].",
    ),
    (
        "t5",
        "T5 (Raffel et al. 2020): drop spans, write them after sentinels.",
        "15% of tokens, mean span 3; sentinels count down from <extra_id_0>.",
    ),
    (
        "mass",
        "MASS (Song et al. 2019): the decoder writes the fragment the encoder lacks.",
        "one fragment of 50% of the tokens.",
    ),
]

OBJECTIVES_INTRO = """\
# Every objective, pictured

Each objective of `lm_jax.objectives` applied to the same two short documents, as pretraining
applies it: the row's tokens by role (the piece predicted under each, a bar between packed
documents) and who may attend to whom. The pictures are drawn from the compact attention
description every objective returns (`lm_jax.viz`); the tests check each picture equals the
dense mask."""

OBJECTIVES_DATA = """\
import tempfile

from IPython.display import display

from lm_jax.data.entities import AnnotatedDocument
from lm_jax.data.sources import wikipedia_sample
from lm_jax.data.tokenizer import train_sentencepiece
from lm_jax.data.translation import TranslationPair
from lm_jax.viz import objective_example, plot_attention, show_batch

TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was not amused at all.",
    "A second document about cats. Cats sleep most of the day. They hunt at night.",
]
ENTITIES = [AnnotatedDocument(TEXTS[0], ((4, 19),)), AnnotatedDocument(TEXTS[1], ((30, 34),))]
PAIRS = [TranslationPair("the cat sleeps", "le chat dort", "fr"),
         TranslationPair("good morning", "guten Morgen", "de")]
tokenizer = train_sentencepiece(
    wikipedia_sample()[:300], f"{tempfile.mkdtemp()}/tokenizer.model", vocab_size=4000
)
ITEMS = {"entity": ENTITIES, "tlm": PAIRS}


def draw(name):
    batch, _ = objective_example(name, ITEMS.get(name, TEXTS), tokenizer, seq_len=32, seed=0)
    display(show_batch(batch, tokenizer, title=name))
    return plot_attention(batch, 0, tokenizer)"""


def objectives_cells() -> list[tuple[str, str]]:
    cells = [("md", OBJECTIVES_INTRO), ("code", SETUP), ("code", OBJECTIVES_DATA)]
    for name, purpose, reference in OBJECTIVES:
        cells.append(("md", f"## `{name}`\n\n{purpose}\n\nReference behaviour: {reference}"))
        cells.append(("figure", f'draw("{name}")'))
    return cells


FINETUNE = [
    (
        "md",
        """\
# Fine-tune: SST-2 and SQuAD 2.0 from a pretraining run

Pretrain a small BERT, fine-tune it on GLUE SST-2 (dev accuracy, the confusion matrix, the
examples it gets wrong) and on a SQuAD 2.0 subset (a question with its predicted span marked in
the context, and its no-answer score). The task data is read from `../shared/data` (its README
lists the files); a local Hugging Face folder works as `config.init` the same way.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
import tempfile
from pathlib import Path

import lm_jax
from lm_jax.config_tools import load_config_file, override
from lm_jax.finetune import finetune
from lm_jax.pretrain import pretrain, pretraining_config

CONFIGS = Path(lm_jax.__file__).resolve().parents[1] / "configs" / "finetune"
out = Path(tempfile.mkdtemp(prefix="lm_jax_finetune_"))
config = pretraining_config("mlm")
config.train.steps = STEPS
config.train.warmup_steps = max(1, STEPS // 10)
config.train.eval_every = config.train.checkpoint_every = max(1, STEPS // 2)
run = pretrain(config, out / "mlm", progress=False)
print(f"pretrained: held-out loss {run.first_eval_loss:.2f} -> {run.last_eval_loss:.2f}")""",
    ),
    (
        "code",
        """\
# A small model from a short pretraining needs a larger learning rate than BERT's recipe
# (ELECTRA-Small's 3e-4) and a few hundred steps to leave chance (benchmarks/README.md).
sst2 = override(load_config_file(CONFIGS / "sst2.py"), {
    "init": str(out / "mlm"), "train.steps": 3 * STEPS, "train.eval_every": 3 * STEPS,
    "train.learning_rate": 3e-4, "data.max_seq_length": 64,
})
summary = finetune(sst2, out / "sst2", progress=False)
print(f"SST-2 dev accuracy {summary.best['accuracy']:.3f} at step {summary.best['step']}")""",
    ),
    (
        "figure",
        """\
from IPython.display import Image

Image(filename=str(summary.files["confusion matrix"]))""",
    ),
    (
        "code",
        """\
import csv

with open(summary.predictions_path) as f:
    predictions = list(csv.DictReader(f, delimiter="\\t"))
wrong = [p for p in predictions if p["label"] != p["prediction"]]
print(f"{len(wrong)} of {len(predictions)} dev sentences misclassified; the first five:")
for p in wrong[:5]:
    print(f"  gold {p['label']}, predicted {p['prediction']}: {p['text'][:90]}")""",
    ),
    (
        "code",
        """\
import json

from lm_jax.finetune.qa import read_qa_splits

squad = override(load_config_file(CONFIGS / "squad2.py"), {
    "init": str(out / "mlm"), "train.steps": 3 * STEPS, "train.eval_every": 3 * STEPS,
    "train.learning_rate": 3e-4, "data.max_seq_length": 192, "qa.doc_stride": 64,
})
qa = finetune(squad, out / "squad2", progress=False)
print({k: round(v, 2) for k, v in qa.best.items() if k in ("exact", "f1", "best_f1")})""",
    ),
    (
        "code",
        """\
import html

from IPython.display import HTML

answers = json.loads(qa.predictions_path.read_text())
null_odds = json.loads((qa.workdir / "null_odds.json").read_text())
_, dev = read_qa_splits(squad)
example = next((e for e in dev.examples if answers.get(e.qid)), dev.examples[0])
answer, context = answers[example.qid], example.context
gold = " | ".join(dict.fromkeys(example.answers))
at = context.find(answer) if answer else -1
marked = (html.escape(context[:at]) + "<mark>" + html.escape(answer) + "</mark>"
          + html.escape(context[at + len(answer):])) if at >= 0 else html.escape(context)
HTML(f"<b>{html.escape(example.question)}</b><br>predicted: {html.escape(answer) or '(no answer)'}"
     f" (no-answer score {null_odds[example.qid]:.2f})<br>gold: {gold or 'no answer'}"
     f"<p style='font-size:90%'>{marked}</p>")""",
    ),
]

GENERATE = [
    (
        "md",
        """\
# Generate: T5 and BART denoising, and text-to-text predictions

Pretrain small T5 and BART models, let each fill in what its objective hides, then fine-tune
the T5 as text to text on SST-2 and read the labels it writes. Small models trained for a few
minutes on CPU write rough text; the calls are those of full-size models.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
import tempfile
from pathlib import Path

import numpy as np

from lm_jax.generation import GenerationConfig, generate
from lm_jax.pretrain import pretrain, pretraining_config
from lm_jax.pretrain.saved import load_pretraining_run

out = Path(tempfile.mkdtemp(prefix="lm_jax_generate_"))
runs = {}
for name in ("t5", "bart"):
    config = pretraining_config(name)
    config.train.steps = STEPS
    config.train.warmup_steps = max(1, STEPS // 10)
    config.train.eval_every = config.train.checkpoint_every = max(1, STEPS // 2)
    result = pretrain(config, out / name, progress=False)
    runs[name] = load_pretraining_run(out / name)
    print(f"{name}: held-out loss {result.first_eval_loss:.2f} -> {result.last_eval_loss:.2f}")""",
    ),
    (
        "code",
        """\
def complete(saved, ids, start):
    vocab = saved.tokenizer.vocab
    settings = GenerationConfig(eos_id=vocab.eos_id, pad_id=vocab.pad_id,
                                decoder_start_id=start, max_new_tokens=12)
    ids = np.asarray([ids], np.int32)
    new = generate(saved.model, ids, np.ones_like(ids), settings).new_tokens[0]
    return " ".join(saved.tokenizer.id_to_piece(int(i)) for i in new if i != vocab.pad_id)


t5 = runs["t5"]
v = t5.tokenizer.vocab
left, right = "The history of the city", "in the nineteenth century."
ids = [*t5.tokenizer.encode(left).ids, v.sentinel_ids[0], *t5.tokenizer.encode(right).ids, v.eos_id]
print("T5 input: ", left, "<extra_id_0>", right)
print("T5 writes:", complete(t5, ids, start=v.pad_id))
bart = runs["bart"]
v = bart.tokenizer.vocab
ids = [v.bos_id, *bart.tokenizer.encode(left).ids, v.mask_id,
       *bart.tokenizer.encode(right).ids, v.eos_id]
print("BART input: ", left, "<mask>", right)
print("BART writes:", complete(bart, ids, start=v.eos_id))""",
    ),
    (
        "code",
        """\
import csv

import lm_jax
from lm_jax.config_tools import load_config_file, override
from lm_jax.finetune import finetune

configs = Path(lm_jax.__file__).resolve().parents[1] / "configs" / "finetune"
sst2 = override(load_config_file(configs / "sst2.py"), {
    "init": str(out / "t5"), "text_to_text.enabled": True, "train.steps": 3 * STEPS,
    "train.eval_every": 3 * STEPS, "train.learning_rate": 1e-3, "data.max_seq_length": 64,
})
summary = finetune(sst2, out / "sst2_t2t", progress=False)
print(f"SST-2 as text to text: dev accuracy {summary.best['accuracy']:.3f}, "
      f"{summary.best['invalid']:.1%} of answers not a label word")
with open(summary.predictions_path) as f:
    for p in list(csv.DictReader(f, delimiter="\\t", quoting=csv.QUOTE_NONE))[:5]:
        print(f"  {p['input'][:70]!r}: gold {p['target']!r}, wrote {p['prediction']!r}")""",
    ),
]

NOTEBOOKS = {
    "quickstart": lambda: QUICKSTART,
    "objectives": objectives_cells,
    "finetune": lambda: FINETUNE,
    "generate": lambda: GENERATE,
}


def notebook(cells: list[tuple[str, str]], steps: int):
    """The notebook of `cells` ("md", "code" or "figure": code that must draw a picture)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for kind, source in cells:
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
            continue
        cell = nbformat.v4.new_code_cell(source.replace("{steps}", str(steps)))
        if kind == "figure":
            cell.metadata["tags"] = ["figure"]
        nb.cells.append(cell)
    return nb


def execute(nb, workdir: Path, timeout: int = 3600):
    """Run every cell in a fresh kernel (cwd `workdir`); a cell tagged "figure" that drew no
    image is an error naming it."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3").execute(cwd=str(workdir))
    for index, cell in enumerate(nb.cells):
        if "figure" in cell.metadata.get("tags", []):
            images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
            if not images:
                raise RuntimeError(f"cell {index} drew no picture:\n{cell.source}")
    return nb


def build(name: str, out: Path, steps: int) -> Path:
    """Write notebook `name` with its outputs to `out/<name>.ipynb`; returns the path."""
    import nbformat

    nb = notebook(NOTEBOOKS[name](), steps)
    os.environ["LM_JAX_NOTEBOOK_STEPS"] = str(steps)
    execute(nb, out)
    path = out / f"{name}.ipynb"
    tmp = path.with_suffix(".tmp")
    nbformat.write(nb, str(tmp))
    os.replace(tmp, path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(NOTEBOOKS), action="append")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or NOTEBOOKS:
        start = time.time()
        path = build(name, args.out, args.steps)
        print(f"{path} ({time.time() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
