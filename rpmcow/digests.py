"""Digest algorithms by the names and numbers rpm uses for them."""
from collections import namedtuple

from .errors import UsageError


# A named tuple, not a dataclass: this module is imported before every
# transcode's header check starts, and dataclasses (through inspect) costs
# ~10 ms of a command's start.
class Algo(namedtuple("Algo", "rpm_id name size")):
    """rpm_id: PGPHASHALGO_* (RPMTAG_FILEDIGESTALGO, PAYLOADDIGESTALGO);
    name: as rpm spells it (rpm2extents arguments, the C section);
    size: digest length in bytes."""
    __slots__ = ()

    @property
    def openssl(self):
        return self.name


ALGOS = [
    Algo(1, "MD5", 16),
    Algo(2, "SHA1", 20),
    Algo(8, "SHA256", 32),
    Algo(9, "SHA384", 48),
    Algo(10, "SHA512", 64),
    Algo(11, "SHA224", 28),
    # rpm 6 (rpmcrypto.h RPM_HASH_SHA3_*): payload and header digests, file digests
    Algo(12, "SHA3-256", 32),
    Algo(14, "SHA3-512", 64),
]
BY_ID = {a.rpm_id: a for a in ALGOS}
BY_NAME = {a.name: a for a in ALGOS}

# rpm's default file digest algorithm when the header names none (MD5)
DEFAULT_FILE_ALGO = BY_ID[1]


def by_name(name):
    """The algorithm called `name` (case-insensitive), or UsageError."""
    algo = BY_NAME.get(name.upper())
    if algo is None:
        raise UsageError("unknown digest algorithm %r (known: %s)"
                         % (name, " ".join(a.name for a in ALGOS)))
    return algo


def by_id(rpm_id):
    return BY_ID.get(rpm_id)


def fd_hexdigests(fd, rpm_ids):
    """{rpm id: hex digest} of the whole file open at fd (read with pread:
    fd's offset is left alone)."""
    import hashlib
    import os
    hs = {i: hashlib.new(BY_ID[i].name.replace("-", "_").lower()) for i in rpm_ids}
    off = 0
    while hs:
        chunk = os.pread(fd, 1 << 20, off)
        if not chunk:
            break
        for h in hs.values():
            h.update(chunk)
        off += len(chunk)
    return {i: h.hexdigest() for i, h in hs.items()}
