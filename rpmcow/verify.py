"""Verification of a package while it is transcoded.

The verdict is what the S section stores: an rc (0 OK, 2 failed) and the
lines ``rpmkeys -Kv`` prints for each item, four spaces in front.

Stage order keeps untrusted data away from the decompressors: the header is
checked by librpm (header digests) before any payload byte is decompressed,
the compressed payload's digest is computed by the C input stage as it
streams in, and every file digest is checked by the C layout stage.
"""
from dataclasses import dataclass, field

import rpm

from .errors import DigestMismatchError

RC_OK = 0
RC_FAIL = 2


@dataclass
class Verdict:
    items: list = field(default_factory=list)   # [(label, result, detail)]

    def add(self, label, ok, detail=""):
        self.items.append((label, "OK" if ok else "BAD", detail))

    @property
    def rc(self):
        return RC_OK if all(r == "OK" for _, r, _ in self.items) else RC_FAIL

    @property
    def text(self):
        out = []
        for label, result, detail in self.items:
            line = "    %s: %s" % (label, result)
            if detail:
                line += " (%s)" % detail
            out.append(line + "\n")
        return "".join(out).encode()


def header_items(pkg, verdict):
    """Record the header digests librpm checked while loading the header."""
    h = pkg.header
    if h[rpm.RPMTAG_SHA256HEADER]:
        verdict.add("Header SHA256 digest", True)
    if h[rpm.RPMTAG_SHA1HEADER]:
        verdict.add("Header SHA1 digest", True)


def payload_item(pkg, computed, verdict, strict=True):
    """Compare the compressed payload's digest with the header's."""
    if pkg.payload_digest_algo is None or computed is None:
        return
    expected = pkg.payload_digests[0] if pkg.payload_digests else ""
    ok = computed.hex() == expected.lower()
    label = "Payload %s digest" % pkg.payload_digest_algo.name
    detail = "" if ok else "Expected %s != %s" % (expected, computed.hex())
    verdict.add(label, ok, detail)
    if not ok and strict:
        raise DigestMismatchError("%s: %s: BAD (%s)" % (pkg.nevra, label, detail))
