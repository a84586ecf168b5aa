"""Generation throughput in one run: our jitted `lm_jax.generation.generate` against
transformers' `generate` (PyTorch, its key/value cache) with the same random weights, for a
BART-base shape and a T5-small shape; greedy and 4-beam search; new tokens/s and the ratio,
compile time apart.

    python benchmarks/generate.py                    # batch 8, source 256, 64 new tokens
    python benchmarks/generate.py --families t5 --searches greedy --repeats 2

Both generate exactly `--new` tokens per row (end-of-sequence is banned before that:
`min_new_tokens = max_new_tokens`), so the work is the same whatever the random weights
predict; the rows' token agreement is printed as a check. torch uses its default intra-op
threads (one per core); JAX its one CPU device with all cores. Requires the `bench` extra.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
import transformers
from models import median_times  # benchmarks/models.py, beside this script

from lm_jax.generation import GenerationConfig, generate
from lm_jax.models.convert import from_hf_state_dict
from lm_jax.runtime import reuse_freed_host_memory

SHAPES = {
    "bart": (
        "BartForConditionalGeneration",
        transformers.BartConfig,
        dict(
            vocab_size=50265,
            d_model=768,
            encoder_layers=6,
            decoder_layers=6,
            encoder_attention_heads=12,
            decoder_attention_heads=12,
            encoder_ffn_dim=3072,
            decoder_ffn_dim=3072,
            max_position_embeddings=1024,
            forced_eos_token_id=None,
        ),
    ),
    "t5": (
        "T5ForConditionalGeneration",
        transformers.T5Config,
        dict(
            vocab_size=32128,
            d_model=512,
            d_kv=64,
            d_ff=2048,
            num_layers=6,
            num_heads=8,
            decoder_start_token_id=0,
        ),
    ),
}
SEARCHES = {"greedy": 1, "beam4": 4}


def peer(family: str):
    architecture, config_class, fields = SHAPES[family]
    torch.manual_seed(0)
    model = getattr(transformers, architecture)(config_class(**fields)).eval()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return model, from_hf_state_dict(state, model.config.to_dict(), architecture)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--searches", nargs="+", default=list(SEARCHES), choices=list(SEARCHES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--source", type=int, default=256)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    a = parser.parse_args()
    reuse_freed_host_memory()
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"torch threads {torch.get_num_threads()}"
    )
    for family in a.families:
        model, ours = peer(family)
        g = model.generation_config
        pad, eos = model.config.pad_token_id, model.config.eos_token_id
        rng = np.random.default_rng(0)
        ids = rng.integers(5, model.config.vocab_size, (a.batch, a.source))
        ids[:, -1] = eos
        real = np.ones_like(ids)
        for search in a.searches:
            beams = SEARCHES[search]
            settings = GenerationConfig(
                eos_id=eos,
                pad_id=pad,
                decoder_start_id=g.decoder_start_token_id,
                max_new_tokens=a.new,
                min_new_tokens=a.new,
                num_beams=beams,
            )
            start = time.perf_counter()
            first = generate(ours, ids, real, settings)
            compile_s = time.perf_counter() - start
            source, mask = torch.tensor(ids), torch.tensor(real)

            def theirs():
                with torch.no_grad():
                    return model.generate(
                        input_ids=source,
                        attention_mask=mask,
                        max_new_tokens=a.new,
                        min_new_tokens=a.new,
                        num_beams=beams,
                        do_sample=False,
                    )

            peer_tokens = theirs().numpy()
            agree = (first.sequences[:, : peer_tokens.shape[1]] == peer_tokens).mean()
            times = median_times(
                {"lm_jax": lambda: generate(ours, ids, real, settings), "transformers": theirs},
                a.repeats,
            )
            tokens = a.batch * a.new
            ratio = times["transformers"] / times["lm_jax"]
            print(
                f"{family} {search}: lm_jax {tokens / times['lm_jax']:.1f} tokens/s "
                f"({times['lm_jax']:.2f} s; first call with compile {compile_s:.1f} s), "
                f"transformers {tokens / times['transformers']:.1f} tokens/s "
                f"({times['transformers']:.2f} s): {ratio:.2f}x; tokens agree {agree:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
