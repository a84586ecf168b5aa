"""Prepared corpora (lm_jax.data.prepare, lm_jax.data.shards): deterministic preparation,
streamed rows equal to the in-memory packing, resumable preparation, batches independent of the
number of processes, bounded tokenizer samples, and clear errors on bad input."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from conftest import run_module, tiny_config

from lm_jax.data import prepare as prep
from lm_jax.data.packing import pack_documents
from lm_jax.data.pipeline import batch_iterator, train_batches
from lm_jax.data.shards import Manifest, PreparedRows, SentenceRows, ShardedDocuments
from lm_jax.data.sources import python_docs
from lm_jax.data.tokenizer import encode_with_word_starts, load_tokenizer, train_sentencepiece
from lm_jax.errors import DataError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """CPython's documentation topics as a gzipped JSON-lines file, and a tokenizer for them."""
    folder = tmp_path_factory.mktemp("corpus")
    docs = python_docs()  # 79 topics
    with gzip.open(folder / "docs.jsonl.gz", "wt", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps({"text": doc}) + "\n")
    tokenizer = folder / "tok.model"
    train_sentencepiece(docs, tokenizer, vocab_size=1000, extra_ids=0)
    return folder, docs, tokenizer


def settings(corpus, **overrides) -> prep.Settings:
    folder, _, tokenizer = corpus
    fields = dict(
        sources=(f"jsonl:{folder}/*.jsonl.gz",),
        tokenizer=str(tokenizer),
        extra_ids=0,
        docs_per_shard=30,
        eval_fraction=0.1,
    )
    return prep.Settings(**{**fields, **overrides})


def folder_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_preparation_is_deterministic_and_independent_of_the_workers(corpus, tmp_path):
    prep.prepare(settings(corpus), tmp_path / "a", workers=1, progress=False)
    prep.prepare(settings(corpus), tmp_path / "b", workers=2, progress=False)
    a, b = folder_bytes(tmp_path / "a"), folder_bytes(tmp_path / "b")
    assert a == b
    manifest = json.loads(a["manifest.json"])
    splits = manifest["splits"]
    assert splits["train"]["documents"] + splits["eval"]["documents"] == 79
    assert len(splits["train"]["shards"]) == 3  # 30 + 30 + 19 source documents
    assert 0 < splits["eval"]["documents"] < 20
    assert "progress.json" not in a and not any(n.endswith(".tmp") for n in a)


def test_streamed_rows_are_the_in_memory_packing_of_each_shard(corpus, tmp_path):
    _, docs, tokenizer_path = corpus
    prep.prepare(settings(corpus, eval_fraction=0.0), tmp_path / "p", progress=False)
    tokenizer = load_tokenizer(tokenizer_path, extra_ids=0)
    rows = PreparedRows(
        ShardedDocuments(Manifest.load(tmp_path / "p"), "train"), 64, tokenizer.vocab
    )
    expected, counts = [], 0
    for start in range(0, len(docs), 30):  # one packing per shard
        ids, starts = encode_with_word_starts(tokenizer, docs[start : start + 30])
        packed = pack_documents(ids, 64, tokenizer.vocab, word_starts=starts)
        expected += [packed.row(i) for i in range(len(packed))]
        counts = counts + packed.token_counts(tokenizer.vocab.size)
    assert len(rows) == len(expected)
    for i in range(len(rows)):
        got = rows[i]
        assert set(got) == set(expected[i])
        for name, value in expected[i].items():
            np.testing.assert_array_equal(got[name], value, err_msg=f"row {i} {name}")
    np.testing.assert_array_equal(rows[len(rows) + 3]["tokens"], rows[3]["tokens"])  # wraps
    np.testing.assert_array_equal(rows.token_counts(tokenizer.vocab.size), counts)


def test_an_interrupted_preparation_resumes_to_the_same_files(corpus, tmp_path, monkeypatch):
    prep.prepare(settings(corpus), tmp_path / "whole", progress=False)
    real = prep._write_group

    def dies_at_the_third_shard(out, index, *args):
        if index == 2:
            raise KeyboardInterrupt  # as a SIGINT / kill between shards would stop it
        return real(out, index, *args)

    monkeypatch.setattr(prep, "_write_group", dies_at_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(settings(corpus), tmp_path / "resumed", progress=False)
    assert (tmp_path / "resumed" / "progress.json").exists()
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    monkeypatch.setattr(prep, "_write_group", real)
    prep.prepare(settings(corpus), tmp_path / "resumed", progress=False)
    assert folder_bytes(tmp_path / "resumed") == folder_bytes(tmp_path / "whole")


def test_batches_are_the_same_for_one_two_and_four_processes(corpus, tmp_path):
    _, _, tokenizer_path = corpus
    prep.prepare(settings(corpus), tmp_path / "p", progress=False)
    vocab = load_tokenizer(tokenizer_path, extra_ids=0).vocab
    rows = PreparedRows(ShardedDocuments(Manifest.load(tmp_path / "p"), "train"), 64, vocab)
    one = train_batches(rows, 8, seed=3)
    for count in (2, 4):
        shares = [train_batches(rows, 8, 3, index, count) for index in range(count)]
        for step in (0, 5, len(rows) // 8 + 2):  # the last crosses into the second epoch
            joined = np.concatenate([s[step]["tokens"] for s in shares])
            np.testing.assert_array_equal(joined, one[step]["tokens"])


def test_the_batch_iterator_resumes_mid_epoch_exactly(corpus, tmp_path):
    _, _, tokenizer_path = corpus
    prep.prepare(settings(corpus), tmp_path / "p", progress=False)
    vocab = load_tokenizer(tokenizer_path, extra_ids=0).vocab
    rows = PreparedRows(ShardedDocuments(Manifest.load(tmp_path / "p"), "train"), 64, vocab)
    iterator = batch_iterator(train_batches(rows, 8, seed=1))
    for _ in range(7):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator)["tokens"] for _ in range(3)]
    resumed = batch_iterator(train_batches(rows, 8, seed=1))
    resumed.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(resumed)["tokens"], want)


def test_the_tokenizer_sample_is_bounded_seeded_and_uniform():
    docs = ["\n".join(f"line {d} {i}" for i in range(5)) for d in range(10)]  # 50 lines
    sample = prep.sample_lines(docs, 10, seed=0)
    assert len(sample) == 10 and sample == prep.sample_lines(docs, 10, seed=0)
    counts = {}
    for seed in range(2000):
        for line in prep.sample_lines(docs, 10, seed):
            counts[line] = counts.get(line, 0) + 1
    # each line is kept with probability 10/50: 400 of 2000 (sd 17.9); 4.5 sd either side
    assert len(counts) == 50 and all(320 < c < 480 for c in counts.values())


def test_parquet_text_and_jsonl_sources_read_the_same_documents(corpus, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, docs, _ = corpus
    pq.write_table(pa.table({"text": docs[:30], "id": list(range(30))}), tmp_path / "a.parquet")
    (tmp_path / "t").mkdir()
    paragraphs = ["\n".join(line for line in d.splitlines() if line.strip()) for d in docs[:30]]
    (tmp_path / "t" / "a.txt").write_text("\n\n".join(paragraphs))
    for spec in (f"parquet:{tmp_path}/*.parquet", f"text:{tmp_path}/t"):
        read = list(prep.source_documents(spec, "text", ""))
        assert len(read) == 30 and read[0].split()[:3] == docs[0].split()[:3]


def test_bad_sources_are_clear_errors_and_keep_a_finished_folder(corpus, tmp_path):
    with pytest.raises(DataError, match="matches no"):
        list(prep.corpus_documents(prep.Settings(sources=(f"jsonl:{tmp_path}/none*.jsonl",))))
    with pytest.raises(DataError, match="unknown source kind"):
        list(prep.source_documents("csv:x", "text", ""))
    (tmp_path / "empty.jsonl").write_text("\n")
    empty = settings(corpus, sources=(f"jsonl:{tmp_path}/empty.jsonl",))
    with pytest.raises(DataError, match="no document"):
        prep.prepare(empty, tmp_path / "e", progress=False)
    prep.prepare(settings(corpus), tmp_path / "p", progress=False)
    before = folder_bytes(tmp_path / "p")
    with pytest.raises(DataError, match="other settings"):
        prep.prepare(settings(corpus, docs_per_shard=20), tmp_path / "p", progress=False)
    assert folder_bytes(tmp_path / "p") == before


def test_a_truncated_shard_or_another_tokenizer_stops_before_training(corpus, tmp_path):
    folder, docs, tokenizer_path = corpus
    prep.prepare(settings(corpus), tmp_path / "p", progress=False)
    manifest = Manifest.load(tmp_path / "p")
    train_sentencepiece(docs[:60], tmp_path / "other.model", vocab_size=600, extra_ids=0)
    with pytest.raises(DataError, match="another tokenizer"):
        manifest.check_tokenizer(tmp_path / "other.model")
    shard = tmp_path / "p" / manifest.shards("train")[1]["file"]
    shard.write_bytes(shard.read_bytes()[:-100])
    vocab = load_tokenizer(tokenizer_path, extra_ids=0).vocab
    with pytest.raises(DataError, match=f"{shard}.*truncated"):
        PreparedRows(ShardedDocuments(Manifest.load(tmp_path / "p"), "train"), 64, vocab)
    with pytest.raises(DataError, match="not a prepared corpus"):
        Manifest.load(folder)


def test_a_corrupt_shard_is_named_before_the_first_step(corpus, tmp_path):
    from lm_jax.pretrain.run import pretrain

    prep.prepare(settings(corpus), tmp_path / "p", progress=False)
    shard = tmp_path / "p" / Manifest.load(tmp_path / "p").shards("eval")[0]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, the size unchanged
    shard.write_bytes(bytes(data))
    config = tiny_config(**{"data.corpus": "prepared", "data.path": str(tmp_path / "p")})
    with pytest.raises(DataError, match=f"{shard} does not match the SHA-256.*corrupt"):
        pretrain(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_pretraining_streams_a_prepared_corpus(corpus, tmp_path):
    from lm_jax.pretrain.run import pretrain

    _, _, tokenizer_path = corpus
    prep.prepare(settings(corpus), tmp_path / "p", progress=False)
    config = tiny_config(
        **{"data.corpus": "prepared", "data.path": str(tmp_path / "p"), "output_dir": ""}
    )
    summary = pretrain(config, tmp_path / "run", progress=False)
    assert summary.last_eval_loss < summary.first_eval_loss
    assert (tmp_path / "run" / "tokenizer.model").read_bytes() == tokenizer_path.read_bytes()
    assert 0 < summary.unigram_baseline < np.log(1000)


def test_streamed_sentence_rows_are_the_in_memory_document_rows_of_each_shard(corpus, tmp_path):
    """Prepared with `sentence_rows`, a corpus streams `document_rows`' rows shard by shard,
    and still packs for the other objectives; other row lengths are refused, naming the flag."""
    from lm_jax.data.pipeline import document_rows

    _, docs, tokenizer_path = corpus
    out = tmp_path / "p"
    prep.prepare(settings(corpus, eval_fraction=0.0, sentence_rows=48), out, progress=False)
    tokenizer = load_tokenizer(tokenizer_path, extra_ids=0)
    documents = ShardedDocuments(Manifest.load(out), "train")
    rows = SentenceRows(documents, 48, tokenizer.vocab)
    expected = [
        shard[i]
        for start in range(0, len(docs), 30)
        for shard in [document_rows(docs[start : start + 30], tokenizer, 48)]
        for i in range(len(shard))
    ]
    assert len(rows) == len(expected) > 79
    for i in range(len(rows)):
        assert set(rows[i]) == set(expected[i])
        for name, value in expected[i].items():
            np.testing.assert_array_equal(rows[i][name], value, err_msg=f"row {i} {name}")
    assert len(PreparedRows(documents, 64, tokenizer.vocab)[0]["tokens"]) == 64
    with pytest.raises(DataError, match="prepared for rows of 48 tokens.*--sentence-rows 64"):
        SentenceRows(documents, 64, tokenizer.vocab)
    prep.prepare(settings(corpus), tmp_path / "packed", progress=False)
    packed_only = ShardedDocuments(Manifest.load(tmp_path / "packed"), "train")
    with pytest.raises(DataError, match="prepared without sentence rows.*--sentence-rows 48"):
        SentenceRows(packed_only, 48, tokenizer.vocab)


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """300 People's Daily paragraphs as annotated JSON lines, and a character tokenizer."""
    from lm_jax.data.entities import peoples_daily

    folder = tmp_path_factory.mktemp("annotated")
    docs = peoples_daily()[:300]
    lines = [json.dumps({"text": d.text, "entities": d.entities, "words": d.words}) for d in docs]
    (folder / "pd.jsonl").write_text("\n".join(lines) + "\n")
    tokenizer = folder / "zh.model"
    train_sentencepiece([d.text for d in docs], tokenizer, vocab_size=1500, model_type="char")
    return folder, docs, tokenizer


def test_streamed_entity_rows_are_the_in_memory_entity_rows_of_each_shard(annotated, tmp_path):
    """Prepared from annotated sources, records keep each token's entity id and the corpus
    streams `entity_rows`' rows shard by shard; plain and annotated sources do not mix."""
    from lm_jax.data.pipeline import entity_rows

    folder, docs, tokenizer_path = annotated
    fields = dict(sources=(f"annotated_jsonl:{folder}/pd.jsonl",), eval_fraction=0.0)
    fields.update(tokenizer=str(tokenizer_path), extra_ids=0, docs_per_shard=100)
    prep.prepare(prep.Settings(**fields), tmp_path / "p", progress=False)
    manifest = Manifest.load(tmp_path / "p")
    assert manifest.entity_ids
    tokenizer = load_tokenizer(tokenizer_path, extra_ids=0)
    rows = PreparedRows(ShardedDocuments(manifest, "train"), 64, tokenizer.vocab, entities=True)
    expected = [
        shard[i]
        for start in range(0, len(docs), 100)
        for shard in [entity_rows(docs[start : start + 100], tokenizer, 64)]
        for i in range(len(shard))
    ]
    assert len(rows) == len(expected)
    for i in range(len(rows)):
        assert set(rows[i]) == set(expected[i]) and "entity_ids" in rows[i]
        for name, value in expected[i].items():
            np.testing.assert_array_equal(rows[i][name], value, err_msg=f"row {i} {name}")
    assert rows[0]["entity_ids"].any()
    mixed = prep.Settings(**{**fields, "sources": (*fields["sources"], "python_docs")})
    with pytest.raises(DataError, match="mix annotated"):
        prep.prepare(mixed, tmp_path / "mixed", progress=False)
    assert not (tmp_path / "mixed").exists()


def test_ernie_pretrains_from_a_prepared_annotated_corpus(annotated, corpus, tmp_path):
    from lm_jax.pretrain.run import pretrain

    folder, _, tokenizer_path = annotated
    fields = dict(sources=(f"annotated_jsonl:{folder}/pd.jsonl",), eval_fraction=0.1)
    fields.update(tokenizer=str(tokenizer_path), extra_ids=0, docs_per_shard=100)
    prep.prepare(prep.Settings(**fields), tmp_path / "p", progress=False)
    run = {"data.corpus": "prepared", "data.path": str(tmp_path / "p"), "output_dir": ""}
    summary = pretrain(tiny_config("entity", **run), tmp_path / "run", progress=False)
    assert summary.last_eval_loss < summary.first_eval_loss
    prep.prepare(settings(corpus), tmp_path / "plain", progress=False)
    run["data.path"] = str(tmp_path / "plain")
    with pytest.raises(DataError, match="holds no entity ids.*annotated_jsonl"):
        pretrain(tiny_config("entity", **run), tmp_path / "plain_run", progress=False)


def test_a_sentence_pair_objective_pretrains_from_a_prepared_corpus(corpus, tmp_path):
    """NSP streams the document rows of a corpus prepared for its row length and learns; a
    run at another row length stops before training, naming the flag to prepare with."""
    from lm_jax.pretrain.run import pretrain

    prep.prepare(settings(corpus, sentence_rows=64), tmp_path / "p", progress=False)
    fields = {"data.corpus": "prepared", "data.path": str(tmp_path / "p"), "output_dir": ""}
    summary = pretrain(tiny_config("nsp", **fields), tmp_path / "run", progress=False)
    assert summary.last_eval_loss < summary.first_eval_loss
    fields["data.seq_len"] = 32
    with pytest.raises(DataError, match="--sentence-rows 32"):
        pretrain(tiny_config("nsp", **fields), tmp_path / "other", progress=False)
    assert not (tmp_path / "other" / "checkpoints").exists()


@pytest.fixture(scope="module")
def parallel(tmp_path_factory):
    """Django's French and German translations as a parallel TSV file (with Spanish pairs that
    a preparation in fr,de skips), and a tokenizer for them."""
    from lm_jax.data.translation import django_translations

    folder = tmp_path_factory.mktemp("parallel")
    pairs = django_translations(["fr", "de", "es"])
    lines = ["source\ttarget\tlanguage", *(f"{p.source}\t{p.target}\t{p.language}" for p in pairs)]
    (folder / "pairs.tsv").write_text("\n".join(lines) + "\n")
    tokenizer = folder / "pairs.model"
    texts = list(dict.fromkeys(t for p in pairs for t in (p.source, p.target)))
    train_sentencepiece(texts, tokenizer, vocab_size=1500, extra_ids=0)
    return folder, [p for p in pairs if p.language != "es"], tokenizer


def test_streamed_translation_pairs_are_the_in_memory_pair_rows_of_each_shard(parallel, tmp_path):
    """A corpus of translation pairs holds one pair per record and streams `pair_rows`' rows
    shard by shard; held out, a source sentence takes all its translations with it."""
    from lm_jax.data.shards import PairRows
    from lm_jax.data.translation import pair_rows

    folder, pairs, tokenizer_path = parallel
    fields = dict(sources=(f"parallel_tsv:{folder}/*.tsv",), languages="fr,de", eval_fraction=0.0)
    fields.update(tokenizer=str(tokenizer_path), extra_ids=0, docs_per_shard=500)
    prep.prepare(prep.Settings(**fields), tmp_path / "p", progress=False)
    manifest = Manifest.load(tmp_path / "p")
    assert manifest.languages == ["fr", "de"] and not manifest.entity_ids
    tokenizer = load_tokenizer(tokenizer_path, extra_ids=0)
    rows = PairRows(ShardedDocuments(manifest, "train"), 32, tokenizer.vocab)
    expected = [
        shard[i]
        for start in range(0, len(pairs), 500)
        for shard in [pair_rows(pairs[start : start + 500], tokenizer, 32, ["fr", "de"])]
        for i in range(len(shard))
    ]
    assert len(rows) == len(expected) == len(pairs)
    for i in range(len(rows)):
        assert set(rows[i]) == set(expected[i]) and "language_ids" in rows[i]
        for name, value in expected[i].items():
            np.testing.assert_array_equal(rows[i][name], value, err_msg=f"row {i} {name}")
    assert {int(rows[i]["language_ids"].max()) for i in range(len(rows))} == {1, 2}

    fields["eval_fraction"] = 0.2
    prep.prepare(prep.Settings(**fields), tmp_path / "held", progress=False)
    held = Manifest.load(tmp_path / "held")

    def sources(split: str) -> set[tuple[int, ...]]:
        documents = ShardedDocuments(held, split)
        records = [
            documents.document(k, i) for k, (n, _) in enumerate(documents.sizes) for i in range(n)
        ]
        return {tuple(r.ids[: np.flatnonzero(r.sentence_starts)[1]]) for r in records}

    train, held_out = sources("train"), sources("eval")
    assert not train & held_out
    assert 0.1 < len(held_out) / len(train | held_out) < 0.3


def test_translation_sources_need_their_languages_and_do_not_mix(parallel, tmp_path):
    folder, _, tokenizer_path = parallel
    tsv = f"parallel_tsv:{folder}/*.tsv"
    cases = [
        (dict(sources=(tsv,)), "need --languages"),
        (dict(sources=("python_docs",), languages="fr"), "--languages applies to translation"),
        (dict(sources=(tsv, "python_docs"), languages="fr"), "mix pairs and plain"),
        (dict(sources=(tsv,), languages="fr", sentence_rows=64), "not to pairs sources"),
    ]
    for fields, message in cases:
        with pytest.raises(DataError, match=message):
            prep.prepare(prep.Settings(**fields), tmp_path / "bad", progress=False)
        assert not (tmp_path / "bad").exists()


def test_tlm_pretrains_from_a_prepared_parallel_corpus(parallel, corpus, tmp_path):
    """TLM streams a prepared parallel corpus and learns; other languages, another objective
    on it, or TLM on plain text stop before training."""
    from lm_jax.pretrain.run import pretrain

    folder, _, tokenizer_path = parallel
    fields = dict(sources=(f"parallel_tsv:{folder}/*.tsv",), languages="fr,de")
    fields.update(tokenizer=str(tokenizer_path), extra_ids=0, eval_fraction=0.1)
    prep.prepare(prep.Settings(**fields), tmp_path / "p", progress=False)
    run = {"data.corpus": "prepared", "data.path": str(tmp_path / "p"), "output_dir": ""}
    run.update({"data.languages": "fr,de", "model.type_vocab_size": 3, "data.seq_len": 32})
    summary = pretrain(tiny_config("tlm", **run), tmp_path / "run", progress=False)
    assert summary.last_eval_loss < summary.first_eval_loss
    bad = [
        ("tlm", {"data.languages": "de,fr"}, r"set config.data.languages='fr,de'"),
        ("mlm", {"data.languages": "fr,de"}, "holds translation pairs: only tlm reads them"),
    ]
    prep.prepare(settings(corpus), tmp_path / "plain", progress=False)
    bad.append(("tlm", {"data.path": str(tmp_path / "plain")}, "holds no translation pairs"))
    for objective, change, message in bad:
        with pytest.raises(DataError, match=message):
            pretrain(tiny_config(objective, **{**run, **change}), tmp_path / "x", progress=False)
        assert not (tmp_path / "x" / "checkpoints").exists()


def test_the_command_line_prepares_and_prints_where(corpus, tmp_path):
    folder, _, tokenizer = corpus
    args = [
        "--source",
        f"jsonl:{folder}/*.jsonl.gz",
        "--out",
        str(tmp_path / "c"),
        "--tokenizer",
        str(tokenizer),
        "--extra-ids",
        "0",
        "--workers",
        "1",
    ]
    done = run_module("lm_jax.data.prepare", *args)
    assert done.returncode == 0, done.stderr
    assert f"prepared corpus: {tmp_path / 'c'}" in done.stdout
    bad = run_module(
        "lm_jax.data.prepare",
        "--source",
        f"jsonl:{tmp_path}/no*.jsonl",
        "--out",
        str(tmp_path / "d"),
    )
    assert bad.returncode == 2 and "matches no" in bad.stderr


def test_the_base_and_large_configs_validate_against_a_prepared_corpus(corpus, tmp_path):
    """Every paper config whose objective reads packed rows streams a prepared corpus at base
    and large: its 512 / 568-token rows build from the shards with the corpus's tokenizer."""
    from test_configs import PAPER_CONFIGS, load

    from lm_jax.config_tools import override
    from lm_jax.data.pipeline import prepared_data
    from lm_jax.pretrain.validation import validate

    prep.prepare(settings(corpus), tmp_path / "p", progress=False)
    checked = set()
    for path in PAPER_CONFIGS:
        for size in ("base", "large"):
            config = load(path)(size)
            if config.data.corpus != "prepared":
                continue
            config = override(config, {"data.path": str(tmp_path / "p"), "train.batch_size": 1})
            validate(config)
            workdir = tmp_path / f"{path.stem}-{size}"
            workdir.mkdir()
            data = prepared_data(config, workdir)
            assert len(data.train) > 0 and data.train[0]["tokens"].shape == (config.data.seq_len,)
            checked.add(path.stem)
    assert {"bert", "roberta", "t5", "bart", "electra", "xlnet", "ul2"} <= checked


def test_two_processes_stream_their_own_rows_and_train_the_losses_of_one(corpus, tmp_path):
    """Two `jax.distributed` processes (2 CPU devices each) read their halves of every global
    batch from the shards and train the same losses as one process."""
    from conftest import distributed_pretraining

    from lm_jax.pretrain.run import pretrain
    from lm_jax.train.metrics import read_metrics

    prep.prepare(settings(corpus), tmp_path / "p", progress=False)
    short = {"data.corpus": "prepared", "data.path": str(tmp_path / "p"), "train.steps": 10}
    one = pretrain(tiny_config(**short), tmp_path / "one", progress=False)
    losses = [r["loss"] for r in read_metrics(one.metrics_path)]
    distributed_pretraining({**short, "output_dir": str(tmp_path / "two")})
    two = [r["loss"] for r in read_metrics(tmp_path / "two" / "metrics.jsonl")]
    assert two == pytest.approx(losses, rel=1e-5)


def test_grain_worker_processes_train_the_same_and_resume_exactly(corpus, tmp_path, monkeypatch):
    """With `data.workers=2` batches come from grain worker processes: the run interrupted by
    SIGTERM at step 7 and resumed ends with the held-out losses of an uninterrupted run without
    workers."""
    import os
    import signal

    from conftest import interrupt_at

    from lm_jax.pretrain.run import pretrain
    from lm_jax.train.metrics import read_metrics

    prep.prepare(settings(corpus), tmp_path / "p", progress=False)
    fields = {"data.corpus": "prepared", "data.path": str(tmp_path / "p")}

    def held_out(run_dir):
        records = read_metrics(run_dir / "metrics.jsonl")
        return {r["step"]: r["loss"] for r in records if r["split"] == "eval"}

    pretrain(tiny_config(**fields), tmp_path / "threads", progress=False)
    interrupt_at(monkeypatch, 7, lambda sums: os.kill(os.getpid(), signal.SIGTERM) or sums)
    workers = tiny_config(**fields, **{"data.workers": 2})
    stopped = pretrain(workers, tmp_path / "workers", progress=False)
    assert stopped.interrupted and stopped.final_step == 7
    monkeypatch.undo()
    pretrain(workers, tmp_path / "workers", progress=False)
    expected = held_out(tmp_path / "threads")
    assert held_out(tmp_path / "workers") == pytest.approx(expected, rel=1e-6)


def test_a_prepared_tfds_dataset_is_a_source(corpus, tmp_path):
    from lm_jax.data.tfds_text import NAME, prepare_local_text_dataset

    _, docs, _ = corpus
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("\n\n".join(d.split("\n")[0] for d in docs[:12]))
    prepare_local_text_dataset(tmp_path / "text", tmp_path / "tfds")
    read = list(prep.source_documents(f"tfds:{NAME}/train", "text", str(tmp_path / "tfds")))
    assert sorted(read) == sorted(d.split("\n")[0].strip() for d in docs[:12])
    tfds = settings(corpus, sources=(f"tfds:{NAME}",), data_dir=str(tmp_path / "tfds"))
    manifest = json.loads(prep.prepare(tfds, tmp_path / "p", progress=False).read_text())
    assert sum(s["documents"] for s in manifest["splits"].values()) == 12


def test_a_small_corpus_streams_the_same_rows_from_memory(corpus):
    """The in-memory path (`tokenize_and_pack`) is the same streamed rows over documents held
    in memory: `pack_documents`' rows, empty documents dropped, a stable fingerprint."""
    from lm_jax.data.pipeline import tokenize_and_pack

    _, docs, tokenizer_path = corpus
    tokenizer = load_tokenizer(tokenizer_path, extra_ids=0)
    texts = [docs[0], "   ", *docs[1:20]]  # the blank one tokenizes to nothing
    rows = tokenize_and_pack(texts, tokenizer, 64)
    ids, starts = encode_with_word_starts(tokenizer, texts)
    packed = pack_documents(ids, 64, tokenizer.vocab, word_starts=starts)
    assert len(rows) == len(packed)
    for i in range(len(rows)):
        for name, value in packed.row(i).items():
            np.testing.assert_array_equal(rows[i][name], value, err_msg=f"row {i} {name}")
    size = tokenizer.vocab.size
    np.testing.assert_array_equal(rows.token_counts(size), packed.token_counts(size))
    assert rows.fingerprint() == tokenize_and_pack(texts, tokenizer, 64).fingerprint()
    assert rows.fingerprint() != tokenize_and_pack(texts, tokenizer, 32).fingerprint()
    # Rows in memory are built once, then shared read-only; an epoch later, the same row.
    assert rows[3] is rows[3 + len(rows)] and not rows[3]["tokens"].flags.writeable


def test_a_prepared_corpus_builds_its_rows_at_each_read(corpus, tmp_path):
    """Memory stays bounded: nothing of a prepared corpus's rows is kept between reads."""
    prep.prepare(settings(corpus), tmp_path / "p", progress=False)
    tokenizer = load_tokenizer(corpus[2], extra_ids=0)
    rows = PreparedRows(
        ShardedDocuments(Manifest.load(tmp_path / "p"), "train"), 64, tokenizer.vocab
    )
    first, again = rows[3], rows[3]
    assert first is not again and first["tokens"].flags.writeable
    np.testing.assert_array_equal(first["tokens"], again["tokens"])


def test_a_prepared_corpus_smaller_than_one_batch_is_refused(corpus, tmp_path):
    from lm_jax.data.pipeline import prepared_data

    prep.prepare(settings(corpus), tmp_path / "p", progress=False)
    fields = {"data.corpus": "prepared", "data.path": str(tmp_path / "p")}
    with pytest.raises(DataError, match="fewer than one batch"):
        prepared_data(tiny_config(**fields, **{"train.batch_size": 100_000}), tmp_path)
