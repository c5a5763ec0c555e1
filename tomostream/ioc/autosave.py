"""Autosave: the TomoStream settings kept in a file per prefix and restored at start-up.

As EPICS autosave does at a beamline, the settings the APS ``tomoStream_settings.req`` lists
(:data:`AUTOSAVED`) are written to a file whenever one has changed (looked at every
:data:`SAVE_PERIOD` seconds, whoever changed it: a client or the server itself) and written
back through the PVs' own validation when an IOC with the same prefix starts.

The file is in EPICS autosave's ``.sav`` format, so a ``.sav`` file from an APS TomoStream IOC
can be restored as it is::

    # tomostream autosave, prefix 2bmb:TomoStream: - written 2025-01-01T12:00:00
    2bmb:TomoStream:Center 1224.5
    2bmb:TomoStream:FilterType 0
    2bmb:TomoStream:DarkPVAName 2bmb:TomoScanStream:StreamDarkFields
    <END>

one ``PV value`` per line, enum states by index, ``#`` and ``!`` lines are comments, lines of
other prefixes and PVs that are not settings are ignored, and a file without its ``<END>``
line was cut short. Writes are atomic (a temporary file beside it, ``fsync``, rename): a
crash leaves the old file or the new one, never half of one. A file that cannot be read or
parsed is reported, renamed to ``<name>.corrupt`` where possible, and the defaults stay.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..background import Background
from ..errors import AutosaveError

log = logging.getLogger(__name__)

#: Settings saved and restored: the APS ``tomoStream_settings.req`` (less BufferSize, a
#: read-back here), ImagePlugins, Zoom (a display setting, as OrthoX/Y/Z are), and the
#: optical-zoom PVs of the 2-BM ``tomoStream_2BM_settings.req``. CenterAuto is not saved: it
#: is a mode that rewrites Center, so a restart keeps the Center saved (set by hand or by the
#: mode) until someone asks again (it starts at No), rather than moving it as soon as the next
#: sample turns.
AUTOSAVED: tuple[str, ...] = (
    "TomoScanPVPrefix", "ImagePVAPName", "ImagePlugins", "DarkPVAName", "FlatPVAName",
    "ThetaPVAName", "ReconPVAName", "Center", "CenterTweak", "Dezinger", "RingRemoval",
    "FilterType", "OrthoX", "OrthoY", "OrthoZ", "RotX", "RotY", "RotZ", "Zoom", "Energy",
    "Distance", "Alpha", "PixelSize",
    "LensChangeSync", "MctOpticsPVPrefix", "SampleTomo0degPVName", "SampleTomo90degPVName",
    "SampleYPVName",
)
#: Most often the file is written [s]; changes within one period are written together.
SAVE_PERIOD = 2.0
END = "<END>"


def autosave_path(data_dir: str | os.PathLike, prefix: str) -> Path:
    """The autosave file of IOC ``prefix`` under ``data_dir``: ``<data_dir>/autosave/<prefix>.sav``
    with every character that is not a letter, digit, ``-`` or ``.`` written as ``_``."""
    name = re.sub(r"[^A-Za-z0-9.\-]", "_", prefix).strip("_") or "tomostream"
    return Path(data_dir).expanduser() / "autosave" / f"{name}.sav"


def _text(value) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


class Autosave:
    """Saves the settings of a TomoStream IOC to ``path`` and restores them from it.

    Parameters
    ----------
    group : TomoStreamIOC
        The PV group whose settings are kept.
    path : path
        The ``.sav`` file; its folder is created when first written.
    period : float [s]
        Most often the file is written.
    on_error : callable, optional
        ``on_error(message)``, called from the saving thread when the file cannot be written
        (once per distinct message); e.g. the server's ReconStatus.
    """

    def __init__(self, group, path: str | os.PathLike, *, period: float = SAVE_PERIOD,
                 on_error: Callable[[str], None] | None = None):
        self.group = group
        self.path = Path(path).expanduser()
        self.period = float(period)
        self.on_error = on_error
        self._saved: dict[str, str] | None = None
        self._last_error: str | None = None
        self._saver = Background()

    # -- restore ------------------------------------------------------------------------------
    def load(self) -> dict[str, object]:
        """The settings in the file, by suffix, as values the PVs take (enum states as text).

        Returns
        -------
        dict
            Empty when there is no file yet.

        Raises
        ------
        AutosaveError
            The file cannot be read or is not a complete ``.sav`` file.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise AutosaveError(f"autosave file {self.path} cannot be read: {exc}") from None
        lines = [line.strip() for line in text.splitlines()]
        if END not in lines:
            raise AutosaveError(f"autosave file {self.path} is cut short (no {END} line)")
        values: dict[str, object] = {}
        for number, line in enumerate(lines[:lines.index(END)], start=1):
            if not line or line[0] in "#!":
                continue
            name, _, raw = line.partition(" ")
            suffix = name[len(self.group.prefix):] if name.startswith(self.group.prefix) else None
            if suffix not in AUTOSAVED:
                continue
            try:
                values[suffix] = self._value(suffix, raw.strip())
            except (ValueError, IndexError):
                raise AutosaveError(f"autosave file {self.path} line {number}: "
                                    f"{raw.strip()!r} is not a value of {suffix}") from None
        return values

    def _value(self, suffix: str, raw: str):
        channel = self.group.channel(suffix)
        strings = getattr(channel, "enum_strings", None)
        if strings is not None:            # by index, as EPICS autosave writes them; or by name
            if raw.isdigit():
                return strings[int(raw)]
            if raw not in strings:
                raise ValueError(raw)
            return raw
        current = channel.value
        if isinstance(current, str):
            return raw
        if isinstance(current, int):
            return int(raw)
        return float(raw)

    async def restore(self) -> str:
        """Write the file's settings through the PVs' putters (run in the IOC's loop).

        Returns
        -------
        str
            What happened, for ReconStatus: settings restored, no file yet, or why the file
            was not used (then every setting keeps its default).
        """
        try:
            values = self.load()
        except AutosaveError as exc:
            log.error("%s: the defaults are used", exc)
            return f"{exc}; defaults used{self._set_aside()}"
        if not values:
            return f"no autosave file yet ({self.path})"
        await self.group.apply(values)
        log.info("restored %d settings from %s", len(values), self.path)
        return f"{len(values)} settings restored from {self.path}"

    def _set_aside(self) -> str:
        """Rename an unusable file to ``<name>.corrupt`` so the next save does not lose it."""
        aside = self.path.with_name(self.path.name + ".corrupt")
        try:
            os.replace(self.path, aside)
        except OSError:
            return ""
        return f" (the file is kept as {aside})"

    # -- save ---------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, str]:
        """The current settings as the file writes them (enum states by index)."""
        values = {}
        for suffix in AUTOSAVED:
            channel = self.group.channel(suffix)
            strings = getattr(channel, "enum_strings", None)
            values[suffix] = (str(strings.index(channel.value)) if strings is not None
                              else _text(channel.value))
        return values

    def save(self) -> bool:
        """Write the file if a setting changed since the last write; whether it was written.

        A failure is logged and handed to ``on_error``; the next call tries again.
        """
        values = self.snapshot()
        if values == self._saved:
            return False
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        lines = [f"# tomostream autosave, prefix {self.group.prefix} - written {stamp}"]
        lines += [f"{self.group.prefix}{suffix} {value}" for suffix, value in values.items()]
        lines.append(END)
        try:
            self._write("\n".join(lines) + "\n")
        except OSError as exc:
            message = f"autosave: cannot write {self.path}: {exc}"
            if message != self._last_error:
                self._last_error = message
                log.error("%s", message)
                if self.on_error is not None:
                    self.on_error(message)
            return False
        self._saved, self._last_error = values, None
        return True

    def _write(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- thread -------------------------------------------------------------------------------
    def start(self) -> Autosave:
        """Save from now on, every ``period`` seconds when something changed."""
        self._saver.start(self._run, f"autosave {self.group.prefix}")
        return self

    def _run(self) -> None:
        while not self._saver.stopping.wait(self.period):
            self.save()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop saving, after a last save of any change (idempotent)."""
        if self._saver.stop(timeout):
            self.save()
