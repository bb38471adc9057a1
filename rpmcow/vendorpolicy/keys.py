"""Signing keys for trust binding: key IDs of OpenPGP keys and of package signatures.

No OpenPGP code of ours: key files are read by gpg (``--show-keys`` in a
private empty home), package signatures by librpm (``%{RSAHEADER:pgpsig}``).

A vendor class with ``keys =`` is only that vendor for packages signed by one
of those keys.  Key IDs are 16 upper-case hex digits (the low 64 bits of a v4
fingerprint).  ``None`` means "not known yet" (a repository package before
download); ``""`` means "known to be unsigned".
"""
import os
import re
import shutil
import subprocess
import tempfile

_KEYID = re.compile(r"(?:Key ID|key ID|fingerprint:?) ([0-9a-fA-F]{8,40})")
# OPENPGP: rpm 6's signature array (v6 packages; the first signature counts)
_SIG_TAGS = ("OPENPGP", "RSAHEADER", "DSAHEADER", "SIGPGP", "SIGGPG")


def key_ids(armored_text):
    """Key IDs (primary keys and subkeys) in an OpenPGP public key file
    (armored or binary), as gpg reads it: no OpenPGP parsing of ours.
    ValueError if gpg cannot read it (or is not installed)."""
    gpg = shutil.which("gpg") or shutil.which("gpg2")
    if gpg is None:
        raise ValueError("gpg is not installed: cannot read key files")
    data = armored_text.encode("utf-8", "surrogateescape") \
        if isinstance(armored_text, str) else armored_text
    # a private, empty home: nothing of the user's or root's keyrings is
    # read or changed, and no agent is started
    with tempfile.TemporaryDirectory(prefix="rpmcow-gpg.") as home:
        os.chmod(home, 0o700)
        try:
            r = subprocess.run([gpg, "--homedir", home, "--batch", "--no-tty", "--quiet",
                                "--no-autostart", "--with-colons", "--show-keys"],
                               input=data, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ValueError("gpg cannot read the key file: %s" % exc) from None
    ids = set()
    for line in r.stdout.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sub") and len(fields) > 4 and fields[4]:
            ids.add(fields[4].upper()[-16:])
    if r.returncode != 0 and not ids:
        raise ValueError("gpg cannot read the key file: %s"
                         % r.stderr.decode("utf-8", "replace").strip())
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
            return m.group(1).upper()[-16:]     # a v4 fingerprint ends with the key ID
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
            with open(url[len("file://"):], "rb") as f:
                ids |= key_ids(f.read())
        except (OSError, ValueError):
            return None
    return ids if gpgkey_urls else None
