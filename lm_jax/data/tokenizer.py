"""Tokenizers: train or load SentencePiece models, load WordPiece vocab files, mark word starts.

Every tokenizer exposes the same small interface (`Tokenizer`): ids from text and back, per-token
character offsets, per-token word-start flags (for whole-word masking) and a `VocabInfo`, the
static description of the vocabulary that objectives take (size and special-token ids).

Special tokens. A trained SentencePiece model gets `<pad>`=0, `<unk>`=1 and the control symbols
`[CLS]`=2, `[SEP]`=3, `[MASK]`=4 (control symbols never come out of raw text, so a corpus that
contains the string "[MASK]" cannot inject mask tokens). `[CLS]`/`[SEP]` double as bos/eos.
T5-style sentinels are appended after the SentencePiece vocabulary as in seqio's
`SentencePieceVocabulary(extra_ids=...)`: `<extra_id_0>` is the last id, counting down.

Chinese: whole-word masking needs word boundaries that characters do not show. `chinese_word_ids`
segments text with jieba (offline, bundled dictionary) and gives each token the id of the jieba
word its first character belongs to (Cui et al. 2019, Chinese-BERT-wwm).
"""

from __future__ import annotations

import abc
import dataclasses
import io
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lm_jax.errors import DataError
from lm_jax.vocab import VocabInfo

log = logging.getLogger(__name__)
SPECIAL_PIECES = ("[CLS]", "[SEP]", "[MASK]")
SENTINEL_FORMAT = "<extra_id_{}>"
MODEL_TYPES = ("unigram", "bpe", "char", "word")
MIN_TRAINED_VOCAB = 300  # 5 specials + 256 byte-fallback pieces + some text pieces


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One tokenized text: ids, word-start flags and character offsets [start, end) per token."""

    ids: np.ndarray  # int32 [n]
    word_starts: np.ndarray  # bool [n]
    offsets: np.ndarray  # int32 [n, 2]


class Tokenizer(abc.ABC):
    """The interface every lm_jax tokenizer implements."""

    vocab: VocabInfo

    @abc.abstractmethod
    def encode(self, text: str) -> Encoded:
        """Tokenize one text (no special tokens added)."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to text; special tokens other than sentinels are dropped."""

    @abc.abstractmethod
    def normalize(self, text: str) -> str:
        """The text as the tokenizer sees it: `decode(encode(t).ids) == normalize(t)`."""

    @abc.abstractmethod
    def encode_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Ids of many texts (a batched fast path; no offsets)."""

    @abc.abstractmethod
    def word_starts(self, ids: np.ndarray) -> np.ndarray:
        """Word-start flags of ids produced by this tokenizer (bool, same shape)."""

    @abc.abstractmethod
    def id_to_piece(self, i: int) -> str:
        """The piece string of id `i`."""

    @abc.abstractmethod
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the tokenizer's file into `directory` under its usual name (`tokenizer.model`,
        `vocab.txt`); returns its path."""


def _byte_to_char_offsets(text: str) -> np.ndarray:
    """Map each UTF-8 byte offset of `text` (and its end) to a character offset."""
    lengths = np.fromiter((len(c.encode("utf-8")) for c in text), dtype=np.int64, count=len(text))
    table = np.repeat(np.arange(len(text), dtype=np.int32), lengths)
    return np.concatenate([table, np.array([len(text)], dtype=np.int32)])


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (Kudo & Richardson 2018) plus appended T5 sentinel ids.

    Word starts: a piece that begins with the meta symbol "▁" starts a word (as in ALBERT's
    whole-word n-gram masking); continuation pieces join the previous word.
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        extra_ids: int = 0,
        specials: dict[str, str] | None = None,
    ):
        """`specials` maps roles (cls, sep, mask, and optionally pad, unk) to pieces; the
        default is lm_jax's [CLS] / [SEP] / [MASK] with the model's own pad and unk (a
        Hugging Face spiece.model names its own, e.g. XLNet's <cls> / <sep> / <mask>)."""
        import sentencepiece as spm

        if isinstance(model, bytes):
            proto = model
        else:
            path = Path(model)
            if not path.is_file():
                raise DataError(f"SentencePiece model not found: {path}")
            proto = path.read_bytes()
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=proto)
        except RuntimeError as e:
            raise DataError(f"not a valid SentencePiece model ({model!r:.80}): {e}") from e
        self.model_proto = proto
        self.extra_ids = int(extra_ids)
        n = self._sp.get_piece_size()
        size = n + self.extra_ids
        roles = specials or dict(zip(("cls", "sep", "mask"), SPECIAL_PIECES))
        sentinels = {SENTINEL_FORMAT.format(k): size - 1 - k for k in range(self.extra_ids)}
        ids = {}
        for role, piece in roles.items():
            i = sentinels.get(piece, self._sp.piece_to_id(piece))
            if piece not in sentinels and self._sp.id_to_piece(i) != piece:
                pieces = ", ".join(roles.values())
                raise DataError(
                    f"SentencePiece model has no {piece} piece; lm_jax needs {pieces} "
                    "(train with train_sentencepiece)"
                )
            ids[role] = i
        ids.setdefault("pad", self._sp.pad_id())
        ids.setdefault("unk", self._sp.unk_id())
        if ids["pad"] < 0:
            raise DataError("SentencePiece model has no pad piece (train with pad_id=0)")
        self.vocab = VocabInfo(
            size=size,
            pad_id=ids["pad"],
            unk_id=ids["unk"],
            cls_id=ids["cls"],
            sep_id=ids["sep"],
            mask_id=ids["mask"],
            sentinel_ids=tuple(i for i in sentinels.values() if i not in ids.values()),
        )
        self._is_word_start = np.array(
            [self._sp.id_to_piece(i).startswith("▁") for i in range(n)] + [True] * self.extra_ids
        )

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / "tokenizer.model"
        path.write_bytes(self.model_proto)
        return path

    def id_to_piece(self, i: int) -> str:
        n = self._sp.get_piece_size()
        return (
            SENTINEL_FORMAT.format(self.vocab.size - 1 - i) if i >= n else self._sp.id_to_piece(i)
        )

    def encode(self, text: str) -> Encoded:
        proto = self._sp.encode(text, return_type="proto")
        ids = np.array([p.id for p in proto.pieces], dtype=np.int32)
        to_char = _byte_to_char_offsets(text)
        offsets = np.array(
            [(to_char[p.begin], to_char[p.end]) for p in proto.pieces], dtype=np.int32
        ).reshape(-1, 2)
        return Encoded(ids=ids, word_starts=self._is_word_start[ids], offsets=offsets)

    def encode_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(x, dtype=np.int32) for x in self._sp.encode(list(texts))]

    def word_starts(self, ids: np.ndarray) -> np.ndarray:
        return self._is_word_start[np.asarray(ids)]

    def decode(self, ids: Sequence[int]) -> str:
        n = self._sp.get_piece_size()
        out, run = [], []
        for i in map(int, ids):
            if i >= n:
                out.append(self._sp.decode(run))
                out.append(self.id_to_piece(i))
                run = []
            elif not self._sp.is_control(i):
                run.append(i)
        out.append(self._sp.decode(run))
        return "".join(out)

    def normalize(self, text: str) -> str:
        return self._sp.normalize(text).replace("▁", " ").strip()


MAX_SENTENCE_BYTES = 4192  # SentencePiece's max_sentence_length: longer lines are skipped


def split_long_lines(lines: list[str], max_bytes: int) -> list[str]:
    """`lines` with each line over `max_bytes` UTF-8 bytes cut into pieces that fit, at the
    last space before the limit (anywhere, for text without spaces). SentencePiece's trainer
    silently skips longer lines, and fails on a corpus of only such lines."""
    out, split = [], 0
    for line in lines:
        if len(line.encode("utf-8")) <= max_bytes:
            out.append(line)
            continue
        split += 1
        while line:
            cut = len(line.encode("utf-8")[:max_bytes].decode("utf-8", "ignore"))
            if cut < len(line):
                space = line.rfind(" ", 0, cut)
                cut = space if space > 0 else cut
            out.append(line[:cut].strip())
            line = line[cut:].strip()
    if split:
        log.info("split %d line(s) over %d bytes for the tokenizer trainer", split, max_bytes)
    return [line for line in out if line]


def train_sentencepiece(
    texts: Iterable[str],
    output_path: str | os.PathLike,
    vocab_size: int = 8000,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    extra_ids: int = 100,
    max_sentences: int = 1_000_000,
    seed_sentencepiece_size: int = 1_000_000,
    byte_fallback: bool = True,
) -> SentencePieceTokenizer:
    """Train a SentencePiece model with lm_jax's special tokens and save it to `output_path`.

    Args:
      texts: training text, one sentence or paragraph per item (lines are split further).
      output_path: where the `.model` file goes (written atomically).
      vocab_size: SentencePiece pieces, specials included; sentinels come on top of it.
      model_type: "unigram" (Kudo 2018), "bpe" (Sennrich et al. 2016), "char" (one piece per
        character: the Chinese-BERT vocabulary style) or "word".
      character_coverage: 0.9995 for alphabetic languages, 1.0 or 0.9995 for CJK.
      extra_ids: T5 sentinels appended after the model's pieces.
      byte_fallback: characters outside the vocabulary become UTF-8 byte pieces (256 of the
        pieces) instead of [UNK], so `decode(encode(text))` gives the normalised text back.
    """
    import sentencepiece as spm

    if model_type not in MODEL_TYPES:
        raise DataError(
            f"unknown SentencePiece model_type {model_type!r}; choose from {MODEL_TYPES}"
        )
    if byte_fallback and vocab_size < MIN_TRAINED_VOCAB:
        raise DataError(
            f"vocab_size {vocab_size} is too small for byte_fallback: it needs at least "
            f"{MIN_TRAINED_VOCAB} (5 specials + 256 byte pieces + text pieces)"
        )
    lines = [line.strip() for t in texts for line in t.splitlines() if line.strip()]
    if not lines:
        raise DataError("cannot train a tokenizer on an empty corpus (no non-blank lines)")
    lines = split_long_lines(lines, MAX_SENTENCE_BYTES)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=0,
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            control_symbols=list(SPECIAL_PIECES),
            input_sentence_size=max_sentences,
            max_sentence_length=MAX_SENTENCE_BYTES,
            shuffle_input_sentence=True,
            seed_sentencepiece_size=seed_sentencepiece_size,
            byte_fallback=byte_fallback,
            hard_vocab_limit=False,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise DataError(f"SentencePiece training failed: {e}") from e
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_suffix(output_path.suffix + ".tmp")
    tmp.write_bytes(model.getvalue())
    tmp.replace(output_path)
    return SentencePieceTokenizer(output_path, extra_ids=extra_ids)


class WordPieceTokenizer(Tokenizer):
    """A BERT WordPiece vocabulary file (one piece per line, "##" continuations).

    Uses the Hugging Face `tokenizers` library with BERT's normaliser and pre-tokeniser (Devlin
    et al. 2019: lower-casing and accent stripping when `lowercase`, CJK characters split apart,
    punctuation split). A piece starts a word unless it is a "##" continuation, the rule of
    BERT's whole-word masking (google-research/bert `create_pretraining_data.py`).
    """

    def __init__(self, vocab_file: str | os.PathLike, lowercase: bool = True):
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, normalizers, pre_tokenizers

        path = Path(vocab_file)
        if not path.is_file():
            raise DataError(f"WordPiece vocab file not found: {path}")
        pieces = path.read_text(encoding="utf-8").splitlines()
        vocab = {p: i for i, p in enumerate(pieces)}
        missing = [s for s in ("[PAD]", "[UNK]", *SPECIAL_PIECES) if s not in vocab]
        if missing:
            raise DataError(f"WordPiece vocab {path} lacks special tokens {missing}")
        if len(set(pieces) - {"[PAD]", "[UNK]", *SPECIAL_PIECES}) == 0:
            raise DataError(f"WordPiece vocab {path} holds only special tokens, no text pieces")
        tok = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        self._tok = tok
        self._pieces = pieces
        self._is_word_start = np.array([not p.startswith("##") for p in pieces])
        self.vocab = VocabInfo(
            size=len(pieces),
            pad_id=vocab["[PAD]"],
            unk_id=vocab["[UNK]"],
            cls_id=vocab["[CLS]"],
            sep_id=vocab["[SEP]"],
            mask_id=vocab["[MASK]"],
        )

    def id_to_piece(self, i: int) -> str:
        return self._pieces[i]

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / "vocab.txt"
        path.write_text("".join(f"{p}\n" for p in self._pieces), encoding="utf-8")
        return path

    def encode(self, text: str) -> Encoded:
        enc = self._tok.encode(text, add_special_tokens=False)
        ids = np.array(enc.ids, dtype=np.int32)
        return Encoded(
            ids=ids,
            word_starts=self.word_starts(ids),
            offsets=np.array(enc.offsets, dtype=np.int32).reshape(-1, 2),
        )

    def word_starts(self, ids: np.ndarray) -> np.ndarray:
        return self._is_word_start[np.asarray(ids)]

    def encode_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.array(e.ids, dtype=np.int32) for e in encs]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def normalize(self, text: str) -> str:
        normalized = self._tok.normalizer.normalize_str(text)
        words = self._tok.pre_tokenizer.pre_tokenize_str(normalized)
        return self._tok.decoder.decode([w for w, _ in words])


def load_tokenizer(
    path: str | os.PathLike, extra_ids: int = 100, lowercase: bool = True
) -> Tokenizer:
    """Load a SentencePiece `.model` file or a WordPiece `vocab.txt`, chosen by content."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer file not found: {path}")
    head = path.read_bytes()[:4096]
    try:
        head.decode("utf-8")
        is_text = b"\x00" not in head
    except UnicodeDecodeError:
        is_text = False
    if is_text:
        return WordPieceTokenizer(path, lowercase=lowercase)
    return SentencePieceTokenizer(path, extra_ids=extra_ids)


# Han characters (CJK Unified Ideographs, extension A, compatibility ideographs).
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def encode_with_word_starts(
    tokenizer: Tokenizer, texts: Sequence[str]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Ids and word-start flags of many texts, for whole-word objectives.

    The tokenizer's own word starts ("▁" pieces, non-"##" pieces) mark words in text written
    with spaces; Chinese is written without them, so a SentencePiece model sees a whole line as
    one "word" (wwm would then mask ~2% of tokens instead of 15%). Texts holding Han characters
    therefore take their words from jieba (`chinese_word_ids`, Chinese-BERT-wwm).
    """
    ids = tokenizer.encode_ids(texts)
    starts = []
    for text, text_ids in zip(texts, ids):
        if HAN.search(text):
            encoded = tokenizer.encode(text)
            starts.append(chinese_word_ids(text, encoded)[1])
        else:
            starts.append(tokenizer.word_starts(text_ids))
    return ids, starts


def chinese_word_ids(text: str, encoded: Encoded) -> tuple[np.ndarray, np.ndarray]:
    """Word ids and word-start flags for `encoded` tokens of Chinese `text`, from jieba.

    Each token belongs to the jieba word that contains its first character, so character tokens
    of one word share an id (Chinese-BERT-wwm). Tokens with an empty surface (a lone "▁") join the
    following word. Returns (word_ids int32 [n], word_starts bool [n]).
    """
    import jieba

    jieba.setLogLevel(60)
    words = [(start, end) for _, start, end in jieba.tokenize(text)]
    word_ids = token_span_ids(encoded, len(text), words, first=0)
    return word_ids, starts_of(word_ids)


def token_span_ids(
    encoded: Encoded, text_length: int, spans: Sequence[tuple[int, int]], first: int = 1
) -> np.ndarray:
    """int32 [n]: for each token, the number of the character span [start, end) holding its
    first character (first, first + 1, ... in span order; 0 outside every span). A token with
    an empty surface (offset start == end, a lone "▁") takes the next character's."""
    numbers = np.zeros(text_length + 1, np.int32)
    for k, (start, end) in enumerate(spans):
        numbers[start:end] = first + k
    starts = encoded.offsets[:, 0] if len(encoded.ids) else np.zeros(0, np.int32)
    return numbers[np.minimum(starts, text_length)]


def starts_of(unit_ids: np.ndarray) -> np.ndarray:
    """bool [n]: where the unit id changes (the first token always starts a unit)."""
    starts = np.ones(len(unit_ids), dtype=bool)
    starts[1:] = unit_ids[1:] != unit_ids[:-1]
    return starts
