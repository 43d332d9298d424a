"""Structured pruning of a fine-tuned BERT: whole attention heads and whole encoder layers.

Importance is measured on training batches with a first-order Taylor score (Molchanov et al. 2019,
as used for heads by Michel et al. 2019): for head ``h`` of layer ``l`` the score is
``|sum(a_lh * dL/da_lh)|`` over the tokens, where ``a_lh`` is the head's context output - the loss
change if the head were removed. A layer's score is the sum of its heads'. The least important layers
are removed, then the least important fraction of the remaining heads; the Linear layers are sliced,
so the exported graph is really smaller (no masks). A short recovery fine-tune follows, optionally
distilled from the unpruned model (KL on softened token logits).

``PRUNE="layers=2,heads=0.25,epochs=1,distill=0.5"`` on ``make build`` (see :class:`PruneSettings`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ner_triton.errors import ConfigError
from ner_triton.modeling import drop_layers, encoder_layers, heads_per_layer, keep_heads
from ner_triton.settings import PruneSettings

log = logging.getLogger(__name__)


def head_importance(model: Any, batches: Sequence[tuple[dict[str, torch.Tensor], torch.Tensor]]) -> list[torch.Tensor]:
    """Taylor importance ``[heads]`` of every layer's heads on ``batches`` of (inputs, labels)."""
    layers = encoder_layers(model)
    captured: dict[int, torch.Tensor] = {}

    def hook(index: int) -> Any:
        def fn(_module: nn.Module, _inputs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            out.retain_grad()
            captured[index] = out

        return fn

    handles = [layer.attention.self.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    scores = [torch.zeros(h) for h in heads_per_layer(model)]
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100)
    model.eval()
    try:
        for inputs, target in tqdm(batches, desc="head importance", unit="batch", leave=False):
            model.zero_grad(set_to_none=True)
            logits = model(**inputs)
            loss_fn(logits.view(-1, logits.shape[-1]), target.view(-1)).backward()
            for i, out in captured.items():
                assert out.grad is not None
                h = scores[i].numel()
                prod = (out * out.grad).reshape(*out.shape[:-1], h, -1)  # [batch, seq, heads, dim]
                scores[i] += prod.sum(dim=(0, 1, 3)).abs().detach()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    return scores


def plan(scores: list[torch.Tensor], settings: PruneSettings) -> tuple[list[int], list[list[int]]]:
    """(layers to drop, heads to keep per remaining layer) from importance scores."""
    n = len(scores)
    if settings.layers >= n:
        raise ConfigError(f"PRUNE: cannot remove {settings.layers} of {n} layers; keep at least one.")
    totals = [float(s.sum()) for s in scores]
    drop = sorted(sorted(range(n), key=lambda i: totals[i])[: settings.layers])
    remaining = [i for i in range(n) if i not in drop]
    candidates = [(float(scores[i][h]), i, h) for i in remaining for h in range(scores[i].numel())]
    n_remove = round(settings.heads * len(candidates))
    removed: set[tuple[int, int]] = set()
    for _, i, h in sorted(candidates):
        if len(removed) >= n_remove:
            break
        if sum(1 for j, _ in removed if j == i) + 1 < scores[i].numel():  # keep at least one head per layer
            removed.add((i, h))
    kept = [[h for h in range(scores[i].numel()) if (i, h) not in removed] for i in remaining]
    return drop, kept


def prune_model(
    model: Any, batches: Sequence[tuple[dict[str, torch.Tensor], torch.Tensor]], settings: PruneSettings
) -> dict[str, Any]:
    """Prune ``model`` in place by importance on ``batches``; returns what was removed."""
    params_before = sum(p.numel() for p in model.parameters())
    scores = head_importance(model, batches)
    drop, kept = plan(scores, settings)
    drop_layers(model, drop)
    keep_heads(model, kept)
    params_after = sum(p.numel() for p in model.parameters())
    summary = {
        "settings": settings.describe(),
        "dropped_layers": drop,
        "heads_per_layer": heads_per_layer(model),
        "parameters_before": params_before,
        "parameters_after": params_after,
        "layer_importance": [round(float(s.sum()), 4) for s in scores],
    }
    log.info("pruned: dropped layers %s, heads per layer %s, parameters %d -> %d", drop,
             summary["heads_per_layer"], params_before, params_after)  # fmt: skip
    return summary
