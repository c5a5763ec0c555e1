"""ophyd devices of a streaming tomography beamline: TomoScan (streaming) and TomoStream."""

from .lifecycle import destroy_devices
from .optics import Optics, SampleStages
from .pva_image import PvaImageSignal, split_slices
from .recon_settings import FILTER_NAMES, filter_pv_value
from .tomoscan import TomoScanStream
from .tomostream import TomoStream

__all__ = ["TomoScanStream", "TomoStream", "PvaImageSignal", "split_slices", "FILTER_NAMES",
           "filter_pv_value", "destroy_devices", "Optics", "SampleStages"]
