"""The TomoScan streaming IOC as an ophyd device (TomoScan base records + streaming records)."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO


class TomoScanStream(Device):
    """TomoScan with streaming: rotates the sample, streams frames, captures on demand.

    Settings are ``config`` (recorded once per stream in the descriptor), progress is
    ``normal``, commands are ``omitted``. The ``busy`` records (StartScan, StreamCapture,
    StreamRetakeDark, StreamRetakeFlat) are written with put-completion, so the Status of
    ``set(1)`` finishes when the IOC says the work is done.

    Parameters
    ----------
    prefix : str
        PV prefix, e.g. ``"2bmb:TomoScanStream:"``.
    name : str
        Device name; prefixes the data keys.
    """

    # --- scan settings ---------------------------------------------------------------------
    rotation_start = Cpt(EpicsSignal, "RotationStart", kind="config")  # [degrees]
    rotation_step = Cpt(EpicsSignal, "RotationStep", kind="config")  # [degrees]
    num_angles = Cpt(EpicsSignal, "NumAngles", kind="config")
    exposure_time = Cpt(EpicsSignal, "ExposureTime", kind="config")  # [s]
    file_path = Cpt(EpicsSignal, "FilePath", string=True, kind="config")
    file_name = Cpt(EpicsSignal, "FileName", string=True, kind="config")
    hdf5_projection_location = Cpt(EpicsSignal, "HDF5ProjectionLocation", string=True, kind="omitted")
    hdf5_dark_location = Cpt(EpicsSignal, "HDF5DarkLocation", string=True, kind="omitted")
    hdf5_flat_location = Cpt(EpicsSignal, "HDF5FlatLocation", string=True, kind="omitted")
    pva_plugin_prefix = Cpt(EpicsSignal, "PvaPluginPVPrefix", string=True, kind="config")
    pva_stream_prefix = Cpt(EpicsSignal, "PvaStreamPVPrefix", string=True, kind="config")

    # --- streaming settings ----------------------------------------------------------------
    stream_num_capture = Cpt(EpicsSignal, "StreamNumCapture", kind="config")
    stream_pre_count = Cpt(EpicsSignal, "StreamPreCount", kind="config")
    stream_binning = Cpt(EpicsSignal, "StreamBinning", string=True, kind="config")
    stream_scan_type = Cpt(EpicsSignal, "StreamScanType", string=True, kind="config")

    # --- status ----------------------------------------------------------------------------
    scan_status = Cpt(EpicsSignalRO, "ScanStatus", string=True, kind="normal")
    server_running = Cpt(EpicsSignalRO, "ServerRunning", string=True, kind="normal")
    frame_type = Cpt(EpicsSignalRO, "FrameType", string=True, kind="omitted")
    first_projid = Cpt(EpicsSignalRO, "FirstProjid", kind="omitted")
    stream_num_captured = Cpt(EpicsSignalRO, "StreamNumCaptured", kind="normal")
    stream_num_total_captured = Cpt(EpicsSignalRO, "StreamNumTotalCaptured", kind="normal")
    stream_pre_counted = Cpt(EpicsSignalRO, "StreamPreCounted", kind="omitted")
    stream_file_name = Cpt(EpicsSignalRO, "StreamFileName", string=True, kind="normal")
    stream_message = Cpt(EpicsSignalRO, "StreamMessage", string=True, kind="omitted")
    stream_cb_status_message = Cpt(EpicsSignalRO, "StreamCBStatusMessage", string=True, kind="omitted")

    # --- commands (busy records complete their put when done) -------------------------------
    start_scan = Cpt(EpicsSignal, "StartScan", put_complete=True, kind="omitted")
    abort_scan = Cpt(EpicsSignal, "AbortScan", kind="omitted")
    stream_capture = Cpt(EpicsSignal, "StreamCapture", put_complete=True, kind="omitted")
    stream_retake_dark = Cpt(EpicsSignal, "StreamRetakeDark", put_complete=True, kind="omitted")
    stream_retake_flat = Cpt(EpicsSignal, "StreamRetakeFlat", put_complete=True, kind="omitted")
    stream_sync = Cpt(EpicsSignal, "StreamSync", put_complete=True, kind="omitted")
