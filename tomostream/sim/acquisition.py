"""The acquisition thread of the simulated beamline: one scan, frame by frame.

A scan (StartScan) rotates the simulated stage one RotationStep per frame period and streams
a frame per period, paced by a monotonic clock (it sleeps until each frame is due; no busy
wait). Before the first frame it caches the noiseless projections, takes and broadcasts new
dark and flat fields and the angle table, and writes FirstProjid. A retake turns the next
frames into dark or flat frames; every projection feeds the circular buffer or an armed
capture. A frame-rate change (ExposureTime) re-paces the frames to come; StreamSync applies a
changed RotationStep from the next frame on. See :mod:`tomostream.sim.scan` for how
uniqueIds and angles relate.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from ..errors import BadParameter, CaptureError, TomostreamError
from ..pva.fields import theta_pv
from ..unique_ids import unique_id
from .capture import Recorder
from .channels import DetectorChannels
from .detector import FrameSource
from .fields import Fields
from .scan import angle_table
from .stages import SampleStages
from .state import StreamState

log = logging.getLogger(__name__)

MAX_FPS = 10_000.0
STATUS_PERIOD = 0.25   # [s] between counter / status updates sent to the IOC


class Acquisition:
    """Runs scans in a thread of their own.

    Parameters
    ----------
    prefix : str
        TomoScan PV prefix (for the log and the thread's name).
    ioc : TomoScanStreamIOC
        Where the scan settings are read and its status posted.
    flush : callable
        Waits until the IOC has applied (and served) every update posted so far.
    source : FrameSource
    stages : SampleStages
        The pose the projections follow.
    state : StreamState
    channels : DetectorChannels
    fields : Fields
    recorder : Recorder
    theta : ndarray [degrees]
        The angle table served until the first scan.
    fps : float [frames/s]
    first_projid : int
        uniqueId of the first frame.
    wrap_unique_id : bool
    sweep : int, optional
        Frames per back-and-forth sweep.
    """

    def __init__(self, prefix: str, ioc, flush: Callable[[], None], source: FrameSource,
                 stages: SampleStages, state: StreamState, channels: DetectorChannels,
                 fields: Fields, recorder: Recorder, theta: np.ndarray, fps: float,
                 first_projid: int, wrap_unique_id: bool, sweep: int | None):
        self.prefix = prefix
        self.ioc = ioc
        self.flush = flush
        self.source = source
        self.stages = stages
        self.state = state
        self.channels = channels
        self.fields = fields
        self.recorder = recorder
        self.sweep = sweep
        self.wrap_unique_id = bool(wrap_unique_id)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self.set_fps(fps)
        self._next_uid = int(first_projid)
        #: Angle table last published on StreamTheta [degrees].
        self.theta = theta
        self.abort_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._prepare_lock = threading.Lock()
        self._refresh: threading.Thread | None = None   # caches the frames of a new pose
        self._prebuilt_pose = source.cached_pose   # the pose of the channels' prebuilt frames

    # ------------------------------------------------------------------ commands
    @property
    def scanning(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def set_fps(self, fps: float) -> None:
        """Frame rate [frames/s], 0 < fps <= 10000 (ExposureTime = 1/fps)."""
        if not 0 < fps <= MAX_FPS:
            raise BadParameter(f"frame rate {fps} frames/s must be in (0, {MAX_FPS:g}]")
        self.fps = float(fps)
        self._requests.put(("fps", self.fps))

    def set_first_projid(self, value: int) -> None:
        if self.scanning:
            raise BadParameter(f"FirstProjid={value}: cannot change during a scan")
        if not 0 <= value < 2**31:
            raise BadParameter(f"FirstProjid={value} must be in 0..{2**31 - 1}")
        self._next_uid = value

    def start_scan(self) -> Future:
        """Start a scan with the IOC's settings; the future completes when it ends."""
        if self.scanning:
            raise BadParameter("StartScan: a scan is already running")
        settings = {k: self.ioc.value(k) for k in
                    ("RotationStart", "RotationStep", "NumAngles", "StreamScanType")}
        theta = angle_table(settings["StreamScanType"], settings["RotationStart"],
                            settings["RotationStep"], settings["NumAngles"], self.sweep)
        done: Future = Future()
        self.abort_event.clear()
        self._thread = threading.Thread(target=self._scan, args=(theta, done),
                                        name=f"sim-scan {self.prefix}", daemon=True)
        self._thread.start()
        return done

    def abort(self) -> None:
        self.abort_event.set()

    def join(self, timeout: float) -> None:
        """Wait for the scan thread (if any) to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def sync(self) -> None:
        """Rebroadcast theta; during a scan, apply a changed RotationStep from now on."""
        if self.scanning:
            self._requests.put(("sync", None))
        else:
            self.publish_theta(self.theta)

    def publish_theta(self, theta: np.ndarray) -> None:
        self.theta = theta
        self.channels.publish(self.channels.theta_channel, theta_pv(theta))

    def prepare(self, theta: np.ndarray, report: bool = True) -> None:
        """Cache the noiseless frames of ``theta`` for the stages' pose (progress in ScanStatus
        if ``report``)."""
        def progress(done: int, total: int) -> None:
            self.ioc.post({"ScanStatus": f"Computing projections {done}/{total}"})

        with self._prepare_lock:
            self.source.pose = self.stages.pose()
            self.source.prepare(theta, progress if report else None)

    def _follow_stages(self, theta: np.ndarray) -> None:
        """Give the detector the stages' pose; once they stand still in a new one, cache its
        frames in the background (meanwhile frames are computed one by one). NTNDArrays built
        for another pose are not sent again."""
        self.source.pose = pose = self.stages.pose()
        if self.source.cached_pose != self._prebuilt_pose:
            self.channels.forget_frames()
            self._prebuilt_pose = self.source.cached_pose
        if (pose != self.source.cached_pose and self.stages.settled
                and (self._refresh is None or not self._refresh.is_alive())):
            self._refresh = threading.Thread(target=self.prepare, args=(theta, False), daemon=True,
                                             name="sim-prepare-pose")
            self._refresh.start()

    # ------------------------------------------------------------------ the scan thread
    def _scan(self, theta: np.ndarray, done: Future) -> None:
        try:
            message = self._run_scan(theta)
            done.set_result(message)
        except Exception as exc:            # the scan ends; the IOC reports why
            log.exception("scan failed")
            self.ioc.post({"ScanStatus": "Failed", "StreamMessage": f"scan failed: {exc}"})
            done.set_exception(exc if isinstance(exc, TomostreamError) else CaptureError(str(exc)))
        finally:
            self.fields.abandon()
            self.recorder.finish("scan ended")

    def _run_scan(self, theta: np.ndarray) -> str:
        self.ioc.post({"ScanStatus": "Preparing frames", "FrameType": "Projection"})
        self.prepare(theta)
        first = self._next_uid
        with self.state.lock:
            self.state.ring.clear()
        self.fields.publish()                      # binned as state.binning now
        self.publish_theta(theta)
        self.ioc.post({"FirstProjid": first, "ScanStatus": "Scanning"})
        log.info("%s: scan started, %d frames from uniqueId %d", self.prefix, theta.size, first)
        k, k_ref, t_ref = 0, 0, time.monotonic()
        fps = self.fps
        next_status = t_ref
        frame_type = "Projection"
        fields_binning = self.state.binning
        while k < theta.size and not self.abort_event.is_set():
            while not self._requests.empty():
                what, value = self._requests.get_nowait()
                if what == "fps":
                    fps, k_ref, t_ref = value, k, time.monotonic()
                elif what == "sync":
                    theta = self._resync(theta, k)
            due = t_ref + (k - k_ref) / fps
            wait = due - time.monotonic()
            if wait > 0 and self.abort_event.wait(wait):
                break
            uid = int(unique_id(first, k, self.wrap_unique_id))
            with self.state.lock:
                retake, binning = self.state.retake, self.state.binning
            if binning != fields_binning:          # binned dark and flat go with binned frames
                self.fields.publish()
                fields_binning = binning
            if retake is not None:
                if frame_type == "Projection":
                    frame_type = "DarkField" if retake.kind == "dark" else "FlatField"
                    # as at a beamline, FrameType changes (and is served) before the
                    # detector takes the first frame of the new type
                    self.ioc.post({"FrameType": frame_type}, timestamp=time.time())
                    self.flush()
                if self.fields.frame(retake, uid, binning):
                    frame_type = "Projection"
            else:
                self._follow_stages(theta)
                frame = self.source.projection(theta[k], k, binning)
                self.channels.publish_frame(frame, uid, self.source.repeat_key(theta[k], k, binning))
                self.recorder.record(uid, float(theta[k]), frame)
            k += 1
            now = time.monotonic()
            if now >= next_status:
                next_status = now + STATUS_PERIOD
                self._post_status(k, theta, uid)
        self._next_uid = int(unique_id(first, k, self.wrap_unique_id))
        aborted = k < theta.size
        self._post_status(k, theta, int(unique_id(first, k - 1, self.wrap_unique_id)))
        message = f"scan {'aborted' if aborted else 'done'} after {k} of {theta.size} frames"
        log.info("%s: %s", self.prefix, message)
        self.ioc.post({"ScanStatus": "Aborted" if aborted else "Done"})
        return message

    def _resync(self, theta: np.ndarray, k: int) -> np.ndarray:
        """Angle table with the current RotationStep applied from frame ``k`` on; publish it."""
        step = float(self.ioc.value("RotationStep"))
        if k > 0 and k < theta.size:
            rest = angle_table(str(self.ioc.value("StreamScanType")), float(theta[k - 1]) + step, step,
                               theta.size - k, self.sweep)
            theta = np.concatenate([theta[:k], rest])
            threading.Thread(target=self.prepare, args=(rest,), daemon=True).start()
        self.publish_theta(theta)
        log.info("%s: theta rebroadcast (%d angles)", self.prefix, theta.size)
        return theta

    def _post_status(self, k: int, theta: np.ndarray, uid: int) -> None:
        angle = float(theta[min(k, theta.size) - 1]) if k else float(theta[0])
        values = {"StreamCBStatusMessage": f"{k}/{theta.size} frames, uniqueId {uid}, angle {angle:.2f}"}
        with self.state.lock:
            if self.state.capture is not None:
                values["StreamNumCaptured"] = len(self.state.capture.frames)
            else:   # the circular buffer's fill, as CBCurrentQtyRBV
                values["StreamPreCounted"] = self.recorder.pre_counted
        self.ioc.post(values)
