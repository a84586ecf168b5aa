"""Hugging Face folders' tokenizer files read offline: the same ids as `transformers`' own
tokenizer for byte-level BPE (tokenizer.json and vocab.json + merges.txt), the family's row
layout, character offsets that map answers back, SentencePiece with a folder's special
pieces, and named errors."""

import shutil

import numpy as np
import pytest
from conftest import train_xlnet_spiece

from lm_jax.data.hf_tokenizers import FastTokenizer, load_hugging_face_tokenizer
from lm_jax.data.tokenizer import SentencePieceTokenizer
from lm_jax.errors import DataError
from lm_jax.finetune.data import row_layout
from lm_jax.finetune.qa_data import QAExample, QASplit, WindowSettings, make_windows

transformers = pytest.importorskip("transformers")
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
TEXTS = [
    "The Normans were the people who gave their name to Normandy, a region in France.",
    "They were descended from Norse raiders and pirates from Denmark, Iceland and Norway.",
    "Rollo agreed to swear fealty to King Charles III of West Francia in 911.",
]


@pytest.fixture(scope="module")
def roberta_folder(tmp_path_factory, wiki_docs):
    """A RoBERTa tokenizer folder as `transformers` writes it (tokenizer.json,
    tokenizer_config.json) beside vocab.json and merges.txt, its BPE trained on the default
    corpus."""
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path_factory.mktemp("roberta")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        wiki_docs[:200] + TEXTS, vocab_size=800, special_tokens=ROBERTA_SPECIALS
    )
    bpe.save_model(str(folder))
    theirs = transformers.RobertaTokenizerFast.from_pretrained(str(folder))
    theirs.save_pretrained(folder)  # adds tokenizer.json and tokenizer_config.json
    return folder, theirs


def test_byte_level_bpe_gives_transformers_ids_and_layout(roberta_folder, tmp_path):
    folder, theirs = roberta_folder
    ours = load_hugging_face_tokenizer(folder)  # tokenizer.json
    assert isinstance(ours, FastTokenizer)
    bare = tmp_path / "bare"  # vocab.json + merges.txt only
    bare.mkdir()
    for name in ("vocab.json", "merges.txt"):  # the special tokens: RoBERTa's by default
        shutil.copy(folder / name, bare / name)
    from_files = load_hugging_face_tokenizer(bare)
    for text in TEXTS:
        expected = theirs(text, add_special_tokens=False)["input_ids"]
        assert list(ours.encode(text).ids) == expected
        assert list(from_files.encode(text).ids) == expected
    assert (ours.vocab.cls_id, ours.vocab.sep_id) == (theirs.cls_token_id, theirs.sep_token_id)
    assert (ours.vocab.pad_id, ours.vocab.mask_id) == (theirs.pad_token_id, theirs.mask_token_id)
    a, b = (list(ours.encode(t).ids) for t in TEXTS[:2])
    ids, types = row_layout(a, b, ours.vocab, "roberta")
    assert ids == theirs(TEXTS[0], TEXTS[1])["input_ids"] and set(types) == {0}
    assert ours.decode(ours.encode(TEXTS[2]).ids) == TEXTS[2]
    starts = ours.encode(TEXTS[0]).word_starts
    assert starts.sum() == len(TEXTS[0].split()) and starts[0]  # the first word has no "Ġ"


def test_offsets_map_answers_back_through_byte_level_bpe(roberta_folder):
    tokenizer = load_hugging_face_tokenizer(roberta_folder[0])
    context = TEXTS[2]
    start = context.index("King Charles III")
    example = QAExample("q", "Who?", context, ("King Charles III",), start, start + 16)
    windows = make_windows(
        QASplit([example], "x", 0), tokenizer, WindowSettings(48, 16, 8, layout="roberta")
    )
    rows = windows.rows.arrays
    s, e = rows["start_positions"][0], rows["end_positions"][0]
    assert (
        context[windows.offsets[0, s, 0] : windows.offsets[0, e, 1]].strip() == "King Charles III"
    )
    assert rows["input_ids"][0, 0] == tokenizer.vocab.cls_id
    question_end = int(np.flatnonzero(rows["input_ids"][0] == tokenizer.vocab.sep_id)[0])
    assert rows["input_ids"][0, question_end + 1] == tokenizer.vocab.sep_id  # </s></s>
    assert not rows["token_type_ids"].any()


def test_spiece_model_with_the_folders_special_pieces(tmp_path, wiki_docs):
    import sentencepiece as spm

    folder = tmp_path / "xlnet"
    folder.mkdir()
    train_xlnet_spiece(folder / "spiece.model", wiki_docs[:300], vocab_size=600)
    tokenizer = load_hugging_face_tokenizer(folder)
    assert isinstance(tokenizer, SentencePieceTokenizer)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    v = tokenizer.vocab
    assert (v.pad_id, v.unk_id) == (0, 1)
    pieces = ("<sep>", "<cls>", "<mask>")
    assert (v.sep_id, v.cls_id, v.mask_id) == tuple(sp.piece_to_id(p) for p in pieces)
    assert list(tokenizer.encode(TEXTS[0]).ids) == sp.encode(TEXTS[0])


def test_folders_without_a_readable_tokenizer_are_named(tmp_path, roberta_folder):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DataError, match=r"no tokenizer file lm_jax reads.*config.json"):
        load_hugging_face_tokenizer(tmp_path)
    odd = tmp_path / "odd"
    odd.mkdir()
    shutil.copy(roberta_folder[0] / "tokenizer.json", odd / "tokenizer.json")
    (odd / "special_tokens_map.json").write_text('{"mask_token": "[MASK]"}')
    with pytest.raises(DataError, match=r"no special token for .*mask .*\[MASK\]"):
        load_hugging_face_tokenizer(odd)


@pytest.mark.parametrize("fast", [False, True], ids=["spiece", "tokenizer_json"])
def test_a_t5_folder_gives_transformers_ids_with_roles_for_its_sentinels(tmp_path, wiki_docs, fast):
    """T5 names only pad, unk and </s>: </s> ends sequences; the top sentinels take the
    roles T5 never reads ([MASK] <extra_id_0>, [CLS] <extra_id_1>)."""
    import transformers
    from conftest import t5_tokenizer_folder

    folder = t5_tokenizer_folder(tmp_path / "t5", wiki_docs[:300], 400, fast)
    assert (folder / "tokenizer.json").is_file() == fast
    theirs = transformers.AutoTokenizer.from_pretrained(folder)
    ours = load_hugging_face_tokenizer(folder)
    v = ours.vocab
    assert (v.pad_id, v.sep_id, v.eos_id, v.unk_id) == (0, 1, 1, 2)
    assert v.mask_id == theirs.convert_tokens_to_ids("<extra_id_0>") == 409
    assert v.cls_id == theirs.convert_tokens_to_ids("<extra_id_1>")
    assert v.size == len(theirs) == 410
    for text in TEXTS:
        ids = list(ours.encode(text).ids)
        assert ids == theirs(text, add_special_tokens=False).input_ids
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
