"""layout.py in JAX: the segment layout that ``optforge export --format optax`` writes into
exported modules, so that the primitive table's ``jax`` forms (``seg.sum(x * x)``,
``seg.orthogonalize(x)``, ...) run as its torch forms do over layout.py.

An exported optax transformation runs a program as ``ProgramOptimizer`` runs it on one param
group: the pytree's leaves concatenated into one flat vector, each statement one operation over
all of it, reductions and matrix operations per leaf, ``global_norm`` across all leaves. The
flat layout (not a ``tree_map`` per leaf) is what keeps the semantics identical: a scalar is
one value for all tensors (a 0-dim array, broadcasting by itself) or one value per tensor
(shape ``[count]``, spread by ``expand``), exactly where the torch executor has the same, so
``global_norm`` of a per-tensor scalar adds over the tensors there as here.

Differences from layout.py, all of them in how, not what:

- leaves are static slices of the flat vector (their offsets are Python ints at trace time),
  where layout.py gathers index tensors: jit sees fixed shapes and no index constants;
- matrices of one view still go through Newton-Schulz as one batch; matmuls ask for full fp32
  precision (``precision="highest"``), where a GPU would otherwise use TF32 and torch does not;
- ``hidden`` and ``aspect`` may also be a pytree or a callable of the params (``per_leaf``),
  as optax's masks are.

The exporter copies this file's code below its imports; the ``from optforge...`` import is
replaced by the values and source it names, so the Newton-Schulz coefficients and the matrix
view rule are layout.py's own. Tests check each method against layout.py's.
"""

import math

import jax
import jax.numpy as jnp

from optforge.program.layout import NS_COEFFICIENTS, NS_EPS, NS_STEPS, matrix_view


def sign(x):
    """torch.sign: 0 at NaN, where jnp.sign gives NaN."""
    return jnp.where(jnp.isnan(x), 0.0, jnp.sign(x))


def lerp(x, y, a):
    """torch.lerp(x, y, a): ``x + a (y - x)`` for ``|a| < 0.5``, else ``y - (y - x) (1 - a)``,
    torch's two forms (each exact at its end), so ``interp`` rounds as the torch code does."""
    return jnp.where(jnp.abs(a) < 0.5, x + a * (y - x), y - (y - x) * (1.0 - a))


def _matmul(a, b):
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def newton_schulz(x, steps=NS_STEPS):
    """Muon's quintic Newton-Schulz iteration on a batch ``[n, rows, cols]`` of matrices already
    divided by their Frobenius norm (layout.py's, in JAX: tall ones on their transpose)."""
    a, b, c = NS_COEFFICIENTS
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = jnp.swapaxes(x, -1, -2)
    for _ in range(steps):
        gram = _matmul(x, jnp.swapaxes(x, -1, -2))
        poly = b * gram + c * _matmul(gram, gram)
        x = a * x + _matmul(poly, x)
    return jnp.swapaxes(x, -1, -2) if tall else x


def per_leaf(option, treedef, tree, what):
    """One value per leaf from an option given as None (None: the default rule), one value for
    all leaves, a pytree with the structure of the params, or a callable of the params (or of
    the updates when no params are given) returning such a pytree. The values must be known
    at trace time: Python numbers or bools, not traced arrays."""
    if option is None:
        return None
    if callable(option):
        option = option(tree)
    if isinstance(option, bool | int | float):
        return [option] * treedef.num_leaves
    try:
        values = treedef.flatten_up_to(option)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{what} must be one value or a pytree like the params: {e}") from None
    try:
        return [v if isinstance(v, bool) else float(v) for v in values]
    except (TypeError, jax.errors.ConcretizationTypeError) as e:
        raise ValueError(f"{what} must hold numbers known at trace time: {e}") from None


class Segments:
    """The layout of a flat vector made of several tensors (layout.py's ``Segments``):
    ``shapes`` one per tensor; ``hidden`` and ``aspect`` one value per tensor, or None for
    the defaults (hidden: a matrix view with 2+ rows and columns; aspect: sqrt(max(1,
    rows / cols)) of the view)."""

    def __init__(self, shapes, hidden=None, aspect=None):
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.views = [matrix_view(s) for s in self.shapes]
        self.lengths = [r * c for r, c in self.views]
        self.count = len(self.lengths)
        self.total_length = sum(self.lengths)
        self.offsets, start = [], 0
        for n in self.lengths:
            self.offsets.append(start)
            start += n
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

    def pieces(self, x):
        """Each tensor's part of a flat vector (static slices)."""
        return [x[o : o + n] for o, n in zip(self.offsets, self.lengths, strict=True)]

    # -- per-tensor reductions ----------------------------------------------------------------

    def sum(self, x):
        """Per-tensor sums of a flat vector: shape [count]."""
        return jnp.stack([piece.sum() for piece in self.pieces(x)])

    def mean(self, x):
        return self.sum(x) / jnp.asarray(self.lengths, x.dtype)

    def total(self, x):
        return x.sum()

    def expand(self, x):
        """A per-tensor scalar [count] spread over the flat layout; one value stays 0-dim."""
        if x.ndim == 0 or x.size == 1:
            return x.reshape(())
        return jnp.concatenate([jnp.broadcast_to(x[i], (n,)) for i, n in enumerate(self.lengths)])

    def full(self, x):
        """A scalar as a full-length vector, for reductions that mix scalars and tensors."""
        return jnp.broadcast_to(self.expand(x), (self.total_length,))

    # -- per-tensor inputs --------------------------------------------------------------------

    def input(self, name, dtype):
        """``hidden`` or ``aspect``, one value per tensor (0-dim when all are equal, as in
        layout.py: a per-tensor value then broadcasts, and ``global_norm`` sees one value)."""
        values = self.hidden if name == "hidden" else self.aspect
        if len(set(values)) <= 1:
            return jnp.asarray((values[:1] or [0.0])[0], dtype)
        return jnp.asarray(values, dtype)

    # -- matrix operations --------------------------------------------------------------------

    def orthogonalize(self, x):
        """Each tensor divided by its Frobenius norm (clamped at NS_EPS), then Newton-Schulz on
        views with 2+ rows and columns; a vector is x / |x|; zeros stay zero."""
        norm = jnp.maximum(jnp.sqrt(self.sum(x * x)), NS_EPS)
        out = x / self.expand(norm)
        return self._by_view(out, out, 2, newton_schulz)

    def row_mean(self, x):
        """The mean of each row of each tensor's matrix view, broadcast back over the row."""

        def rows(m):
            return jnp.broadcast_to(m.mean(-1, keepdims=True), m.shape)

        return self._by_view(x, self.full(self.mean(x)), 1, rows)

    def col_mean(self, x):
        """The mean of each column of each tensor's matrix view, broadcast back (a 1 x n row's
        column mean is itself)."""

        def cols(m):
            return jnp.broadcast_to(m.mean(-2, keepdims=True), m.shape)

        return self._by_view(x, x, 1, cols)

    def _by_view(self, x, base, min_cols, fn):
        """``base``, with each tensor of 2+ rows and ``min_cols``+ columns replaced by ``fn``
        of its matrix view; tensors of one view go through ``fn`` as one batch."""
        groups = {}
        for i, (rows, cols) in enumerate(self.views):
            if rows > 1 and cols >= min_cols:
                groups.setdefault((rows, cols), []).append(i)
        if not groups:
            return base
        source, out = self.pieces(x), self.pieces(base)
        for (rows, cols), members in groups.items():
            batch = fn(jnp.stack([source[i].reshape(rows, cols) for i in members]))
            for j, i in enumerate(members):
                out[i] = batch[j].reshape(-1)
        return jnp.concatenate(out)


class ScalarSegments:
    """The layout for reductions of scalars (layout.py's): a scalar's sum is itself, the total
    adds the tensors' values."""

    @staticmethod
    def sum(x):
        return x

    mean = sum

    @staticmethod
    def total(x):
        return x.sum()
