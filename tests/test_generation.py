"""Generation: incremental decoding equals recomputing the whole prefix, and with the same
random weights our tokens equal transformers' `generate` (greedy, beam search with a length
penalty, the processors) for BART, T5 and a causal BERT (`BertLMHeadModel`). No downloads."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from conftest import run_python  # noqa: E402
from flax import nnx  # noqa: E402

from lm_jax.attention import AttentionMask  # noqa: E402
from lm_jax.errors import ConfigError  # noqa: E402
from lm_jax.generation import GenerationConfig, generate  # noqa: E402
from lm_jax.generation.decoders import (  # noqa: E402
    CausalDecoder,
    Seq2SeqDecoder,
    StepWeights,
)
from lm_jax.models.convert import from_hf_state_dict  # noqa: E402

VOCAB = 99


def seq2seq_peer(family: str, gated: bool = False):
    """A tiny random BART or T5 with noisy norms and biases (so no parameter is trivial)."""
    torch.manual_seed(0)
    if family == "bart":
        config = transformers.BartConfig(
            vocab_size=VOCAB,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=37,
            decoder_ffn_dim=37,
            max_position_embeddings=64,
            forced_eos_token_id=None,
        )
        architecture = "BartForConditionalGeneration"
    else:
        config = transformers.T5Config(
            vocab_size=VOCAB,
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_decoder_layers=2,  # transformers 5.24's generate sizes its cache by num_layers
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=20,
            feed_forward_proj="gated-gelu" if gated else "relu",
            decoder_start_token_id=0,
        )
        architecture = "T5ForConditionalGeneration"
    peer = getattr(transformers, architecture)(config)
    with torch.no_grad():
        for name, p in peer.named_parameters():
            p.mul_(3.0)  # sharper distributions: fewer near-ties between candidate tokens
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    peer.eval()
    state = {k: v.numpy() for k, v in peer.state_dict().items()}
    return peer, from_hf_state_dict(state, peer.config.to_dict(), architecture)


def sources(pad: int, eos: int):
    rng = np.random.default_rng(1)
    ids = rng.integers(5, VOCAB, (3, 12))
    ids[:, -1] = eos
    ids[1, 7:] = pad
    ids[1, 6] = eos
    return ids, (ids != pad).astype(np.int32)


def seq2seq_settings(peer, **overrides):
    c = peer.generation_config
    return GenerationConfig(
        eos_id=c.eos_token_id,
        pad_id=c.pad_token_id,
        decoder_start_id=c.decoder_start_token_id,
        **overrides,
    )


def hf_generate(peer, ids, real, settings: GenerationConfig):
    with torch.no_grad():
        out = peer.generate(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(real),
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens,
            num_beams=settings.num_beams,
            length_penalty=settings.length_penalty,
            early_stopping=settings.early_stopping,
            no_repeat_ngram_size=settings.no_repeat_ngram_size,
            do_sample=False,
            forced_bos_token_id=settings.forced_bos_id,
            forced_eos_token_id=settings.forced_eos_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
    return out.sequences.numpy(), out


def assert_same_tokens(ours: np.ndarray, theirs: np.ndarray, settings: GenerationConfig):
    """Token for token up to and including each row's end; after it both hold filler."""
    assert ours.shape[1] >= theirs.shape[1]
    for a, b in zip(ours, theirs, strict=True):
        ends = np.flatnonzero(b[1:] == settings.eos_id)
        stop = 1 + ends[0] + 1 if ends.size else len(b)
        np.testing.assert_array_equal(a[:stop], b[:stop])


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_incremental_decoding_equals_recomputing_the_prefix(family):
    """At every step the cached decoder's logits equal the teacher-forced decoder's."""
    peer, model = seq2seq_peer(family)
    ids, real = sources(peer.config.pad_token_id, peer.config.eos_token_id)
    steps = 9
    rng = np.random.default_rng(2)
    decoder_ids = rng.integers(5, VOCAB, (3, steps))
    decoder = Seq2SeqDecoder(model, steps)
    state = decoder.start(jnp.asarray(ids), jnp.asarray(real))
    enc_segments = jnp.asarray(real)
    positions = jnp.asarray(np.where(real, np.cumsum(real, 1) - 1, 0))
    encoded = model.encode(jnp.asarray(ids), positions, AttentionMask.bidirectional(enc_segments))
    order = jnp.broadcast_to(jnp.arange(steps), (3, steps))
    ones = jnp.ones((3, steps), jnp.int32)
    full = model.decode(
        jnp.asarray(decoder_ids),
        order,
        AttentionMask.ordered(ones, order),
        encoded,
        AttentionMask(q_segment_ids=ones, kv_segment_ids=enc_segments),
    )
    scale = float(jnp.abs(full).max())  # fp32 rounding grows with T5's unnormalised residuals
    step = nnx.jit(lambda m, s, tokens, t: Seq2SeqDecoder(m, steps).step(s, tokens, t))
    for t in range(steps):
        logits, state = step(model, state, jnp.asarray(decoder_ids[:, t]), t)
        np.testing.assert_allclose(logits, full[:, t], atol=2e-5 * scale, err_msg=f"step {t}")


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_beams_read_the_encoder_once_per_example(family):
    """Expanded for beams, the decoder keeps one cross-attention cache row per example (its
    beams are that row's queries), and each beam's logits equal those of a state whose
    encoder keys are repeated for every beam."""
    peer, model = seq2seq_peer(family)
    ids, real = sources(peer.config.pad_token_id, peer.config.eos_token_id)
    decoder = Seq2SeqDecoder(model, 4)
    state = decoder.start(jnp.asarray(ids), jnp.asarray(real))
    beams = decoder.expand(state, 3)
    assert beams.cache.cross_attention[0].key.shape[0] == 3
    assert beams.cache.self_attention[0].key.shape[0] == 9
    repeated = jax.tree.map(lambda x: jnp.repeat(x, 3, axis=0), state)  # a row per beam
    tokens = jnp.asarray(np.random.default_rng(3).integers(5, VOCAB, 9))
    for t in range(2):
        grouped, beams = decoder.step(beams, tokens, t)
        expected, repeated = decoder.step(repeated, tokens, t)
        scale = float(jnp.abs(expected).max())
        np.testing.assert_allclose(grouped, expected, atol=2e-5 * scale, err_msg=f"step {t}")


def test_step_weights_stream_transposed_kernels_and_change_no_value():
    """Decoding steps read every 2-D kernel through a copy stored [out, in]; the model they
    rebuild holds the very same values."""
    _, model = seq2seq_peer("bart")
    weights = StepWeights(model)
    original = dict(jax.tree_util.tree_leaves_with_path(nnx.state(model)))
    copies = dict(jax.tree_util.tree_leaves_with_path(weights.state))
    rebuilt = dict(jax.tree_util.tree_leaves_with_path(nnx.state(weights.model())))
    kernels = [path for path in original if "'kernel'" in jax.tree_util.keystr(path)]
    assert len(kernels) == 2 * (4 + 2) + 2 * (4 + 4 + 2)  # encoder and decoder layers
    for path, value in original.items():
        flipped = path in kernels and value.ndim == 2
        np.testing.assert_array_equal(copies[path], value.T if flipped else value)
        np.testing.assert_array_equal(rebuilt[path], value)


@pytest.mark.parametrize(
    "family,overrides",
    [
        ("bart", {}),
        ("t5", {}),
        ("bart", {"num_beams": 4, "length_penalty": 2.0}),
        ("t5", {"num_beams": 4, "length_penalty": 0.6, "early_stopping": True}),
        ("bart", {"no_repeat_ngram_size": 2, "min_new_tokens": 5, "forced_bos_id": 0}),
        ("t5", {"num_beams": 3, "no_repeat_ngram_size": 3, "forced_eos_id": 1}),
    ],
)
def test_seq2seq_generate_equals_hugging_face(family, overrides):
    peer, model = seq2seq_peer(family)
    ids, real = sources(peer.config.pad_token_id, peer.config.eos_token_id)
    settings = seq2seq_settings(peer, max_new_tokens=12, **overrides)
    ours = generate(model, ids, real, settings)
    theirs, out = hf_generate(peer, ids, real, settings)
    assert_same_tokens(ours.sequences, theirs, settings)
    if settings.num_beams > 1:
        np.testing.assert_allclose(ours.scores, out.sequences_scores.numpy(), rtol=1e-4)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="num_beams must be >= 1"):
        GenerationConfig(eos_id=2, pad_id=1, num_beams=0)
    with pytest.raises(ConfigError, match=r"min_new_tokens \(9\) must be in \[0, max_new_tokens"):
        GenerationConfig(eos_id=2, pad_id=1, max_new_tokens=4, min_new_tokens=9)
    with pytest.raises(ConfigError, match="end-of-sequence"):
        GenerationConfig(eos_id=None, pad_id=1)
    peer, model = seq2seq_peer("bart")
    long = np.full((1, 80), 5)
    with pytest.raises(ConfigError, match="source is 80 tokens; EncoderDecoder has 64 positions"):
        generate(model, long, np.ones_like(long), seq2seq_settings(peer))


def causal_peer():
    """A tiny random `BertLMHeadModel` with `is_decoder=True`: the post-LN causal encoder our
    clm objective trains, with the same weights as our `EncoderForMaskedLM`."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        is_decoder=True,
        pad_token_id=0,
        eos_token_id=3,
        bos_token_id=2,
    )
    peer = transformers.BertLMHeadModel(config)
    with torch.no_grad():
        for name, p in peer.named_parameters():
            p.mul_(3.0)
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    peer.eval()
    state = {k: v.numpy() for k, v in peer.state_dict().items()}
    return peer, from_hf_state_dict(state, peer.config.to_dict(), "BertForMaskedLM")


@pytest.mark.parametrize("overrides", [{}, {"num_beams": 4, "length_penalty": 1.5}])
def test_causal_lm_generate_equals_bert_lm_head_model(overrides):
    peer, model = causal_peer()
    prompts = np.random.default_rng(3).integers(5, VOCAB, (2, 6))
    settings = GenerationConfig(eos_id=3, pad_id=0, max_new_tokens=10, **overrides)
    ours = generate(model, prompts, np.ones_like(prompts), settings)
    with torch.no_grad():
        theirs = peer.generate(
            input_ids=torch.tensor(prompts),
            attention_mask=torch.ones(prompts.shape, dtype=torch.long),
            max_new_tokens=10,
            num_beams=settings.num_beams,
            length_penalty=settings.length_penalty,
            do_sample=False,
        ).numpy()
    for a, b in zip(ours.sequences, theirs, strict=True):
        new = b[6:]
        ends = np.flatnonzero(new == 3)
        stop = 6 + (ends[0] + 1 if ends.size else len(new))
        np.testing.assert_array_equal(a[:stop], b[:stop])


MASK_ID = 4


def full_pass_logits(model, fed, mask: str, t: int):
    """The next-token logits after fed[:, :5 + t] (a 5-token prompt) by the full forward
    pass under the same rule: UniLM's from a [MASK] appended after it."""
    tokens = fed[:, : 5 + t]
    if mask == "unilm":
        tokens = np.concatenate([tokens, np.full((1, 1), MASK_ID)], axis=1)
    positions = jnp.arange(tokens.shape[1])[None]
    ranks = positions if mask == "causal" else jnp.maximum(positions, 4)
    types = None if mask == "causal" else (positions >= 5).astype(jnp.int32)
    attention = AttentionMask.ordered(jnp.ones_like(positions), ranks)
    return model(jnp.asarray(tokens), positions, attention, types)[0, -1]


@pytest.mark.parametrize("mask", ["causal", "prefix", "unilm"])
def test_causal_incremental_decoding_and_left_padding(mask):
    """Each step's logits equal the full forward pass under the same order rule, and a
    left-padded prompt generates what it generates alone."""
    _, model = causal_peer()
    rng = np.random.default_rng(4)
    prompt, steps = rng.integers(5, VOCAB, (1, 5)), 6
    fed = np.concatenate([prompt, rng.integers(5, VOCAB, (1, steps - 1))], axis=1)
    decoder = CausalDecoder(model, steps, mask, MASK_ID)
    state = decoder.start(jnp.asarray(prompt), jnp.ones((1, 5), jnp.int32))
    step = nnx.jit(
        lambda m, s, tokens, t: CausalDecoder(m, steps, mask, MASK_ID).step(s, tokens, t)
    )
    for t in range(steps):
        logits, state = step(model, state, jnp.asarray(fed[:, 4 + t]), t)
        expected = full_pass_logits(model, fed, mask, t)
        np.testing.assert_allclose(logits[0], expected, atol=1e-4, err_msg=f"step {t}")
    settings = GenerationConfig(eos_id=3, pad_id=0, max_new_tokens=8, mask_id=MASK_ID)
    alone = generate(model, prompt, np.ones_like(prompt), settings, mask=mask)
    padded = np.concatenate([np.zeros((1, 3), int), prompt], axis=1)
    together = generate(
        model,
        np.repeat(padded, 2, 0),
        np.repeat((padded != 0).astype(int), 2, 0),
        settings,
        mask=mask,
    )
    np.testing.assert_array_equal(together.new_tokens[0], alone.new_tokens[0])
    np.testing.assert_allclose(together.scores[0], alone.scores[0], rtol=1e-5)


def test_sampling_is_keyed_and_top_k_1_is_greedy():
    _, model = causal_peer()
    prompt = np.random.default_rng(5).integers(5, VOCAB, (4, 3))
    real = np.ones_like(prompt)
    base = dict(eos_id=3, pad_id=0, max_new_tokens=8)
    greedy = generate(model, prompt, real, GenerationConfig(**base))
    top1 = GenerationConfig(**base, do_sample=True, top_k=1, temperature=0.7)
    sampled = generate(model, prompt, real, top1, key=jax.random.key(0))
    np.testing.assert_array_equal(sampled.sequences, greedy.sequences)
    free = GenerationConfig(**base, do_sample=True, top_p=0.9)
    a = generate(model, prompt, real, free, key=jax.random.key(1))
    b = generate(model, prompt, real, free, key=jax.random.key(1))
    c = generate(model, prompt, real, free, key=jax.random.key(2))
    np.testing.assert_array_equal(a.sequences, b.sequences)
    assert (a.sequences != c.sequences).any()
    with pytest.raises(ConfigError, match="needs a key"):
        generate(model, prompt, real, free)
    with pytest.raises(ConfigError, match="needs config.mask_id"):
        generate(model, prompt, real, GenerationConfig(**base), mask="unilm")
    with pytest.raises(ConfigError, match="left-padded"):
        right_padded = np.concatenate([real[:, :-1], 0 * real[:, -1:]], axis=1)
        generate(model, prompt, right_padded, GenerationConfig(**base))


def test_warpers_equal_hugging_faces():
    """Temperature, top-k and top-p give the logits transformers' warpers give."""
    from transformers.generation import logits_process as hf

    from lm_jax.generation.processors import warp

    scores = np.random.default_rng(6).normal(size=(3, 50)).astype(np.float32) * 3
    settings = GenerationConfig(eos_id=3, pad_id=0, temperature=0.7, top_k=20, top_p=0.8)
    theirs = torch.tensor(scores)
    for warper in (
        hf.TemperatureLogitsWarper(0.7),
        hf.TopKLogitsWarper(20),
        hf.TopPLogitsWarper(0.8),
    ):
        theirs = warper(None, theirs)
    np.testing.assert_allclose(warp(jnp.asarray(scores), settings), theirs.numpy(), rtol=1e-6)


def test_generation_sharded_over_a_data_mesh_gives_the_same_tokens():
    """Rows split over 2 devices (weights replicated) decode as on one; a row count the mesh
    does not divide is refused."""
    out = run_python(
        """
        import json
        import numpy as np
        from flax import nnx
        from lm_jax.errors import ConfigError
        from lm_jax.generation import GenerationConfig, generate
        from lm_jax.models.seq2seq import EncoderDecoder, Seq2SeqConfig
        from lm_jax.sharding import make_mesh
        cfg = Seq2SeqConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                            intermediate_size=32, family="t5", relative_attention_buckets=8)
        model = EncoderDecoder(cfg, rngs=nnx.Rngs(0))
        ids = np.random.default_rng(0).integers(3, 50, (4, 7))
        settings = GenerationConfig(eos_id=1, pad_id=0, decoder_start_id=0, max_new_tokens=6,
                                    num_beams=2)
        one = generate(model, ids, np.ones_like(ids), settings)
        two = generate(model, ids, np.ones_like(ids), settings, mesh=make_mesh())
        try:
            generate(model, ids[:3], np.ones_like(ids[:3]), settings, mesh=make_mesh())
            refused = ""
        except ConfigError as e:
            refused = str(e)
        print(json.dumps({"same": bool((one.sequences == two.sequences).all()),
                          "scores": float(abs(one.scores - two.scores).max()),
                          "refused": refused}))
        """,
        devices=2,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["same"] and result["scores"] < 1e-5
    assert "3 rows do not split evenly over the mesh's 2 data shards" in result["refused"]


def test_generate_text_pads_encodes_and_decodes_as_generate(wiki_tokenizer):
    """Strings in, strings out: each text's rows, padded on the family's side (sources on the
    right, prompts on the left), the new tokens decoded up to the end-of-sequence id."""
    from lm_jax.generation import generate_text
    from lm_jax.models.seq2seq import EncoderDecoder, Seq2SeqConfig

    vocab = wiki_tokenizer.vocab
    cfg = Seq2SeqConfig(
        vocab_size=vocab.size,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        family="t5",
        relative_attention_buckets=8,
    )
    model = EncoderDecoder(cfg, rngs=nnx.Rngs(0))
    settings = GenerationConfig(
        eos_id=vocab.eos_id,
        pad_id=vocab.pad_id,
        decoder_start_id=vocab.pad_id,
        max_new_tokens=5,
    )
    texts = ["the cat", "a much longer sentence than the first one"]
    rows = lambda ids: [*ids, vocab.eos_id]
    written = generate_text(model, wiki_tokenizer, texts, settings, rows=rows)
    for text, out in zip(texts, written, strict=True):
        ids = np.asarray([rows(wiki_tokenizer.encode(text).ids)])
        new = generate(model, ids, np.ones_like(ids), settings).new_tokens[0].tolist()
        new = new[: new.index(vocab.eos_id)] if vocab.eos_id in new else new
        assert out == wiki_tokenizer.decode(new)
