"""Which of a model's parameters are hidden weight matrices: the per-tensor input ``hidden``.

Muon is meant for the weight matrices of hidden layers; embeddings, the output head, biases
and norms go to AdamW. A program says the same with ``interp(adam_update, muon_update,
hidden)``, so something must label the tensors. The rule here, used for ``optforge search
--task module:factory`` and offered to ``ProgramOptimizer`` users:

- the weight of an ``nn.Linear`` or ``nn.Conv1d/2d/3d`` whose matrix view (``shape[0]`` x
  the rest) has at least 2 rows and 2 columns is hidden, and so is ``nn.MultiheadAttention``'s
  fused Q/K/V matrix (``in_proj_weight``, a bare parameter users hand to Muon with the
  block's other weights),
- except the output head: the last ``nn.Linear`` registered in the model, and any weight
  tied to an ``nn.Embedding`` / ``nn.EmbeddingBag``;
- nothing else is: embeddings, free parameters (positional embeddings, gains), biases, norms.

Override it by building the groups yourself: ``[{"params": ..., "hidden": True}, ...]``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from optforge.program.layout import matrix_view


def is_matrix(p: Tensor) -> bool:
    rows, cols = matrix_view(p.shape)
    return p.dim() >= 2 and rows > 1 and cols > 1


_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def hidden_names(model: nn.Module) -> set[str]:
    """Names (as in ``model.named_parameters()``) of the hidden weight matrices."""
    modules = list(model.modules())
    excluded = {id(m.weight) for m in modules if isinstance(m, nn.Embedding | nn.EmbeddingBag)}
    linears = [m for m in modules if isinstance(m, nn.Linear)]
    if linears:
        excluded.add(id(linears[-1].weight))
    layers = {id(m.weight) for m in modules if isinstance(m, _LAYERS)}
    fused = [m for m in modules if isinstance(m, nn.MultiheadAttention)]
    layers |= {id(m.in_proj_weight) for m in fused if m.in_proj_weight is not None}
    layers -= excluded
    named = model.named_parameters(remove_duplicate=False)  # every name of a tied weight
    return {n for n, p in named if id(p) in layers and is_matrix(p)}


def hidden_groups(model: nn.Module, **options: Any) -> list[dict[str, Any]]:
    """The model's trainable parameters as two groups, ``hidden=True`` and ``hidden=False``
    (``options`` go into both), for ``ProgramOptimizer(hidden_groups(model), program)``."""
    hidden = hidden_names(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if n in hidden], "hidden": True, **options},
        {"params": [p for n, p in named if n not in hidden], "hidden": False, **options},
    ]
    return [g for g in groups if g["params"]]
