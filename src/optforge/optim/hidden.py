"""Which of a model's parameters are hidden weight matrices: the per-tensor input ``hidden``.

Muon is meant for the weight matrices of hidden layers; embeddings, the output head, biases
and norms go to AdamW. A program says the same with ``interp(adam_update, muon_update,
hidden)``, so something must label the tensors. The rule here, used for ``optforge search
--task module:factory`` and offered to ``ProgramOptimizer`` users:

- a parameter with at least 2 dimensions whose matrix view (``shape[0]`` x the rest) has at
  least 2 rows and 2 columns is hidden,
- except the weights of ``nn.Embedding`` / ``nn.EmbeddingBag`` modules, and the output head:
  the last ``nn.Linear`` registered in the model (and any parameter tied to either).

Override it by building the groups yourself: ``[{"params": ..., "hidden": True}, ...]``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from optforge.program.layout import matrix_view


def is_matrix(p: Tensor) -> bool:
    rows, cols = matrix_view(p.shape)
    return p.dim() >= 2 and rows > 1 and cols > 1


def hidden_names(model: nn.Module) -> set[str]:
    """Names (as in ``model.named_parameters()``) of the hidden weight matrices."""
    excluded: set[int] = set()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        excluded.add(id(linears[-1].weight))
    for module in model.modules():
        if isinstance(module, nn.Embedding | nn.EmbeddingBag):
            excluded.add(id(module.weight))
    return {
        name
        for name, p in model.named_parameters(remove_duplicate=False)
        if is_matrix(p) and id(p) not in excluded
    } - {name for name, p in model.named_parameters(remove_duplicate=False) if id(p) in excluded}


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
