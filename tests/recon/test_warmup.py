"""The engine's kernels are compiled before frames come, for every frame type."""

from __future__ import annotations

import numpy as np

from tomostream.recon import _cpu_kernels
from tomostream.recon.inputs import FRAME_DTYPES
from tomostream.recon.warmup import warm_up


def test_warm_up_compiles_the_cpu_kernels_for_every_frame_type():
    backend, seconds = warm_up("numpy")
    assert backend == "numpy" and seconds > 0
    raw_types = {str(sig[0].dtype) for sig in _cpu_kernels.preprocess.signatures}
    assert {str(np.dtype(d)) for d in FRAME_DTYPES} <= raw_types
    for kernel in (_cpu_kernels._sinogram, _cpu_kernels._z_from_pairs,
                   _cpu_kernels._vertical_tables, _cpu_kernels._vertical_from_columns):
        assert kernel.signatures, f"{kernel.__name__} not compiled"
