"""How parameter tensors lie in one flat vector: lengths, matrix views and per-tensor inputs.

Programs run on flat vectors (``execute.py``): one parameter tensor, all of an optimizer's
tensors concatenated, or K candidates' parameters in a row each. ``Segments`` says where each
tensor starts and how it looks as a matrix, so that one statement stays one torch call over all
elements while reductions (``norm``), matrix operations (``orthogonalize``, ``row_mean``) and
per-tensor inputs (``hidden``, ``aspect``) still act per tensor:

- the matrix view: a 2-D tensor as it is, a tensor of 3 or more dimensions as
  ``(shape[0], rest)`` (conv weights, as Muon treats them), a 1-D tensor or a scalar as a
  ``1 x n`` row;
- ``hidden``: 1 for a hidden weight matrix (what Muon is meant for), 0 for the rest
  (embeddings, output head, biases, norms); the caller says which, the default being a view
  with at least 2 rows and 2 columns;
- ``aspect``: Muon's shape factor ``sqrt(max(1, fan_out / fan_in))``, by default
  ``sqrt(max(1, rows / cols))`` of the view, which is torch's ``[out, in]`` Linear layout.

This module depends on torch alone: ``optforge export`` copies its source into exported
optimizers, so the exported and the running code are the same text.
"""

import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Muon's quintic (torch.optim.Muon's defaults)
NS_STEPS = 5
NS_EPS = 1e-7  # the Frobenius norm is clamped here first: an all-zero matrix stays zero


def matrix_view(shape):
    """``(rows, cols)`` of a tensor of this shape (see the module docstring)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) <= 1:
        return 1, math.prod(shape)
    return shape[0], math.prod(shape[1:])


def newton_schulz(x, steps=NS_STEPS):
    """Muon's quintic Newton-Schulz iteration on a batch of matrices ``[n, rows, cols]``
    already divided by their Frobenius norm: maps each close to its polar factor ``U V^T``
    (singular values land in a band around 1, not exactly on 1). Tall matrices are iterated
    on their transpose, so the Gram matrices are the small side."""
    a, b, c = NS_COEFFICIENTS
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a)
    return x.mT if tall else x


class Segments:
    """The layout of a flat vector made of several parameter tensors.

    ``shapes``: one entry per tensor, an int (a 1-D tensor of that length) or a shape tuple.
    ``hidden`` and ``aspect``: one value per tensor, or None for the defaults above."""

    def __init__(self, shapes, device="cpu", hidden=None, aspect=None):
        self.shapes = [(int(s),) if isinstance(s, int) else tuple(int(d) for d in s)
                       for s in shapes]  # fmt: skip
        self.views = [matrix_view(s) for s in self.shapes]
        self.lengths = [r * c for r, c in self.views]
        self.count = len(self.lengths)
        self.total_length = sum(self.lengths)
        self.offsets, start = [], 0  # a running total: linear in the number of tensors
        for n in self.lengths:
            self.offsets.append(start)
            start += n
        self.device = torch.device(device)
        self._lengths_t = torch.tensor(self.lengths, device=self.device)
        if hidden is None:
            hidden = [r > 1 and c > 1 for r, c in self.views]
        if aspect is None:
            aspect = [math.sqrt(max(1.0, r / c)) if c else 1.0 for r, c in self.views]
        if len(hidden) != self.count or len(aspect) != self.count:
            raise ValueError(
                f"hidden and aspect need one value per tensor ({self.count}), "
                f"got {len(hidden)} and {len(aspect)}"
            )
        self.hidden = [float(bool(h)) for h in hidden]
        self.aspect = [float(a) for a in aspect]
        self._inputs = {}
        self._group_cache = {}

    @classmethod
    def join(cls, layouts):
        """The layout of several layouts' flat vectors concatenated, in order."""
        first = layouts[0]
        return cls([s for seg in layouts for s in seg.shapes], first.device,
                   hidden=[h for seg in layouts for h in seg.hidden],
                   aspect=[a for seg in layouts for a in seg.aspect])  # fmt: skip

    # -- per-tensor reductions ----------------------------------------------------------------

    def sum(self, x):
        """Per-segment sums of a flat tensor: shape [count]."""
        if self.count == 1:
            return x.sum().reshape(1)
        return torch.segment_reduce(x, "sum", lengths=self._lengths_t)

    def mean(self, x):
        return self.sum(x) / self._lengths_t.to(x.dtype)

    def total(self, x):
        return x.sum()

    def expand(self, x):
        """A per-segment scalar [count] spread over the flat layout [total_length]; a single
        value stays 0-dim (it broadcasts)."""
        if x.dim() == 0 or x.numel() == 1:
            return x.reshape(())
        return torch.repeat_interleave(x, self._lengths_t, output_size=self.total_length)

    def full(self, x):
        """A scalar as a full-length tensor, for reductions that mix scalars and tensors."""
        return self.expand(x).expand(self.total_length)

    # -- per-tensor inputs --------------------------------------------------------------------

    def input(self, name, dtype):
        """``hidden`` or ``aspect``, one value per tensor, in the compute dtype (made once)."""
        key = (name, dtype)
        if key not in self._inputs:
            values = self.hidden if name == "hidden" else self.aspect
            if len(set(values)) <= 1:  # one value for all: a 0-dim tensor broadcasts as it is
                values = values[:1] or [0.0]
                self._inputs[key] = torch.tensor(values[0], dtype=dtype, device=self.device)
            else:
                self._inputs[key] = torch.tensor(values, dtype=dtype, device=self.device)
        return self._inputs[key]

    # -- matrix operations --------------------------------------------------------------------

    def orthogonalize(self, x):
        """Each tensor's matrix view mapped close to its polar factor: divided by its Frobenius
        norm (clamped at NS_EPS), then Newton-Schulz on views with 2+ rows and columns; a
        vector is ``x / |x|``, its exact polar factor; an all-zero tensor stays zero."""
        norm = torch.sqrt(self.sum(x * x)).clamp_min(NS_EPS)
        out = x / self.expand(norm)
        for index, n, rows, cols in self._groups(2):
            matrices = out.index_select(0, index).view(n, rows, cols)
            out.index_copy_(0, index, newton_schulz(matrices).reshape(-1))
        return out

    def row_mean(self, x):
        """The mean of each row of each tensor's matrix view, broadcast back over the row."""
        out = self.expand(self.mean(x)).expand(self.total_length).clone()
        for index, n, rows, cols in self._groups(1):
            m = x.index_select(0, index).view(n, rows, cols)
            out.index_copy_(0, index, m.mean(-1, keepdim=True).expand(n, rows, cols).reshape(-1))
        return out

    def col_mean(self, x):
        """The mean of each column of each tensor's matrix view, broadcast back (a ``1 x n``
        row's columns are single elements: its column mean is itself)."""
        out = x.clone()
        for index, n, rows, cols in self._groups(1):
            m = x.index_select(0, index).view(n, rows, cols)
            out.index_copy_(0, index, m.mean(-2, keepdim=True).expand(n, rows, cols).reshape(-1))
        return out

    def _groups(self, min_cols):
        """Tensors with 2+ rows and ``min_cols``+ columns, grouped by view: per group the
        flat positions of its elements, so one batched call serves every tensor (and every
        candidate) of that shape. Worked out once per layout, on first use."""
        if min_cols in self._group_cache:
            return self._group_cache[min_cols]
        groups = {}
        for offset, (rows, cols) in zip(self.offsets, self.views, strict=True):
            if rows > 1 and cols >= min_cols:
                groups.setdefault((rows, cols), []).append(offset)
        out = []
        for (rows, cols), offsets in groups.items():
            start = torch.tensor(offsets, device=self.device)[:, None]
            index = (start + torch.arange(rows * cols, device=self.device)).reshape(-1)
            out.append((index, len(offsets), rows, cols))
        self._group_cache[min_cols] = out
        return out


class ScalarSegments:
    """The segment layout for reductions of scalars: each scalar is one value, so its sum is
    itself (``norm(s) = |s|``, ``dot(s, t) = s*t``) and the total adds all segments."""

    @staticmethod
    def sum(x):
        return x

    mean = sum

    @staticmethod
    def total(x):
        return x.sum()
