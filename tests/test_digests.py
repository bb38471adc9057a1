"""The core's digests (csrc/digest.c, csrc/blockhash.c) against hashlib.

SHA-256 and MD5 run on the core's own block functions where the CPU has the
x86 SHA extensions, and several streams over the same bytes are hashed
together (interleaved on one core): the C section's digest of the whole
input, the payload digest from the payload's start, the legacy MD5 from the
header's start.  Every combination, offset and chunking must give exactly
hashlib's digests, on both backends (OpenSSL's is forced with
RPMCOW_DIGESTS=openssl, read once per process: hence the subprocess).
"""
import hashlib
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from rpmcow import native

ALGOS = ["SHA256", "MD5", "SHA1", "SHA512", "SHA224", "SHA384"]
HASHLIB = {"SHA256": "sha256", "MD5": "md5", "SHA1": "sha1", "SHA512": "sha512",
           "SHA224": "sha224", "SHA384": "sha384"}
# lengths around the padding boundaries (55/56 and 63/64 mod 64)
EDGES = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 4095, 4096, 65536 + 55]


def _has_sha_extensions():
    try:
        with open("/proc/cpuinfo") as f:
            return " sha_ni" in f.read()
    except OSError:
        return False


def _together(names, data, starts, cuts):
    """Hash data[start_i:] for every (name_i, start_i), fed in the chunks
    `cuts` makes of data (each stream joins at its start), with
    rc_digest_update_together; returns hex digests."""
    d = native.Digests(names)
    bounds = [0] + sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]
    for lo, hi in zip(bounds, bounds[1:]):
        d.update(*[data[max(lo, s):hi] if hi > s else b"" for s in starts])
    return [x.hex() for x in d.digests()]


def _expected(names, data, starts):
    return [hashlib.new(HASHLIB[n], data[s:]).hexdigest() for n, s in zip(names, starts)]


def test_backend_is_the_sha_extensions_where_the_cpu_has_them():
    expected = "sha-ni" if _has_sha_extensions() and os.uname().machine == "x86_64" else "openssl"
    assert native.digest_backend() == expected


@pytest.mark.parametrize("name", ["SHA256", "MD5"])
@pytest.mark.parametrize("n", EDGES)
def test_padding_boundaries(name, n):
    data = bytes((i * 131 + 7) & 0xFF for i in range(n))
    assert _together([name], data, [0], []) == _expected([name], data, [0])


def test_the_input_digests_layout():
    """The transcoder's case: SHA-256 of everything, SHA-256 of the payload,
    MD5 of header + payload, fed in 1 MiB chunks."""
    data = os.urandom(3 * (1 << 20) + 12345)
    starts = [0, 98765, 1234]
    names = ["SHA256", "SHA256", "MD5"]
    cuts = range(1 << 20, len(data), 1 << 20)
    assert _together(names, data, starts, cuts) == _expected(names, data, starts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=0, max_size=3000),
       streams=st.lists(st.tuples(st.sampled_from(ALGOS), st.integers(0, 3000)),
                        min_size=1, max_size=6),
       cuts=st.lists(st.integers(0, 3000), max_size=12))
def test_any_streams_offsets_and_chunks(data, streams, cuts):
    names = [n for n, _ in streams]
    starts = [min(s, len(data)) for _, s in streams]
    assert _together(names, data, starts, cuts) == _expected(names, data, starts)


@settings(max_examples=25, deadline=None)
@given(size=st.integers(0, 1 << 18), seed=st.integers(0, 2**32 - 1),
       chunk=st.sampled_from([1, 63, 64, 65, 4096, 100000, 1 << 20]))
def test_large_inputs_in_fixed_chunks(size, seed, chunk):
    data = (seed.to_bytes(4, "little") * (size // 4 + 1))[:size]
    data = hashlib.shake_256(data).digest(size) if size else b""
    names = ["SHA256", "SHA256", "MD5", "SHA256", "MD5"]
    starts = [0, size // 3, size // 5, size // 2, 0]
    cuts = range(chunk, size, chunk)
    assert _together(names, data, starts, cuts) == _expected(names, data, starts)


def test_the_openssl_backend_gives_the_same_digests():
    """The fallback (other CPUs, RPMCOW_DIGESTS=openssl) on this machine."""
    code = """
import json, sys
from rpmcow import native
sys.path.insert(0, %r)
from test_digests import _together
data = bytes(range(256)) * 4099
print(json.dumps([native.digest_backend(),
                  _together(["SHA256", "SHA256", "MD5", "SHA1"], data, [0, 777, 99, 5],
                            [1000, 65536, 300000])]))
""" % os.path.dirname(__file__)
    env = dict(os.environ, RPMCOW_DIGESTS="openssl")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    backend, digests = json.loads(out)
    data = bytes(range(256)) * 4099
    assert backend == "openssl"
    assert digests == _expected(["SHA256", "SHA256", "MD5", "SHA1"], data, [0, 777, 99, 5])


@settings(max_examples=60, deadline=None)
@given(key=st.binary(max_size=200), msg=st.binary(max_size=5000))
def test_one_shot_sha256_and_hmac_agree_with_hashlib(key, msg):
    """The record's digests (rpmcow.record: the headers' SHA-256 and the
    verdict's HMAC) come from the core, not hashlib: they must be the same.
    Keys longer than SHA-256's 64-byte block are hashed first by HMAC."""
    import hmac
    assert native.sha256(msg) == hashlib.sha256(msg).digest()
    assert native.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()
