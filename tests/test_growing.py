"""rpmcow.growing: transcoding a package while a download writes it in place
(as librepo does) -- it follows the bytes as they arrive, and gives up on a
file that is rewritten, removed, or left short when the downloads end."""
import os
import threading
from pathlib import Path

import pytest

from rpmcow import cache, extents, growing, rpmconfig, transcode

CORPUS = Path(__file__).resolve().parent / "corpus"


def a_package():
    for p in sorted(CORPUS.rglob("*.rpm")):
        if 1 << 20 <= p.stat().st_size <= 16 << 20:
            return p
    pytest.skip("no package of 1-16 MiB in the corpus")


class Download:
    """Writes `data` into `path` in chunks, in place; holds the last chunk
    back until release() (or writes something else with rewrite())."""

    def __init__(self, path, data, chunk=64 << 10):
        self.path, self.data, self.chunk = path, data, chunk
        self.last = threading.Event()
        self.rewrite_instead = None
        path.write_bytes(b"")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        head = self.data[:-self.chunk]
        with open(self.path, "ab") as f:
            for i in range(0, len(head), self.chunk):
                f.write(head[i:i + self.chunk])
                f.flush()
        self.last.wait(30)
        if self.rewrite_instead is not None:
            self.path.write_bytes(self.rewrite_instead)      # truncates: a restart
            return
        with open(self.path, "ab") as f:
            f.write(self.data[-self.chunk:])

    def release(self):
        self.last.set()


def sections(path):
    with open(path, "rb") as f:
        return extents.read_sections(f.fileno())


def kw():
    return dict(target=rpmconfig.Target(), enforce=False, deny=[])


def test_it_transcodes_the_bytes_as_they_arrive(tmp_path):
    """Most of the payload is read while the last chunk is still missing;
    once it arrives the extents file is complete, and it is the one the
    finished package gives (cache.made_from)."""
    pkg = a_package()
    data = pkg.read_bytes()
    dl = tmp_path / "p.rpm"
    out = tmp_path / "p.cow.rpm"
    seen = []
    progressed = threading.Event()

    def progress(done, total):
        seen.append(done)
        if done >= len(data) // 2:
            progressed.set()

    download = Download(dl, data)
    result = {}

    def run():
        result["r"] = growing.transcode_while_written(str(dl), len(data), str(out),
                                                      progress=progress, **kw())

    t = threading.Thread(target=run)
    t.start()
    try:
        assert progressed.wait(30), "the transcoder did not read ahead of the download: %s" % seen
        assert not out.exists()               # not before the whole package is there
    finally:
        download.release()
        t.join(60)
    assert result["r"].input_len == len(data)
    assert cache.made_from(str(out), str(dl))
    # what a transcode of the finished file gives: byte for byte up to the
    # S section, whose record binds each output file (its inode, mtime)
    again = tmp_path / "again.cow.rpm"
    transcode.transcode_path(str(dl), str(again), **kw())
    a, b = out.read_bytes(), again.read_bytes()
    sa, sb = (sections(p) for p in (out, again))
    assert sa.s_offset == sb.s_offset and a[:sa.s_offset] == b[:sb.s_offset]
    assert (sa.table, sa.input_digests) == (sb.table, sb.input_digests)


def test_a_download_that_restarts_is_abandoned(tmp_path):
    pkg = a_package()
    data = pkg.read_bytes()
    dl, out = tmp_path / "p.rpm", tmp_path / "p.cow.rpm"
    download = Download(dl, data)
    download.rewrite_instead = data[:1000]
    threading.Timer(0.3, download.release).start()
    with pytest.raises(growing.Abandoned, match="rewritten while it was downloaded"):
        growing.transcode_while_written(str(dl), len(data), str(out), **kw())
    assert sorted(os.listdir(tmp_path)) == ["p.rpm"]          # nothing half-written


def test_a_download_left_short_is_abandoned_when_the_downloads_end(tmp_path):
    pkg = a_package()
    data = pkg.read_bytes()
    dl, out = tmp_path / "p.rpm", tmp_path / "p.cow.rpm"
    download = Download(dl, data)
    over = threading.Event()
    threading.Timer(0.3, over.set).start()
    try:
        with pytest.raises(growing.Abandoned, match="the downloads ended with"):
            growing.transcode_while_written(str(dl), len(data), str(out), stop=over, **kw())
    finally:
        download.release()
    assert not out.exists()


def test_a_removed_download_is_abandoned(tmp_path):
    pkg = a_package()
    data = pkg.read_bytes()
    dl, out = tmp_path / "p.rpm", tmp_path / "p.cow.rpm"
    download = Download(dl, data)
    threading.Timer(0.3, dl.unlink).start()
    try:
        with pytest.raises(growing.Abandoned, match="removed while it was downloaded"):
            growing.transcode_while_written(str(dl), len(data), str(out), **kw())
    finally:
        download.rewrite_instead = b""
        download.release()
    assert not out.exists()
