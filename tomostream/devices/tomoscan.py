"""The TomoScan streaming IOC as an ophyd device (TomoScan base records + streaming records)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO


class TomoScanStream(Device):
    """TomoScan with streaming: rotates the sample, streams frames, captures on demand.

    Settings are ``config`` (recorded once per stream in the descriptor), progress is
    ``normal``, commands are ``omitted``. Every write uses put-completion: the ``busy``
    records (StartScan, StreamCapture, StreamRetakeDark, StreamRetakeFlat) complete when the
    IOC says the work is done, the others when the IOC has processed the write (a value it
    clamps or resets, such as AbortScan, never leaves a Status waiting).

    Parameters
    ----------
    prefix : str
        PV prefix, e.g. ``"2bmb:TomoScanStream:"``.
    name : str
        Device name; prefixes the data keys.
    write_path_template, read_path_template : str, optional
        Where TomoScan's FilePath folders are seen from this machine, as ophyd's file plugins
        say it: a FilePath under ``write_path_template`` (the folder as the detector computer
        names it, e.g. ``"/local/data"``) is read under ``read_path_template`` (the same
        folder mounted here, e.g. ``"/mnt/2bmb/data"``). Both None: the same path here.
    """

    def __init__(self, prefix: str = "", *, write_path_template: str | None = None,
                 read_path_template: str | None = None, **kwargs):
        if (write_path_template is None) != (read_path_template is None):
            raise ValueError("give both write_path_template and read_path_template, or neither")
        self.write_path_template = write_path_template
        self.read_path_template = read_path_template
        super().__init__(prefix, **kwargs)

    def local_path(self, file_path: str) -> Path:
        """TomoScan's FilePath ``file_path`` as this machine reads it (see the templates)."""
        if self.write_path_template is None:
            return Path(file_path)
        written = PurePosixPath(self.write_path_template)
        try:
            rest = PurePosixPath(file_path).relative_to(written)
        except ValueError:               # outside the mapped folder: taken as it is
            return Path(file_path)
        return Path(self.read_path_template) / rest

    # --- scan settings ---------------------------------------------------------------------
    rotation_start = Cpt(EpicsSignal, "RotationStart", put_complete=True, kind="config")  # [degrees]
    rotation_step = Cpt(EpicsSignal, "RotationStep", put_complete=True, kind="config")  # [degrees]
    num_angles = Cpt(EpicsSignal, "NumAngles", put_complete=True, kind="config")
    exposure_time = Cpt(EpicsSignal, "ExposureTime", put_complete=True, kind="config")  # [s]
    file_path = Cpt(EpicsSignal, "FilePath", string=True, put_complete=True, kind="config")
    file_name = Cpt(EpicsSignal, "FileName", string=True, put_complete=True, kind="config")
    hdf5_projection_location = Cpt(EpicsSignal, "HDF5ProjectionLocation", string=True,
                                   put_complete=True, kind="omitted")
    hdf5_dark_location = Cpt(EpicsSignal, "HDF5DarkLocation", string=True, put_complete=True, kind="omitted")
    hdf5_flat_location = Cpt(EpicsSignal, "HDF5FlatLocation", string=True, put_complete=True, kind="omitted")
    pva_plugin_prefix = Cpt(EpicsSignal, "PvaPluginPVPrefix", string=True, put_complete=True, kind="config")
    pva_stream_prefix = Cpt(EpicsSignal, "PvaStreamPVPrefix", string=True, put_complete=True, kind="config")

    # --- streaming settings ----------------------------------------------------------------
    stream_num_capture = Cpt(EpicsSignal, "StreamNumCapture", put_complete=True, kind="config")
    stream_pre_count = Cpt(EpicsSignal, "StreamPreCount", put_complete=True, kind="config")
    stream_binning = Cpt(EpicsSignal, "StreamBinning", string=True, put_complete=True, kind="config")
    stream_scan_type = Cpt(EpicsSignal, "StreamScanType", string=True, put_complete=True, kind="config")

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
    abort_scan = Cpt(EpicsSignal, "AbortScan", put_complete=True, kind="omitted")
    stream_capture = Cpt(EpicsSignal, "StreamCapture", put_complete=True, kind="omitted")
    stream_retake_dark = Cpt(EpicsSignal, "StreamRetakeDark", put_complete=True, kind="omitted")
    stream_retake_flat = Cpt(EpicsSignal, "StreamRetakeFlat", put_complete=True, kind="omitted")
    stream_sync = Cpt(EpicsSignal, "StreamSync", put_complete=True, kind="omitted")
