"""Bidirectional Transformer encoder (BERT, RoBERTa, SpanBERT, ELECTRA, MPNet) and the models that
put heads on it. The same encoder serves causal, prefix and UniLM masks: only the compact
`AttentionMask` differs."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from lm_jax.attention import AttentionMask
from lm_jax.models.config import TransformerConfig
from lm_jax.models.heads import (
    FirstTokenClassificationHead,
    MaskedLMHead,
    QuestionAnsweringHead,
    SequenceClassificationHead,
    SpanBoundaryHead,
    gather_positions,
)
from lm_jax.models.layers import (
    Embeddings,
    EncoderLayer,
    KVCache,
    RelativePositionBias,
    dense,
    empty_caches,
    layer_runner,
)


class Encoder(nnx.Module):
    """Embeddings followed by `num_layers` post-LN Transformer layers (Devlin et al. 2019).

    Embeddings narrower than hidden_size are projected up (ELECTRA); with
    `relative_attention_buckets` one relative-position bias is computed from the position ids and
    added in every layer (MPNet).
    """

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embeddings = Embeddings(cfg, rngs=rngs)
        self.embeddings_project = (
            dense(cfg, cfg.embedding_width, cfg.hidden_size, ("embed", "embed"), rngs)
            if cfg.embedding_width != cfg.hidden_size
            else None
        )
        self.relative_bias = (
            RelativePositionBias(
                cfg,
                num_buckets=cfg.relative_attention_buckets,
                max_distance=cfg.relative_attention_max_distance,
                bidirectional=True,
                rngs=rngs,
            )
            if cfg.relative_attention_buckets
            else None
        )
        self.layers = nnx.List([EncoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])

    def embed(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        token_type_ids: jnp.ndarray | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """Input embeddings at hidden width [batch, L, hidden]."""
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(
            input_ids, positions, token_type_ids, deterministic=deterministic, rngs=rngs
        )
        return x if self.embeddings_project is None else self.embeddings_project(x)

    def __call__(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        mask: AttentionMask,
        token_type_ids: jnp.ndarray | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """Hidden states [batch, L, hidden] for ids, positions and a compact attention mask."""
        x = self.embed(input_ids, positions, token_type_ids, deterministic=deterministic, rngs=rngs)
        return self.run_layers(x, mask, positions, positions, deterministic, rngs)

    def two_stream(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        token_type_ids: jnp.ndarray | None,
        query_ids: jnp.ndarray,
        query_positions: jnp.ndarray,
        query_attention: AttentionMask,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """MPNet's two-stream pass (Song et al. 2020): the content rows and the query-stream
        rows ([batch, P] ids, positions and a mask whose keys are the content rows) run through
        the same layers, the query rows attending to the content rows only, in one attention
        call per layer. Returns the query stream's hidden states [batch, P, H]."""
        embed = lambda ids, pos, types: self.embed(
            ids, pos, types, deterministic=deterministic, rngs=rngs
        )
        content = embed(input_ids, positions, token_type_ids)
        query = embed(query_ids, query_positions, None)
        return self.run_layers(
            jnp.concatenate([content, query], axis=-2),
            AttentionMask.concat_queries(attention, query_attention),
            jnp.concatenate([positions, query_positions], axis=-1),
            positions,
            deterministic,
            rngs,
            query_start=content.shape[-2],
        )

    def init_cache(self, batch: int, slots: int) -> list[KVCache]:
        """An empty self-attention cache per layer for incremental decoding."""
        return empty_caches(self.cfg, len(self.layers), batch, slots)

    def extend(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        token_type_ids: jnp.ndarray | None,
        caches: list[KVCache],
        index,
        mask: AttentionMask,
        kv_positions: jnp.ndarray,
    ) -> tuple[jnp.ndarray, list[KVCache]]:
        """Incremental decoding under a causal, prefix-LM or UniLM mask: hidden states of new
        tokens [batch, n] at cache slots [index, index + n), which attend to the cache's slots
        as `mask` (queries [batch, n], keys [batch, slots]) allows; `kv_positions` [batch,
        slots] are the slots' position ids (for a relative-position bias). Exact because with
        those masks no earlier row's states depend on a later token."""
        x = self.embed(input_ids, positions, token_type_ids)
        bias = None if self.relative_bias is None else self.relative_bias(positions, kv_positions)
        updated = []
        for layer, cache in zip(self.layers, caches, strict=True):
            x, cache = layer.extend(x, cache, index, mask, bias)
            updated.append(cache)
        return x, updated

    def run_layers(
        self,
        x: jnp.ndarray,
        mask: AttentionMask,
        q_positions: jnp.ndarray,
        kv_positions: jnp.ndarray,
        deterministic: bool,
        rngs: nnx.Rngs | None,
        *,
        query_start: int | None = None,
    ) -> jnp.ndarray:
        """The layer stack on rows x [batch, Q, hidden]. Keys and values come from the first
        `mask.kv_len` rows, so extra query rows (MPNet's query stream) attend to the content rows
        only, in the same kernel call. With `query_start`, only rows `query_start:` are
        returned, and the last layer computes only those (nothing reads its other rows)."""
        bias = None if self.relative_bias is None else self.relative_bias(q_positions, kv_positions)

        run = layer_runner(
            self.cfg,
            lambda layer, x, mask, bias, context, rngs: layer(
                x, mask, bias, context=context, deterministic=deterministic, rngs=rngs
            ),
        )
        for i, layer in enumerate(self.layers):
            context = None
            if query_start is not None and i == len(self.layers) - 1:
                context, x = x[..., :query_start, :], x[..., query_start:, :]
                mask = mask.query_rows(query_start)
                bias = None if bias is None else bias[..., query_start:, :]
            x = run(layer, x, mask, bias, context, rngs)
        return x


class EncoderForMaskedLM(nnx.Module):
    """Encoder + tied LM head. Given `masked_positions` (the sparse layout of masked LM) the
    head scores only those; without (causal / prefix LM) it scores every position.
    `query_stream` is MPNet's two-stream pass.

    Also ELECTRA's generator and MPNet, whose heads use GeLU whatever the encoder's activation
    (`head_activation="gelu"`).
    """

    def __init__(
        self, cfg: TransformerConfig, *, head_activation: str | None = None, rngs: nnx.Rngs
    ):
        self.encoder = Encoder(cfg, rngs=rngs)
        self.mlm_head = MaskedLMHead(cfg, activation=head_activation, rngs=rngs)

    def __call__(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        token_type_ids: jnp.ndarray | None = None,
        masked_positions: jnp.ndarray | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """fp32 logits [batch, max_predictions or L, vocab]."""
        hidden = self.encoder(
            input_ids, positions, attention, token_type_ids, deterministic=deterministic, rngs=rngs
        )
        if masked_positions is not None:
            hidden = gather_positions(hidden, masked_positions)
        return self.mlm_head(hidden, self.encoder.embeddings)

    def extend(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        token_type_ids: jnp.ndarray | None,
        caches: list[KVCache],
        index,
        mask: AttentionMask,
        kv_positions: jnp.ndarray,
    ) -> tuple[jnp.ndarray, list[KVCache]]:
        """fp32 logits [batch, n, vocab] of new tokens in incremental decoding
        (`Encoder.extend`)."""
        hidden, caches = self.encoder.extend(
            input_ids, positions, token_type_ids, caches, index, mask, kv_positions
        )
        return self.mlm_head(hidden, self.encoder.embeddings), caches

    def query_stream(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        token_type_ids: jnp.ndarray | None,
        query_ids: jnp.ndarray,
        query_positions: jnp.ndarray,
        query_attention: AttentionMask,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """MPNet: fp32 logits [batch, P, vocab] of the query stream (`Encoder.two_stream`)."""
        hidden = self.encoder.two_stream(
            input_ids,
            positions,
            attention,
            token_type_ids,
            query_ids,
            query_positions,
            query_attention,
            deterministic=deterministic,
            rngs=rngs,
        )
        return self.mlm_head(hidden, self.encoder.embeddings)


class EncoderForPreTraining(nnx.Module):
    """BERT's pretraining model: masked LM plus a sentence-level head on [CLS] (NSP and SOP:
    2 labels; StructBERT's sentence structure: 3)."""

    def __init__(self, cfg: TransformerConfig, num_sentence_labels: int = 2, *, rngs: nnx.Rngs):
        self.encoder = Encoder(cfg, rngs=rngs)
        self.mlm_head = MaskedLMHead(cfg, rngs=rngs)
        self.sentence_head = SequenceClassificationHead(cfg, num_sentence_labels, rngs=rngs)

    def __call__(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        token_type_ids: jnp.ndarray | None = None,
        masked_positions: jnp.ndarray | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(MLM logits [batch, P or L, vocab], sentence logits [batch, labels])."""
        hidden = self.encoder(
            input_ids, positions, attention, token_type_ids, deterministic=deterministic, rngs=rngs
        )
        sentence = self.sentence_head(hidden, deterministic=deterministic, rngs=rngs)
        if masked_positions is not None:
            hidden = gather_positions(hidden, masked_positions)
        return self.mlm_head(hidden, self.encoder.embeddings), sentence


class EncoderForSpanBoundary(nnx.Module):
    """SpanBERT (Joshi et al. 2020): masked LM plus the span-boundary objective on the same
    masked tokens; both decoders are tied to the word embeddings."""

    def __init__(self, cfg: TransformerConfig, *, max_offsets: int = 15, rngs: nnx.Rngs):
        self.encoder = Encoder(cfg, rngs=rngs)
        self.mlm_head = MaskedLMHead(cfg, rngs=rngs)
        self.sbo_head = SpanBoundaryHead(cfg, max_offsets=max_offsets, rngs=rngs)

    def __call__(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        token_type_ids: jnp.ndarray | None,
        masked_positions: jnp.ndarray,
        boundaries: tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray],
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(MLM logits, SBO logits), each [batch, P, vocab] on the sparse layout; `boundaries`
        is (left, right, offset) per prediction slot (`SpanBatch.sbo_*`)."""
        hidden = self.encoder(
            input_ids, positions, attention, token_type_ids, deterministic=deterministic, rngs=rngs
        )
        embeddings = self.encoder.embeddings
        mlm = self.mlm_head(gather_positions(hidden, masked_positions), embeddings)
        sbo = self.sbo_head(hidden, *boundaries, embeddings)
        return mlm, sbo


# family -> the first-token head's activation (None: BERT's pretrained pooler + classifier)
CLASSIFICATION_HEADS = {"bert": None, "roberta": "tanh", "electra": "gelu"}


class EncoderForSequenceClassification(nnx.Module):
    """Fine-tuning for classification (SST-2, Chinese sentiment) or regression (`num_labels=1`)
    on the first token, with the head of the pretrained family (`CLASSIFICATION_HEADS`):
    BERT's pooler + classifier (Devlin et al. 2019, sec. 4.1), RoBERTa's / MPNet's dense + tanh
    head or ELECTRA's dense + GeLU head."""

    def __init__(
        self, cfg: TransformerConfig, num_labels: int, head: str = "bert", *, rngs: nnx.Rngs
    ):
        if head not in CLASSIFICATION_HEADS:
            raise ValueError(f"head must be one of {sorted(CLASSIFICATION_HEADS)}, got {head!r}")
        self.encoder = Encoder(cfg, rngs=rngs)
        activation = CLASSIFICATION_HEADS[head]
        self.head = (
            SequenceClassificationHead(cfg, num_labels, rngs=rngs)
            if activation is None
            else FirstTokenClassificationHead(cfg, num_labels, activation, rngs=rngs)
        )

    def __call__(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        token_type_ids: jnp.ndarray | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """fp32 logits [batch, num_labels] from arrays and the compact mask (no batch type)."""
        hidden = self.encoder(
            input_ids, positions, attention, token_type_ids, deterministic=deterministic, rngs=rngs
        )
        return self.head(hidden, deterministic=deterministic, rngs=rngs)


class EncoderForQuestionAnswering(nnx.Module):
    """Extractive QA (SQuAD 1.1/2.0, Devlin et al. 2019 sec. 4.2-4.3): start/end logits per token;
    no answer is the span at [CLS]."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.encoder = Encoder(cfg, rngs=rngs)
        self.head = QuestionAnsweringHead(cfg, rngs=rngs)

    def __call__(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        token_type_ids: jnp.ndarray | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """fp32 (start logits, end logits), each [batch, L], from arrays and the compact mask."""
        hidden = self.encoder(
            input_ids, positions, attention, token_type_ids, deterministic=deterministic, rngs=rngs
        )
        return self.head(hidden)
