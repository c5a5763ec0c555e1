"""A process that exits with monitors and a server still running exits cleanly.

pvapy threads that call into Python while the interpreter finalizes made glibc abort the
process ("FATAL: exception not rethrown") after all its work had succeeded; monitors and the
shared server are now stopped at exit.
"""

from __future__ import annotations

import subprocess
import sys

LEAKY = """
import threading, time
import numpy as np
from tomostream.pva import ImageSubscriber, LatestValue, PvaChannels, from_ntnda, to_ntnda

channels = PvaChannels()
name = {name!r}
image = np.zeros((64, 64), np.uint16)
channels.add(name, to_ntnda(image, 1))
for _ in range(3):
    ImageSubscriber(name).start()
LatestValue(name, from_ntnda, on_change=lambda frame: None).start()

def pump():
    uid = 2
    while True:
        channels.update(name, to_ntnda(image, uid))
        uid += 1
        time.sleep(0.001)

threading.Thread(target=pump, daemon=True).start()
time.sleep(1.0)
print("leaving with everything running", flush=True)
"""


def test_exit_with_monitors_running_is_clean(unique_prefix):
    code = LEAKY.format(name=unique_prefix + "Image")
    for _ in range(4):  # the abort needed a callback to land during finalization: ~1 run in 2
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout[-500:] + done.stderr[-2000:]
        assert "leaving with everything running" in done.stdout
        assert "FATAL" not in done.stderr
