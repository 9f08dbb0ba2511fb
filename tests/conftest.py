"""Session-wide test set-up.

Without a GPU, Triton kernels run under Triton's interpreter on CPU tensors. The switch must be
set before a kernel module is imported (Triton reads it when ``@triton.jit`` decorates), so it
is set here, before any test module is collected. Nothing else uses Triton on CPU.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
