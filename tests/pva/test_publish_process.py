"""The slices published from a child process (and in-process), read by an independent p4p client."""

from __future__ import annotations

import os
import signal
import tempfile

import numpy as np
import pytest

from tomostream.pva.publish_process import (
    InlinePublisher,
    ProcessPublisher,
    Published,
    child_env,
)
from tomostream.pva.shm import SHM_DIR


def _ortho(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, 3 * n)).astype(np.float32)


def _finish(pub, count: int = 1, timeout: float = 30.0) -> list[Published]:
    """The next ``count`` finished publications (the first waits for the child to start)."""
    done: list[Published] = []
    for _ in range(int(timeout / 0.5)):
        done += pub.results(timeout=0.5)
        if len(done) >= count:
            return done
    pytest.fail(f"{count} publications not finished within {timeout} s: {done}")


def _publish(pub, name: str, image: np.ndarray, token=None, **kw) -> None:
    slot, buf = pub.buffer(image.shape)
    buf[...] = image
    pub.submit(slot, name, token=token, **kw)


@pytest.fixture(params=["process", "inline"])
def publisher(request):
    pub = ProcessPublisher() if request.param == "process" else InlinePublisher()
    yield pub
    pub.close()


def test_images_ids_and_markers_reach_a_p4p_client(publisher, p4p_ctx, unique_prefix, wait):
    name = unique_prefix + "StreamRecon"
    first = _ortho(16, 1)
    _publish(publisher, name, first, token="first")
    (done,) = _finish(publisher)
    assert (done.token, done.unique_id, done.error) == ("first", 1, None)
    got = []
    sub = p4p_ctx.monitor(name, got.append)
    try:
        wait(lambda: got, timeout=30.0, what="first p4p update")
        np.testing.assert_array_equal(np.asarray(got[-1]), first)
        second = _ortho(16, 2)
        _publish(publisher, name, second, markers=(3, 7, 5), token="second")
        (done,) = _finish(publisher)
        assert (done.token, done.unique_id, done.error) == ("second", 2, None)
        wait(lambda: got[-1].raw.uniqueId == 2, timeout=30.0, what="second p4p update")
    finally:
        sub.close()
    image = np.asarray(got[-1])
    top = second.max()
    assert (image[:16, 3] == top).all() and (image[7, :16] == top).all()
    assert (image[5, 16:] == top).all()
    untouched = np.ones(image.shape, bool)
    untouched[:, 3] = untouched[7, :16] = untouched[5, 16:] = False
    untouched[:, 16 + 3] = untouched[:, 32 + 7] = False
    np.testing.assert_array_equal(image[untouched], second[untouched])


def test_two_buffers_then_none_until_a_result(unique_prefix, made_shm):
    pub = ProcessPublisher()
    try:
        a = pub.buffer((8, 24))
        pub.submit(a[0], unique_prefix + "R", token=1)
        b = pub.buffer((8, 24))
        assert b is not None and b[0] != a[0]
        pub.submit(b[0], unique_prefix + "R", token=2)
        assert pub.full and pub.buffer((8, 24)) is None
        assert sorted(d.token for d in _finish(pub, 2)) == [1, 2]
        assert not pub.full and pub.buffer((8, 24)) is not None
        slot, buf = pub.buffer((16, 48))  # a new shape re-makes the buffers
        assert buf.shape == (16, 48) and buf.dtype == np.float32
        buf[...] = 0.0
        pub.submit(slot, unique_prefix + "R")
        assert _finish(pub)[0].unique_id == 3
    finally:
        pub.close()
    assert made_shm and not [p for p in made_shm if os.path.exists(p)]   # none left behind


@pytest.fixture
def made_shm(monkeypatch) -> list[str]:
    """Paths of the shared-memory files this process makes during the test (another process on
    the machine may make its own meanwhile: a listing of /dev/shm cannot tell them apart)."""
    made: list[str] = []
    mkstemp = tempfile.mkstemp

    def recording(*args, **kwargs):
        fd, path = mkstemp(*args, **kwargs)
        if os.path.dirname(path) == SHM_DIR:
            made.append(path)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", recording)
    return made


def test_a_bad_marker_is_a_reported_failure_not_a_crash(publisher, unique_prefix):
    name = unique_prefix + "StreamRecon"
    _publish(publisher, name, _ortho(8, 0), markers=(99, 0, 0), token="bad")
    (done,) = _finish(publisher)
    assert done.unique_id is None and "ix=99" in done.error
    _publish(publisher, name, _ortho(8, 0), token="good")
    assert _finish(publisher)[0].unique_id == 1


def test_a_killed_child_is_reported_and_replaced_ids_go_on(p4p_ctx, unique_prefix, wait):
    name = unique_prefix + "StreamRecon"
    pub = ProcessPublisher()
    try:
        _publish(pub, name, _ortho(8, 0))
        assert _finish(pub)[0].unique_id == 1
        first = pub.pid
        slot, buf = pub.buffer((8, 24))
        os.kill(first, signal.SIGKILL)
        pub.submit(slot, name, token="lost")
        (done,) = _finish(pub)
        assert done.token == "lost" and done.unique_id is None
        assert "publishing process ended" in done.error
        _publish(pub, name, _ortho(8, 5), token="again")
        (done,) = _finish(pub)
        assert pub.pid != first and (done.unique_id, done.error) == (2, None)
        value = wait(lambda: _get(p4p_ctx, name), timeout=15.0, what="the new child's channel")[0]
        assert value.raw.uniqueId == 2
        np.testing.assert_array_equal(np.asarray(value), _ortho(8, 5))
    finally:
        pub.close()


def _get(ctx, name):
    try:
        return [ctx.get(name, timeout=2.0)]
    except TimeoutError:
        return None


def test_close_ends_the_child_and_the_channel(p4p_ctx, unique_prefix):
    name = unique_prefix + "StreamRecon"
    pub = ProcessPublisher()
    _publish(pub, name, _ortho(8, 0))
    _finish(pub)
    assert p4p_ctx.get(name, timeout=10.0).raw.uniqueId == 1
    child = pub.pid
    pub.close()
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    with pytest.raises(TimeoutError):
        p4p_ctx.get(name, timeout=1.0)


def test_child_env_adds_the_huge_page_tunable_once():
    assert child_env({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    assert child_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"] == \
        "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert child_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})["GLIBC_TUNABLES"] == \
        "glibc.malloc.hugetlb=0"


def test_the_publishing_process_serves_large_blocks_from_the_heap():
    """keep_freed_blocks puts a 64 MB block in the heap (brk), where freed pages are reused;
    glibc otherwise maps blocks that large on their own."""
    import subprocess
    import sys

    script = """
import sys, numpy as np
from tomostream.pva.publish_process import keep_freed_blocks
if sys.argv[1] == "keep":
    assert keep_freed_blocks()
block = np.ones(64 << 18, np.float32)   # 64 MB
address = block.ctypes.data
for line in open("/proc/self/maps"):
    if line.rstrip().endswith("[heap]"):
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        print("heap" if lo <= address < hi else "mapped")
        break
else:
    print("mapped")
"""
    where = {mode: subprocess.run([sys.executable, "-c", script, mode], capture_output=True,
                                  text=True, timeout=60, check=True).stdout.strip()
             for mode in ("keep", "default")}
    assert where == {"keep": "heap", "default": "mapped"}


def test_a_full_shm_is_a_clear_error_not_a_crash(monkeypatch, made_shm):
    """Space for a buffer is reserved before it is written: no room is an error that names it
    (writing into an unbacked mapping would kill the process)."""
    import errno

    from tomostream.errors import TomostreamError

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    pub = ProcessPublisher()
    try:
        monkeypatch.setattr(os, "posix_fallocate", full)
        with pytest.raises(TomostreamError, match="no room for a 1 MB image buffer in /dev/shm"):
            pub.buffer((512, 512))
    finally:
        pub.close()
    assert made_shm and not [p for p in made_shm if os.path.exists(p)]
