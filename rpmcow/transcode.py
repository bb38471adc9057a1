"""The transcoder: an .rpm stream in, an extents file out, in one pass.

    bytes in (native.Input) -> parse (package) -> verify (verify)
    -> lay out blobs (native layout, C) -> S/T/C sections + footer (extents)

Memory stays constant: the C core streams the payload through fixed
buffers; only the headers (bounded, like rpm's) are held whole.
"""
import errno
import os
import stat

# Only what it takes to start the header check is imported here.  The C
# core is imported once rpmkeys is starting up, and the rest (librpm's
# module, the extents writer, ...: ~10 ms) once rpmkeys checks the
# prologue, in parallel with it: that check is on the critical path of every
# transcode, and a command's start is most of the time it takes for a small
# package.
from . import rpmconfig, verify
from .digests import BY_NAME, by_name
from .errors import BadPackageError, OutputError, RpmcowError

DEFAULT_ALGOS = ("SHA256",)


class Result:
    """What a transcode did.  Class attributes are the defaults (all
    immutable); a plain class, because dataclasses costs ~6 ms to import."""
    nevra = ""
    name = ""
    passthrough = False              # deny-listed: copied unchanged
    denied_by = ""
    input_len = 0
    output_len = 0
    files = 0
    blobs = 0
    blob_bytes = 0
    dup_files = 0
    payload_bytes = 0
    reader_cpu = 0.0                 # seconds: decompressing thread
    sink_cpu = 0.0                   # seconds: hashing/writing thread
    compressor = ""
    verdict = None
    input_digests = ()

    def __init__(self, **fields):
        for name, value in fields.items():
            if not hasattr(Result, name) or name.startswith("_"):
                raise TypeError("Result has no field %r" % name)
            setattr(self, name, value)


def page_size_default():
    return os.sysconf("SC_PAGESIZE")


def transcode_fd(in_fd, out_fd, algos=DEFAULT_ALGOS, page_size=None, deny=None,
                 target=None, level=None, enforce=True, progress=None, record_target=None):
    """Transcode the package read from in_fd, writing the extents file to
    out_fd from its current position (taken as offset 0).

    target: the root (and rpmdb) whose keyring and %_pkgverify_level apply;
    level overrides that level.  enforce: raise VerificationError unless the
    verdict satisfies the level; without it (rpm2extents' stream contract)
    the verdict is only stored, and only a BAD item is an error.
    progress: called as progress(bytes read, input size or None) from a
    thread of its own, a few times a second while the payload streams.
    record_target: the root whose key MACs the record (default: target;
    transcode_path and transcode_to_path pass the host's where the output
    is outside target's root: rpmcow.record).
    """
    return _transcode_fd(in_fd, out_fd, algos, page_size, deny, target, level, enforce, True,
                         progress, record_target)


def _unverified_fd(in_fd, out_fd, algos=DEFAULT_ALGOS, page_size=None, deny=None,
                   target=None, level=None, enforce=True, record_target=None):
    """transcode_fd without rpmkeys, storing an empty, failed verdict: only
    for measuring what verification costs (bench/verify_bench.py, through
    _via_path).  Not part of the API: nothing else reaches it."""
    return _transcode_fd(in_fd, out_fd, algos, page_size, deny, target, level, enforce, False,
                         record_target=record_target)


def _transcode_fd(in_fd, out_fd, algos, page_size, deny, target, level, enforce, _verify,
                  progress=None, record_target=None):
    algo_names = [by_name(a).name for a in algos]
    page_size = page_size or page_size_default()
    target = target or rpmconfig.Target()
    rpmconfig.check_level(level)
    out_ino = _bindable(out_fd)

    # rpmkeys is started first: it loads and reads its configuration (~6 ms)
    # while the C core is loaded and the prologue read, then reads the
    # prologue from a pipe
    hcheck = verify.HeaderCheck(target) if _verify else None
    try:
        try:
            from . import native
        except ImportError as exc:     # a broken install, or no memory to map it
            raise RpmcowError("cannot load the transcoder: %s" % exc) from None
        # the C input is done with in_fd when this returns
        with native.Input(in_fd, algo_names) as inp:
            watch = _Progress(inp, in_fd, progress) if progress else None
            try:
                return _transcode(inp, out_fd, page_size, deny, target, level, enforce, hcheck,
                                  out_ino, record_target or target)
            finally:
                if watch:
                    watch.stop()
    except BaseException:
        if hcheck:
            hcheck.abort()
        raise


def _transcode(inp, out_fd, page_size, deny, target, level, enforce, hcheck, out_ino,
               record_target):
    # the prologue's digests are computed later, off the critical path: by
    # the sink, with the payload's first blocks
    inp.hold_hashing()
    pro = inp.read_prologue()
    inp.provide_held(pro.data)
    # rpmkeys checks the headers in the background; meanwhile the rest of
    # the transcoder is imported and the file table is built.  Not a payload
    # byte is decompressed before the headers' verdict is in; librpm reads
    # the header and checks its file tags while the payload streams.
    if hcheck:
        hcheck.provide(pro.data)
    _verify = hcheck is not None
    check = job = None
    try:
        try:
            from . import denylist, extents, native, package, record   # see the imports at the top
        except ImportError as exc:     # a broken install, or no memory to map librpm
            raise RpmcowError("cannot load the transcoder: %s" % exc) from None
        deny = denylist.from_env() if deny is None else deny
        level = rpmconfig.verify_level(target, level)    # the host's: librpm's
        try:
            facts = package.header_facts(pro)
            table = package.FileTable(pro.main_header)
        except BadPackageError:
            if hcheck:     # rpmkeys names what is wrong with a header best
                _judge(hcheck.header_items, level, enforce, _lead_name(pro), header_only=True)
            raise
        _write(out_fd, pro.data)     # kept as it is, whatever follows
        if hcheck:
            _judge(hcheck.header_items, level, enforce, _lead_name(pro), header_only=True)

        hit = denylist.matches(facts.name, deny)
        if hit:
            pkg = _parse_checked(pro, facts, table)
            inp.copy_to(out_fd)
            inp.finish()
            return Result(nevra=pkg.nevra, name=pkg.name, compressor=pkg.compressor,
                          files=table.count, passthrough=True, denied_by=hit,
                          input_len=inp.total, output_len=inp.total)

        plan = verify.PayloadPlan(hcheck.wait(), facts.sigmd5 if hcheck.md5_skipped
                                  else None) if hcheck else None
        # not a byte of the payload has been read yet
        ranges = _add_verification_digests(inp, pro, plan) if plan else {}
        whole = _add_package_digests(inp, pro)
        if plan and (plan.full_check or not set(plan.digests.values()) <= set(ranges)):
            # a legacy header+payload signature: rpmkeys reads it all
            check = verify.Check(target)
            check.feed(pro.data)
            inp.set_tee(check.fd)
        job = inp.start_layout(facts.compressor, table, out_fd, len(pro.data), page_size)
        # librpm reads the header, and checks the file tags, while C threads
        # stream (its verdict on the header comes before whatever the header
        # led the layout into)
        pkg = _parse_checked(pro, facts, table,
                             digests_verified=bool(hcheck) and
                             verify.header_digests_ok(hcheck.header_items))
        headers_sha256 = record.headers_digest(pro.data)
        lay = job.wait()
        input_digests, range_digests = inp.finish()
    except BaseException:
        if check:
            check.abort()
        if hcheck:
            hcheck.abort()
        if job:
            try:
                job.wait()       # the C threads must be done with the fds
            except RpmcowError:
                pass             # an earlier error is the cause
        raise
    result = Result(nevra=pkg.nevra, name=pkg.name, compressor=pkg.compressor,
                    files=table.count)
    if check:
        rpmkeys_rc, items = check.finish()
    elif plan:
        computed = {label: range_digests[ranges[what]].hex()
                    for label, what in plan.digests.items()}
        rpmkeys_level = rpmconfig.rpmkeys_verify_level()
        items = verify.payload_items(plan, computed, rpmkeys_level)
        rpmkeys_rc = 1 if verify.rpmkeys_outcome(items, rpmkeys_level)[1] else 0
    else:
        rpmkeys_rc, items = 1, []
    verdict = record.Verdict(items, headers_sha256, files_ok=True, rpmkeys_rc=rpmkeys_rc,
                             package_digests=_package_digests(whole, input_digests,
                                                              range_digests))
    if _verify:
        _judge(items, level, enforce, pkg.nevra)

    sections = extents.Sections(
        s_rc=verdict.rc, s_text=b"", keysize=pkg.files.keysize,
        table=pkg.files.t_entries(lay), input_len=inp.total, input_digests=input_digests)
    # the record binds the blobs to this very file: its T section, and its
    # inode with the mtime it gets once complete (rpmcow.record)
    t = extents.encode_t(sections)
    if out_ino is not None:
        record.mark_boot(out_fd)      # (before the mtime: the ctime stays near it)
    # the mtime comes from the kernel's clock for inode times, which may be
    # coarser than time.time_ns(): a ctime set later by that clock is then
    # never earlier than it
    mtime_ns = os.fstat(out_fd).st_ctime_ns if out_ino is not None else None
    sections.s_text = verdict.s_text(
        record.record_key(record_target), table_sha256=native.sha256(t).hex(),
        file=record.file_id(out_ino, mtime_ns) if out_ino is not None else record.NO_FILE)
    tail = extents.encode_sections(lay.out_pos, sections, page_size, t=t)
    _write(out_fd, tail)
    if out_ino is not None:
        try:
            os.utime(out_fd, ns=(mtime_ns, mtime_ns))
        except OSError as exc:
            raise OutputError("cannot set the output's time: %s" % exc.strerror) from None

    result.input_len = inp.total
    result.output_len = lay.out_pos + len(tail)
    result.blobs, result.blob_bytes = lay.blobs, lay.blob_bytes
    result.dup_files, result.payload_bytes = lay.dup_files, lay.payload_bytes
    result.reader_cpu, result.sink_cpu = lay.reader_cpu, lay.sink_cpu
    result.verdict = verdict
    result.input_digests = tuple(input_digests)
    return result


class _Progress:
    """A thread reporting how far the input has been read, until stop()."""

    INTERVAL = 0.25

    def __init__(self, inp, in_fd, callback):
        import threading
        st = os.fstat(in_fd)
        self._size = st.st_size if stat.S_ISREG(st.st_mode) else None
        self._inp, self._callback = inp, callback
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rpmcow-progress")
        self._thread.start()

    def _run(self):
        while not self._done.wait(self.INTERVAL):
            try:
                self._callback(self._inp.progress(), self._size)
            except Exception:         # noqa: BLE001 - a report must never fail the work
                return

    def stop(self):
        self._done.set()
        self._thread.join()


def _bindable(out_fd):
    """The inode number of the output where the record can bind the file
    itself (a regular file written from its start), else None."""
    try:
        st = os.fstat(out_fd)
        if stat.S_ISREG(st.st_mode) and os.lseek(out_fd, 0, os.SEEK_CUR) == 0:
            return st.st_ino
    except OSError:
        pass
    return None


def _parse_checked(pro, facts, table, digests_verified=False):
    """librpm's reading of the header: it must accept it, read it as
    header_facts did, and accept its file tags.  digests_verified: rpmkeys
    found every header digest of these very bytes OK (librpm need not hash
    them again)."""
    from . import package
    header = package.load_header(pro, digests=not digests_verified)
    pkg = package.parse(pro, header=header, files_checked=False, files=table)
    package.cross_check(facts, pkg)
    package.check_files(header)
    return pkg


def _add_verification_digests(inp, pro, plan):
    """Digests of the compressed input that rpmkeys' payload items need
    (plan.digests): each payload digest rpmkeys checks (rpm 4: the one
    PAYLOADDIGESTALGO names; rpm 6: SHA-256, SHA-512 and SHA3-256 as the
    header has them, each with its ALT) from the payload's start, and the
    legacy MD5 of header + payload.  Called before any payload byte is
    read.  Returns {(algorithm, "payload" | "header+payload"): range digest
    index}; one the C core cannot compute (or one too many) is left out,
    and rpmkeys then checks the whole package itself."""
    ranges = {}
    for what in sorted(set(plan.digests.values())):
        name, where = what
        algo = BY_NAME.get(name.upper())
        if algo is None:
            continue
        try:
            if where == "payload":
                ranges[what] = inp.add_range_digest(algo.openssl, len(pro.data), b"")
            else:
                ranges[what] = inp.add_range_digest(
                    algo.openssl, pro.hdr_off, memoryview(pro.data)[pro.hdr_off:])
        except RpmcowError:
            continue
    return ranges


def _add_package_digests(inp, pro):
    """Digests of the whole package file for rpm's database (rpm 6 records
    RPMTAG_PACKAGEDIGESTS from the file it reads; an install feeds it other
    bytes, so the record carries the original's: rpmconfig.
    package_digest_algos).  Returns [(rpm id, "input" | "range", index)]:
    one the C section computes anyway is taken from there."""
    from .digests import BY_ID
    wanted = rpmconfig.package_digest_algos()
    if not wanted:
        return []
    names = inp.algos
    out = []
    for rpm_id in wanted:
        algo = BY_ID[rpm_id]
        if algo.name in names:
            out.append((rpm_id, "input", names.index(algo.name)))
            continue
        try:
            out.append((rpm_id, "range", inp.add_range_digest(algo.openssl, 0, pro.data)))
        except RpmcowError:
            continue          # not computable here: the install records none
    return out


def _package_digests(whole, input_digests, range_digests):
    """{rpm id: hex} of _add_package_digests' digests, once finished."""
    return {rpm_id: (input_digests[i][1] if where == "input" else range_digests[i]).hex()
            for rpm_id, where, i in whole}


def _lead_name(pro):
    """The package name from the lead, for messages about an unverified header."""
    return pro.lead[10:76].split(b"\0", 1)[0].decode("ascii", "replace") or "package"


def _judge(items, level, enforce, nevra, header_only=False):
    """Raise unless the items satisfy the transcode's policy.  At level
    none the verdict is only recorded, a BAD one included (as upstream's
    rpm2extents records it): an install refuses such a file at every level."""
    if enforce and level == "none":
        failure = None
    elif enforce:
        failure = verify.policy_failure(items, level, header_only=header_only)
    else:
        failure = next((i.reason for i in items if i.result == "BAD"), None)
    if failure:
        raise verify.refusal(nevra, failure, level)


def _write(fd, data):
    from .native import write_all     # loaded before anything is written
    try:
        write_all(fd, data)
    except OSError as exc:
        raise OutputError("write failed: %s" % exc.strerror) from None


def transcode_path(in_path, out_path, **kw):
    """Transcode a file (or "-" for stdin) to out_path (or "-" for stdout);
    kw: transcode_fd's options.

    A named output appears only when complete: it is written under a
    temporary name in the same directory and renamed on success.
    """
    return _via_path(in_path, out_path, transcode_fd, kw)


def transcode_to_path(in_fd, out_path, **kw):
    """Transcode what in_fd gives (a pipe will do: rpmcow.growing) to
    out_path, which appears only when complete (as transcode_path's);
    kw: transcode_fd's options."""
    return _to_file(in_fd, out_path, transcode_fd, kw)


def _via_path(in_path, out_path, transcode, kw):
    in_fd = 0 if in_path == "-" else _open_input(in_path)
    try:
        _check_input(in_fd, in_path)
        if out_path == "-":
            return _to_stdout(in_fd, transcode, kw)
        return _to_file(in_fd, out_path, transcode, kw)
    finally:
        if in_fd != 0:
            os.close(in_fd)


def _open_input(path):
    from .inputs import open_file
    return open_file(path)


def _check_input(in_fd, in_path):
    """A named or redirected input must be a package, and not an extents
    file already (whose 'payload' no decompressor would make sense of)."""
    from . import inputs
    if inputs.kind(in_fd, "standard input" if in_path == "-" else in_path) == inputs.EXTENTS:
        raise BadPackageError("%s: already an extents file (transcoded): install it with "
                              "'rpmcow install', or transcode the original package"
                              % ("standard input" if in_path == "-" else in_path))


def _same_file(in_fd, out_path):
    """Whether out_path names the very file being read (a link included)."""
    try:
        a, b = os.fstat(in_fd), os.stat(out_path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _record_target(target, out_dir):
    """The root whose key MACs the record of a file written into out_dir:
    target's where the file is inside its root (it stays valid there when
    that root is booted), else the host's -- an image build's cache shared
    by many installroots, whose installs then all accept the record
    (record.record_keys: the target's key and the host's)."""
    target = target or rpmconfig.Target()
    return target if target.contains(out_dir) else rpmconfig.Target()


def _to_file(in_fd, out_path, transcode, kw):
    """Write the extents file where no one sees it until it is complete: an
    unnamed file (O_TMPFILE) in the output's directory, given a name only
    at the end -- so an interrupted or killed transcode leaves nothing
    behind.  Where the filesystem (or a missing /proc) does not allow that,
    a ".NAME.RANDOM.part" file, removed on failure (and swept when stale)."""
    if _same_file(in_fd, out_path):
        raise OutputError("%s: the output is the input file itself: name another output "
                          "(the original package would be replaced)" % out_path)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    name = os.path.basename(out_path)
    kw = dict(kw, record_target=kw.get("record_target") or _record_target(kw.get("target"),
                                                                          out_dir))
    try:
        fd, tmp = _create_output(out_dir, name)
    except OSError as exc:
        raise OutputError("cannot create a file in %s: %s" % (out_dir, exc.strerror)) from None
    try:
        result = transcode(in_fd, fd, **kw)
        os.fchmod(fd, 0o644 & ~_umask())
        if tmp is None:
            tmp = _name_output(fd, out_dir, name)
        os.close(fd)
        fd = -1
        os.rename(tmp, out_path)
        tmp = None
        return result
    except OSError as exc:
        raise OutputError("cannot write %s: %s" % (out_path, exc.strerror)) from None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


PART_MAX_AGE = 3600          # seconds after which a ".NAME.*.part" of ours is stale


def _create_output(directory, name):
    """(fd, None) of an unnamed file in directory, or (fd, path) of a
    ".part" file where unnamed files cannot be linked into place here (no
    O_TMPFILE, or neither AT_EMPTY_PATH nor /proc: tried on a probe)."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    else:
        if _can_link(directory):
            return fd, None
        os.close(fd)
    _sweep_parts(directory, name)
    return _create_part(directory, name)


_LINKABLE = {}                # st_dev -> whether unnamed files can be named there


def _can_link(directory):
    """Whether an unnamed file in directory can be given a name: tried once
    per filesystem in a process (the dnf plugin writes many outputs)."""
    try:
        dev = os.stat(directory).st_dev
    except OSError:
        dev = None
    if dev in _LINKABLE:
        return _LINKABLE[dev]
    _LINKABLE[dev] = ok = _probe_link(directory)
    return ok


def _probe_link(directory):
    """Link a probe: through /proc first, which needs no C core (it is
    imported once rpmkeys is starting up: see the imports at the top), then
    as native.link_unnamed does it (AT_EMPTY_PATH: root without /proc)."""
    probe = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        path = os.path.join(directory, ".rpmcow-probe.%s" % os.urandom(6).hex())
        try:
            # linkat(/proc/self/fd, "N", AT_SYMLINK_FOLLOW): a dir_fd makes
            # Python call linkat (link(2) would link the magic link itself)
            fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.link(str(probe), path, src_dir_fd=fds, follow_symlinks=True)
            finally:
                os.close(fds)
        except OSError:
            try:
                from .native import link_unnamed
            except ImportError as exc:     # a broken install, or no memory to map it
                raise RpmcowError("cannot load the transcoder: %s" % exc) from None
            link_unnamed(probe, path)
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(probe)


def _name_output(fd, directory, name):
    """Give the unnamed file at fd a temporary ".part" name, to be renamed
    over the output (which a link cannot replace)."""
    from .native import link_unnamed
    for _ in range(100):
        path = os.path.join(directory, ".%s.%s.part" % (name, os.urandom(6).hex()))
        try:
            link_unnamed(fd, path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name")


def _sweep_parts(directory, name):
    """Remove ".NAME.*.part" files of ours that a killed transcode left in
    directory (older than PART_MAX_AGE: a running one keeps writing)."""
    import time as _time
    prefix = ".%s." % name
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    now = _time.time()
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(".part")):
            continue
        path = os.path.join(directory, entry)
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and \
                    now - st.st_mtime > PART_MAX_AGE:
                os.unlink(path)
        except OSError:
            pass


def _create_part(directory, name):
    """(fd, path) of a new file ".NAME.RANDOM.part" in directory, readable
    and writable by the owner only -- what tempfile.mkstemp does, without
    the ~3 ms its import adds to every transcode's start."""
    for _ in range(100):
        path = os.path.join(directory, ".%s.%s.part" % (name, os.urandom(6).hex()))
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name")


def _to_stdout(in_fd, transcode, kw):
    # upstream's contract: extents file on stdout.  If stdout is a regular
    # file we started at offset 0, a failure leaves it empty, not
    # complete-looking.
    fd = 1
    st = os.fstat(fd)
    truncatable = stat.S_ISREG(st.st_mode) and os.lseek(fd, 0, os.SEEK_CUR) == 0
    try:
        return transcode(in_fd, fd, **kw)
    except BaseException:
        if truncatable:
            os.ftruncate(fd, 0)
        raise


def _read_umask():
    """The process umask, read without changing it (/proc/self/status,
    Linux >= 4.7)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


# Without /proc the umask can only be read by setting it: done once, here,
# when the module is imported (at a command's start, or when the dnf plugin
# loads rpmcow, before any download or transcode thread runs) -- never while
# other threads may be creating files.
def _umask_by_setting():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_START_UMASK = None if _read_umask() is not None else _umask_by_setting()


def _umask():
    mask = _read_umask()
    return _START_UMASK if mask is None else mask
