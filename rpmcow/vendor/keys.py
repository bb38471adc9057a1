"""Signing keys for trust binding: key IDs of OpenPGP keys and of package signatures.

A vendor class with ``keys =`` is only that vendor for packages signed by one
of those keys.  Key IDs are 16 upper-case hex digits (the low 64 bits of a v4
fingerprint).  ``None`` means "not known yet" (a repository package before
download); ``""`` means "known to be unsigned".
"""
import base64
import hashlib
import re

_KEYID = re.compile(r"Key ID ([0-9a-fA-F]{8,16})")
_SIG_TAGS = ("RSAHEADER", "DSAHEADER", "SIGPGP", "SIGGPG")


def _dearmor(text):
    lines = text.splitlines()
    out, inside, body = [], False, False
    for line in lines:
        if line.startswith("-----BEGIN PGP PUBLIC KEY BLOCK"):
            inside, body, chunk = True, False, []
            continue
        if line.startswith("-----END PGP PUBLIC KEY BLOCK"):
            if inside:
                out.append(base64.b64decode("".join(c for c in chunk if not c.startswith("="))))
            inside = False
            continue
        if inside:
            if not body:
                if not line.strip():
                    body = True
                continue
            chunk.append(line.strip())
    return out


def _packets(data):
    i = 0
    while i < len(data):
        tag_byte = data[i]
        i += 1
        if not tag_byte & 0x80:
            raise ValueError("not an OpenPGP packet")
        if tag_byte & 0x40:                       # new format
            tag = tag_byte & 0x3F
            first = data[i]
            if first < 192:
                length, i = first, i + 1
            elif first < 224:
                length, i = ((first - 192) << 8) + data[i + 1] + 192, i + 2
            elif first == 255:
                length, i = int.from_bytes(data[i + 1:i + 5], "big"), i + 5
            else:
                raise ValueError("partial-length packets are not keys")
        else:                                      # old format
            tag = (tag_byte >> 2) & 0x0F
            ltype = tag_byte & 3
            size = {0: 1, 1: 2, 2: 4}.get(ltype)
            if size is None:
                length, i = len(data) - i, i
            else:
                length, i = int.from_bytes(data[i:i + size], "big"), i + size
        yield tag, data[i:i + length]
        i += length


def key_ids(armored_text):
    """Key IDs (primary keys and subkeys) in an ASCII-armored public key file."""
    ids = set()
    for blob in _dearmor(armored_text):
        for tag, body in _packets(blob):
            if tag in (6, 14) and body and body[0] == 4:
                fpr = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest()
                ids.add(fpr[-16:].upper())
    return ids


def header_key_id(hdr):
    """Key ID of the signature in an rpm header, "" if unsigned."""
    for tag in _SIG_TAGS:
        try:
            text = hdr.format("%%{%s:pgpsig}" % tag)
        except Exception:           # noqa: BLE001 - tag unknown to this rpm
            continue
        m = _KEYID.search(text or "")
        if m:
            return m.group(1).upper()
    return ""


def installed_key_ids(root, names):
    """{(name, evr, arch): keyid} of installed packages with these names."""
    import rpm
    ts = rpm.TransactionSet(root or "/")
    out = {}
    for name in names:
        for hdr in ts.dbMatch("name", name):
            epoch = hdr["epoch"] or 0
            evr = ("%s:" % epoch if epoch else "") + "%s-%s" % (hdr["version"], hdr["release"])
            out[(hdr["name"], evr, hdr["arch"] or "noarch")] = header_key_id(hdr)
    return out


def file_key_id(path, root="/"):
    """Key ID of a package file's signature ("" if unsigned)."""
    import os

    import rpm
    ts = rpm.TransactionSet(root or "/")
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
    fd = os.open(path, os.O_RDONLY)
    try:
        hdr = ts.hdrFromFdno(fd)
    finally:
        os.close(fd)
    return header_key_id(hdr)


def repo_key_ids(gpgkey_urls):
    """Key IDs of a repository's gpgkey= files that are local (file://);
    None when any of them cannot be read here (then nothing is inferred)."""
    ids = set()
    for url in gpgkey_urls or ():
        if not url.startswith("file://"):
            return None
        try:
            with open(url[len("file://"):], encoding="ascii", errors="replace") as f:
                ids |= key_ids(f.read())
        except (OSError, ValueError):
            return None
    return ids if gpgkey_urls else None
