"""``zoom_to``: the 2-BM optical zoom as a plan.

A region chosen on the slices is brought to the rotation axis and the middle of the field by
the sample stages, the objective is changed through the optics IOC, and the TomoStream IOC is
told what changed (PixelSize, Center, the slice positions); streaming goes on throughout, and
the 180-degree buffer refills at the new magnification.

Geometry (:mod:`tomostream.recon.geometry`): slice pixel ``(x, y, z)`` (x, y in the Z slice,
z the detector row) sits at ``(x - n/2, y - n/2, z - nz/2)`` pixels from the rotation axis
and the middle row, ``n`` x ``nz`` being the frame size the server reconstructs; with the
software Zoom the slices show a field ``Zoom`` times smaller about the crossing point
(:func:`~tomostream.recon.geometry.pixel_coordinate`), and the region is read in it. The stages
on the rotation stage (tomo 0 deg, tomo 90 deg) move the sample in its own frame, so one move
each brings the region onto the axis whatever the angle; sample Y brings it to the middle row.
How a stage move shows in the slices is a :class:`StageDirections`; the default is 2-BM's.
"""

import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import astuple, dataclass

from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import Msg
from ophyd import Device, EpicsSignalRO

from ..devices.lifecycle import destroy_devices
from ..devices.optics import Optics, SampleStages, connect, field_size, um_per_unit
from ..errors import BadParameter, ConnectionLost
from ..recon.geometry import pixel_coordinate

#: Binnings of TomoScan's StreamBinning, by state.
BINNING = {"1x": 1, "2x": 2, "4x": 4}


@dataclass(frozen=True)
class StageDirections:
    """How each sample stage moves the sample in the slices.

    Each number is the move of a stage, in pixel sizes, that brings a region one pixel beyond
    the slices' centre (along the stage's direction) to the centre; +1 or -1 at a beamline.
    The defaults are those of the 2-BM TomoStream lens-change code, which the simulator
    follows: tomo 0 deg by ``+(x - n/2)``, tomo 90 deg by ``-(y - n/2)``, sample Y by
    ``+(z - nz/2)`` pixel sizes.

    Parameters
    ----------
    tomo0deg : float
        Along x, the columns of the Z slice.
    tomo90deg : float
        Along y, the rows of the Z slice.
    sample_y : float
        Along z, the detector rows (downwards).
    """

    tomo0deg: float = 1.0
    tomo90deg: float = -1.0
    sample_y: float = 1.0


#: The directions of APS 2-BM (and of ``tomostream sim``).
STAGES_2BM = StageDirections()


def region_offsets(roi: Sequence[float], frame: tuple[int, int], ortho: Sequence[int] = (0, 0, 0),
                   zoom: float = 1.0) -> tuple[float, float, float]:
    """Where slice pixel ``roi`` lies from the rotation axis and the middle row [pixels of
    the frames].

    Parameters
    ----------
    roi : (float, float, float) [pixels]
        ``(x, y, z)`` in the slices as shown: column and row in the Z slice, row in the X or
        Y slice (the detector row at Zoom 1).
    frame : (int, int) [pixels]
        Width ``n`` and height ``nz`` of the reconstructed frames.
    ortho : (int, int, int) [pixels]
        OrthoX, OrthoY, OrthoZ: the crossing point the software zoom centres on.
    zoom : float
        The software Zoom of the slices (1: none).
    """
    sizes = (frame[0], frame[0], frame[1])
    return tuple(float(pixel_coordinate(size, crossing, zoom, value))
                 for value, size, crossing in zip(roi, sizes, ortho, strict=True))


def stage_moves(offsets: Sequence[float], pixel_size: float,
                directions: StageDirections = STAGES_2BM) -> tuple[float, float, float]:
    """Moves of the tomo 0 deg, tomo 90 deg and sample Y stages [um] that bring a region
    ``offsets`` pixels from the rotation axis and the middle row (:func:`region_offsets`) to
    them.

    Parameters
    ----------
    offsets : (float, float, float) [pixels]
        Along x (Z-slice columns), y (Z-slice rows) and z (detector rows).
    pixel_size : float [um]
        Size of a pixel of the frames at the sample.
    directions : StageDirections, optional
        How the stages move the sample in the slices (2-BM's by default).
    """
    return tuple(d * offset * pixel_size
                 for d, offset in zip(astuple(directions), offsets, strict=True))


def zoomed_center(center: float, zoom: float, optical_center: float) -> float:
    """The rotation axis column [pixels] after magnifying by ``zoom`` about the column
    ``optical_center``; an unset Center (0: the middle of the frames) stays unset."""
    return 0.0 if center == 0 else optical_center + zoom * (center - optical_center)


def _region(roi) -> tuple[float, float, float] | None:
    if roi is None:
        return None
    try:
        values = tuple(float(v) for v in roi)
    except (TypeError, ValueError):
        raise BadParameter(f"roi={roi!r} is not (x, y, z) in pixels") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise BadParameter(f"roi={roi!r} is not (x, y, z): three finite numbers of pixels")
    return values


def _lens_name(lens, names: Sequence[str], pv: str) -> str:
    """The name of ``lens`` (a name, or an index into ``names``)."""
    if isinstance(lens, str) and lens in names:
        return lens
    if isinstance(lens, int) and not isinstance(lens, bool) and 0 <= lens < len(names):
        return names[lens]
    raise BadParameter(f"lens={lens!r} is not one of {tuple(names)} or their indexes ({pv})")


def _check_inside(roi: tuple[float, float, float], frame: tuple[int, int]) -> None:
    width, height = frame
    for axis, value, size in zip("xyz", roi, (width, width, height), strict=True):
        if not 0 <= value <= size - 1:
            raise BadParameter(f"roi {axis}={value:g} is outside the slices' 0..{size - 1} pixels")


#: Devices built from name PVs, by kind and names: a later zoom_to on the same names reuses
#: them (the RunEngine may still stop a device it moved after the plan has ended).
_BUILT: dict[tuple[str, ...], Device] = {}


def _built(key: tuple[str, ...], make: Callable[[], Device], names: Mapping, timeout: float) -> Device:
    """The connected device for ``key``, made by ``make`` and connected the first time."""
    device = _BUILT.get(key)
    if device is None or not device.connected:
        device = _BUILT[key] = connect(make(), names, timeout)
    return device


def _connected_optics(tomostream, timeout: float) -> Generator[Msg, object, Optics]:
    prefix = yield from bps.rd(tomostream.mct_optics_prefix)
    names = {attr: ("MctOpticsPVPrefix", prefix) for attr in ("lens_select", "image_pixel_size",
                                                               "mct_status")}
    return _built(("optics", prefix), lambda: Optics(prefix, name="optics"), names, timeout)


def _connected_stages(tomostream, timeout: float) -> Generator[Msg, object, SampleStages]:
    names = {}
    for attr, signal, pv in (("tomo0deg", tomostream.sample_tomo0deg_pv_name, "SampleTomo0degPVName"),
                             ("tomo90deg", tomostream.sample_tomo90deg_pv_name, "SampleTomo90degPVName"),
                             ("sample_y", tomostream.sample_y_pv_name, "SampleYPVName")):
        names[attr] = (pv, (yield from bps.rd(signal)))
    records = {attr: value for attr, (_, value) in names.items()}
    return _built(("stages", *records.values()), lambda: SampleStages(name="stages", **records),
                  names, timeout)


def _binning(tomostream, timeout: float) -> Generator[Msg, object, int]:
    """TomoScan's StreamBinning (the frames' binning), found through TomoScanPVPrefix."""
    prefix = yield from bps.rd(tomostream.tomoscan_prefix)
    signal = EpicsSignalRO(f"{prefix}StreamBinning", string=True, name="stream_binning")
    try:
        signal.wait_for_connection(timeout=timeout)
    except TimeoutError:
        destroy_devices(signal)
        raise ConnectionLost(f"TomoScanPVPrefix={prefix!r}: {prefix}StreamBinning does not answer "
                             f"within {timeout:g} s") from None
    state = yield from bps.rd(signal)
    destroy_devices(signal)
    if state not in BINNING:
        raise BadParameter(f"{prefix}StreamBinning={state!r} is not one of {tuple(BINNING)}")
    return BINNING[state]


def _targets(stages: SampleStages, moves_um: Sequence[float]) -> Generator[Msg, object, list]:
    """``[motor, target, ...]`` for ``bps.mv``: each stage's position plus its move (in its
    EGU), checked against its limits before anything moves."""
    pairs = []
    for motor, move in zip((stages.tomo0deg, stages.tomo90deg, stages.sample_y), moves_um, strict=True):
        position = yield from bps.rd(motor.user_readback)
        target = position + move / um_per_unit(motor.egu, motor.prefix)
        low, high = motor.limits
        if low < high and not low <= target <= high:
            raise BadParameter(f"{motor.prefix} would move to {target:g} {motor.egu}, outside its "
                               f"limits {low:g}..{high:g}: nothing moved")
        pairs += [motor, target]
    return pairs


def zoom_to(tomostream, roi: tuple[float, float, float] | None = None, lens: str | int | None = None, *,
            stages: SampleStages | None = None, optics: Optics | None = None,
            frame: tuple[int, int] | None = None, directions: StageDirections | None = None,
            optical_center: float | None = None, connect_timeout: float = 5.0,
            md: dict | None = None) -> Generator[Msg, object, None]:
    """Bring a region of the slices to the rotation axis and the field's centre, at a lens.

    The sample stages move the region ``roi`` onto the rotation axis and the middle row (by
    the pixel size of the slices it was chosen on) while the optics IOC changes to ``lens``;
    when both are done (the optics IOC reads Done again), the TomoStream IOC's PixelSize
    becomes the new lens's, Center is magnified about the optical centre with the image, and
    OrthoX / OrthoY / OrthoZ go to the middle, so the slices cross at the region. Streaming
    goes on: the slices show the new magnification once the 180-degree buffer has refilled.

    Without ``roi``, LensChangeSync decides as at 2-BM: Yes brings the slices' crossing
    (OrthoX, OrthoY, OrthoZ) to the centre, No changes the lens alone. One run, one event
    (stage positions and lens afterwards); the moves are in the start document.

    Parameters
    ----------
    tomostream : TomoStream
        Names the stages (SampleTomo0degPVName, SampleTomo90degPVName, SampleYPVName), the
        optics IOC (MctOpticsPVPrefix) and TomoScan (TomoScanPVPrefix: StreamBinning).
    roi : (float, float, float) [pixels], optional
        ``(x, y, z)`` in the slices as shown: column and row in the Z slice, row in the X or
        Y slice (the detector row at Zoom 1); the software Zoom is taken into account, the
        Z slice must not be tilted (RotZ 0).
    lens : str or int, optional
        A lens of the optics IOC's LensSelect, by name (``"5x"``) or index; None keeps it.
    stages : SampleStages, optional
        Built from the TomoStream name PVs by default.
    optics : Optics, optional
        Built from MctOpticsPVPrefix by default.
    frame : (int, int) [pixels], optional
        Width and height of the reconstructed frames; by default the size of the dark field
        on DarkPVAName.
    directions : StageDirections, optional
        How the stages move the sample in the slices; None: 2-BM's (:data:`STAGES_2BM`).
    optical_center : float [pixels], optional
        Detector column of the optical axis, about which a new lens magnifies; the middle
        of the frames by default.
    connect_timeout : float [s]
        How long each IOC and channel may take to answer.
    md : dict, optional
        More metadata for the run.

    Raises
    ------
    BadParameter
        No region and no lens, a region outside the slices or in a tilted Z slice, an unknown
        lens, a move beyond a stage's limits; nothing has moved then.
    ConnectionLost
        A name PV that points at nothing (the message names it); nothing has moved then.
    """
    if roi is None and lens is None:
        raise BadParameter("zoom_to needs a region (roi), a lens, or both")
    roi = _region(roi)
    if lens is not None and (isinstance(lens, bool) or not isinstance(lens, (str, int))):
        raise BadParameter(f"lens={lens!r} is not a lens name or index")

    if optics is None:
        optics = yield from _connected_optics(tomostream, connect_timeout)
    name = None if lens is None else _lens_name(lens, optics.lens_names,
                                                optics.lens_select.pvname)
    size = frame or field_size((yield from bps.rd(tomostream.dark_pva_name)), connect_timeout)
    ortho = []
    for signal in (tomostream.ortho_x, tomostream.ortho_y, tomostream.ortho_z):
        ortho.append(int((yield from bps.rd(signal))))
    offsets = None
    if roi is not None:
        _check_inside(roi, size)
        tilt = yield from bps.rd(tomostream.rot_z)
        if tilt != 0:
            raise BadParameter(f"RotZ={tilt:g} degrees tilts the Z slice: zoom_to reads the region "
                               "in an untilted one (set RotZ to 0 first)")
        offsets = region_offsets(roi, size, ortho, (yield from bps.rd(tomostream.zoom)))
    elif (yield from bps.rd(tomostream.lens_change_sync)) == "Yes":       # the crossing point
        offsets = (ortho[0] - size[0] / 2, ortho[1] - size[0] / 2, ortho[2] - size[1] / 2)
    binning = yield from _binning(tomostream, connect_timeout)
    pixel_size = (yield from bps.rd(optics.image_pixel_size)) * binning
    center = yield from bps.rd(tomostream.center)
    moves, targets = (0.0, 0.0, 0.0), []
    if offsets is not None:
        if stages is None:
            stages = yield from _connected_stages(tomostream, connect_timeout)
        moves = stage_moves(offsets, pixel_size, STAGES_2BM if directions is None else directions)
        targets = yield from _targets(stages, moves)
    _md = {"plan_name": "zoom_to", "detectors": [], "motors": [m.name for m in targets[::2]],
           "plan_args": {"tomostream": repr(tomostream), "roi": roi, "lens": lens},
           "optical_zoom": {"roi": roi, "lens": name, "frame": list(size), "offsets": offsets,
                    "pixel_size_um": pixel_size, "moves_um": list(moves), "center": center},
           "hints": {}}
    _md.update(md or {})

    @bpp.run_decorator(md=_md)
    def inner():
        yield from bps.mv(*targets, *((optics, name) if name is not None else ()))
        new_pixel_size = (yield from bps.rd(optics.image_pixel_size)) * binning
        middle = size[0] / 2.0 if optical_center is None else float(optical_center)
        settings = [tomostream.pixel_size, new_pixel_size, tomostream.center,
                    zoomed_center(center, pixel_size / new_pixel_size, middle)]
        if offsets is not None:
            settings += [tomostream.ortho_x, size[0] // 2, tomostream.ortho_y, size[0] // 2,
                         tomostream.ortho_z, size[1] // 2]
        yield from bps.mv(*settings)
        yield from bps.trigger_and_read([d for d in (stages if targets else None, optics) if d],
                                        name="primary")

    return (yield from inner())

