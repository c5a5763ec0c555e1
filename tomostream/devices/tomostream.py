"""The TomoStream IOC (the stream server's Channel Access face) as an ophyd device."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.status import StatusBase

from .pva_image import PvaImageSignal
from .recon_settings import recon_settings


class TomoStream(Device):
    """Streaming ortho-slice reconstruction: settings, status and the published slices.

    Settings are ``config``; status (ReconTime, BufferSize, frame counters, ServerRunning) is
    ``normal`` or ``hinted``; commands are ``omitted``. Every write uses put-completion, so a
    value the IOC clamps (a slice beyond the frame) never leaves a Status waiting; StartRecon
    completes when streaming stops. ``recon`` is the published
    reconstruction (PVA), read explicitly when a snapshot is wanted.

    Parameters
    ----------
    prefix : str
        PV prefix, e.g. ``"2bmb:TomoStream:"``.
    name : str
        Device name; prefixes the data keys.
    """

    # --- channels: where the stream comes from and where the slices go -----------------------
    tomoscan_prefix = Cpt(EpicsSignal, "TomoScanPVPrefix", string=True, put_complete=True, kind="config")
    image_pvap_name = Cpt(EpicsSignal, "ImagePVAPName", string=True, put_complete=True, kind="config")
    dark_pva_name = Cpt(EpicsSignal, "DarkPVAName", string=True, put_complete=True, kind="config")
    flat_pva_name = Cpt(EpicsSignal, "FlatPVAName", string=True, put_complete=True, kind="config")
    theta_pva_name = Cpt(EpicsSignal, "ThetaPVAName", string=True, put_complete=True, kind="config")
    recon_pva_name = Cpt(EpicsSignal, "ReconPVAName", string=True, put_complete=True, kind="config")
    #: NDPluginPva plugins the detector's frames are spread over (NDPluginScatter), 1..8
    image_plugins = Cpt(EpicsSignal, "ImagePlugins", put_complete=True, kind="config")

    # --- optical zoom: the optics IOC and sample stages (names) -------------------------------
    lens_change_sync = Cpt(EpicsSignal, "LensChangeSync", string=True, put_complete=True, kind="config")
    mct_optics_prefix = Cpt(EpicsSignal, "MctOpticsPVPrefix", string=True, put_complete=True,
                            kind="config")
    sample_tomo0deg_pv_name = Cpt(EpicsSignal, "SampleTomo0degPVName", string=True, put_complete=True,
                                  kind="config")
    sample_tomo90deg_pv_name = Cpt(EpicsSignal, "SampleTomo90degPVName", string=True,
                                   put_complete=True, kind="config")
    sample_y_pv_name = Cpt(EpicsSignal, "SampleYPVName", string=True, put_complete=True, kind="config")

    # --- reconstruction settings --------------------------------------------------------------
    center = Cpt(EpicsSignal, "Center", put_complete=True, kind="config")  # [pixels]
    center_tweak = Cpt(EpicsSignal, "CenterTweak", put_complete=True, kind="config")  # [pixels]
    filter_type = Cpt(EpicsSignal, "FilterType", string=True, put_complete=True, kind="config")
    dezinger = Cpt(EpicsSignal, "Dezinger", string=True, put_complete=True, kind="config")
    ring_removal = Cpt(EpicsSignal, "RingRemoval", string=True, put_complete=True, kind="config")
    ortho_x = Cpt(EpicsSignal, "OrthoX", put_complete=True, kind="config")  # [pixels]
    ortho_y = Cpt(EpicsSignal, "OrthoY", put_complete=True, kind="config")  # [pixels]
    ortho_z = Cpt(EpicsSignal, "OrthoZ", put_complete=True, kind="config")  # [pixels]
    rot_x = Cpt(EpicsSignal, "RotX", put_complete=True, kind="config")  # [degrees]
    rot_y = Cpt(EpicsSignal, "RotY", put_complete=True, kind="config")  # [degrees]
    rot_z = Cpt(EpicsSignal, "RotZ", put_complete=True, kind="config")  # [degrees]
    zoom = Cpt(EpicsSignal, "Zoom", put_complete=True, kind="config")  # [1], 1..16
    energy = Cpt(EpicsSignal, "Energy", put_complete=True, kind="config")  # [keV]
    distance = Cpt(EpicsSignal, "Distance", put_complete=True, kind="config")  # [mm]
    alpha = Cpt(EpicsSignal, "Alpha", put_complete=True, kind="config")
    pixel_size = Cpt(EpicsSignal, "PixelSize", put_complete=True, kind="config")  # [um]
    #: "Yes": Center follows center_estimate
    center_auto = Cpt(EpicsSignal, "CenterAuto", string=True, put_complete=True, kind="config")

    # --- status -------------------------------------------------------------------------------
    recon_status = Cpt(EpicsSignalRO, "ReconStatus", string=True, kind="normal")
    recon_time = Cpt(EpicsSignalRO, "ReconTime", kind="hinted")  # [s]
    buffer_size = Cpt(EpicsSignalRO, "BufferSize", string=True, kind="normal")
    frames_received = Cpt(EpicsSignalRO, "FramesReceived", kind="normal")
    frames_used = Cpt(EpicsSignalRO, "FramesUsed", kind="hinted")
    frames_dropped = Cpt(EpicsSignalRO, "FramesDropped", kind="normal")
    frames_lost = Cpt(EpicsSignalRO, "FramesLost", kind="normal")
    frames_bad = Cpt(EpicsSignalRO, "FramesBad", kind="normal")
    server_running = Cpt(EpicsSignalRO, "ServerRunning", string=True, kind="normal")
    center_estimate = Cpt(EpicsSignalRO, "CenterEstimate", kind="normal")  # [pixels], NaN: none yet

    # --- commands -----------------------------------------------------------------------------
    start_recon = Cpt(EpicsSignal, "StartRecon", put_complete=True, kind="omitted")
    abort_recon = Cpt(EpicsSignal, "AbortRecon", put_complete=True, kind="omitted")
    center_tweak_up = Cpt(EpicsSignal, "CenterTweakUp", put_complete=True, kind="omitted")
    center_tweak_down = Cpt(EpicsSignal, "CenterTweakDown", put_complete=True, kind="omitted")
    watchdog = Cpt(EpicsSignalRO, "Watchdog", kind="omitted")

    # --- the published reconstruction (PV Access) ---------------------------------------------
    recon = Cpt(PvaImageSignal, channel_from="recon_pva_name", kind="omitted")

    def set_recon(self, *, center: float | None = None, filter: str | None = None,
                  ortho: tuple[int, int, int] | None = None,
                  rot: tuple[float, float, float] | None = None,
                  zoom: float | None = None) -> StatusBase:
        """Change several reconstruction settings at once; each takes effect on the next update.

        Parameters
        ----------
        center : float, optional
            Rotation axis [pixels, detector column].
        filter : str, optional
            Filter name, any case: parzen, shepp-logan, ramp, butterworth.
        ortho : (int, int, int), optional
            Slice positions (X column, Y column, Z row) [pixels].
        rot : (float, float, float), optional
            Tilts of the X, Y, Z slice planes [degrees].
        zoom : float, optional
            Software zoom of the slices about their crossing point, 1..16.

        Returns
        -------
        Status
            Done when every write has completed.
        """
        status = None
        for signal, value in recon_settings(self, center=center, filter=filter, ortho=ortho,
                                            rot=rot, zoom=zoom):
            st = signal.set(value)
            status = st if status is None else status & st
        if status is None:
            status = StatusBase()
            status.set_finished()
        return status
