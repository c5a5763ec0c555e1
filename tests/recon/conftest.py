"""Shared inputs for the reconstruction tests: small analytic phantoms and their projections."""

from __future__ import annotations

import numpy as np
import pytest

from tomostream.recon.phantom import Ellipsoid, default_phantom, project

N, NZ = 64, 24
FLAT = 1000.0  # [counts]


@pytest.fixture(scope="session")
def phantom() -> list[Ellipsoid]:
    """A 3-D Shepp-Logan-like phantom for a 64 x 24 detector, attenuation ~0.03 per pixel."""
    return default_phantom(N, NZ)


def transmission(ellipsoids, angles, n=N, nz=NZ, center=None, flat=FLAT, dark=0.0) -> np.ndarray:
    """Detector frames [counts] float32: ``dark + (flat - dark) * exp(-projection)``."""
    p = project(ellipsoids, np.asarray(angles, dtype=float), n, nz, center=center)
    return (dark + (flat - dark) * np.exp(-p)).astype(np.float32)
