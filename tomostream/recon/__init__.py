"""tomostream.recon: the reconstruction engine (pure computation, CuPy on a GPU, NumPy otherwise).

Importing it needs neither CuPy nor a GPU; :class:`OrthoReconstructor` picks its backend.
"""

from tomostream.recon.params import FILTERS, ReconParams
from tomostream.recon.reconstructor import OrthoReconstructor

__all__ = ["FILTERS", "OrthoReconstructor", "ReconParams"]
