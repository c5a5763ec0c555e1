"""A tomostream beamline session: RE, catalog (and its v1 view db), devices, plans and a live view.

Reads profile/tomostream.toml (or $TOMOSTREAM_CONFIG). With no beamline prefixes configured,
starts the simulated beamline and the stream server in this process first. Loaded unchanged
by IPython (``ipython --profile-dir=profile``) and by bluesky-queueserver's RE Manager
(``start-re-manager --startup-dir profile/startup``), which runs the plans and devices listed
in existing_plans_and_devices.yaml (``qserver-list-plans-devices --startup-dir
profile/startup --file-dir profile/startup`` rewrites it) as user_group_permissions.yaml allows.
Runs are journaled in <data_dir>/spool until the catalog holds them; runs kept there (the
catalog was down, a session was killed mid-run) are written into the catalog at start-up.
"""

import os
import tomllib
from pathlib import Path

from tomostream.demo import loopback_ports, simulated_beamline
from tomostream.io.catalog import at_shutdown

_default_config = Path(__file__).resolve().parents[1] / "tomostream.toml"
_config_path = Path(os.environ.get("TOMOSTREAM_CONFIG") or _default_config)
config = tomllib.loads(_config_path.read_text())
_beamline_cfg, _catalog_cfg = config.get("beamline", {}), config.get("catalog", {})
_data_dir = _catalog_cfg.get("data_dir") or None
simulated = not (_beamline_cfg.get("tomoscan_prefix") and _beamline_cfg.get("tomostream_prefix"))

if simulated:
    from tomostream.io.catalog import capture_dir as _capture_dir

    loopback_ports()  # before any Channel Access client is used
    _sim = dict(config.get("simulation", {}))
    _root = _sim.pop("prefix", "sim:")
    _beamline_cm = simulated_beamline(_root, capture_dir=_capture_dir(_data_dir), **_sim)
    beamline = _beamline_cm.__enter__()
    at_shutdown(lambda: _beamline_cm.__exit__(None, None, None))
    TOMOSCAN_PREFIX, TOMOSTREAM_PREFIX = beamline.tomoscan_prefix, beamline.tomostream_prefix
else:
    TOMOSCAN_PREFIX, TOMOSTREAM_PREFIX = _beamline_cfg["tomoscan_prefix"], _beamline_cfg["tomostream_prefix"]

from bluesky import RunEngine  # noqa: E402
from bluesky.callbacks.best_effort import BestEffortCallback  # noqa: E402

from tomostream.devices import TomoScanStream, TomoStream  # noqa: E402
from tomostream.errors import ConnectionLost  # noqa: E402
from tomostream.io import broker_view, open_catalog, replay_spool  # noqa: E402, F401
from tomostream.io import catalog as _cat  # noqa: E402
from tomostream.liveview import LiveView  # noqa: E402
from tomostream.plans import (  # noqa: E402, F401
    ChangeDetector,
    capture,
    retake_dark,
    retake_flat,
    set_recon,
    stream_scan,
    zoom_to,
)

_spool = _cat.spool_dir(_data_dir)
try:
    catalog = open_catalog(_catalog_cfg.get("uri") or None, data_dir=_data_dir,
                           api_key=_catalog_cfg.get("api_key") or os.environ.get("TILED_API_KEY"))
except ConnectionLost as _exc:  # a wrong API key (AccessDenied) stops the session instead
    catalog = None
    print(f"WARNING: {_exc}\nRuns are kept in {_spool} until a session that reaches the catalog "
          f"starts (it writes them in), or replay_spool(open_catalog(...), '{_spool}') is called.")
else:
    try:  # runs kept by earlier sessions (catalog down, session killed mid-run)
        _replayed = replay_spool(catalog, _spool)
    except Exception as _exc:  # the catalog failing now must not stop the session
        print(f"WARNING: runs kept in {_spool} not replayed ({type(_exc).__name__}: {_exc})")
    else:
        if _replayed:
            print(f"runs kept in {_spool} written into the catalog: {', '.join(_replayed)}")
db = None if catalog is None else broker_view(catalog)  # v1 view of the same runs: db[-1].table()
RE = RunEngine({})
RE.subscribe(_cat.catalog_writer(catalog, _spool))
bec = BestEffortCallback()
bec.disable_plots()  # the live view shows the slices; enable with bec.enable_plots()
RE.subscribe(bec)

tomoscan = TomoScanStream(TOMOSCAN_PREFIX, name="tomoscan")
tomostream = TomoStream(TOMOSTREAM_PREFIX, name="tomostream")
tomoscan.wait_for_connection(timeout=10)
tomostream.wait_for_connection(timeout=10)
at_shutdown(tomoscan.destroy)  # shutdown hooks run last-registered first: devices, then servers
at_shutdown(tomostream.destroy)


def live_view(max_rate: float = 5.0) -> LiveView:
    """A matplotlib view of the three slices following tomostream.recon at <= max_rate Hz."""
    ortho = (tomostream.ortho_x.get(), tomostream.ortho_y.get(), tomostream.ortho_z.get())
    return LiveView(tomostream.recon, ortho=ortho, max_rate=max_rate)


print(f"tomostream session: {'simulated beamline' if simulated else 'beamline'} "
      f"{TOMOSCAN_PREFIX} / {TOMOSTREAM_PREFIX}; recon on PVA {tomostream.recon_pva_name.get()!r}")
print("objects: RE, catalog, db, tomoscan, tomostream, stream_scan, capture, set_recon, retake_dark, "
      "retake_flat, ChangeDetector, zoom_to, live_view()")
