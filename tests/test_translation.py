"""Parallel corpora for XLM's translation LM: gettext catalogues, TSV pairs, pair rows."""

import struct

import numpy as np
import pytest
from conftest import stacked_rows, tiny_config

from lm_jax.data.pipeline import build_pretraining_data
from lm_jax.data.tokenizer import train_sentencepiece
from lm_jax.data.translation import (
    TranslationPair,
    django_translations,
    load_translation_pairs,
    pair_rows,
    parallel_tsv,
    read_mo,
)
from lm_jax.errors import ConfigError, DataError
from lm_jax.layout import Rows
from lm_jax.pretrain.schema import pretraining_config
from lm_jax.pretrain.validation import validate


def write_mo(path, entries: dict[str, str]) -> None:
    """A little-endian gettext .mo file (GNU gettext manual, "The Format of MO Files")."""
    keys = sorted(entries)
    originals = [k.encode() for k in keys]
    translations = [entries[k].encode() for k in keys]
    table = 28
    data = 28 + 16 * len(keys)
    blobs, offsets = b"", []
    for s in originals + translations:
        offsets.append((len(s), data + len(blobs)))
        blobs += s + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, len(keys), table, table + 8 * len(keys), 0, 0)
    path.write_bytes(header + b"".join(struct.pack("<2I", *o) for o in offsets) + blobs)


def test_read_mo_pairs_singular_context_and_plural(tmp_path):
    path = tmp_path / "django.mo"
    write_mo(
        path,
        {
            "": "Content-Type: text/plain; charset=UTF-8\n",
            "Save": "Enregistrer",
            "month name\x04May": "mai",
            "%(count)d item\x00%(count)d items": "%(count)d élément\x00%(count)d éléments",
            "Untranslated": "",
        },
    )
    assert read_mo(path) == {
        "Save": "Enregistrer",
        "May": "mai",
        "%(count)d item": "%(count)d élément",
    }
    path.write_bytes(b"\x00" * 40)
    with pytest.raises(DataError, match="bad magic number"):
        read_mo(path)


def test_django_catalogues_hold_human_translations():
    pairs = django_translations(["fr", "de"])
    french = {p.source: p.target for p in pairs if p.language == "fr"}
    assert french["Personal info"] == "Informations personnelles"
    assert french["This field is required."] == "Ce champ est obligatoire."
    assert {p.language for p in pairs} == {"fr", "de"}
    assert 700 < len(french) < 1500
    assert all("\n" not in p.source + p.target for p in pairs)
    with pytest.raises(DataError, match="no translations into 'xx'.*its locales: af, ar"):
        django_translations(["xx"])


def test_parallel_tsv_reads_filters_and_names_problems(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text(
        "source\ttarget\tlanguage\nGood morning.\tBonjour.\tfr\nThank you.\tDanke.\tde\n\t\tfr\n"
    )
    assert list(parallel_tsv(path)) == [
        TranslationPair("Good morning.", "Bonjour.", "fr"),
        TranslationPair("Thank you.", "Danke.", "de"),
    ]
    assert load_translation_pairs("parallel_tsv", str(path), ["de"]) == [
        TranslationPair("Thank you.", "Danke.", "de")
    ]
    with pytest.raises(DataError, match=r"no pairs in \['es'\]"):
        load_translation_pairs("parallel_tsv", str(path), ["fr", "es"])
    path.write_text("src\ttarget\nA\tB\n")
    with pytest.raises(DataError, match=r"missing \['language', 'source'\]"):
        list(parallel_tsv(path))
    with pytest.raises(DataError, match="needs a parallel corpus"):
        load_translation_pairs("wikipedia_sample", "", ["fr"])


@pytest.fixture(scope="module")
def pairs_tokenizer(tmp_path_factory):
    pairs = django_translations(["fr", "de"])
    texts = list(dict.fromkeys(t for p in pairs for t in (p.source, p.target)))
    return train_sentencepiece(texts, tmp_path_factory.mktemp("tok") / "m.model", vocab_size=1000)


def test_pair_rows_layout(pairs_tokenizer):
    tok, vocab = pairs_tokenizer, pairs_tokenizer.vocab
    pairs = [
        TranslationPair("Log out", "Déconnexion", "fr"),
        TranslationPair("Change password " * 20, "Passwort ändern", "de"),
    ]
    rows = stacked_rows(pair_rows(pairs, tok, 24, ["fr", "de"]))
    source, target = tok.encode_ids([pairs[0].source, pairs[0].target])
    n, m = len(source) + 2, len(target) + 2
    np.testing.assert_array_equal(
        rows.tokens[0, : n + m],
        [vocab.cls_id, *source, vocab.sep_id, vocab.cls_id, *target, vocab.sep_id],
    )
    np.testing.assert_array_equal(rows.segment_ids[0], [1] * n + [2] * m + [0] * (24 - n - m))
    np.testing.assert_array_equal(rows.positions[0, : n + m], [*range(n), *range(m)])
    np.testing.assert_array_equal(rows.language_ids[0, : n + m], [0] * n + [1] * m)
    # A long side is cut to half a row; the second pair's language is the second one.
    assert (rows.segment_ids[1] == 1).sum() == 12
    assert set(rows.language_ids[1][rows.segment_ids[1] == 2]) == {2}
    with pytest.raises(DataError, match=r"languages \['de'\] outside"):
        pair_rows(pairs, tok, 24, ["fr"])


def test_pairs_are_split_by_source_sentence(tmp_path):
    config = tiny_config(**{"data.corpus": "django_translations", "data.languages": "fr,de,es"})
    config.objective = "tlm"
    config.model.type_vocab_size = 4
    data = build_pretraining_data(config, tmp_path, rows=Rows.PAIRS)
    assert "language_ids" in data.train[0]
    tok = data.tokenizer

    def sources(rows):  # those not cut to half a row (a cut one could match another's start)
        sides = [r[s == 1] for r, s in zip(rows.tokens, rows.segment_ids, strict=True)]
        return {tok.decode(side) for side in sides if len(side) < 32}

    assert not sources(stacked_rows(data.train)) & sources(stacked_rows(data.eval))
    assert data.num_documents[1] > 0


def test_tlm_config_needs_pairs_and_language_embeddings():
    config = pretraining_config("tlm")
    assert config.data.corpus == "django_translations"
    validate(config)
    config.model.type_vocab_size = 5
    with pytest.raises(ConfigError, match="type_vocab_size must be >= 6 for tlm"):
        validate(config)
    config = pretraining_config("tlm")
    config.data.corpus = "wikipedia_sample"
    with pytest.raises(ConfigError, match="tlm needs a parallel corpus"):
        validate(config)
    config = pretraining_config("mlm")
    config.data.corpus = "django_translations"
    with pytest.raises(ConfigError, match="only tlm reads translation pairs, not mlm"):
        validate(config)
