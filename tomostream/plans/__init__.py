"""Bluesky plans of streaming tomography: ``stream_scan`` and its stubs and triggers, ``zoom_to``."""

from .optical_zoom import STAGES_2BM, StageDirections, zoom_to
from .plan_stubs import capture, configure_capture, retake_dark, retake_flat, set_recon
from .preprocessors import stream_stopped_decorator, stream_stopped_wrapper
from .stream_scan import stream_scan
from .triggers import ChangeDetector

__all__ = ["stream_scan", "capture", "configure_capture", "retake_dark", "retake_flat", "set_recon",
           "stream_stopped_wrapper", "stream_stopped_decorator", "ChangeDetector", "zoom_to",
           "StageDirections", "STAGES_2BM"]
