"""The Phoebus screens in screens/: every PV they name exists on a running TomoStream IOC."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import epics
import pytest

from tomostream.ioc.tomostream_ioc import ZOOM_NAMES, ChannelNames, TomoStreamIOC

SCREENS = Path(__file__).resolve().parents[2] / "screens"
MAIN, NAMES = SCREENS / "tomoStream.bob", SCREENS / "tomoStreamPVNames.bob"
PV = re.compile(r"^\$\(P\)\$\(R\)([A-Za-z0-9]+)$")


def pv_names(path: Path) -> list[str]:
    """Every ``pv_name`` of a display file (widgets and their actions), as written."""
    root = ET.parse(path).getroot()
    assert root.tag == "display"
    return [e.text for e in root.iter("pv_name")]


def suffixes(path: Path) -> set[str]:
    found = set()
    for name in pv_names(path):
        match = PV.match(name or "")
        assert match, f"{path.name}: {name!r} is not $(P)$(R)<suffix>"
        found.add(match.group(1))
    return found


def ioc_suffixes() -> set[str]:
    return {k[len("P:"):] for k in TomoStreamIOC("P:").pvdb if "." not in k}


def test_the_main_screen_shows_every_pv_and_opens_the_names_screen():
    assert suffixes(MAIN) == ioc_suffixes()
    files = [e.text for e in ET.parse(MAIN).getroot().iter("file")]
    assert files == [NAMES.name] and (SCREENS / files[0]).exists()


def test_the_names_screen_shows_every_name_pv():
    names = {k.split(":")[-1] for k in ChannelNames("P:").pvdb if "." not in k}
    assert suffixes(NAMES) == names | set(ZOOM_NAMES)


@pytest.mark.parametrize("screen", [MAIN, NAMES], ids=lambda p: p.name)
def test_every_pv_a_screen_names_answers_on_a_running_ioc(ioc, screen):
    group, _, _ = ioc
    p, r = group.prefix.split(":")[0] + ":", "TS:"
    assert p + r == group.prefix
    for name in pv_names(screen):
        full = name.replace("$(P)", p).replace("$(R)", r)
        pv = epics.get_pv(full)
        assert pv.wait_for_connection(5.0), f"{screen.name}: {full} does not answer"
        assert pv.get(timeout=5.0, use_monitor=False) is not None, full
