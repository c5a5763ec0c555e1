"""tomostream: live tomography for synchrotron beamlines, native to Bluesky.

Layers (dependencies point one way):

- :mod:`tomostream.recon`  pure computation (NumPy or CuPy), no EPICS, no Bluesky
- :mod:`tomostream.pva`    NTNDArray <-> numpy, PV Access subscribers and publisher (pvapy)
- :mod:`tomostream.ioc`    Channel Access IOCs served from Python (caproto)
- :mod:`tomostream.server` the stream server wiring the above together
- :mod:`tomostream.devices`, :mod:`tomostream.plans`  the Bluesky layer (ophyd, bluesky)
- :mod:`tomostream.io`     Data Exchange HDF5 files and the catalog (h5py, Tiled)
- :mod:`tomostream.sim`    a simulated TomoScan streaming beamline

Every layer may use the ground floor: :mod:`tomostream.errors`, :mod:`tomostream.vocabulary`
(the records' enum states), :mod:`tomostream.unique_ids` (frame counters that wrap),
:mod:`tomostream.background` (a loop in a daemon thread), :mod:`tomostream.childproc` (children
that end with their parent) and :mod:`tomostream.epics_env` (EPICS network settings). Each layer
imports only those below it, with no import circle; the README's Layout section maps the
modules.
"""

__version__ = "0.1.0"
