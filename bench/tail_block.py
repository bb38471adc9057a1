#!/usr/bin/env python3
"""Why an extents install costs about one block per file: the last, partial
block of a file cannot stay shared with the extents file.

    .venv/bin/python bench/tail_block.py [--files 1000]

On a loop-mounted XFS (reflink=1): N files each get one whole block cloned
(FICLONERANGE) from a source file; in the second variant each is then
truncated to 100 bytes, as a file whose content ends mid-block must be; in
the third each clones 100 bytes from a file of exactly those bytes (the
range ends at its source's end of file: what rpmcow's tail store does).
New disk space (df after sync and dropping caches) and FIEMAP's "shared"
flag tell whether the block stayed shared.  (A clone of a partial block is
refused unless it ends at the source's end of file, which is one file per
source.)  Results: bench/results/tail_block.md.
"""
import argparse
import datetime
import fcntl
import os
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402

FICLONERANGE = 0x4020940D
FIEMAP_SHARED = 0x2000


def used(mnt):
    benchlib.drop_caches()
    return benchlib.used_bytes(mnt)


def shared(path):
    """FIEMAP flags of the file's extents, via xfs_io."""
    out = subprocess.run(["xfs_io", "-c", "fiemap -v", path], capture_output=True,
                         text=True, check=True).stdout
    flags = [int(line.split()[-1], 16) for line in out.splitlines()[2:] if line.strip()]
    return bool(flags) and all(f & FIEMAP_SHARED for f in flags)


def variant(mnt, src_fd, name, n, bs, truncate_to, tails=None):
    """tails: a directory of n files of 100 bytes each; each new file clones
    one of them whole (the range ends at its source's end of file: what the
    tail store does) instead of a block of src_fd."""
    d = os.path.join(mnt, name)
    os.mkdir(d)
    before = used(mnt)
    t0 = time.perf_counter()
    for i in range(n):
        fd = os.open(os.path.join(d, "f%d" % i), os.O_WRONLY | os.O_CREAT, 0o644)
        if tails is not None:
            t = os.open(os.path.join(tails, "t%d" % i), os.O_RDONLY)
            fcntl.ioctl(fd, FICLONERANGE, struct.pack("=qQQQ", t, 0, 100, 0))
            os.close(t)
        else:
            fcntl.ioctl(fd, FICLONERANGE, struct.pack("=qQQQ", src_fd, i * bs, bs, 0))
        if truncate_to is not None:
            os.ftruncate(fd, truncate_to)
        os.close(fd)
    elapsed = time.perf_counter() - t0
    new = used(mnt) - before
    return {"new_bytes": new, "per_file_bytes": new / n, "per_file_us": elapsed / n * 1e6,
            "shared": sum(shared(os.path.join(d, "f%d" % i)) for i in range(0, n, max(n // 20, 1))),
            "sampled": len(range(0, n, max(n // 20, 1)))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    args = ap.parse_args()
    benchlib.compile_bytecode()
    res = {"date": datetime.date.today().isoformat(), "machine": benchlib.machine(),
           "files": args.files}
    with benchlib.loop_xfs(1) as xfs:
        mnt = xfs.path
        bs = os.statvfs(mnt).f_bsize
        src = os.path.join(mnt, "src")
        with open(src, "wb") as f:
            f.write(os.urandom(args.files * bs))
        src_fd = os.open(src, os.O_RDONLY)
        try:
            res["block_size"] = bs
            res["clone"] = variant(mnt, src_fd, "clone", args.files, bs, None)
            res["clone_truncate"] = variant(mnt, src_fd, "clone-truncate", args.files, bs, 100)
            tails = os.path.join(mnt, "tails")
            os.mkdir(tails)
            for i in range(args.files):
                with open(os.path.join(tails, "t%d" % i), "wb") as f:
                    f.write(os.urandom(100))
            res["clone_eof"] = variant(mnt, src_fd, "clone-eof", args.files, bs, None,
                                       tails=tails)
        finally:
            os.close(src_fd)
    write(res)


def write(res):
    m = res["machine"]
    lines = ["# A cloned block truncated mid-block is copied", "",
             "Date %s. %d CPUs (%s), kernel %s. Loop-mounted XFS (reflink=1), %d-byte blocks; "
             "%d files; df after sync and dropping caches; FIEMAP on every 20th file."
             % (res["date"], m["cpus"], m["cpu"], m["kernel"], res["block_size"], res["files"]),
             "", "| each file | new disk per file | files whose block is shared | time per file |",
             "|---|--:|--:|--:|"]
    for key, label in (("clone", "one whole block cloned"),
                       ("clone_truncate", "one whole block cloned, then truncated to 100 bytes"),
                       ("clone_eof", "100 bytes cloned from a file of exactly those 100 bytes")):
        r = res.get(key)
        if r:
            lines.append("| %s | %.1f KiB | %d of %d | %s |" % (
                label, r["per_file_bytes"] / 1024, r["shared"], r["sampled"],
                "%.0f µs" % r["per_file_us"] if "per_file_us" in r else "–"))
    lines += ["", "Truncating to a size inside a block zeroes the rest of that block, which is a "
              "write: XFS copies the shared block first.  A clone may end mid-block only where "
              "it ends at its source's end of file: an extents install therefore writes each "
              "file's last, partial block, unless a tail store keeps each tail as a file of its "
              "own to clone it from (docs/install.md, \"Disk space\" and \"Image builds: "
              "shared tails\")."]
    benchlib.save_results("tail_block", res, lines)


if __name__ == "__main__":
    main()
