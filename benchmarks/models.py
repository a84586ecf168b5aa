"""Forward + backward of each model family against Hugging Face's PyTorch model with the same
config and weights, in the same run.

    python benchmarks/models.py                       # every family: 4 layers, hidden 256,
                                                      # seq 128, batch 32, vocab 30522
    python benchmarks/models.py --family bert --layers 12 --hidden 768 --heads 12 --batch 8

Each pair computes the same loss on the same inputs: BERT / MPNet masked LM on the same 15%
of positions (ours gathers them before the vocabulary projection, Hugging Face projects every
position), ELECTRA's discriminator loss on every token, XLNet's permutation LM with the same
permutation mask and target mapping (two-stream), BART / T5 teacher-forced decoder
cross-entropy (decoder length seq / 4 for T5 as in span corruption, seq for BART). Requires the
`bench` extra (torch, transformers). Prints ms per step and the speed-up per family.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import transformers
from flax import nnx

import lm_jax.objectives as objectives
from lm_jax.attention import AttentionMask
from lm_jax.batch import ReplacedTokenBatch, Seq2SeqBatch, encoder_inputs, seq2seq_inputs
from lm_jax.models.convert import from_hf_state_dict
from lm_jax.runtime import reuse_freed_host_memory
from lm_jax.vocab import VocabInfo

FAMILIES = ("bert", "electra", "mpnet", "xlnet", "bart", "t5")


def median_times(steps: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each step over `repeats` runs after one warm-up run, the steps taking
    turns (round robin) so a drift in the machine's speed touches them all alike."""
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def compiled_runner(step, state, rows, mesh):
    """(run, compiled): `step` compiled for `state` and `rows` on `mesh`, and a function
    running one step on them (the state carried from run to run, donated each time)."""
    with jax.set_mesh(mesh):
        compiled = step.lower(state, rows).compile()
    states = [state]

    def run():
        states[0], sums = compiled(states[0], rows)
        jax.block_until_ready(sums)
        return sums

    return run, compiled


def torch_step(model, optimizer, loss: Callable[[], object]) -> Callable[[], None]:
    """One PyTorch training step as the peers run it: zero the gradients, backward of
    `loss()`, global-norm clipping at 1.0, the optimiser's step."""

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return run


def cross_entropy(logits, targets, weights):
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return (nll * weights).sum() / weights.sum()


def hf_config(family: str, a) -> transformers.PretrainedConfig:
    common = dict(vocab_size=a.vocab)
    if family in ("bert", "electra", "mpnet"):
        cls = {
            "bert": transformers.BertConfig,
            "electra": transformers.ElectraConfig,
            "mpnet": transformers.MPNetConfig,
        }[family]
        extra = {"embedding_size": a.hidden} if family == "electra" else {}
        return cls(
            **common,
            **extra,
            hidden_size=a.hidden,
            num_hidden_layers=a.layers,
            num_attention_heads=a.heads,
            intermediate_size=4 * a.hidden,
            max_position_embeddings=max(514, a.seq + 2),
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    if family == "xlnet":
        return transformers.XLNetConfig(
            **common,
            d_model=a.hidden,
            n_layer=a.layers,
            n_head=a.heads,
            d_inner=4 * a.hidden,
            dropout=0.0,
        )
    if family == "bart":
        return transformers.BartConfig(
            **common,
            d_model=a.hidden,
            encoder_layers=a.layers,
            decoder_layers=a.layers,
            encoder_attention_heads=a.heads,
            decoder_attention_heads=a.heads,
            encoder_ffn_dim=4 * a.hidden,
            decoder_ffn_dim=4 * a.hidden,
            max_position_embeddings=max(512, a.seq),
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
        )
    return transformers.T5Config(
        **common,
        d_model=a.hidden,
        d_kv=a.hidden // a.heads,
        d_ff=4 * a.hidden,
        num_layers=a.layers,
        num_heads=a.heads,
        dropout_rate=0.0,
    )


ARCHITECTURE = {
    "bert": "BertForMaskedLM",
    "electra": "ElectraForPreTraining",
    "mpnet": "MPNetForMaskedLM",
    "xlnet": "XLNetLMHeadModel",
    "bart": "BartForConditionalGeneration",
    "t5": "T5ForConditionalGeneration",
}


def steps(family: str, a) -> tuple[Callable[[], None], Callable[[], None]]:
    """(our jitted forward+backward, Hugging Face's forward+backward), same loss and inputs."""
    config = hf_config(family, a)
    torch.manual_seed(0)
    peer = getattr(transformers, ARCHITECTURE[family])(config).train()
    state = {k: v.detach().numpy() for k, v in peer.state_dict().items()}
    graphdef, params = nnx.split(from_hf_state_dict(state, config.to_dict(), ARCHITECTURE[family]))
    vocab = VocabInfo(size=a.vocab, pad_id=0, unk_id=100, cls_id=101, sep_id=102, mask_id=103)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(1000, a.vocab, (a.batch, a.seq)), jnp.int32)
    t = lambda x: torch.tensor(np.asarray(x).astype(np.int64))

    if family in ("bert", "mpnet"):
        batch = objectives.mlm(jax.random.key(0), tokens, vocab=vocab)

        def our_loss(params):
            model = nnx.merge(graphdef, params)
            logits = model(*encoder_inputs(batch), batch.masked_positions)
            return cross_entropy(logits, batch.masked_targets, batch.masked_weights)

        labels = np.where(np.asarray(batch.loss_weights) > 0, np.asarray(tokens), -100)
        peer_loss = lambda: peer(input_ids=t(batch.inputs), labels=t(labels)).loss

    elif family == "electra":
        segments = jnp.ones_like(tokens)
        labels = jnp.asarray(rng.random(tokens.shape) < 0.15, jnp.int32)
        batch = ReplacedTokenBatch(
            inputs=tokens,
            labels=labels,
            loss_weights=segments.astype(jnp.float32),
            positions=jnp.broadcast_to(jnp.arange(a.seq), tokens.shape),
            segment_ids=segments,
            attention=AttentionMask.bidirectional(segments),
        )

        def our_loss(params):
            logits = nnx.merge(graphdef, params)(*encoder_inputs(batch))
            return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

        peer_loss = lambda: peer(input_ids=t(tokens), labels=t(labels)).loss

    elif family == "xlnet":
        batch = objectives.plm(jax.random.key(0), tokens, vocab=vocab)
        content = np.asarray(batch.attention.dense())
        slots, used = np.asarray(batch.masked_positions), np.asarray(batch.masked_weights) > 0
        perm_mask = 1.0 - content
        target_mapping = np.zeros((a.batch, slots.shape[1], a.seq), np.float32)
        rows, cols = np.nonzero(used)
        perm_mask[rows, slots[rows, cols], slots[rows, cols]] = 1.0
        target_mapping[rows, cols, slots[rows, cols]] = 1.0
        labels = np.where(used, np.asarray(batch.masked_targets), -100)

        def our_loss(params):
            logits, _ = nnx.merge(graphdef, params)(
                *encoder_inputs(batch),
                query_positions=batch.query_positions,
                query_attention=batch.query_attention,
                masked_positions=batch.masked_positions,
            )
            return cross_entropy(logits, batch.masked_targets, batch.masked_weights)

        peer_loss = lambda: (
            peer(
                input_ids=t(tokens),
                perm_mask=torch.tensor(perm_mask, dtype=torch.float32),
                target_mapping=torch.tensor(target_mapping),
                labels=t(labels),
            ).loss
        )

    else:
        dec_len = a.seq // 4 if family == "t5" else a.seq
        decoder = tokens[:, :dec_len]
        batch = Seq2SeqBatch.from_packed(
            inputs=tokens,
            segment_ids=jnp.ones_like(tokens),
            positions=jnp.broadcast_to(jnp.arange(a.seq), tokens.shape),
            decoder_inputs=decoder,
            decoder_targets=decoder,
            decoder_segment_ids=jnp.ones_like(decoder),
            decoder_positions=jnp.broadcast_to(jnp.arange(dec_len), decoder.shape),
        )

        def our_loss(params):
            logits = nnx.merge(graphdef, params)(*seq2seq_inputs(batch))
            return cross_entropy(logits, batch.decoder_targets, batch.decoder_loss_weights)

        peer_loss = lambda: (
            peer(input_ids=t(tokens), decoder_input_ids=t(decoder), labels=t(decoder)).loss
        )

    grad = jax.jit(jax.grad(our_loss))

    def peer_step():
        peer.zero_grad(set_to_none=True)
        peer_loss().backward()

    return lambda: jax.block_until_ready(grad(params)), peer_step


def encoder_forward_flops(a) -> float:
    """Model FLOPs of one forward pass of the encoder over the batch (Kaplan et al. 2020): the
    dense layers (attention projections and the feed-forward block, intermediate 4 x hidden)
    and the attention scores and values; a backward pass costs twice this."""
    h, i, tokens = a.hidden, 4 * a.hidden, a.batch * a.seq
    dense = 2 * (4 * h * h + 2 * h * i) * a.layers * tokens
    attention = 2 * 2 * a.seq * h * a.layers * tokens
    return dense + attention


def torch_matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 matmul FLOP/s of torch on this CPU (best of `repeats` n x n products)."""
    x = torch.ones(n, n)
    x @ x
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        x @ x
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and batch shape shared by the model and train-step benchmarks (BERT-small)."""
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--repeats", type=int, default=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=[*FAMILIES, "all"], default="all")
    add_shape_arguments(parser)
    a = parser.parse_args()
    reuse_freed_host_memory()  # before the first JAX computation
    print(
        f"{a.layers} layers, hidden {a.hidden}, seq {a.seq}, batch {a.batch}, vocab {a.vocab}; "
        f"forward+backward on {jax.devices()[0].device_kind}, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads"
    )
    print(f"{'family':8} {'lm_jax ms':>10} {'torch ms':>10} {'speed-up':>9}")
    for family in FAMILIES if a.family == "all" else (a.family,):
        ours, peer = steps(family, a)
        timed = median_times({"ours": ours, "peer": peer}, a.repeats)
        ours_s, peer_s = timed["ours"], timed["peer"]
        print(
            f"{family:8} {1e3 * ours_s:10.1f} {1e3 * peer_s:10.1f} {peer_s / ours_s:8.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
