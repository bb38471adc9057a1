"""What the copy-on-write tests of the served path (test_serve.py, dnf5 in
test_dnf5_cow.py) compare between a root installed copy-on-write and one
installed the stock way: the tree below /opt, rpm -V, shared blocks."""
import hashlib
import os
import subprocess
from pathlib import Path

DB = "/var/lib/rpm"
ENV = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")


def opt_tree(root):
    """{path: (kind, mode, content digest or link target, mtime, links)} below root/opt."""
    out = {}
    for dirpath, dirs, files in os.walk(Path(root) / "opt"):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("l", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("d", st.st_mode)
            else:
                out[rel] = ("f", st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest(),
                            st.st_mtime, st.st_nlink)
    return out


def shared(path):
    """Whether the file shares blocks (filefrag's "shared" extent flag)."""
    r = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True)
    return "shared" in r.stdout


def rpm_v(root):
    """rpm -Va of a root, scripts and dependencies left out (CompletedProcess)."""
    return subprocess.run(["rpm", "--root", str(root), "--dbpath", DB, "-Va", "--nodeps",
                           "--noscripts"], capture_output=True, text=True, env=ENV)
