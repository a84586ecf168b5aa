"""The encoder and its masked-LM head: shapes, determinism, gradients, tied decoder."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lm_jax.objectives as obj
from lm_jax.batch import encoder_inputs, seq2seq_inputs
from lm_jax.models import EncoderForMaskedLM, TransformerConfig


@pytest.fixture(scope="module")
def cfg(vocab):
    return TransformerConfig(
        vocab_size=vocab.size,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position=64,
    )


def make_batch(vocab, seed=0):
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(vocab.regular_ids()[rng.integers(0, 500, (4, 48))])
    segs = jnp.asarray(np.repeat([[1] * 20 + [2] * 20 + [0] * 8], 4, 0))
    return obj.mlm(
        jax.random.key(seed), jnp.where(segs > 0, tokens, 0), vocab=vocab, segment_ids=segs
    )


def test_forward_shapes_and_seeded_init(cfg, vocab):
    batch = make_batch(vocab)
    a = EncoderForMaskedLM(cfg, rngs=nnx.Rngs(0))
    b = EncoderForMaskedLM(cfg, rngs=nnx.Rngs(0))
    forward = nnx.jit(lambda model, batch: model(*encoder_inputs(batch), batch.masked_positions))
    logits = forward(a, batch)
    assert logits.shape == (4, batch.masked_positions.shape[1], vocab.size)
    assert logits.dtype == jnp.float32
    np.testing.assert_array_equal(logits, forward(b, batch))
    jax.tree.map(np.testing.assert_array_equal, nnx.state(a), nnx.state(b))


def test_functional_use_under_jit_and_grad(cfg, vocab):
    graphdef, params = nnx.split(EncoderForMaskedLM(cfg, rngs=nnx.Rngs(0)))
    batch = make_batch(vocab)

    @jax.jit
    def loss(params, key):
        model = nnx.merge(graphdef, params)
        logits = model(
            *encoder_inputs(batch),
            batch.masked_positions,
            deterministic=False,
            rngs=nnx.Rngs(dropout=key),
        )
        nll = -jax.nn.log_softmax(logits)[..., 0]
        return (nll * batch.masked_weights).sum()

    grads = jax.grad(loss)(params, jax.random.key(0))
    norms = jax.tree.leaves(jax.tree.map(lambda g: float(jnp.abs(g).sum()), grads))
    assert all(np.isfinite(norms)) and sum(n > 0 for n in norms) == len(norms)
    # Dropout: same key, same output; another key, another output.
    assert loss(params, jax.random.key(0)) == loss(params, jax.random.key(0))
    assert loss(params, jax.random.key(0)) != loss(params, jax.random.key(1))


def test_decoder_is_tied_to_word_embeddings(cfg, vocab):
    model = EncoderForMaskedLM(cfg, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    names = {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(params)}
    assert "encoder/embeddings/word/embedding" in names
    assert not any("decoder" in n for n in names)  # no separate output matrix
    h = jnp.ones((1, 1, cfg.hidden_size))
    expected = h @ model.encoder.embeddings.word.embedding[...].T
    np.testing.assert_allclose(model.encoder.embeddings.attend(h), expected, rtol=1e-6)


def test_padding_does_not_change_real_outputs(cfg, vocab):
    """A document's hidden states do not depend on other segments or padding in the row."""
    model = EncoderForMaskedLM(cfg, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(vocab.regular_ids()[np.arange(10, 30)])[None]
    alone = obj.mlm(jax.random.key(0), tokens, vocab=vocab)
    packed_tokens = jnp.concatenate([tokens, tokens[:, :7] + 1, jnp.zeros((1, 5), jnp.int32)], 1)
    segs = jnp.asarray([[1] * 20 + [2] * 7 + [0] * 5])
    packed = obj.mlm(jax.random.key(0), packed_tokens, vocab=vocab, segment_ids=segs)
    encode = nnx.jit(lambda model, t, p, a: model.encoder(t, p, a))
    h_alone = encode(model, tokens, alone.positions, alone.attention)
    h_packed = encode(model, packed_tokens, packed.positions, packed.attention)
    np.testing.assert_allclose(h_alone[0], h_packed[0, :20], atol=1e-5)


def test_config_errors():
    with pytest.raises(ValueError, match="dtype"):
        TransformerConfig(vocab_size=10, dtype="float16")
    assert TransformerConfig(vocab_size=10).compute_dtype == jnp.float32  # "auto" on CPU
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(vocab_size=10, hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="activation"):
        TransformerConfig(vocab_size=10, activation="swish")


def test_remat_gives_the_same_gradients(cfg, vocab):

    batch = make_batch(vocab)

    def grads(remat):
        model_cfg = dataclasses.replace(cfg, remat=remat)
        graphdef, params = nnx.split(EncoderForMaskedLM(model_cfg, rngs=nnx.Rngs(0)))

        def loss(params):
            logits = nnx.merge(graphdef, params)(
                *encoder_inputs(batch),
                batch.masked_positions,
                deterministic=False,
                rngs=nnx.Rngs(dropout=jax.random.key(3)),
            )
            return (jax.nn.logsumexp(logits, -1) * batch.masked_weights).sum()

        program = str(jax.make_jaxpr(jax.grad(loss))(params))
        assert ("checkpoint" in program or "remat" in program) == remat
        return jax.jit(jax.grad(loss))(params)

    for a, b in zip(jax.tree.leaves(grads(False)), jax.tree.leaves(grads(True))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_keeps_fp32_parameters_and_logits(cfg, vocab):

    model = EncoderForMaskedLM(dataclasses.replace(cfg, dtype="bfloat16"), rngs=nnx.Rngs(0))
    reference = EncoderForMaskedLM(cfg, rngs=nnx.Rngs(0))
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)
    batch = make_batch(vocab)
    arrays = (*encoder_inputs(batch), batch.masked_positions)
    low, high = model(*arrays), reference(*arrays)
    assert low.dtype == jnp.float32
    np.testing.assert_allclose(low, high, atol=0.05)  # bf16 compute: close, not equal


def test_electra_shares_one_embedding_module(cfg, vocab):
    from lm_jax.models.electra import Electra, generator_config

    disc = dataclasses.replace(cfg, hidden_size=64, num_heads=4, embedding_size=32)
    gen = generator_config(disc)
    assert (gen.hidden_size, gen.num_heads, gen.embedding_width) == (16, 1, 32)
    model = Electra(disc, gen, rngs=nnx.Rngs(0))
    assert model.generator.encoder.embeddings is model.discriminator.encoder.embeddings
    graphdef, params = nnx.split(model)
    names = ["/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    assert sum("word/embedding" in n for n in names) == 1  # stored once
    batch = obj.electra(jax.random.key(0), make_batch(vocab).targets, vocab=vocab)

    def losses(params):
        model = nnx.merge(graphdef, params)
        gen_logits = model.generator(*encoder_inputs(batch), batch.masked_positions)
        replaced = obj.electra_replace(jax.random.key(1), batch, jax.lax.stop_gradient(gen_logits))
        disc_logits = model.discriminator(*encoder_inputs(replaced))
        mlm = (jax.nn.logsumexp(gen_logits, -1) * batch.masked_weights).sum()
        rtd = (jax.nn.softplus(disc_logits) * replaced.loss_weights).sum()
        return mlm, rtd

    mlm_grad, rtd_grad = jax.jit(
        lambda p: (jax.grad(lambda q: losses(q)[0])(p), jax.grad(lambda q: losses(q)[1])(p))
    )(params)
    word = lambda g: g["discriminator"]["encoder"]["embeddings"]["word"]["embedding"][...]
    assert jnp.abs(word(mlm_grad)).sum() > 0 and jnp.abs(word(rtd_grad)).sum() > 0
    # No gradient reaches the generator through the sampled replacements.
    gen_leaves = jax.tree.leaves(rtd_grad["generator"]["encoder"]["layers"])
    assert all(float(jnp.abs(g).sum()) == 0 for g in gen_leaves)
    with pytest.raises(ValueError, match="equal widths"):
        Electra(disc, dataclasses.replace(gen, embedding_size=16), rngs=nnx.Rngs(0))


def test_span_boundary_head(cfg, vocab):
    from lm_jax.models.encoder import EncoderForSpanBoundary

    model = EncoderForSpanBoundary(cfg, rngs=nnx.Rngs(0))
    batch = obj.span(jax.random.key(0), make_batch(vocab).targets, vocab=vocab)
    boundaries = (batch.sbo_left, batch.sbo_right, batch.sbo_offsets)
    mlm, sbo = model(*encoder_inputs(batch), batch.masked_positions, boundaries)
    assert mlm.shape == sbo.shape == (*batch.masked_positions.shape, vocab.size)
    # The SBO logits of a token depend on its span's boundary states and offset only.
    hidden = model.encoder(batch.inputs, batch.positions, batch.attention)
    b, j = np.argwhere(np.asarray(batch.sbo_weights) > 0)[0]
    single = model.sbo_head(
        hidden[b : b + 1],
        batch.sbo_left[b : b + 1, j : j + 1],
        batch.sbo_right[b : b + 1, j : j + 1],
        batch.sbo_offsets[b : b + 1, j : j + 1],
        model.encoder.embeddings,
    )
    np.testing.assert_allclose(single[0, 0], sbo[b, j], rtol=1e-5, atol=1e-5)


def test_mpnet_two_stream_rows(cfg, vocab):
    """Query-stream rows never change the content rows, and each query row is independent of
    the other query rows (both streams run in one kernel call per layer); the pass whose last
    layer computes the query rows alone gives the same query rows."""
    mpnet_cfg = dataclasses.replace(cfg, relative_attention_buckets=32, type_vocab_size=0)
    model = EncoderForMaskedLM(mpnet_cfg, head_activation="gelu", rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    batch = obj.mpnet(jax.random.key(0), make_batch(vocab).targets, vocab=vocab)
    slot = 3
    concat = type(batch.attention).concat_queries

    @jax.jit
    def streams(state, batch):
        model = nnx.merge(graphdef, state)
        enc = model.encoder
        content = enc(batch.inputs, batch.positions, batch.attention)
        x = jnp.concatenate(
            [
                enc.embed(batch.inputs, batch.positions),
                enc.embed(batch.query_inputs, batch.query_positions),
            ],
            axis=1,
        )
        both = enc.run_layers(
            x,
            concat(batch.attention, batch.query_attention),
            jnp.concatenate([batch.positions, batch.query_positions], 1),
            batch.positions,
            True,
            None,
        )
        n = content.shape[1]
        one = jax.tree.map(lambda a: a[:, slot : slot + 1], batch.query_attention)
        alone = enc.run_layers(
            jnp.concatenate([x[:, :n], x[:, n + slot][:, None]], 1),
            concat(batch.attention, one),
            jnp.concatenate([batch.positions, batch.query_positions[:, slot : slot + 1]], 1),
            batch.positions,
            True,
            None,
        )
        query = (batch.query_inputs, batch.query_positions, batch.query_attention)
        queries_only = enc.two_stream(*encoder_inputs(batch), *query)  # last layer: queries only
        return (
            model.query_stream(*encoder_inputs(batch), *query),
            content,
            both,
            alone,
            queries_only,
        )

    logits, content, both, alone, queries_only = streams(state, batch)
    assert logits.shape == (*batch.query_positions.shape, vocab.size)
    n = content.shape[1]
    np.testing.assert_allclose(both[:, :n], content, atol=1e-5)
    np.testing.assert_allclose(alone[:, -1], both[:, n + slot], atol=1e-5)
    np.testing.assert_allclose(queries_only, both[:, n:], atol=1e-5)


def test_sentence_classification_and_qa_heads(cfg, vocab):
    from lm_jax.models.encoder import (
        EncoderForPreTraining,
        EncoderForQuestionAnswering,
        EncoderForSequenceClassification,
    )

    batch = make_batch(vocab)
    pretraining = EncoderForPreTraining(cfg, 3, rngs=nnx.Rngs(0))
    mlm, sentence = pretraining(*encoder_inputs(batch), batch.masked_positions)
    assert mlm.shape[-1] == vocab.size and sentence.shape == (4, 3)
    arrays = (batch.inputs, batch.positions, batch.attention)  # no pretraining fields needed
    assert EncoderForSequenceClassification(cfg, 1, rngs=nnx.Rngs(0))(*arrays).shape == (4, 1)
    start, end = EncoderForQuestionAnswering(cfg, rngs=nnx.Rngs(0))(*arrays)
    assert start.shape == end.shape == batch.inputs.shape
    with pytest.raises(ValueError, match="num_labels"):
        EncoderForSequenceClassification(cfg, 0, rngs=nnx.Rngs(0))


def test_vocabulary_logits_and_loss_shortcuts_match_the_plain_formulas():
    """`vocabulary_logits` (tied output matrix with hand-written gradients) and the accuracy of
    `weighted_cross_entropy` (target logit == max) equal the plain formulas."""
    from lm_jax.models.layers import _tied_logits, vocabulary_logits
    from lm_jax.train.losses import weighted_cross_entropy

    k = jax.random.split(jax.random.key(0), 3)
    word = nnx.Embed(50, 8, rngs=nnx.Rngs(0))
    x = jax.random.normal(k[0], (3, 5, 8))
    bias = jax.random.normal(k[1], (50,))
    table = word.embedding[...]
    logits = vocabulary_logits(x, word, bias)
    np.testing.assert_allclose(logits, x @ table.T + bias, rtol=1e-6)
    np.testing.assert_allclose(vocabulary_logits(x, word), x @ table.T, rtol=1e-6)

    cotangent = jax.random.normal(k[2], (3, 5, 50))
    for args, plain in [
        ((x, table, bias), lambda x, t, b: x @ t.T + b),
        ((x, table, None), lambda x, t, b: x @ t.T),
    ]:
        got = jax.vjp(_tied_logits, *args)[1](cotangent)
        want = jax.vjp(plain, *args)[1](cotangent)
        assert (got[2] is None) == (want[2] is None) == (args[2] is None)
        for g, w in zip(got, want, strict=True):
            if w is not None:
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)

    targets = jax.random.randint(k[2], (3, 5), 0, 50).at[0].set(logits[0].argmax(-1))
    weights = jnp.ones((3, 5)).at[2, 4].set(0.0)
    sums = weighted_cross_entropy(logits, targets, weights)
    correct = (logits.argmax(-1) == targets) * weights
    assert float(sums["correct_sum"]) == float(correct.sum()) >= 5


@pytest.mark.slow  # the default run checks the encoder (test_remat_gives_the_same_gradients)
@pytest.mark.parametrize("family", ["xlnet", "t5", "bart"])
def test_remat_gives_the_same_gradients_in_every_family(family, cfg, vocab):
    """`remat` is honoured by XLNet and the encoder-decoders too (not only the encoder)."""
    from lm_jax import objectives
    from lm_jax.models.seq2seq import EncoderDecoder, Seq2SeqConfig
    from lm_jax.models.xlnet import XLNet

    tokens = make_batch(vocab).targets
    key = jax.random.key(5)

    def build(remat):
        c = dataclasses.replace(cfg, remat=remat, num_layers=1)  # one layer: remat is per layer
        if family == "xlnet":
            return XLNet(c, rngs=nnx.Rngs(0)), objectives.plm(key, tokens, vocab=vocab)
        fields = {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}
        if family == "t5":
            fields.update(relative_attention_buckets=8)
        model = EncoderDecoder(Seq2SeqConfig(**fields, family=family), rngs=nnx.Rngs(0))
        batch = (objectives.t5 if family == "t5" else objectives.mass)(key, tokens, vocab=vocab)
        return model, batch

    def grads(remat):
        model, batch = build(remat)
        graphdef, params = nnx.split(model)

        def loss(params):
            run = dict(deterministic=False, rngs=nnx.Rngs(dropout=jax.random.key(3)))
            model = nnx.merge(graphdef, params)
            if family == "xlnet":  # both streams, the query stream scored
                logits, _ = model(
                    *encoder_inputs(batch),
                    query_positions=batch.query_positions,
                    query_attention=batch.query_attention,
                    masked_positions=batch.masked_positions,
                    **run,
                )
            else:
                logits = model(*seq2seq_inputs(batch), **run)
            return jax.nn.logsumexp(logits, -1).sum()

        program = str(jax.make_jaxpr(jax.grad(loss))(params))
        assert ("checkpoint" in program or "remat" in program) == remat
        return jax.jit(jax.grad(loss))(params)

    for a, b in zip(jax.tree.leaves(grads(False)), jax.tree.leaves(grads(True))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
