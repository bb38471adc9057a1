"""rpm configuration of a target root, read in one place.

rpm reads its macro files from the host even with ``--root``; the policy
that should apply to packages installed *into* a root is the root's own.
So for a root other than "/" that has an rpm configuration
(``ROOT/usr/lib/rpm/macros``), its ``%_pkgverify_level`` is read from its
macro files; otherwise the host's, from librpm in this process.

A root's macro files are data, never code: nothing in them is evaluated (no
rpm is run over them, no macro is expanded).  They are scanned in rpm's
order (``_MACROFILES``: each glob expanded and sorted as glob(3) sorts in
the C locale; ``*.rpmnew``, ``*.rpmsave`` and ``*.rpmorig`` skipped, as rpm
does; ``%{_target}`` is the host's, as rpm's own expansion of its macro path
would give) and only definitions of ``%_pkgverify_level`` are taken from
them, with rpm's rules for a macro file: a definition is a line whose first
non-blank character is ``%`` (``#`` lines are comments; ``%define`` and
``%global`` are not forms of a macro file), continued while it ends in a
backslash or has an open ``%{``, ``%(`` or ``%[``; the last definition wins.
Every definition must be a literal level (one of LEVELS): any other value --
anything with a ``%`` in it above all -- is refused (UsageError naming the
file and line), and ``--verify-level`` says the level instead.  No
definition at all: "digest", rpm's default.
"""
import errno
import glob
import os
import re
import stat
from collections import namedtuple

from .errors import UsageError

LEVELS = ("none", "digest", "signature", "all")

# rpm's default macro path, relative to a root (rpmrc.c: macrofiles)
_MACROFILES = [
    "usr/lib/rpm/macros", "usr/lib/rpm/macros.d/macros.*", "usr/lib/rpm/platform/%{_target}/macros",
    "usr/lib/rpm/fileattrs/*.attr", "usr/lib/rpm/redhat/macros", "etc/rpm/macros.*",
    "etc/rpm/macros", "etc/rpm/%{_target}/macros",
]
_SKIPPED = (".rpmnew", ".rpmsave", ".rpmorig")      # rpmInitMacros skips these
_LEVEL_MACRO = "_pkgverify_level"


# A named tuple, not a dataclass (see digests.Algo): every transcode makes
# one before its header check starts.
class Target(namedtuple("Target", "root dbpath", defaults=("/", None))):
    """Where packages go: a root, and the rpm database inside it (None:
    rpm's configured %_dbpath)."""
    __slots__ = ()

    def contains(self, path):
        """Whether `path` (symbolic links resolved) is inside this root."""
        root = os.path.realpath(self.root)
        return os.path.commonpath([root, os.path.realpath(path)]) == root

    def rpm_args(self):
        args = ["--root", self.root]
        if self.dbpath:
            args += ["--dbpath", self.dbpath]
        return args


def _has_own_config(root):
    return (root not in ("/", "") and os.path.realpath(root) != "/"
            and os.path.exists(os.path.join(root, "usr/lib/rpm/macros")))


def _host_target():
    """The host's %{_target} (librpm's, from the host's configuration), or
    None if it is not a plain platform name."""
    import rpm
    value = rpm.expandMacro("%{?_target}")
    return value if re.fullmatch(r"[A-Za-z0-9_.+-]+", value or "") else None


def _macro_files(root):
    """The root's macro files, in the order rpm reads them."""
    target = None
    out = []
    for pattern in _MACROFILES:
        if "%{_target}" in pattern:
            target = target or _host_target()
            if target is None:
                continue
            pattern = pattern.replace("%{_target}", target)
        if any(c in pattern for c in "*?["):
            # glob(3) sorts with strcoll; librpm in a Python process: the C locale
            # (glob's root_dir needs Python 3.10; RHEL 9 has 3.9)
            prefix = os.path.join(glob.escape(root), "")
            names = sorted((os.path.relpath(p, root) for p in glob.glob(prefix + pattern)),
                           key=os.fsencode)
        else:
            names = [pattern]
        out += [os.path.join(root, n) for n in names if not n.endswith(_SKIPPED)]
    return out


def _logical_lines(text):
    """(first line number, logical line) of a macro file, as rpm's rdcl()
    reads it: only a line starting (after blanks) with % is continued, while
    it ends in a backslash or has an open %{, %( or %[ (the newline kept)."""
    lines = text.split("\n")
    last_nl = lines[-1] == ""           # the last line has its newline
    if last_nl:
        lines.pop()
    i = 0
    while i < len(lines):
        start = i
        buf = lines[i].rstrip("\r")
        i += 1
        if not buf.lstrip(" \t").startswith("%"):
            yield start + 1, buf
            continue
        depth = {"{": 0, "(": 0, "[": 0}
        pos = 0
        while True:
            pos = _scan(buf, pos, depth)
            if not (buf.endswith("\\") or any(depth.values())):
                break
            if i >= len(lines):
                if last_nl:
                    buf += "\n"            # kept, as rdcl keeps it, before end of file
                break
            buf += "\n" + lines[i].rstrip("\r")
            pos += 1
            i += 1
        yield start + 1, buf


_CLOSE = {"}": "{", ")": "(", "]": "["}


def _nest(depth, c):
    """Within an open %{, %( or %[: a bracket of its kind nests deeper, its
    closing one comes back up (rdcl's and doDefine's counting)."""
    if c in depth:
        if depth[c] > 0:
            depth[c] += 1
    elif c in _CLOSE and depth[_CLOSE[c]] > 0:
        depth[_CLOSE[c]] -= 1


def _scan(buf, pos, depth):
    """Count %{ %( %[ and their nesting in buf[pos:] (rdcl's scan); the
    position where the scan ended."""
    n = len(buf)
    while pos < n:
        c = buf[pos]
        if c == "\\":
            if pos + 1 < n:
                pos += 1
        elif c == "%":
            nxt = buf[pos + 1:pos + 2]
            if nxt in depth:
                depth[nxt] += 1
                pos += 1
            elif nxt == "%":
                pos += 1
        else:
            _nest(depth, c)
        pos += 1
    return pos


def _definition(line):
    """(name, opts or None, body or None) of a macro file's logical line
    that starts with %, as rpm's doDefine() parses it; body None: rpm would
    refuse the definition (unterminated)."""
    s = line.lstrip(" \t")[1:].lstrip(" \t")
    m = re.match(r"[A-Za-z0-9_]*", s)
    name, s = m.group(0), s[m.end():]
    opts = None
    if s.startswith("("):
        if ")" not in s:
            return name, None, None
        opts, s = s[1:].split(")", 1)
    s = s.lstrip(" \t")
    if s.startswith("{"):                       # {...} grouping: taken as written
        level, i = 0, 0
        while i < len(s):
            if s[i] == "\\":
                i += 2
                continue
            if s[i] == "}":
                level -= 1
                if level <= 0:
                    return name, opts, s[1:i]
            elif s[i] == "{":
                level += 1
            i += 1
        return name, opts, None
    body = []
    depth = {"{": 0, "(": 0, "[": 0}
    i = 0
    while i < len(s) and (depth["{"] or depth["("] or s[i] not in "\r\n"):
        c = s[i]
        if c == "\\":
            if i + 1 < len(s):
                i += 1                          # the backslash goes, the next character stays
        elif c == "%":
            nxt = s[i + 1:i + 2]
            if nxt in depth:
                depth[nxt] += 1
                body.append(c)
                i += 1
            elif nxt == "%":
                body.append(c)
                i += 1
        else:
            _nest(depth, c)
        body.append(s[i])
        i += 1
    if any(depth.values()):
        return name, opts, None
    return name, opts, "".join(body).rstrip(" \t\r\n")


def _read_macro_file(path):
    """The text of a macro file, or None where rpm would read nothing
    (missing, dangling link, not a regular file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise UsageError("cannot read %s: %s" % (path, exc.strerror)) from None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            return f.read().decode("latin-1")
        except OSError as exc:
            raise UsageError("cannot read %s: %s" % (path, exc.strerror)) from None


def root_verify_level(root):
    """The %_pkgverify_level a root's own macro files define (the last
    definition), or None; UsageError for a definition that is not a literal
    level.  Nothing is evaluated."""
    level = None
    for path in _macro_files(root):
        text = _read_macro_file(path)
        if text is None or _LEVEL_MACRO not in text:
            continue
        for lineno, line in _logical_lines(text):
            if not line.lstrip(" \t").startswith("%"):
                continue
            name, opts, body = _definition(line)
            if name != _LEVEL_MACRO:
                continue
            if opts is not None or body not in LEVELS:
                shown = line.lstrip(" \t")
                raise UsageError(
                    "%s: line %d: %r is not a literal verification level (one of: %s); "
                    "rpmcow does not evaluate a target root's macros -- give --verify-level "
                    "instead" % (path, lineno, shown if len(shown) <= 100 else shown[:100] + "...",
                                 ", ".join(LEVELS)))
            level = body
    return level


def check_level(level):
    """UsageError unless level is empty (the root's) or a level rpm knows."""
    if level and level not in LEVELS:
        raise UsageError("unknown verification level %r (one of: %s)" % (level, ", ".join(LEVELS)))


def verify_level(target, override=None):
    """The effective %_pkgverify_level: the override, else the root's."""
    if override:
        level = override
    elif not _has_own_config(target.root):
        level = rpmkeys_verify_level()      # the host's: read in-process
    else:
        level = root_verify_level(target.root) or "digest"
    check_level(level)
    return level


def rpmkeys_verify_level():
    """The %_pkgverify_level rpmkeys applies (rpm reads the host's macro
    files even with --root), read by librpm in this process."""
    import rpm
    return rpm.expandMacro("%{?_pkgverify_level}") or "digest"


def package_digest_algos():
    """The digests of the whole package file rpm records in its database
    (rpm 6: ``%_pkgverify_digests``, "8:10" -- SHA-256 and SHA-512 -- by
    default; RPMTAG_PACKAGEDIGESTS), as PGPHASHALGO numbers rpmcow can
    compute, in rpm's order; [] where librpm records none (rpm < 6).  The
    installing process's librpm, like rpm: the host's macro files."""
    import rpm
    from .digests import BY_ID
    ids = []
    for field in rpm.expandMacro("%{?_pkgverify_digests}").split(":"):
        field = field.strip()
        if field.isdigit() and int(field) in BY_ID and int(field) not in ids:
            ids.append(int(field))
    return ids
