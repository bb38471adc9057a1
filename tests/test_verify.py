"""Verification at transcode time, policy, and checksig that is never stale.

Real signatures from the corpus (openSUSE, rpm.org test keys, v3), and
packages signed here with gpg + rpmsign (OK, NOKEY, tampered payload,
tampered header, unsigned, DSA/SHA1).
"""
import os
import stat
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import corpus_path, unbound
from rpmcow import checksig, extents, native, package, record, rpmconfig, transcode, verify
from rpmcow.errors import RpmcowError, VerificationError

ROOT = Path(__file__).resolve().parents[1]
CORPUS = corpus_path()
TESTDATA = CORPUS / "rpm-testdata"
RPMORG_KEY = TESTDATA / "rpm.org-rsa-2048-test.pub"


def _import(target, *keys):
    """Import keys; {key file name: rpmkeys' complaint} for those refused."""
    refused = {}
    for k in keys:
        r = subprocess.run(["rpmkeys", *target.rpm_args(), "--import", str(k)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            refused[Path(k).name] = (r.stderr or r.stdout).strip()
    return refused


# key files keyed_root's rpm refused to import (rpm 6's rpm-sequoia policy
# refuses keys bound with SHA-1 signatures, among them openSUSE's old key)
KEYED_ROOT_REFUSED = {}


@pytest.fixture
def empty_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    return rpmconfig.Target(root=str(root), dbpath="/var/lib/rpm")


@pytest.fixture(scope="session")
def keyed_root(tmp_path_factory):
    """A root with every key of corpus/keys and the rpm.org test key."""
    root = tmp_path_factory.mktemp("keyed")
    t = rpmconfig.Target(root=str(root), dbpath="/var/lib/rpm")
    KEYED_ROOT_REFUSED.update(_import(t, *sorted((CORPUS / "keys").iterdir()), RPMORG_KEY))
    return t


def _rpmkeys(target, path, verbose=True):
    r = subprocess.run(["rpmkeys", "-Kv" if verbose else "-K", *target.rpm_args(), str(path)],
                       capture_output=True, text=True)
    return r.returncode, r.stdout


def _transcode(src, dst, target, level="none"):
    return transcode.transcode_path(str(src), str(dst), target=target, level=level)


def _checksig(target, path, verbose=False, files=False):
    import io
    out, err = io.StringIO(), io.StringIO()
    rc = checksig.checksig([str(path)], target, verbose=verbose, files=files, out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def _corpus_packages():
    return sorted(p for d in ("real", "rpm-testdata") for p in (CORPUS / d).glob("*.rpm*"))


# ---- whole corpus: our verdict is rpmkeys' verdict -------------------------

@pytest.mark.parametrize("pkg", _corpus_packages(), ids=lambda p: p.name)
def test_verdict_and_checksig_equal_rpmkeys_on_original(pkg, keyed_root, tmp_path):
    rc, text = _rpmkeys(keyed_root, pkg)
    expected = verify.parse_items(text)
    out = tmp_path / "x.rpme"
    try:
        r = _transcode(pkg, out, keyed_root)
    except RpmcowError:
        assert any(i.result == "BAD" for i in expected) or "corrupted" in pkg.name
        return
    assert r.verdict.items == expected
    assert r.verdict.rc == (0 if rc == 0 else 2)
    crc, summary, _ = _checksig(keyed_root, out)
    _, rpm_summary = _rpmkeys(keyed_root, pkg, verbose=False)
    assert summary.split(": ", 1)[1] == rpm_summary.split(": ", 1)[1]
    assert (crc == 0) == (rc == 0)


# ---- real signatures ---------------------------------------------------------

OPENSUSE_SIGNED = ["mc-4.8.21-2.1.x86_64.rpm", "tmpwatch-2.11-6.6.x86_64.rpm",
                   "dnf-automatic-4.2.6-1.3.noarch.rpm", "tasque-0.1.12-12.7.x86_64.rpm"]


OPENSUSE_KEY = "opensuse__RPM-GPG-KEY-openSUSE"      # b88b2fd43dbdc284, signed them


def _nokey_without_the_key(src, roots, empty_root, tmp_path):
    """Refused (NOKEY) at level signature in each of roots; stored NOKEY at
    level digest."""
    for target in roots:
        with pytest.raises(VerificationError, match="NOKEY"):
            _transcode(src, tmp_path / "b", target, level="signature")
        assert not (tmp_path / "b").exists()
    r = _transcode(src, tmp_path / "c", empty_root, level="digest")
    assert r.verdict.rc == 2
    assert any(i.result == "NOKEY" for i in r.verdict.items)


@pytest.mark.parametrize("name", OPENSUSE_SIGNED)
def test_opensuse_signatures_ok_with_keys_nokey_without(name, keyed_root, empty_root, tmp_path):
    src = CORPUS / "real" / name
    if OPENSUSE_KEY in KEYED_ROOT_REFUSED:
        # what can still be checked: without the key, NOKEY (refused at level signature)
        _nokey_without_the_key(src, (keyed_root, empty_root), empty_root, tmp_path)
        pytest.skip("this host's rpm refuses to import the key that signed %s (%s): %s"
                    % (name, OPENSUSE_KEY, KEYED_ROOT_REFUSED[OPENSUSE_KEY].splitlines()[0]))
    r = _transcode(src, tmp_path / "a", keyed_root, level="signature")
    assert r.verdict.rc == 0
    assert any(i.is_signature and i.result == "OK" for i in r.verdict.items)
    _nokey_without_the_key(src, (empty_root,), empty_root, tmp_path)


@pytest.mark.parametrize("name", ["hello-2.0-1.x86_64-signed.rpm",
                                  "hello-2.0-1.x86_64-v3-signed.rpm",
                                  "hlinktest-1.0-1.noarch-v3sig.rpm"])
def test_rpm_test_keys_v3_and_v4(name, empty_root, tmp_path):
    _import(empty_root, RPMORG_KEY)
    r = _transcode(TESTDATA / name, tmp_path / "a", empty_root, level="all")
    sigs = [i for i in r.verdict.items if i.is_signature]
    assert sigs and all(i.result == "OK" for i in sigs)
    if "v3-signed" in name:     # rpm 4: "Header V3 RSA/SHA256 Signature"; 6: "Header OpenPGP V3 ..."
        assert any(re.match(r"Header (OpenPGP )?V3 ", i.label) for i in sigs)


def test_corrupted_package_is_bad_and_not_transcoded(empty_root, tmp_path):
    out = tmp_path / "out.rpme"
    with pytest.raises(RpmcowError):
        _transcode(TESTDATA / "hello-2.0-1.x86_64-corrupted.rpm", out, empty_root, "digest")
    assert list(tmp_path.glob("out*")) == [] and list(tmp_path.glob(".out*")) == []


# ---- packages signed here ----------------------------------------------------

@pytest.fixture(scope="session")
def signer(tmp_path_factory):
    """gpg keys (RSA and DSA) and a function signing a package with one."""
    home = tmp_path_factory.mktemp("gnupg")
    os.chmod(home, 0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    keys = {}
    for kind, algo in (("rsa", "rsa2048"), ("dsa", "dsa1024")):
        uid = "rpmcow %s test <%s@rpmcow.invalid>" % (kind, kind)
        subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                        "--quick-gen-key", uid, algo, "sign", "never"],
                       env=env, check=True, capture_output=True)
        pub = home / ("%s.pub" % kind)
        pub.write_bytes(subprocess.run(["gpg", "--armor", "--export", uid], env=env,
                                       check=True, capture_output=True).stdout)
        keys[kind] = (uid, pub)

    def sign(src, dst, kind="rsa", digest="sha256"):
        shutil.copy(src, dst)
        os.chmod(dst, 0o644)
        uid = keys[kind][0]
        subprocess.run(["rpmsign", "--addsign", "--define", "_gpg_name %s" % uid,
                        "--define", "__gpg /usr/bin/gpg", "--define", "_gpg_path %s" % home,
                        "--define", "_gpg_digest_algo %s" % digest, str(dst)],
                       env=env, check=True, capture_output=True)
        return dst

    sign.keys = keys
    yield sign
    # gpg started an agent for this home: stop it with the session
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], env=env,
                   capture_output=True)


def _headers_end(data):
    sil, sdl = struct.unpack(">II", data[104:112])
    sig = 16 + 16 * sil + sdl
    hoff = 96 + sig + (-sig) % 8
    il, dl = struct.unpack(">II", data[hoff + 8:hoff + 16])
    return hoff, hoff + 16 + 16 * il + dl


UNSIGNED = TESTDATA / "hello-2.0-1.x86_64.rpm"


def test_signed_here_ok_then_nokey_then_key_import_flips_checksig(signer, empty_root, tmp_path):
    pkg = signer(UNSIGNED, tmp_path / "s.rpm")
    out = tmp_path / "s.rpme"
    r = _transcode(pkg, out, empty_root, level="digest")       # NOKEY: allowed at digest
    assert r.verdict.rc == 2
    rc, summary, _ = _checksig(empty_root, out)
    assert rc == 1 and "SIGNATURES NOT OK" in summary
    with pytest.raises(VerificationError, match="NOKEY"):
        _transcode(pkg, tmp_path / "t.rpme", empty_root, level="signature")
    _import(empty_root, signer.keys["rsa"][1])
    rc, text, _ = _checksig(empty_root, out, verbose=True)      # no re-transcoding
    assert rc == 0, text
    # rpm 4: "Signature, key ID 1a2b3c4d: OK"; 6: "signature, key fingerprint: <hex>: OK"
    assert "NOKEY" not in text and re.search(r"[Ss]ignature, key (ID|fingerprint:) [0-9a-f]+: OK",
                                             text), text
    r = _transcode(pkg, tmp_path / "u.rpme", empty_root, level="all")
    assert r.verdict.rc == 0


def test_dsa_sha1_signature(signer, empty_root, tmp_path):
    pkg = signer(UNSIGNED, tmp_path / "d.rpm", kind="dsa", digest="sha1")
    refused = _import(empty_root, signer.keys["dsa"][1])
    rc, text = _rpmkeys(empty_root, pkg)
    if not re.search(r"DSA/SHA1 [Ss]ignature.*: OK$", text, re.M):
        # rpm 6 (rpm-sequoia) refuses SHA-1 key bindings and DSA/SHA1 signatures:
        # rpmcow says what rpmkeys says, and does not take it for a signature
        r = _transcode(pkg, tmp_path / "d.rpme", empty_root, level="digest")
        assert r.verdict.items == verify.parse_items(text)
        with pytest.raises(VerificationError):
            _transcode(pkg, tmp_path / "e.rpme", empty_root, level="signature")
        pytest.skip("this host's rpm does not verify DSA/SHA1 signatures (key import: %s; "
                    "rpmkeys: %s)" % ((list(refused.values()) or ["imported"])[0].splitlines()[-1],
                                      " ".join(text.split())))
    r = _transcode(pkg, tmp_path / "d.rpme", empty_root, level="signature")
    assert any("DSA/SHA1" in i.label and i.result == "OK" for i in r.verdict.items)


def test_tampered_payload_after_signing_is_rejected(signer, empty_root, tmp_path):
    pkg = signer(UNSIGNED, tmp_path / "s.rpm")
    data = bytearray(pkg.read_bytes())
    _, end = _headers_end(data)
    data[end + (len(data) - end) // 2] ^= 0x40
    bad = tmp_path / "bad.rpm"
    bad.write_bytes(bytes(data))
    _import(empty_root, signer.keys["rsa"][1])
    with pytest.raises(RpmcowError):
        _transcode(bad, tmp_path / "bad.rpme", empty_root, level="digest")
    assert not (tmp_path / "bad.rpme").exists()
    # rpm2extents' stream mode stores verdicts, but BAD is still an error
    r = subprocess.run([sys.executable, "-c", "import sys; from rpmcow.cli import "
                        "rpm2extents_main as m; sys.exit(m())", "--root", empty_root.root,
                        "--dbpath", empty_root.dbpath, "SHA256"],
                       input=bytes(data), capture_output=True)
    assert r.returncode == 1


def test_tampered_header_is_rejected_before_the_payload_is_read(signer, empty_root, tmp_path):
    pkg = signer(UNSIGNED, tmp_path / "s.rpm")
    data = bytearray(pkg.read_bytes())
    hoff, end = _headers_end(data)
    i = data.index(b"hello", hoff + 16)          # a string in the main header's data
    data[i] ^= 0x20
    # the payload is replaced by garbage: had it been decompressed, the error
    # would be about the payload, not the header
    bad = tmp_path / "bad.rpm"
    bad.write_bytes(bytes(data[:end]) + os.urandom(4096))
    _import(empty_root, signer.keys["rsa"][1])
    with pytest.raises(VerificationError, match="Header.*BAD"):
        _transcode(bad, tmp_path / "bad.rpme", empty_root, level="digest")


def test_unsigned_package_fails_signature_policy(empty_root, tmp_path):
    with pytest.raises(VerificationError, match="not signed"):
        _transcode(UNSIGNED, tmp_path / "u.rpme", empty_root, level="signature")
    r = _transcode(UNSIGNED, tmp_path / "u.rpme", empty_root, level="digest")
    assert r.verdict.rc == 0


def test_level_comes_from_the_roots_configuration(empty_root, tmp_path):
    macros = Path(empty_root.root) / "etc" / "rpm"
    macros.mkdir(parents=True)
    shutil.copytree("/usr/lib/rpm", Path(empty_root.root) / "usr" / "lib" / "rpm",
                    symlinks=True)
    (macros / "macros.verify").write_text("%_pkgverify_level signature\n")
    assert rpmconfig.verify_level(empty_root) == "signature"
    with pytest.raises(VerificationError, match="level signature"):
        _transcode(UNSIGNED, tmp_path / "u.rpme", empty_root, level=None)
    assert rpmconfig.verify_level(empty_root, "none") == "none"


# ---- the record: forged and moved S sections ----------------------------------

def _replace_s(path, text):
    """Rewrite the S section of an extents file with `text` (same layout)."""
    with open(path, "rb") as f:
        s = extents.read_sections(f.fileno())
    data = path.read_bytes()
    head = data[:s.s_offset]
    s.s_text = text
    path.write_bytes(head + extents.encode_sections(s.s_offset, s, 4096))


def test_forged_s_section_is_reported(empty_root, tmp_path):
    out = tmp_path / "a.rpme"
    _transcode(TESTDATA / "hello-2.0-1.x86_64-signed.rpm", out, empty_root, level="digest")
    with open(out, "rb") as f:
        text = extents.read_sections(f.fileno()).s_text
    _replace_s(out, text.replace(b"NOKEY", b"OK"))
    rc, verbose, _ = _checksig(empty_root, out, verbose=True)
    assert rc == 1
    assert "rpmcow record: BAD (the record was altered)" in verbose
    with open(out, "rb") as f:
        with pytest.raises(VerificationError, match="File digests|record|NOKEY"):
            checksig.require_for_install(f.fileno(), empty_root, "signature")


def test_s_section_moved_from_another_package_is_reported(empty_root, tmp_path):
    a, b = tmp_path / "a.rpme", tmp_path / "b.rpme"
    _transcode(UNSIGNED, a, empty_root, level="digest")
    _transcode(TESTDATA / "hello-2.0-1.i686.rpm", b, empty_root, level="digest")
    with open(b, "rb") as f:
        other = extents.read_sections(f.fileno()).s_text
    _replace_s(a, other)
    rc, verbose, _ = _checksig(empty_root, a, verbose=True)
    assert rc == 1
    assert "the record belongs to another package" in verbose


def test_upstream_file_is_trusted_only_through_its_file_digests(empty_root):
    gold = CORPUS / "upstream-extents" / "hello-2.0-1.x86_64-signed.KEYOK.v419.rpme"
    _import(empty_root, RPMORG_KEY)
    rc, text, _ = _checksig(empty_root, gold, verbose=True)
    assert rc == 1 and "made by another tool" in text
    rc, text, _ = _checksig(empty_root, gold, verbose=True, files=True)
    assert rc == 0 and "File digests: OK" in text
    with open(gold, "rb") as f:
        ev = checksig.require_for_install(f.fileno(), empty_root, "signature")
    assert ev.items[-1].label == "File digests"


def test_a_fresh_extents_file_is_vouched_for_by_its_record(empty_root, tmp_path):
    """The record binds the blobs to the file's inode and mtime, with a ctime
    no earlier: the mtime must come from the clock the kernel stamps ctimes
    with (coarser than time.time_ns()), or every install hashes every blob."""
    src = TESTDATA / "hello-2.0-1.i686.rpm"
    for i in range(20):
        out = tmp_path / ("hello-%d.cow.rpm" % i)
        _transcode(src, out, empty_root, level="digest")
        with open(out, "rb") as f:
            sec = extents.read_sections(f.fileno())
            f.seek(0)
            pro = native.Input(f.fileno(), []).read_prologue()
            status, _, rec = record.check(sec.s_text, pro.data, record.record_keys(empty_root))
            assert status == "valid"
            st = os.fstat(f.fileno())
            assert record.vouches_for_blobs(status, rec, sec.t_sha256, st) is None, \
                (i, st.st_mtime_ns, st.st_ctime_ns)
            ev = checksig.require_for_install(f.fileno(), empty_root, "digest")
            assert "File digests" not in [it.label for it in ev.items]


def test_record_key_is_the_roots_inside_it_and_the_hosts_outside(empty_root, tmp_path):
    """A file written inside the target root gets that root's key (valid when
    the root is booted); one outside it -- an image build's shared cache --
    the host's, which every installroot's install accepts."""
    src = TESTDATA / "hello-2.0-1.i686.rpm"
    other = rpmconfig.Target(root=str(tmp_path / "other"), dbpath="/var/lib/rpm")
    os.makedirs(other.root)
    (tmp_path / "root" / "cache").mkdir()
    for out, valid_for_other in ((tmp_path / "shared.cow.rpm", True),
                                 (tmp_path / "root" / "cache" / "own.cow.rpm", False)):
        _transcode(src, out, empty_root, level="digest")
        with open(out, "rb") as f:
            sec = extents.read_sections(f.fileno())
            f.seek(0)
            pro = native.Input(f.fileno(), []).read_prologue()
        assert record.check(sec.s_text, pro.data, record.record_keys(empty_root))[0] == "valid"
        status = record.check(sec.s_text, pro.data, record.record_keys(other))[0]
        assert status == ("valid" if valid_for_other else "altered"), out


def test_a_record_key_a_crash_left_short_is_made_again(tmp_path):
    """The key file is written under a temporary name and linked into place;
    after a crash before its block reached the disk it can be there with
    fewer than 32 bytes (XFS: size 0).  Taken as no key, every record made
    after would be unkeyed and every install hash every blob, for good: a
    short key file is replaced by a new key (records made with the lost one
    cannot be checked anyway), which is on the disk before it is used."""
    target = rpmconfig.Target(root=str(tmp_path), dbpath="/var/lib/rpm")
    path = tmp_path / record.KEY_PATH
    path.parent.mkdir(parents=True, mode=0o700)
    for short in (b"", b"x" * 31, b"y" * 33):
        path.write_bytes(short)
        key = record.record_key(target)
        assert key is not None and len(key) == 32, short
        assert path.read_bytes() == key
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert record.record_key(target, create=False) == key
    assert [n for n in os.listdir(path.parent) if n != path.name] == []


_SPAWN_ORDER = r"""
import sys
events = []
def hook(event, args):
    if event == "os.posix_spawn":
        events.append("spawn " + str(args[1][0]))
    elif event == "import" and args[0] in ("rpmcow.native", "rpmcow._core", "rpm"):
        events.append("import " + args[0])
sys.addaudithook(hook)
from rpmcow import cli
rc = cli.main(["transcode", "--root", sys.argv[3], "--dbpath", "/var/lib/rpm",
               "--verify-level", "none", sys.argv[1], "-o", sys.argv[2]])
print("\n".join(events))
sys.exit(rc)
"""


def test_rpmkeys_starts_before_the_c_core_is_loaded(tmp_path, empty_root):
    """A transcode waits for rpmkeys' verdict on the headers before a
    payload byte is decompressed: rpmkeys is started first, and loading the
    C core (~6 ms) and librpm's module happens while it starts up -- not in
    front of it (the output directory's probe for unnamed files once did)."""
    out = tmp_path / "out" / "hello.cow.rpm"
    out.parent.mkdir()
    r = subprocess.run([sys.executable, "-c", _SPAWN_ORDER, str(TESTDATA / "hello-2.0-1.i686.rpm"),
                        str(out), empty_root.root], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    events = r.stdout.split("\n")
    first = events.index("spawn rpmkeys")
    assert "import rpmcow.native" in events[first:] and "import rpm" in events[first:], events
    assert out.exists()


@pytest.mark.root
@pytest.mark.parametrize("proc", ["mounted", "absent"])
def test_output_probe_links_an_unnamed_file_with_or_without_proc(tmp_path, proc):
    """The transcoder writes an unnamed file and names it when complete,
    where a probe shows it can (transcode._probe_link).  The probe links
    through /proc without the C core; without /proc (a bare chroot), as the
    C core does it (AT_EMPTY_PATH)."""
    d = tmp_path / "out"
    d.mkdir()
    code = ("import sys; from rpmcow import transcode; "
            "print(transcode._probe_link(sys.argv[1]), 'rpmcow.native' in sys.modules)")
    cmd = [sys.executable, "-c", code, str(d)]
    if proc == "absent":
        # a mount namespace of its own, its /proc private to it before it
        # goes (not "--propagation private": a chroot's / is no mount point)
        cmd = ["unshare", "-m", "--propagation", "unchanged", "sh", "-c",
               'mount --make-private /proc && umount -l /proc && exec "$@"', "sh"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(Path(transcode.__file__).parents[1])))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True" if proc == "absent" else "False"], r.stdout
    assert os.listdir(d) == []


def _prologue(path):
    with open(path, "rb") as f:
        try:
            return native.Input(f.fileno(), []).read_prologue()
        except RpmcowError:
            return None


def test_one_rpmkeys_judges_many_headers_as_one_each(keyed_root):
    """HeaderChecks (one rpmkeys for many packages: a dnf transaction's
    extents files) gives each package exactly the items, and the MD5 flag,
    of its own HeaderCheck -- signed, unsigned, v3 and v4 signatures, keys
    known and not -- and a prologue rpmkeys cannot read fails that package
    alone."""
    paths = sorted(TESTDATA.glob("*.rpm")) + sorted((CORPUS / "real").glob("*.rpm"))[:40]
    pros = [(p, pro) for p, pro in ((p, _prologue(p)) for p in paths) if pro is not None]
    assert len(pros) > 40
    prologues = [pro for _, pro in pros]
    prologues.insert(3, b"not a package at all" * 10)
    run = verify.HeaderChecks(keyed_root, prologues)
    try:
        for i, pro in enumerate(prologues):
            if i == 3:
                with pytest.raises(VerificationError, match="could not read the package header"):
                    run.of(i).wait()
                continue
            alone = verify.HeaderCheck(keyed_root, pro)
            want = alone.wait()
            got = run.of(i)
            assert got.wait() == want, pros[i - (i > 3)][0]
            assert got.header_items == alone.header_items
            assert got.md5_skipped == alone.md5_skipped
    finally:
        run.close()


@pytest.mark.parametrize("out, problem", [
    ("/dev/fd/3:\n    Header SHA256 digest: OK\n/dev/fd/3:\n", "twice"),
    ("/dev/fd/4:\n    Header SHA256 digest: OK\n/dev/fd/3:\n", "out of order"),
    ("/dev/fd/3:\n/dev/fd/4:\n/dev/fd/9:\n", "not asked for"),
])
def test_a_report_that_names_packages_out_of_place_is_not_believed(out, problem):
    """A section of rpmkeys' report that a package's own output could fake
    (a line naming a later package) would pass one package's items for
    another's: each name must come once, in order, or nothing is taken."""
    with pytest.raises(VerificationError, match="out of order"):
        verify.split_report(out, ["/dev/fd/3", "/dev/fd/4"])
    assert verify.split_report("rpmcow-host-vsflags 0\n/dev/fd/3:\n    A: OK\n/dev/fd/4:\n",
                               ["/dev/fd/3", "/dev/fd/4"]) == ["    A: OK", ""]


def test_policy_levels():
    items = verify.parse_items(
        "    Header V4 RSA/SHA256 Signature, key ID 1: NOKEY\n"
        "    Header SHA256 digest: OK\n    Payload SHA256 digest: OK\n")
    assert verify.policy_failure(items, "none") is None
    assert verify.policy_failure(items, "digest") is None
    assert "NOKEY" in verify.policy_failure(items, "signature")
    assert "NOKEY" in verify.policy_failure(items, "all")
    bad = items + [verify.Item("MD5 digest", "BAD")]
    assert verify.policy_failure(bad, "digest") == "MD5 digest: BAD"
    assert verify.policy_failure(items[1:2], "digest") == "no payload digest verified"


def test_a_multi_line_detail_is_one_line_in_a_refusal():
    """rpm 6 (rpm-sequoia) explains a bad OpenPGP signature over several
    lines: the item keeps them; the reason a refusal gives is one line."""
    text = ("    Header OpenPGP RSA signature: BAD (package tag 268: invalid OpenPGP\n"
            "signature: Parsing an OpenPGP packet:\n  Failed to parse Signature Packet\n"
            "      because: Malformed packet: Unknown version (0))\n"
            "    Header SHA256 digest: OK\n")
    items = verify.parse_items(text)
    assert [i.result for i in items] == ["BAD", "OK"]
    assert "\n" in items[0].detail                       # kept whole
    reason = verify.policy_failure(items, "digest")
    assert "\n" not in reason
    assert reason == ("Header OpenPGP RSA signature: BAD (package tag 268: invalid OpenPGP "
                      "signature: Parsing an OpenPGP packet: Failed to parse Signature Packet "
                      "because: Malformed packet: Unknown version (0))")
    assert "\n" not in str(verify.refusal("p-1-1.x86_64", reason, "digest"))


# ---- payload items from the C input stage ------------------------------------

def _plan(target, pkg):
    """The PayloadPlan a transcode of pkg makes, and its header check."""
    data = Path(pkg).read_bytes()
    _, end = _headers_end(data)
    check = verify.HeaderCheck(target, data[:end])
    fd = os.open(str(pkg), os.O_RDONLY)
    try:
        with native.Input(fd, []) as inp:
            facts = package.header_facts(inp.read_prologue())
    finally:
        os.close(fd)
    return verify.PayloadPlan(check.wait(), facts.sigmd5 if check.md5_skipped else None), check


def test_payload_items_come_from_rpmkeys_only_for_legacy_signatures(keyed_root, tmp_path,
                                                                   monkeypatch):
    # on a host that checks the MD5 (rpm 4's default; rpm 6's turns it off)
    _host_macros(tmp_path, monkeypatch, "%_pkgverify_flags 0\n")
    # header-only signed and unsigned packages: payload digests and MD5 are
    # computed by the C input stage, no second rpmkeys
    plan, check = _plan(keyed_root, UNSIGNED)
    assert not plan.full_check
    assert set(plan.digests.values()) == {("SHA256", "payload"), ("MD5", "header+payload")}
    # a header+payload (legacy) signature needs OpenPGP over the whole package
    legacy = CORPUS / "real" / "dnf-automatic-4.2.6-1.3.noarch.rpm"
    assert _plan(keyed_root, legacy)[0].full_check


# ---- the header check leaves the legacy MD5 to the input stage -------------

def _host_macros(tmp_path, monkeypatch, text):
    """Host rpm configuration for rpmkeys (and librpm) in this test: ~/.rpmmacros."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".rpmmacros").write_text(text)
    monkeypatch.setenv("HOME", str(home))


@pytest.mark.parametrize("host_flags", [
    None,                  # the host's own (rpm 4: 0; rpm 6: 0x20100, no SHA1 header, no MD5)
    "0",                   # MD5 checked, so computed by us
    "0x100",               # NOSHA1HEADER: stays in force, MD5 still ours
    "0x20000",             # NOMD5: the host does not check it, nor do we
    "0x20100",
])
def test_header_check_skips_md5_only_where_the_host_checks_it(host_flags, empty_root,
                                                              tmp_path, monkeypatch):
    if host_flags:
        _host_macros(tmp_path, monkeypatch, "%%_pkgverify_flags %s\n" % host_flags)
    flags = int(host_flags or subprocess.run(["rpm", "--eval", "%{?_pkgverify_flags}"],
                                             capture_output=True, text=True).stdout.strip()
                or "0", 0)
    skipped = not flags & 0x20000
    plan, check = _plan(empty_root, UNSIGNED)
    assert check.md5_skipped is skipped
    assert not any(it.is_legacy_md5 and it.result == "BAD" for it in check.wait())
    assert ("Header SHA1 digest" in [it.label for it in check.wait()]) == (not flags & 0x100)
    assert (("MD5", "header+payload") in plan.digests.values()) is skipped
    # and the verdict is what rpmkeys says with the host's flags
    rc, text = _rpmkeys(empty_root, UNSIGNED)
    r = _transcode(UNSIGNED, tmp_path / "x.rpme", empty_root)
    assert r.verdict.items == verify.parse_items(text)
    assert any(it.is_legacy_md5 for it in r.verdict.items) is skipped


def _with_sigmd5(src, dst, md5):
    """src with the signature header's MD5 tag set to md5 (the signature
    header is not covered by any digest: the header digests stay valid)."""
    data = bytearray(Path(src).read_bytes())
    il, dl = struct.unpack(">II", data[104:112])
    for i in range(il):
        tag, typ, off, count = struct.unpack(">IIII", data[112 + 16 * i:128 + 16 * i])
        if tag == 1004:
            assert (typ, count) == (7, 16)
            start = 112 + 16 * il + off
            data[start:start + 16] = md5
            Path(dst).write_bytes(bytes(data))
            return dst
    raise AssertionError("no MD5 in %s" % src)


def test_wrong_sigmd5_is_bad_like_rpmkeys_says(empty_root, tmp_path, monkeypatch):
    # on a host that checks the MD5 (rpm 4's default; rpm 6's turns it off)
    _host_macros(tmp_path, monkeypatch, "%_pkgverify_flags 0\n")
    # the expected MD5 comes from the signature header, where rpmkeys' own
    # check (skipped in the header check) would take it
    bad = _with_sigmd5(UNSIGNED, tmp_path / "md5.rpm", bytes(range(16)))
    rc, text = _rpmkeys(empty_root, bad)
    expected = verify.parse_items(text)
    assert rc != 0 and "MD5 digest: BAD (Expected 000102030405060708090a0b0c0d0e0f != " in text
    r = _transcode(bad, tmp_path / "md5.rpme", empty_root, level="none")
    assert r.verdict.items == expected and r.verdict.rc == 2
    with pytest.raises(VerificationError, match="MD5 digest: BAD"):
        _transcode(bad, tmp_path / "md5-digest.rpme", empty_root, level="digest")


def _recompressed(src, dst, flip_last_byte=False):
    """src with its payload decompressed and compressed again (gzip -1): the
    headers, and their digests, stay valid; the payload digests do not."""
    import gzip
    data = Path(src).read_bytes()
    _, end = _headers_end(data)
    raw = gzip.decompress(data[end:])
    if flip_last_byte:
        raw = raw[:-1] + bytes([raw[-1] ^ 1])
    Path(dst).write_bytes(data[:end] + gzip.compress(raw, compresslevel=1, mtime=0))
    return dst


@pytest.mark.parametrize("flip", [False, True], ids=["recompressed", "recompressed-altered"])
def test_bad_payload_items_equal_rpmkeys(flip, empty_root, tmp_path):
    bad = _recompressed(UNSIGNED, tmp_path / "bad.rpm", flip)
    rc, text = _rpmkeys(empty_root, bad)
    expected = verify.parse_items(text)
    assert rc != 0 and any(i.label.startswith("Payload") and i.result == "BAD"
                           for i in expected)
    first_bad = next(i for i in expected if i.result == "BAD")
    with pytest.raises(VerificationError) as exc:
        _transcode(bad, tmp_path / "bad.rpme", empty_root, level="digest")
    assert first_bad.line.strip() in str(exc.value)     # rpmkeys' line, digests and all
    assert not (tmp_path / "bad.rpme").exists()
    r = subprocess.run([sys.executable, "-c", "import sys; from rpmcow.cli import "
                        "rpm2extents_main as m; sys.exit(m())", "--root", empty_root.root,
                        "--dbpath", empty_root.dbpath, "SHA256"],
                       input=bad.read_bytes(), capture_output=True)
    assert r.returncode == 1 and first_bad.line.strip().encode() in r.stderr


def test_items_equal_whether_the_input_is_a_file_or_a_pipe(empty_root, tmp_path):
    # a file is hashed by the background thread, a pipe in the data path
    a = tmp_path / "file.rpme"
    _transcode(UNSIGNED, a, empty_root, level="digest")
    r = subprocess.run([sys.executable, "-c", "import sys; from rpmcow.cli import main; sys.exit(main())",
                        "transcode", "--root", empty_root.root,
                        "--dbpath", empty_root.dbpath, "-", "-o", "-", "-q"],
                       input=UNSIGNED.read_bytes(), capture_output=True)
    assert r.returncode == 0, r.stderr
    assert unbound(r.stdout) == unbound(a.read_bytes())     # the record binds the file


def _fake_rpmkeys(tmp_path, monkeypatch, script):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "rpmkeys"
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))


def test_header_check_that_hangs_is_killed(tmp_path, monkeypatch, empty_root):
    """An rpmkeys that never answers: the check gives up after its timeout
    with a clear error, and the child is killed and reaped (no zombie)."""
    _fake_rpmkeys(tmp_path, monkeypatch, "echo $$ > %s/pid\nexec sleep 600\n" % tmp_path)
    monkeypatch.setattr(verify.HeaderCheck, "TIMEOUT", 0.5)
    check = verify.HeaderCheck(empty_root, b"prologue")
    with pytest.raises(VerificationError, match="no verdict after"):
        check.wait()
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)        # reaped already
    assert not os.path.exists("/proc/%d" % pid)


def test_header_check_reports_what_rpmkeys_says_on_failure(tmp_path, monkeypatch, empty_root):
    """rpmkeys gets the prologue on stdin; when it prints no header item its
    stderr is the error's reason."""
    _fake_rpmkeys(tmp_path, monkeypatch,
                  "cat > %s/stdin\necho 'error: cannot read that' >&2\nexit 1\n" % tmp_path)
    with pytest.raises(VerificationError, match="could not read the package header: "
                                                "error: cannot read that"):
        verify.HeaderCheck(empty_root, b"the prologue bytes").wait()
    assert (tmp_path / "stdin").read_bytes() == b"the prologue bytes"


def test_header_check_without_rpmkeys(tmp_path, monkeypatch, empty_root):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(VerificationError, match="cannot run rpmkeys"):
        verify.HeaderCheck(empty_root, b"prologue")


def test_header_check_where_children_are_reaped_for_us(tmp_path):
    """A host process that ignores SIGCHLD (its children are reaped by the
    kernel, waitpid fails): the check still returns rpmkeys' verdict."""
    pkg = CORPUS / "rpm-testdata" / "hello-2.0-1.x86_64.rpm"
    code = r'''
import signal, sys
from pathlib import Path
from rpmcow import rpmconfig, verify
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
data = Path(sys.argv[1]).read_bytes()
items = verify.HeaderCheck(rpmconfig.Target(dbpath=sys.argv[2]), data).wait()
print("\n".join(it.line for it in items))
'''
    proc = subprocess.run([sys.executable, "-c", code, str(pkg), str(tmp_path / "rpmdb")],
                          capture_output=True, text=True, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr
    assert "Header SHA256 digest: OK" in proc.stdout or "Header SHA1 digest: OK" in proc.stdout


def test_header_check_child_gets_no_inherited_descriptors(tmp_path, monkeypatch, empty_root):
    """An inheritable descriptor of the host process (as C libraries leave
    them) does not reach rpmkeys."""
    _fake_rpmkeys(tmp_path, monkeypatch, "ls /proc/$$/fd > %s/fds\nexit 1\n" % tmp_path)
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        with pytest.raises(VerificationError):
            verify.HeaderCheck(empty_root, b"prologue").wait()
    finally:
        os.close(r)
        os.close(w)
    # (the shell running the fake rpmkeys opens a few of its own)
    assert str(w) not in (tmp_path / "fds").read_text().split()


def test_prologue_is_read_once_into_the_file_rpmkeys_and_librpm_read(monkeypatch):
    """read_prologue puts the headers in a memory file, mapped for Python;
    open() gives rpmkeys and librpm that same file (its own offset), and a
    copy only where /proc cannot reopen it."""
    pkg = CORPUS / "rpm-testdata" / "hello-2.0-1.x86_64.rpm"
    data = pkg.read_bytes()
    _, end = _headers_end(data)
    fd = os.open(str(pkg), os.O_RDONLY)
    try:
        with native.Input(fd, []) as inp:
            pro = inp.read_prologue()
    finally:
        os.close(fd)
    assert pro.data[:] == data[:end] and len(pro.data) == end
    with pytest.raises(TypeError):
        pro.data[0] = 0                        # read-only
    a, b = pro.open(), pro.open()
    try:
        assert os.fstat(a).st_ino == os.fstat(b).st_ino == os.fstat(pro._fd).st_ino
        assert os.read(a, 100) == data[:100]
        assert os.read(b, end + 1) == data[:end]      # offsets of their own
    finally:
        os.close(a)
        os.close(b)
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a: (_ for _ in ()).throw(
        FileNotFoundError(path)) if str(path).startswith("/proc/") else real_open(path, *a))
    c = pro.open()
    try:
        assert os.fstat(c).st_ino != os.fstat(pro._fd).st_ino
        assert os.read(c, end + 1) == data[:end]
    finally:
        os.close(c)
    assert package.load_header(pro)["name"] == "hello"


# ---- the header check starts before the prologue is read --------------------

def test_check_started_before_the_prologue_says_the_same(empty_root):
    data = UNSIGNED.read_bytes()
    _, end = _headers_end(data)
    early = verify.HeaderCheck(empty_root)
    early.provide(data[:end])
    assert early.wait() == verify.HeaderCheck(empty_root, data[:end]).wait()
    assert any(it.header_only and it.result == "OK" for it in early.wait())


def test_provide_does_not_block_on_an_rpmkeys_that_never_reads(tmp_path, monkeypatch,
                                                              empty_root):
    """The prologue goes to rpmkeys from a thread of its own: provide()
    returns at once, and a check that never finishes is killed, its feeder
    thread ending with the pipe."""
    import time
    _fake_rpmkeys(tmp_path, monkeypatch, "echo $$ > %s/pid\nexec sleep 600\n" % tmp_path)
    monkeypatch.setattr(verify.HeaderCheck, "TIMEOUT", 0.5)
    check = verify.HeaderCheck(empty_root)
    t = time.monotonic()
    check.provide(bytes(8 << 20))            # far more than a pipe holds
    assert time.monotonic() - t < 0.4
    with pytest.raises(VerificationError, match="no verdict after"):
        check.wait()
    pid = int((tmp_path / "pid").read_text())
    assert not os.path.exists("/proc/%d" % pid)


def test_bad_input_stops_the_check_started_for_it(tmp_path, monkeypatch, empty_root):
    """rpmkeys starts before the input is read: when the input turns out not
    to be a package, it is killed and reaped, and nothing is written."""
    _fake_rpmkeys(tmp_path, monkeypatch, "exec sleep 600\n")
    started = []
    real_init = verify.HeaderCheck.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        started.append(self._pid)
    monkeypatch.setattr(verify.HeaderCheck, "__init__", init)
    bad = tmp_path / "garbage.rpm"
    # an RPM lead's magic, then garbage: only the C input stage finds out
    # (a file without the magic is refused before anything starts)
    bad.write_bytes(b"\xed\xab\xee\xdb" + b"not a package at all" * 100)
    with pytest.raises(RpmcowError):
        _transcode(bad, tmp_path / "out.rpme", empty_root)
    assert len(started) == 1
    assert not os.path.exists("/proc/%d" % started[0])      # killed and reaped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "garbage.rpm", "root"]
