"""The package's layering, read from its import statements (module-level and local ones).

Ground floor (errors, vocab, batch, layout, config_tools, runtime, sharding, command_line,
attention) <- data, models, objectives (none of which import each other) <- generation (decoding
with the models) and train (the generic trainer) <- pretrain <- finetune (which reads
pretraining runs, generates for text-to-text tasks and masks UniLM's answers with the
objectives' masking); viz (pictures of the objectives) beside finetune; no cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lm_jax"
GROUND = {
    "errors",
    "vocab",
    "batch",
    "layout",
    "config_tools",
    "runtime",
    "sharding",
    "command_line",
    "attention",
}
# Which layers each layer may import (besides itself and the ground floor).
ALLOWED = {
    "ground": set(),
    "data": set(),
    "models": set(),
    "objectives": set(),
    "generation": {"models"},
    "train": set(),
    "pretrain": {"data", "models", "objectives", "train"},
    # Fine-tuning starts from pretraining runs (lm_jax.pretrain.saved); never the other way.
    "finetune": {"data", "models", "objectives", "generation", "train", "pretrain"},
    # Pictures of the objectives' batches, applied to rows as pretraining applies them.
    "viz": {"data", "objectives", "pretrain"},
}


def _layer(module: str) -> str:
    top = module.split(".")[1] if "." in module else ""
    return "ground" if top in GROUND or not top else top


def _imports() -> dict[str, set[str]]:
    """module -> the lm_jax modules it imports."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "lm_jax":  # from lm_jax import objectives
                    found.update(f"lm_jax.{alias.name}" for alias in node.names)
                elif node.module.startswith("lm_jax."):
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("lm_jax."))
        graph[module] = found
    return graph


def test_layers_import_only_downwards():
    wrong = []
    for module, imported in _imports().items():
        layer = _layer(module)
        for target in imported:
            other = _layer(target)
            if other not in {layer, "ground"} | ALLOWED[layer]:
                wrong.append(f"{module} -> {target}")
            if layer == "ground" and other != "ground":
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_no_import_cycles():
    graph = _imports()
    modules = set(graph)

    def resolve(name: str) -> str | None:  # a name may be an attribute: lm_jax.objectives.spec
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = {m: {t for t in map(resolve, graph[m]) if t and t != m} for m in graph}
    # A package's __init__ importing its own submodules is not a cycle of the layering.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in edges[m]:
            if state.get(t) == 1:
                pytest.fail(f"import cycle: {' -> '.join(path[path.index(t) :] + [t])}")
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_no_signature_inspection_in_the_wiring():
    users = [p.name for p in PACKAGE.rglob("*.py") if "inspect.signature" in p.read_text()]
    assert not users, users


def test_a_new_objective_is_one_declaration(monkeypatch, tmp_path):
    """The README's "adding an objective": a module declaring one objective (here registered by
    the test itself) trains through the config, pipeline and step with nothing else touched."""
    import dataclasses

    from conftest import tiny_config

    from lm_jax import objectives
    from lm_jax.objectives import registry
    from lm_jax.objectives.options import Options
    from lm_jax.pretrain import pretrain
    from lm_jax.pretrain.schema import objective_options

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_CHECKED", dict(registry._CHECKED))

    @dataclasses.dataclass(frozen=True)
    class EveryWordOptions(Options):
        rate: float = 0.3

    @registry.register(
        "every_word_start",
        model=registry.Model.MASKED_LM,
        options=EveryWordOptions,
        inputs=("word_starts",),
    )
    def every_word_start(key, tokens, *, vocab, segment_ids, options, word_starts=None):
        """Whole-word masking at its own rate (a stand-in for a new objective)."""
        return objectives.wwm(
            key,
            tokens,
            vocab=vocab,
            segment_ids=segment_ids,
            word_starts=word_starts,
            rate=options.rate,
        )

    assert "every_word_start" in objectives.names()
    config = tiny_config(**{"train.steps": 10})
    config.objective = "every_word_start"
    config.objective_options = objective_options("every_word_start")
    with pytest.raises(Exception, match="rate must be in"):
        every_word_start(None, None, vocab=None, rate=2.0)
    run = pretrain(config, tmp_path / "run", progress=False)
    assert run.final_step == 10 and run.last_eval_loss < run.first_eval_loss
