"""Prepare a corpus once: raw sources -> tokenized ArrayRecord shards + manifest.

    python -m lm_jax.data.prepare --source 'jsonl:/data/c4/*.json.gz' --out corpora/c4 \\
        --vocab-size 32000 --workers 8

Sources (`--source KIND:PATTERN`, repeatable, read in the order given; PATTERN is a file, a
folder or a glob): `text` (documents separated by blank lines), `jsonl` (JSON lines, `.gz`
too; the document in `--field`), `parquet` (as Hugging Face `datasets` exports them; column
`--field`), `tfds:NAME[/SPLIT]` (prepared under `--data-dir`, never downloaded) and the
offline `wikipedia_sample` / `python_docs`. For ERNIE's entity masking the sources are
annotated instead (`annotated_jsonl`, `peoples_daily`: `lm_jax.data.entities`) and the records
keep each token's entity id. For XLM's TLM they are translation pairs (`parallel_tsv`,
`django_translations`: `lm_jax.data.translation`) in the `--languages` named, one pair per
record, and every translation of a source sentence is held out with it or not at all.

The tokenizer is `--tokenizer` (copied in) or a SentencePiece model trained on a seeded
reservoir sample of `--sample-lines` lines (SentencePiece's `input_sentence_size`), never on
the whole corpus. Documents are then tokenized over `--workers` processes, `--docs-per-shard`
source documents per shard, each document held out for `eval` with probability
`--eval-fraction` (seeded). With `--sentence-rows L` each sentence is tokenized on its own,
records keep the sentence starts and each shard its document rows of L tokens, so that the
sentence-pair objectives (nsp, sop, structbert) stream it at `config.data.seq_len=L`. Shards
are written under temporary names and recorded in
`progress.json` once complete, so an interrupted preparation resumes at its first missing
shard; `manifest.json` comes last (`lm_jax.data.shards`). The same sources and settings give
the same files, byte for byte.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import glob
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lm_jax.data.entities import (
    AnnotatedDocument,
    annotated_jsonl_documents,
    encode_annotated,
    peoples_daily,
)
from lm_jax.data.files import text_documents
from lm_jax.data.sentences import encode_sentences, row_spans
from lm_jax.data.shards import (
    FORMAT,
    MANIFEST,
    SPLITS,
    TOKENIZER,
    Document,
    encode_document,
    file_sha256,
    npy_bytes,
    row_index,
    write_atomically,
    write_shard,
)
from lm_jax.data.sources import (
    jsonl_documents,
    parquet_documents,
    python_docs,
    tfds_documents,
    wikipedia_sample,
)
from lm_jax.data.tokenizer import (
    Tokenizer,
    encode_with_word_starts,
    load_tokenizer,
    train_sentencepiece,
)
from lm_jax.data.translation import (
    TranslationPair,
    django_translations,
    encode_pairs,
    parallel_tsv,
    parse_languages,
)
from lm_jax.errors import DataError

log = logging.getLogger(__name__)
PROGRESS = "progress.json"
JSONL = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
FILE_KINDS: dict[str, tuple[tuple[str, ...], Callable[[Path, str], Iterator]]] = {
    "text": ((".txt",), lambda path, field: text_documents(path)),
    "jsonl": (JSONL, jsonl_documents),
    "parquet": ((".parquet",), parquet_documents),
    "annotated_jsonl": (JSONL, lambda path, field: annotated_jsonl_documents(path)),
    "parallel_tsv": ((".tsv",), lambda path, field: parallel_tsv(path)),
}
BUILT_IN = {
    "wikipedia_sample": wikipedia_sample,
    "python_docs": python_docs,
    "peoples_daily": peoples_daily,
}
KINDS = {  # what a source's documents are, by source kind (plain text otherwise)
    "annotated_jsonl": "annotated",  # AnnotatedDocument
    "peoples_daily": "annotated",
    "parallel_tsv": "pairs",  # TranslationPair
    "django_translations": "pairs",
}
Source = str | AnnotatedDocument | TranslationPair


@dataclasses.dataclass(frozen=True)
class Settings:
    """What determines a prepared corpus (recorded in its manifest)."""

    sources: tuple[str, ...]
    field: str = "text"
    data_dir: str = ""
    tokenizer: str = ""  # a tokenizer file to use; "" trains one
    vocab_size: int = 8000
    model_type: str = "unigram"
    extra_ids: int = 100
    sample_lines: int = 1_000_000
    docs_per_shard: int = 10_000
    eval_fraction: float = 0.01
    seed: int = 0
    sentence_rows: int = 0  # > 0: also document rows of this length (sentence-pair objectives)
    languages: str = ""  # translation pairs: their languages, comma-separated (ids in order)

    @property
    def kind(self) -> str:
        """What every source holds: "plain" text, "annotated" documents or translation
        "pairs"; a `DataError` for sources of two kinds or settings that do not apply."""
        kinds = {KINDS.get(spec.partition(":")[0], "plain") for spec in self.sources}
        if len(kinds) > 1:
            raise DataError(
                f"the sources {list(self.sources)} mix {' and '.join(sorted(kinds))} ones "
                "(annotated: annotated_jsonl, peoples_daily; pairs: parallel_tsv, "
                "django_translations): prepare them as separate corpora"
            )
        kind = kinds.pop() if kinds else "plain"
        if kind != "plain" and self.sentence_rows:
            raise DataError(f"--sentence-rows applies to plain text, not to {kind} sources")
        if (kind == "pairs") != bool(parse_languages(self.languages)):
            raise DataError(
                "translation-pair sources need --languages (for example fr,de)"
                if kind == "pairs"
                else f"--languages applies to translation pairs, not to {kind} sources"
            )
        return kind

    def recorded(self) -> dict:
        """The settings as the manifest keeps them (the tokenizer by content, not by path)."""
        out = dataclasses.asdict(self)
        out["sources"] = list(self.sources)
        out["tokenizer"] = bool(self.tokenizer)
        return out


def source_files(kind: str, pattern: str) -> list[Path]:
    """The files a source names: a file, a folder's files of the kind, or a glob (sorted)."""
    suffixes = FILE_KINDS[kind][0]
    path = Path(pattern).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))
    else:
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not files:
        raise DataError(f"source {kind}:{pattern} matches no {'/'.join(suffixes)} file")
    return files


def source_documents(spec: str, field: str, data_dir: str, languages: str = "") -> Iterator[Source]:
    """The documents of one `KIND:PATTERN` source, one at a time (translation pairs in
    `languages` only)."""
    kind, _, pattern = spec.partition(":")
    if kind in BUILT_IN:
        yield from BUILT_IN[kind]()
    elif kind == "django_translations":
        yield from django_translations(parse_languages(languages))
    elif kind == "tfds":
        yield from _tfds_documents(pattern, field, data_dir)
    elif kind in FILE_KINDS:
        if not pattern:
            raise DataError(f"source {spec!r} needs a path: {kind}:PATTERN")
        reader = FILE_KINDS[kind][1]
        for path in source_files(kind, pattern):
            yield from reader(path, field)
    else:
        kinds = sorted([*FILE_KINDS, *BUILT_IN, "django_translations", "tfds"])
        raise DataError(f"unknown source kind {kind!r} in {spec!r}; choose from {kinds}")


def _tfds_documents(pattern: str, field: str, data_dir: str) -> Iterator[str]:
    name, _, split = pattern.partition("/")
    yield from tfds_documents(name, split or "train", data_dir or None, field)


def corpus_documents(settings: Settings) -> Iterator[Source]:
    """Every source's documents in order; sources are checked before any is read."""
    kind = settings.kind  # a DataError for mixed sources
    for spec in settings.sources:
        source, _, pattern = spec.partition(":")
        if source in FILE_KINDS and pattern:
            source_files(source, pattern)
    languages = set(parse_languages(settings.languages))
    for spec in settings.sources:
        documents = source_documents(spec, settings.field, settings.data_dir, settings.languages)
        for document in documents:
            if kind != "pairs" or document.language in languages:
                yield document


def sample_lines(documents: Iterable[Source], size: int, seed: int) -> list[str]:
    """A uniform random sample of `size` non-blank lines (reservoir sampling, Vitter's
    algorithm R, seeded): the tokenizer's training text in bounded memory."""
    rng = np.random.default_rng(seed)
    sample: list[str] = []
    seen = 0
    for doc in documents:
        if isinstance(doc, TranslationPair):
            text = f"{doc.source}\n{doc.target}"
        else:
            text = doc.text if isinstance(doc, AnnotatedDocument) else doc
        for line in text.splitlines():
            if not line.strip():
                continue
            if len(sample) < size:
                sample.append(line)
            else:
                j = int(rng.integers(0, seen + 1))
                if j < size:
                    sample[j] = line
            seen += 1
    return sample


def prepared_tokenizer(settings: Settings, out: Path) -> Path:
    """`out/tokenizer.model`: the given tokenizer copied in, or one trained on a sample (a
    resumed preparation reuses the one it wrote)."""
    path = out / TOKENIZER
    if settings.tokenizer:
        source = Path(settings.tokenizer)
        load_tokenizer(source, extra_ids=settings.extra_ids)  # a clear error if unreadable
        if not path.exists():
            write_atomically(path, source.read_bytes())
        elif file_sha256(path) != file_sha256(source):
            raise DataError(f"{path} is not {source}: this folder was prepared with another one")
        return path
    if not path.exists():
        lines = sample_lines(corpus_documents(settings), settings.sample_lines, settings.seed)
        if not lines:
            raise DataError(f"the sources {list(settings.sources)} hold no text")
        log.info("training the tokenizer on a sample of %d lines", len(lines))
        train_sentencepiece(
            lines,
            path,
            vocab_size=settings.vocab_size,
            model_type=settings.model_type,
            extra_ids=settings.extra_ids,
            max_sentences=settings.sample_lines,
        )
    return path


_WORKER_TOKENIZER: Tokenizer | None = None


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One tokenized document, as a worker returns it."""

    record: bytes  # encode_document
    ids: np.ndarray
    rows: np.ndarray | None = None  # its document rows (row_spans), with sentence_rows only
    source: str | None = None  # a translation pair's source sentence (decides its split)


def _load_worker_tokenizer(path: str, extra_ids: int) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = load_tokenizer(path, extra_ids=extra_ids)


def encode_documents(
    documents: list[Source], sentence_rows: int = 0, languages: str = ""
) -> list[Encoded]:
    """Each document that tokenizes to something, encoded whole (annotated ones with their
    entity ids, translation pairs as `encode_pairs` does) or, with `sentence_rows`, sentence
    by sentence with its document rows (in a worker)."""
    tokenizer = _WORKER_TOKENIZER
    if documents and isinstance(documents[0], TranslationPair):
        pairs = encode_pairs(tokenizer, documents, parse_languages(languages))
        return [
            Encoded(encode_document(d), d.ids, source=p.source)
            for p, d in zip(documents, pairs, strict=True)
            if d is not None
        ]
    if documents and isinstance(documents[0], AnnotatedDocument):
        annotated = (encode_annotated(tokenizer, d) for d in documents)
        encoded = [Document(i, w, None, e) for i, w, e in annotated]
    elif sentence_rows:
        encoded = [Document(*d) for d in encode_sentences(tokenizer, documents)]
    else:
        encoded = [Document(*d) for d in zip(*encode_with_word_starts(tokenizer, documents))]
    out = []
    for d in encoded:
        if len(d.ids):
            rows = row_spans(d.sentence_starts, sentence_rows) if sentence_rows else None
            out.append(Encoded(encode_document(d), d.ids, rows))
    return out


def ordered_map(fn, chunks: Iterable, workers: int, executor) -> Iterator:
    """`map(fn, chunks)` over the executor's processes, in order, with at most 2 x workers
    chunks in flight (so memory stays bounded however long `chunks` is)."""
    pending: list[concurrent.futures.Future] = []
    for chunk in chunks:
        pending.append(executor.submit(fn, chunk))
        if len(pending) >= 2 * workers:
            yield pending.pop(0).result()
    for future in pending:
        yield future.result()


def _chunks(iterable: Iterable, size: int) -> Iterator[list]:
    iterator = iter(iterable)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def prepare(settings: Settings, out: str | os.PathLike, workers: int = 1, progress: bool = True):
    """Prepare `settings.sources` into `out` (see the module docstring); returns the path of
    the manifest. A finished folder with the same settings is returned as it is."""
    out = Path(out)
    settings.kind  # noqa: B018 (a DataError for mixed sources, before anything is written)
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST).exists():
        _check_same_settings(out / MANIFEST, settings)
        return out / MANIFEST
    state = _start_or_resume(out, settings)
    tokenizer = prepared_tokenizer(settings, out)
    vocab_size = load_tokenizer(tokenizer, extra_ids=settings.extra_ids).vocab.size
    done = len(state["shards"])
    documents = itertools.islice(corpus_documents(settings), done * settings.docs_per_shard, None)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_load_worker_tokenizer,
        initargs=(str(tokenizer), settings.extra_ids),
    ) as executor:
        bar = tqdm(desc=f"prepare {out.name}", unit=" docs", disable=not progress)
        bar.update(done * settings.docs_per_shard)
        chunk = max(1, settings.docs_per_shard // (4 * workers))
        encode = functools.partial(
            encode_documents, sentence_rows=settings.sentence_rows, languages=settings.languages
        )
        for index, group in enumerate(_chunks(documents, settings.docs_per_shard), done):
            parts = ordered_map(encode, _chunks(group, chunk), workers, executor)
            encoded = [e for part in parts for e in part]
            entry = _write_group(out, index, encoded, settings, vocab_size)
            state["shards"].append(entry)
            write_atomically(out / PROGRESS, json.dumps(state, indent=1).encode())
            bar.update(len(group))
        bar.close()
    return _finish(out, state, tokenizer, settings)


def _start_or_resume(out: Path, settings: Settings) -> dict:
    path = out / PROGRESS
    if path.exists():
        state = json.loads(path.read_text())
        if state["settings"] != settings.recorded():
            raise DataError(
                f"{out} holds an unfinished preparation with other settings "
                f"({state['settings']}); resume it with those or use another --out"
            )
        return state
    if any(out.glob("*.array_record")):
        raise DataError(f"{out} holds shards but no {PROGRESS}: not a preparation folder")
    return {"settings": settings.recorded(), "shards": []}


def _check_same_settings(manifest: Path, settings: Settings) -> None:
    recorded = json.loads(manifest.read_text())["settings"]
    if recorded != settings.recorded():
        raise DataError(
            f"{manifest.parent} was prepared with other settings ({recorded}); use another --out"
        )


def _write_group(
    out: Path, index: int, encoded: list[Encoded], settings: Settings, vocab_size: int
) -> dict:
    """Shard `index` of each split from one group of source documents; each document is held
    out with probability eval_fraction (a generator seeded by (seed, index); a translation
    pair by a hash of (seed, its source), so that a source's translations share a split)."""
    if settings.kind == "pairs":
        draws = np.array([_hash_fraction(settings.seed, e.source) for e in encoded])
    else:
        draws = np.random.default_rng([settings.seed, index]).random(len(encoded))
    held_out = draws < settings.eval_fraction
    entries = {}
    for split, chosen in zip(SPLITS, (~held_out, held_out)):
        picked = [e for e, keep in zip(encoded, chosen) if keep]
        counts = np.zeros(vocab_size, np.int64)
        for e in picked:
            counts += np.bincount(e.ids, minlength=vocab_size)
        records, lengths = [e.record for e in picked], [len(e.ids) for e in picked]
        rows = row_index([e.rows for e in picked]) if settings.sentence_rows else None
        name = f"{split}-{index:05d}"
        entries[split] = write_shard(out, name, records, lengths, counts, rows)
    return entries


def _hash_fraction(seed: int, text: str) -> float:
    """A number in [0, 1) that depends only on (seed, text)."""
    digest = hashlib.sha256(f"{seed}\0{text}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def _finish(out: Path, state: dict, tokenizer: Path, settings: Settings) -> Path:
    splits = {}
    for split in SPLITS:
        shards = [s[split] for s in state["shards"] if s[split]["documents"]]
        splits[split] = {
            "documents": sum(s["documents"] for s in shards),
            "tokens": sum(s["tokens"] for s in shards),
            "shards": shards,
        }
    if not splits["train"]["documents"]:
        raise DataError(f"the sources {list(settings.sources)} hold no document with text")
    if settings.eval_fraction > 0 and not splits["eval"]["documents"]:
        raise DataError(
            f"no document was held out (--eval-fraction {settings.eval_fraction} of "
            f"{splits['train']['documents']} documents): raise it or add documents"
        )
    for split in SPLITS:
        _sum_counts(out, [s[split]["file"] for s in state["shards"]], out / f"{split}.counts.npy")
    manifest = {
        "format": FORMAT,
        "tokenizer": {"file": TOKENIZER, "sha256": file_sha256(tokenizer)},
        "settings": settings.recorded(),
        "entity_ids": settings.kind == "annotated",
        "languages": parse_languages(settings.languages),
        "splits": splits,
    }
    write_atomically(out / MANIFEST, json.dumps(manifest, indent=1).encode())
    _remove_intermediates(out, state)
    return out / MANIFEST


def _sum_counts(out: Path, shard_files: list[str], path: Path) -> None:
    """The split's token counts (`path`), summed from its shards' `.counts.npy`."""
    total = None
    for name in shard_files:
        counts = np.load(out / name.replace(".array_record", ".counts.npy"))
        total = counts if total is None else total + counts
    write_atomically(path, npy_bytes(total))


def _remove_intermediates(out: Path, state: dict) -> None:
    """After the manifest: the shards' counts, the empty shards and the progress record."""
    for shard in state["shards"]:
        for entry in shard.values():
            suffixes = [".counts.npy"]
            if not entry["documents"]:
                suffixes += [".array_record", ".lengths.npy", ".rows.npy"]
            for suffix in suffixes:
                (out / entry["file"].replace(".array_record", suffix)).unlink(missing_ok=True)
    (out / PROGRESS).unlink()


HELP = {
    "field": "JSON key / Parquet column / TFDS feature holding the text",
    "data_dir": "TFDS data_dir of tfds: sources (never downloaded)",
    "tokenizer": "an existing SentencePiece .model or WordPiece vocab.txt ('': train one)",
    "vocab_size": "pieces of a trained tokenizer",
    "model_type": "unigram | bpe | char | word (a trained tokenizer)",
    "extra_ids": "T5 sentinels on top of the vocabulary",
    "sample_lines": "lines sampled (seeded reservoir) to train the tokenizer on",
    "docs_per_shard": "source documents per shard (bounds memory and the unit of resumption)",
    "eval_fraction": "probability that a document is held out for evaluation",
    "seed": "seeds the tokenizer sample and the held-out choice",
    "sentence_rows": "also cut document rows of this many tokens for nsp / sop / structbert "
    "(their config.data.seq_len; 0: none)",
    "languages": "the languages of translation-pair sources, comma-separated, in the order of "
    "tlm's config.data.languages",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lm_jax.data.prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--source", action="append", required=True, help="KIND:PATTERN (repeatable)"
    )
    parser.add_argument("--out", required=True, type=Path, help="the prepared corpus's folder")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    defaults = Settings(sources=())
    for field in dataclasses.fields(Settings):
        if field.name != "sources":
            default = getattr(defaults, field.name)
            flag = "--" + field.name.replace("_", "-")
            parser.add_argument(
                flag,
                type=type(default),
                default=default,
                help=f"{HELP[field.name]} (default: {default!r})",
            )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if f.name != "sources"
    }
    try:
        if args.workers < 1 or values["docs_per_shard"] < 1:
            raise DataError("--workers and --docs-per-shard must be at least 1")
        if values["sentence_rows"] and values["sentence_rows"] < 5:
            raise DataError("--sentence-rows must be 0 or at least 5 ([CLS] A [SEP] B [SEP])")
        manifest = prepare(Settings(sources=tuple(args.source), **values), args.out, args.workers)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    content = json.loads(manifest.read_text())["splits"]
    for split, s in content.items():
        print(
            f"{split}: {s['documents']} documents, {s['tokens']} tokens, {len(s['shards'])} shards"
        )
    print(f"prepared corpus: {manifest.parent} (manifest {manifest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
