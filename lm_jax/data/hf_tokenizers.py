"""The tokenizer files a Hugging Face model folder ships, read offline into lm_jax's `Tokenizer`
interface: `tokenizer.json` (any fast tokenizer), byte-level BPE `vocab.json` + `merges.txt`
(RoBERTa, GPT-2; Radford et al. 2019), SentencePiece `spiece.model` (XLNet, ALBERT, T5) and
WordPiece `vocab.txt` (BERT, ELECTRA, MPNet). The special tokens' roles come from the folder's
`special_tokens_map.json` / `tokenizer_config.json` (`cls_token`, `sep_token`, ...); T5's
from `T5_ROLES`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lm_jax.data.tokenizer import (
    SENTINEL_FORMAT,
    Encoded,
    SentencePieceTokenizer,
    Tokenizer,
    WordPieceTokenizer,
)
from lm_jax.errors import DataError
from lm_jax.vocab import VocabInfo

ROLES = ("pad", "unk", "cls", "sep", "mask")
# A family's tokens when the folder does not name them (RoBERTa's <s> / </s>, XLNet's <cls>).
DEFAULT_SPECIALS = {
    "<s>": {"pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>", "mask": "<mask>"},
    "<cls>": {"pad": "<pad>", "unk": "<unk>", "cls": "<cls>", "sep": "<sep>", "mask": "<mask>"},
}
# T5 names only pad, unk and eos: its </s> ends sequences (sep); it reads no [CLS] or [MASK],
# whose roles go to its top sentinels (T5 masks with sentinels; Raffel et al. 2020, sec. 3.1.4)
T5_ROLES = {"sep": "</s>", "mask": "<extra_id_0>", "cls": "<extra_id_1>"}
WORD_START_MARKS = ("Ġ", "▁")  # byte-level BPE's and SentencePiece's space marks


def special_tokens(folder: Path) -> dict[str, str]:
    """role -> token text, from special_tokens_map.json, then tokenizer_config.json."""
    found: dict[str, str] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if path.is_file():
            settings = json.loads(path.read_text(encoding="utf-8"))
            for role in ROLES:
                value = settings.get(f"{role}_token")
                if isinstance(value, dict):
                    value = value.get("content")
                if isinstance(value, str):
                    found[role] = value
    return found


class FastTokenizer(Tokenizer):
    """A Hugging Face `tokenizers.Tokenizer` (its normaliser, pre-tokeniser and model; the
    post-processor's special tokens are added by lm_jax's row layouts instead) with the ids of
    its special tokens. A piece starts a word when it carries a space mark ("Ġ", "▁") in
    vocabularies that use one, and when it is not a "##" continuation otherwise; a text's
    first piece always does (byte-level BPE marks no space before it)."""

    def __init__(self, tokenizer, specials: dict[str, str], source: str):
        self._tok = tokenizer
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        missing = [f"{r} ({specials.get(r)!r})" for r in ROLES if specials.get(r) not in vocab]
        if missing:
            raise DataError(f"{source}: the tokenizer has no special token for {missing}")
        ids = {role: vocab[specials[role]] for role in ROLES}
        self.specials = dict(specials)
        self.vocab = VocabInfo(
            size=tokenizer.get_vocab_size(with_added_tokens=True),
            pad_id=ids["pad"],
            unk_id=ids["unk"],
            cls_id=ids["cls"],
            sep_id=ids["sep"],
            mask_id=ids["mask"],
        )
        pieces = [tokenizer.id_to_token(i) or "" for i in range(self.vocab.size)]
        marked = any(p.startswith(WORD_START_MARKS) for p in pieces)
        self._is_word_start = np.array(
            [p.startswith(WORD_START_MARKS) if marked else not p.startswith("##") for p in pieces]
        )

    def encode(self, text: str) -> Encoded:
        enc = self._tok.encode(text, add_special_tokens=False)
        ids = np.array(enc.ids, dtype=np.int32)
        offsets = np.array(enc.offsets, dtype=np.int32).reshape(-1, 2)
        starts = self.word_starts(ids).copy()
        starts[:1] = True
        return Encoded(ids=ids, word_starts=starts, offsets=offsets)

    def encode_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.array(e.ids, dtype=np.int32) for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def normalize(self, text: str) -> str:
        return self.decode(self.encode(text).ids)

    def word_starts(self, ids: np.ndarray) -> np.ndarray:
        return self._is_word_start[np.asarray(ids)]

    def id_to_piece(self, i: int) -> str:
        return self._tok.id_to_token(int(i))

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / "tokenizer.json"
        self._tok.save(str(path))
        tokens = {f"{role}_token": token for role, token in self.specials.items()}
        (Path(directory) / "special_tokens_map.json").write_text(json.dumps(tokens, indent=1))
        return path


def _byte_level_bpe(folder: Path, settings: dict):
    """RoBERTa's / GPT-2's tokenizer from vocab.json + merges.txt."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    bpe = models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tok = HFTokenizer(bpe)
    prefix = bool(settings.get("add_prefix_space", False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix)
    tok.decoder = decoders.ByteLevel()
    return tok


def _specials(folder: Path, vocab: dict[str, int]) -> dict[str, str]:
    named = special_tokens(folder)
    for marker, defaults in DEFAULT_SPECIALS.items():
        if marker in vocab:
            return {**defaults, **named}
    return _with_t5_roles(named, vocab)


def _with_t5_roles(named: dict[str, str], pieces) -> dict[str, str]:
    """`named`, with `T5_ROLES` where it is a T5 vocabulary (sentinels, </s>, no role named
    for cls, sep or mask)."""
    t5 = all(p in pieces for p in T5_ROLES.values())
    if not t5 or any(role in named for role in T5_ROLES):
        return named
    return {**T5_ROLES, **named}


def _sentencepiece(folder: Path, settings: dict) -> SentencePieceTokenizer:
    """XLNet's / ALBERT's spiece.model (<cls>, <sep>, <mask> pieces), or T5's with its
    `extra_ids` sentinels appended (`T5_ROLES`)."""
    extra_ids = int(settings.get("extra_ids", 0))
    named = special_tokens(folder)
    if extra_ids:
        sentinels = [SENTINEL_FORMAT.format(k) for k in range(extra_ids)]
        specials = _with_t5_roles(named, {"</s>", *sentinels})
    else:
        specials = {**DEFAULT_SPECIALS["<cls>"], **named}
    return SentencePieceTokenizer(folder / "spiece.model", extra_ids, specials)


def load_hugging_face_tokenizer(folder: str | Path) -> Tokenizer:
    """The folder's tokenizer: tokenizer.json, else vocab.json + merges.txt, else spiece.model,
    else vocab.txt; a folder with none of them is a named error."""
    from tokenizers import Tokenizer as HFTokenizer

    folder = Path(folder)
    config_file = folder / "tokenizer_config.json"
    settings = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if (folder / "tokenizer.json").is_file():
        tok = HFTokenizer.from_file(str(folder / "tokenizer.json"))
        specials = _specials(folder, tok.get_vocab(with_added_tokens=True))
        return FastTokenizer(tok, specials, str(folder / "tokenizer.json"))
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        tok = _byte_level_bpe(folder, settings)
        specials = _specials(folder, tok.get_vocab(with_added_tokens=True))
        return FastTokenizer(tok, specials, str(folder / "vocab.json"))
    if (folder / "spiece.model").is_file():
        return _sentencepiece(folder, settings)
    if (folder / "vocab.txt").is_file():
        return WordPieceTokenizer(folder / "vocab.txt", settings.get("do_lower_case", True))
    present = sorted(p.name for p in folder.iterdir())
    raise DataError(
        f"{folder}: no tokenizer file lm_jax reads (tokenizer.json, vocab.json + merges.txt, "
        f"spiece.model, vocab.txt); the folder holds {present}"
    )
