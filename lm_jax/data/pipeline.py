"""The pretraining input pipeline: corpus -> held-out split -> tokenizer -> packed rows -> batches.

Batches come from a grain `MapDataset` (shuffle per epoch, repeat, batch), read through a
prefetching grain iterator whose state is saved in every checkpoint. The global batch of step s
is rows s*B .. (s+1)*B - 1 of the shuffled stream, whatever the number of processes: process p
of P reads its contiguous share of B / P rows of it. Batches therefore depend only on
(seed, step), and a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import TypeVar

import grain
import numpy as np

from lm_jax.data.entities import AnnotatedDocument, encode_annotated, load_annotated_documents
from lm_jax.data.packing import PackedRows
from lm_jax.data.sentences import encode_sentences
from lm_jax.data.shards import (
    PREPARED,
    Document,
    DocumentsInMemory,
    Manifest,
    PairRows,
    PreparedRows,
    SentenceRows,
    ShardedDocuments,
    ShardedRows,
    write_atomically,
)
from lm_jax.data.sources import load_documents
from lm_jax.data.tokenizer import (
    Tokenizer,
    encode_with_word_starts,
    load_tokenizer,
    train_sentencepiece,
)
from lm_jax.data.translation import (
    TranslationPair,
    load_translation_pairs,
    pair_rows,
    parse_languages,
)
from lm_jax.errors import DataError
from lm_jax.layout import Rows

log = logging.getLogger(__name__)
Doc = TypeVar("Doc", str, AnnotatedDocument, TranslationPair)
Streamed = PackedRows | ShardedRows  # the row sets a run reads
TOKENIZER_FILE = "tokenizer.model"


@dataclasses.dataclass(frozen=True)
class PretrainingData:
    """Tokenizer and packed train / held-out rows of one run."""

    tokenizer: Tokenizer
    train: Streamed
    eval: Streamed
    num_documents: tuple[int, int]  # (train, eval)


def split_documents(
    docs: list[Doc], eval_fraction: float, seed: int
) -> tuple[list[Doc], list[Doc]]:
    """A seeded random split by document: at least one document on each side."""
    if len(docs) < 2:
        raise DataError(
            f"corpus too small: {len(docs)} document(s); need at least 2 to hold "
            "some out for evaluation"
        )
    order = np.random.default_rng(seed).permutation(len(docs))
    n_eval = min(len(docs) - 1, max(1, round(eval_fraction * len(docs))))
    return [docs[i] for i in order[n_eval:]], [docs[i] for i in order[:n_eval]]


def get_tokenizer(tok_cfg, train_docs: list[str], workdir: Path, reuse: bool) -> Tokenizer:
    """The configured tokenizer file; else, when `reuse` (a resumed run), the one this run
    trained before; else a new one trained on `train_docs` and saved in `workdir`."""
    if tok_cfg.path:
        return load_tokenizer(
            tok_cfg.path, extra_ids=tok_cfg.extra_ids, lowercase=tok_cfg.lowercase
        )
    path = workdir / TOKENIZER_FILE
    if reuse:
        return load_tokenizer(path, extra_ids=tok_cfg.extra_ids)
    log.info(
        "training a %s SentencePiece tokenizer (%d pieces) on %d documents",
        tok_cfg.model_type,
        tok_cfg.vocab_size,
        len(train_docs),
    )
    return train_sentencepiece(
        train_docs,
        path,
        vocab_size=tok_cfg.vocab_size,
        model_type=tok_cfg.model_type,
        extra_ids=tok_cfg.extra_ids,
    )


def tokenize_and_pack(docs: list[str], tokenizer: Tokenizer, seq_len: int) -> PreparedRows:
    """Packed rows with word starts (jieba's words for Chinese: `encode_with_word_starts`),
    streamed from the documents in memory as a prepared corpus's are from its shards."""
    ids, word_starts = encode_with_word_starts(tokenizer, docs)
    documents = DocumentsInMemory([Document(*d) for d in zip(ids, word_starts)])
    return PreparedRows(documents, seq_len, tokenizer.vocab)


def entity_rows(docs: list[AnnotatedDocument], tokenizer: Tokenizer, seq_len: int) -> PreparedRows:
    """Packed rows with the documents' entity ids (`lm_jax.data.entities`), streamed from the
    documents in memory as a prepared corpus's are from its shards."""
    encoded = [encode_annotated(tokenizer, doc) for doc in docs]
    documents = DocumentsInMemory([Document(i, w, None, e) for i, w, e in encoded])
    return PreparedRows(documents, seq_len, tokenizer.vocab, entities=True)


def document_rows(docs: list[str], tokenizer: Tokenizer, seq_len: int) -> SentenceRows:
    """Document rows cut at sentence boundaries (`lm_jax.data.sentences`), streamed from the
    documents in memory as a prepared corpus's are from its shards."""
    documents = DocumentsInMemory([Document(*d) for d in encode_sentences(tokenizer, docs)])
    return SentenceRows(documents, seq_len, tokenizer.vocab)


def _split(config, rows: Rows) -> tuple[list[Doc], list[Doc], list[str]]:
    """The configured corpus split into train / held-out items, and the training texts."""
    d = config.data
    if rows is Rows.PAIRS:  # split by source sentence: no source both trained on and held out
        pairs = load_translation_pairs(d.corpus, d.path, parse_languages(d.languages))
        sources = list(dict.fromkeys(p.source for p in pairs))
        _, held_out = split_documents(sources, d.eval_fraction, config.seed)
        held_out = set(held_out)
        train = [p for p in pairs if p.source not in held_out]
        texts = list(dict.fromkeys(t for p in train for t in (p.source, p.target)))
        return train, [p for p in pairs if p.source in held_out], texts
    if rows is Rows.ENTITIES:
        annotated = load_annotated_documents(d.corpus, d.path)
        train, held_out = split_documents(annotated, d.eval_fraction, config.seed)
        return train, held_out, [doc.text for doc in train]
    docs = load_documents(
        d.corpus,
        path=d.path,
        field=d.field,
        tfds_name=d.tfds_name,
        tfds_split=d.tfds_split,
        data_dir=d.data_dir,
    )
    train, held_out = split_documents(docs, d.eval_fraction, config.seed)
    return train, held_out, train


def build_pretraining_data(
    config, workdir: Path, reuse_tokenizer: bool = False, rows: Rows = Rows.PACKED
) -> PretrainingData:
    """Load, split, tokenize and lay out the configured corpus as `rows` (`Rows`): packed
    documents (`pack_documents`), documents with sentence starts (`document_rows`), packed
    entities of an annotated corpus (`entity_rows`) or translation pairs (`pair_rows`)."""
    d = config.data
    if d.corpus == PREPARED:
        return prepared_data(config, workdir, rows)
    train_docs, eval_docs, texts = _split(config, rows)
    tokenizer = get_tokenizer(config.tokenizer, texts, workdir, reuse_tokenizer)
    layout = {
        Rows.PACKED: tokenize_and_pack,
        Rows.DOCUMENTS: document_rows,
        Rows.ENTITIES: entity_rows,
        Rows.PAIRS: functools.partial(pair_rows, languages=parse_languages(d.languages)),
    }[rows]
    train = layout(train_docs, tokenizer, d.seq_len)
    held_out = layout(eval_docs, tokenizer, d.seq_len)
    _check_one_batch(train, d.seq_len, config.train.batch_size)
    return PretrainingData(
        tokenizer=tokenizer,
        train=train,
        eval=held_out,
        num_documents=(len(train_docs), len(eval_docs)),
    )


def _check_one_batch(train, seq_len: int, batch_size: int) -> None:
    if len(train) < batch_size:
        raise DataError(
            f"corpus too small: {len(train)} training rows of {seq_len} tokens, "
            f"fewer than one batch (config.train.batch_size={batch_size})"
        )


def prepared_data(config, workdir: Path, rows: Rows = Rows.PACKED) -> PretrainingData:
    """The `rows` of a prepared corpus (`lm_jax.data.shards`): packed rows, with entity ids
    for `Rows.ENTITIES`, document rows for `Rows.DOCUMENTS` or translation pairs for
    `Rows.PAIRS`, streamed from its shards; its
    tokenizer is copied into the run directory (a configured one must be the same file)."""
    manifest = Manifest.load(config.data.path)
    for split in ("train", "eval"):  # before step 1: a damaged shard never trains partly
        manifest.check_files(split, full=config.data.verify_shards)
    source = manifest.directory / manifest.content["tokenizer"]["file"]
    manifest.check_tokenizer(config.tokenizer.path or source)
    path = Path(config.tokenizer.path) if config.tokenizer.path else workdir / TOKENIZER_FILE
    if not config.tokenizer.path and not path.exists():  # every process writes the same bytes
        write_atomically(path, source.read_bytes())
    tokenizer = load_tokenizer(source, extra_ids=config.tokenizer.extra_ids)
    seq_len, vocab = config.data.seq_len, tokenizer.vocab
    if rows is Rows.ENTITIES and not manifest.entity_ids:
        raise DataError(
            f"{manifest.directory} holds no entity ids: prepare the entity objective's corpus "
            "from annotated sources (--source annotated_jsonl:PATTERN or peoples_daily)"
        )
    _check_pair_languages(manifest, rows, parse_languages(config.data.languages))
    layout = {
        Rows.PACKED: PreparedRows,
        Rows.DOCUMENTS: SentenceRows,
        Rows.ENTITIES: functools.partial(PreparedRows, entities=True),
        Rows.PAIRS: PairRows,
    }[rows]
    train = layout(ShardedDocuments(manifest, "train"), seq_len, vocab)
    held_out = layout(ShardedDocuments(manifest, "eval"), seq_len, vocab)
    splits = manifest.content["splits"]
    _check_one_batch(train, seq_len, config.train.batch_size)
    documents = (splits["train"]["documents"], splits["eval"]["documents"])
    return PretrainingData(tokenizer, train, held_out, documents)


def _check_pair_languages(manifest: Manifest, rows: Rows, languages: list[str]) -> None:
    """A prepared corpus of translation pairs is read by tlm only, with its languages in order
    (their ids are stored in the records)."""
    if (rows is Rows.PAIRS) != bool(manifest.languages):
        raise DataError(
            f"{manifest.directory} holds no translation pairs: prepare tlm's corpus from "
            "--source parallel_tsv:PATTERN or django_translations with --languages"
            if rows is Rows.PAIRS
            else f"{manifest.directory} holds translation pairs: only tlm reads them"
        )
    if rows is Rows.PAIRS and manifest.languages != languages:
        raise DataError(
            f"{manifest.directory} holds pairs in the languages {manifest.languages}: set "
            f"config.data.languages={','.join(manifest.languages)!r} (the same, in that order), "
            f"not {','.join(languages)!r}"
        )


def _row_features(rows: Streamed) -> grain.MapDataset:
    """Rows as a grain dataset of feature dicts (streamed rows already are one)."""
    if isinstance(rows, grain.MapDataset):
        return rows
    return grain.MapDataset.range(len(rows)).map(rows.row)


def _process_share(batch_size: int, process_index: int, process_count: int) -> int:
    if batch_size % process_count:
        raise DataError(
            f"the global batch of {batch_size} rows does not split evenly over "
            f"{process_count} processes"
        )
    return batch_size // process_count


def train_batches(
    rows: Streamed,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """Infinite training batches, reshuffled every epoch: `ds[step]` is this process's share of
    step's global batch of `batch_size` rows (see module docstring)."""
    share = _process_share(batch_size, process_index, process_count)
    stream = _row_features(rows).shuffle(seed=seed).repeat(None)
    return stream.batch(share, drop_remainder=True)[process_index::process_count]


def batch_iterator(
    batches: grain.MapDataset, prefetch: int = 2, workers: int = 0
) -> grain.DatasetIterator:
    """A checkpointable iterator over `batches` that prepares the next batches ahead: in
    `prefetch` background threads, or with `workers` > 0 in that many grain worker processes
    (reading and packing off the training process; the state's form differs between the two,
    so a run resumes with the setting it started with)."""
    options = grain.ReadOptions(num_threads=prefetch, prefetch_buffer_size=prefetch)
    dataset = batches.to_iter_dataset(options)
    if workers:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a library caller
            flags.FLAGS.mark_as_parsed()  # (not absl.app) has none to parse
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter(dataset)


def eval_batches(
    rows: Streamed,
    batch_size: int,
    num_batches: int,
    process_index: int = 0,
    process_count: int = 1,
) -> list[dict[str, np.ndarray]]:
    """Up to `num_batches` fixed held-out batches, in order (this process's share of each);
    rows repeat only when the held-out set is smaller than one batch."""
    share = _process_share(batch_size, process_index, process_count)
    ds = _row_features(rows).repeat(None).batch(batch_size, drop_remainder=True)
    count = min(num_batches, max(1, len(rows) // batch_size))
    rows_of = slice(process_index * share, (process_index + 1) * share)
    return [{k: v[rows_of] for k, v in ds[i].items()} for i in range(count)]
