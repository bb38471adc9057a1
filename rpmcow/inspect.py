"""``rpmcow inspect``: what an extents file (ours or upstream's) contains."""
import os

from . import extents, inputs, native, package
from .errors import BadExtentsError, BadPackageError, NotTranscodedError, RpmcowError



def _alignment(offsets):
    """Largest power of two (up to 64 KiB) dividing every blob offset."""
    align = 65536
    for off in offsets:
        while align > 1 and off % align:
            align //= 2
    return align


def _nevra(fd):
    """(nevra, where the headers end, None), or (None, None, the error) for
    headers that cannot be read."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        pro = native.Input(fd, []).read_prologue()
        return package.nevra(package.load_header(pro)), len(pro.data), None
    except RpmcowError as exc:
        return None, None, exc


def _files_by_digest(fd):
    """{file digest: ([paths], size)} from the header, for the table's
    entries; {} where the header cannot say (a format we cannot parse)."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        ft = package.parse(native.Input(fd, []).read_prologue()).files
        out = {}
        for path, digest, size, flags in zip(ft.paths, ft.digests, ft.sizes, ft.flags):
            if flags & ft.KEYED:
                entry = out.setdefault(digest, ([], size))
                entry[0].append("/" + path.decode("utf-8", "replace").lstrip("/"))
        return out
    except RpmcowError:
        return {}


def _is_package(fd):
    """Whether the file starts with an rpm lead (ed ab ee db)."""
    return os.pread(fd, 4, 0) == inputs.RPM_LEAD_MAGIC


def inspect_path(path, with_table=False):
    fd = inputs.open_file(path)
    try:
        report = {"path": path, "size": os.fstat(fd).st_size}
        nevra, headers_end, error = _nevra(fd)
        report["package"] = nevra
        try:
            s = extents.read_sections(fd)
        except NotTranscodedError:
            if error is not None and _is_package(fd):
                # a package whose headers cannot be read: say why, not just "not transcoded"
                raise BadPackageError("%s: %s" % (path, error)) from None
            report["transcoded"] = False
            return report
        if error is not None:
            # an extents file is its package's headers first: none without them
            raise BadExtentsError("%s: %s" % (path, error)) from None
        report["transcoded"] = True
        report["format_version"] = s.version
        report["headers_end"] = headers_end
        report["offsets"] = {"S": s.s_offset, "T": s.t_offset, "C": s.c_offset}
        if s.version >= 2:
            report["verification"] = {
                "rc": s.s_rc, "ok": s.s_rc == 0,
                "lines": [l.strip() for l in s.s_text.decode("utf-8", "replace").splitlines()],
            }
        offsets = [off for _, off in s.table]
        report["table"] = {"count": len(s.table), "keysize": s.keysize,
                           "alignment": _alignment(offsets) if offsets else None}
        if with_table:
            files = _files_by_digest(fd)
            report["table"]["entries"] = [
                {"digest": d.hex(), "offset": off, "size": files.get(d, ([], None))[1],
                 "files": files.get(d, ([], None))[0]} for d, off in s.table]
        report["input"] = {"length": s.input_len,
                           "digests": {name: d.hex() for name, d in s.input_digests}}
        return report
    finally:
        os.close(fd)


def format_report(r, with_table=False):
    lines = ["%s: %s" % (r["path"], "extents file" if r["transcoded"] else
                         "not an extents file")]
    if r.get("package"):
        lines.append("  package:      %s" % r["package"])
    lines.append("  size:         %d bytes" % r["size"])
    if not r["transcoded"]:
        return "\n".join(lines) + "\n"
    lines.append("  format:       V%d footer; S at %s, T at %d, C at %d"
                 % (r["format_version"], r["offsets"]["S"] or "-", r["offsets"]["T"],
                    r["offsets"]["C"]))
    v = r.get("verification")
    if v is not None:
        lines.append("  verification: %s when transcoded (rc %d); 'rpmcow checksig' judges it "
                     "now" % ("every item OK" if v["ok"] else "NOT every item OK", v["rc"]))
        lines.extend("    " + l for l in v["lines"])
    t = r["table"]
    lines.append("  table:        %s, %d-byte digests, aligned to %s"
                 % ("1 distinct content" if t["count"] == 1 else
                    "%d distinct contents" % t["count"], t["keysize"], t["alignment"] or "-"))
    if with_table:
        for e in t["entries"]:
            names = ", ".join(e.get("files") or ["?"])
            size = "%d bytes" % e["size"] if e.get("size") is not None else "? bytes"
            lines.append("    %12s at %-10d %s  %s" % (size, e["offset"], names, e["digest"]))
    i = r["input"]
    lines.append("  input:        %d bytes" % i["length"])
    lines.extend("    %-7s %s" % (k, v) for k, v in sorted(i["digests"].items()))
    return "\n".join(lines) + "\n"
