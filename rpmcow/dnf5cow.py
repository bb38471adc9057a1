"""The dnf5 cow plugin's work: what its C++ side (dnf-plugins/libdnf5/cow.cpp)
runs, one step per libdnf5 hook, as ``python3 -I -m rpmcow.dnf5cow STEP``.

dnf5 loads no Python plugins and hands rpm each package by its cache path,
so the install path is the rpm plugin's serving mode (rpmcow.serve): rpm's
verification pass reads and checks the original package; when the
package's turn comes the plugin serves the cheap payload and clones from
the extents file.  The C++ plugin is thin -- it runs these steps and pushes
the rpm macros they print into dnf5's process; everything else is here.

    activate --installroot R CACHEDIR...      (goal_resolved)
        Whether the caches and the root are on one filesystem that clones;
        if so the macros that make rpm load the cow plugin.
    follow --installroot R PACKAGE:SIZE...    (from goal_resolved, in the
                                               background, until its stdin
                                               ends at pre_transaction)
        dnf5 has no hook per download, and librepo writes each package in
        place as it arrives: each package is transcoded as soon as it has
        its full size, while the others download.  Nothing is trusted from
        this: prepare uses an extents file only if the input digest it
        records is the digest of the package file as dnf5 verified it.
    prepare --installroot R [--denylist G] [--workers N] [--keep K --keepcache 0|1]
            [--share-tails auto|yes|no] PACKAGE...
                                              (pre_transaction: downloaded,
                                               dnf5's GPG check and rpm's
                                               test run done)
        Transcode each package beside it in the cache (in parallel), judge
        the extents files at the root's %_pkgverify_level (one rpmkeys for
        the headers of them all: verify.HeaderChecks), write each feed
        plan; the %_rpmcow_serve macro for the packages that passed (and
        %_rpmcow_served, %_rpmcow_pkgdigests, %_rpmcow_discard where the
        cache does not keep the extents files: see prepare(), and
        %_rpmcow_tails where the cache is outside the root: _share_tails()).
    finish --installroot R --keep K --keepcache 0|1 [--private D]
           [--cow N --cloned B --copied B --total T] PACKAGE...
                                              (post_transaction / finish)
        Say what went copy-on-write (as the dnf 4 plugin; one journal line);
        remove the extents files and plans the cache does not keep, and the
        private plugin directory.

stdout is the protocol: ``macro NAME VALUE`` lines (pushed by the C++
side), ``private DIR`` (given back to finish).  Messages for the user go to
stderr, one line each, as the dnf 4 plugin says them.  Any failure leaves
the package (or the whole transaction) to install the stock way: a step
never makes dnf5 fail.
"""
import argparse
import collections
import concurrent.futures
import os
import sys
import time

MSG_NOT_USED = "cow: not used: %s"
MSG_STOCK = "cow: %s installs the stock way: %s"
MSG_TRANSCODED = "cow: transcoded %s (%s -> %s, %.1fs)"
MSG_TAILS = "cow: last partial blocks are written, not shared: %s"
SUFFIX = ".cow.rpm"          # `dnf5 clean packages` takes *.rpm
PLAN_SUFFIX = ".cow.plan"


def say(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def emit(*fields):
    sys.stdout.write(" ".join(fields) + "\n")


def extents_path(package):
    """Where a package's extents file goes: beside it in the cache."""
    base = package[:-4] if package.endswith(".rpm") else package
    return base + SUFFIX


def plan_path(package):
    base = package[:-4] if package.endswith(".rpm") else package
    return base + PLAN_SUFFIX


def root_block_size(root):
    blk = os.statvfs(root).f_bsize
    return blk if 512 <= blk <= 65536 and not blk & (blk - 1) else 4096


# ---- activate -----------------------------------------------------------------

def activate(args):
    from . import rpmplugin, snapshot
    for d in sorted(set(args.dirs)):
        if not snapshot.clones(d, args.installroot):
            say(MSG_NOT_USED % ("%s and %s are not on one filesystem that clones"
                                % (d, args.installroot)))
            return 0
    so, values, _, private = rpmplugin.activation_macros()
    # rpm fails every transaction with a plugin it cannot load: try it first
    try:
        import ctypes
        ctypes.CDLL(so).cow_hooks
    except (OSError, AttributeError) as exc:
        if private:
            rpmplugin.remove_private(private)
        say(MSG_NOT_USED % ("rpm's cow plugin %s cannot be loaded: %s" % (so, exc)))
        return 0
    for name, value in values.items():
        emit("macro", name, value or "%{nil}")
    if private:
        emit("private", private)
    return 0


# ---- prepare -------------------------------------------------------------------

class Served(collections.namedtuple("Served", "key plan nevra package_digests")):
    """A package prepare will have served: its header key, its feed plan,
    its NEVRA (as rpm names a transaction element), and the package file's
    digests (rpm 6 records them) from the extents file's record -- which
    prepare checked was made from this very file."""


def _open_one(package, target, deny):
    """The extents file of a package that may be served, made or checked
    (the package file as dnf5 verified it): (its path, a descriptor, its
    stat, its prologue); raises RpmcowError saying why not."""
    from . import cache, checksig, denylist, inputs, snapshot
    from .errors import RpmcowError
    hit = denylist.matches(_name_of(package), deny) if deny else None
    if hit:
        raise RpmcowError("denied by %r in cow.conf" % hit)
    out = extents_path(package)
    if not cache.made_from(out, package):
        # (again, where the one made while downloading was not of these bytes)
        _transcode(package, target)
    fd = inputs.open_file(out)
    try:
        st = os.fstat(fd)
        if not snapshot.private(st):
            raise RpmcowError("its extents file can be changed by others than root")
        return out, fd, st, checksig.read_prologue(fd)
    except BaseException:
        os.close(fd)
        raise


def _judge_one(package, opened, target, level, blk, hcheck):
    """Served for an opened package (_open_one; hcheck: its header check,
    under way) that satisfies the root's level, or raises RpmcowError saying
    why not.  Closes the descriptor."""
    import rpm
    from . import checksig, feeder, inputs, rpmplugin, serve
    from .errors import RpmcowError
    out, fd, st, prologue = opened
    try:
        ev = checksig.InstallCheck(fd, target, prologue=prologue, origin=st,
                                   hcheck=hcheck).require(level)
        feed = feeder.PackageFeed(fd, out, prologue=ev.prologue, sections=ev.sections,
                                  pkg=ev.package)
        if not feed.cheap:
            raise RpmcowError("its %s payload has no cheap feed" % feed.package.compressor)
        pkg_st = os.stat(package)
        # the package rpm reads must carry the very headers judged here
        pfd = inputs.open_file(package)
        try:
            head = os.pread(pfd, len(feed.prologue.data), 0)
        finally:
            os.close(pfd)
        if head != bytes(feed.prologue.data):
            raise RpmcowError("the package changed while it was transcoded")
        plan = plan_path(package)
        serve.write_plan(plan, serve.plan_bytes(feed, os.path.abspath(out), st, pkg_st, blk))
        return Served(rpmplugin.header_key(feed.header), plan,
                      feed.header[rpm.RPMTAG_NEVRA], ev.package_digests)
    finally:
        os.close(fd)


def _transcode(package, target):
    """Transcode package beside it; the verdict is stored, and enforced by
    prepare at the root's level."""
    from . import transcode
    from .units import size
    t0 = time.monotonic()
    r = transcode.transcode_path(package, extents_path(package), target=target, enforce=False,
                                 deny=[])
    say(MSG_TRANSCODED % (r.nevra, size(r.input_len), size(r.output_len), time.monotonic() - t0))


def _name_of(package):
    import rpm
    ts = rpm.TransactionSet()
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
    fd = os.open(package, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return ts.hdrFromFdno(fd)[rpm.RPMTAG_NAME]
    finally:
        os.close(fd)


def _result(package, job):
    """A job's result, or None where that package goes stock (said why)."""
    from .errors import RpmcowError
    try:
        return job.result()
    except RpmcowError as exc:
        say(MSG_STOCK % (os.path.basename(package), exc))
    except OSError as exc:
        say(MSG_STOCK % (os.path.basename(package), exc.strerror or exc))
    except Exception as exc:     # noqa: BLE001 - that package alone goes stock
        say(MSG_STOCK % (os.path.basename(package), "internal error: %r" % exc))
    return None


def prepare(args):
    from . import rpmconfig, rpmplugin, serve, verify
    from .errors import RpmcowError
    target = rpmconfig.Target(root=args.installroot)
    level = rpmconfig.verify_level(target)
    blk = root_block_size(args.installroot)
    deny = args.denylist.replace(",", " ").split()
    served = []
    workers = args.workers or os.cpu_count() or 1
    opened, run = {}, None
    with concurrent.futures.ThreadPoolExecutor(workers, "rpmcow") as pool:
        try:
            # transcoded (where not yet) and opened side by side; then one
            # rpmkeys checks the headers of them all (verify.HeaderChecks:
            # its start is most of a check's ~40 ms); then each is judged
            jobs = {p: pool.submit(_open_one, p, target, deny) for p in args.packages}
            for package, job in jobs.items():
                got = _result(package, job)
                if got is not None:
                    opened[package] = got
            try:
                run = verify.HeaderChecks(target, [o[3] for o in opened.values()])
            except RpmcowError as exc:
                for package in list(opened):
                    os.close(opened.pop(package)[1])
                    say(MSG_STOCK % (os.path.basename(package), exc))
            judged = {p: pool.submit(_judge_one, p, opened.pop(p), target, level, blk, run.of(i))
                      for i, p in enumerate(list(opened))}
            for package, job in judged.items():
                got = _result(package, job)
                if got is not None:
                    served.append(got)
        finally:
            if run is not None:
                run.close()
            for _, fd, _, _ in opened.values():      # (interrupted: none is used)
                os.close(fd)
    if not served:
        return 0
    emit("macro", serve.SERVE_MACRO, serve.serve_entries({s.key: s.plan for s in served}))
    # rpm's test run verified every original on dnf5's transaction set; if
    # every package it adds is served, the rpm plugin skips the real run's
    # second pass, which would read payloads rpm does not use
    # (csrc/rpm_plugin_cow.c: "One verification pass, not two") -- and puts
    # the package digests rpm 6 records from the records: offered only when
    # every served package has them
    algos = rpmconfig.package_digest_algos()
    digests = {s.key: {a: s.package_digests[a] for a in algos} for s in served
               if algos and all(a in s.package_digests for a in algos)}
    if len(digests) == len(served) or not algos:
        emit("macro", serve.SERVED_MACRO, " ".join(s.nevra for s in served))
    if not keeps_extents(args.keep, args.keepcache):
        # each goes once its package is installed: the unshared rest of it
        # and the root are never on the disk together for the whole run
        emit("macro", serve.DISCARD_MACRO, "1")
    if digests:
        emit("macro", rpmplugin.DIGESTS_MACRO, rpmplugin.package_digests_value(digests))
    _share_tails(args)
    return 0


def _share_tails(args):
    """Image builds (the cache outside the installroot): the rpm plugin
    clones each file's last partial block from the cache's tail store
    (rpmcow.tailstore).  One that cannot be used costs only the sharing."""
    from . import rpmplugin, tailstore
    from .errors import RpmcowError
    try:
        store = tailstore.for_package_dirs(
            args.share_tails, {os.path.dirname(os.path.abspath(p)) for p in args.packages},
            args.installroot)
        if store:
            emit("macro", rpmplugin.TAILS_MACRO, store)
    except RpmcowError as exc:
        say(MSG_TAILS % exc)


# ---- follow ---------------------------------------------------------------------

def follow(args):
    """Transcode each package while it downloads, from its first bytes
    (rpmcow.growing: librepo writes it in place), until stdin ends
    (downloads over: prepare takes it from there).  Failures are quiet:
    prepare transcodes again whatever is missing or not of the final bytes."""
    import threading
    from . import growing, rpmconfig
    target = rpmconfig.Target(root=args.installroot)
    pending = {}
    for item in args.packages:
        path, _, size = item.rpartition(":")
        if path and size.isdigit():
            pending[path] = int(size)
    over = threading.Event()

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            over.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    workers = args.workers or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(growing.pool_size(workers), "rpmcow") as pool:
        growing.watch_starts(pending, over, lambda path, size: pool.submit(
            _quietly, _transcode_unless_current, path, target, size, over))
    return 0


def _transcode_unless_current(package, target, size, over):
    """A package already in the cache with its extents file (keepcache)
    needs nothing: prepare uses that file as it is.  Else it is transcoded
    as its download writes it (`size`: the download size; `over`: set when
    the downloads are over)."""
    from . import cache, growing
    from .units import size as human
    out = extents_path(package)
    if cache.made_from(out, package):
        return
    t0 = time.monotonic()
    r = growing.transcode_while_written(package, size, out, stop=over, target=target,
                                        enforce=False, deny=[])
    say(MSG_TRANSCODED % (r.nevra, human(r.input_len), human(r.output_len),
                          time.monotonic() - t0))


def _quietly(fn, *args):
    try:
        fn(*args)
    except Exception:                # noqa: BLE001 - prepare does it again
        pass


# ---- finish --------------------------------------------------------------------

def keeps_extents(keep, keepcache):
    """Whether the cache keeps the extents files after the transaction
    (cow.conf's keep; auto: as dnf5's keepcache keeps the packages)."""
    return keep == "always" or (keep == "auto" and bool(keepcache))


def finish(args):
    from . import journal, rpmplugin
    keep = keeps_extents(args.keep, args.keepcache)
    if args.cow:
        say(journal.dnf_summary(args.cow, args.total, args.cloned, keep))
        journal.log(journal.dnf_line("dnf5", args.installroot, args.total, args.cow,
                                     args.cloned, args.copied))
    for package in args.packages:
        for path in ((plan_path(package),) if keep else
                     (plan_path(package), extents_path(package))):
            try:
                os.unlink(path)
            except OSError:
                pass
    if args.private:
        rpmplugin.remove_private(args.private)
    return 0


# ---- command line ----------------------------------------------------------------

def parser():
    p = argparse.ArgumentParser(prog="python3 -m rpmcow.dnf5cow",
                                description="the dnf5 cow plugin's steps (see the module)")
    sub = p.add_subparsers(dest="step", required=True)
    a = sub.add_parser("activate")
    a.add_argument("--installroot", default="/")
    a.add_argument("dirs", nargs="*")
    a.set_defaults(run=activate)
    r = sub.add_parser("prepare")
    r.add_argument("--installroot", default="/")
    r.add_argument("--denylist", default="")
    r.add_argument("--workers", type=int, default=0)
    # as finish's; by default the extents files stay until finish
    r.add_argument("--keep", choices=("auto", "always", "never"), default="auto")
    r.add_argument("--keepcache", type=int, default=1)
    r.add_argument("--share-tails", choices=("auto", "yes", "no"), default="auto")
    r.add_argument("packages", nargs="*")
    r.set_defaults(run=prepare)
    w = sub.add_parser("follow")
    w.add_argument("--installroot", default="/")
    w.add_argument("--workers", type=int, default=0)
    w.add_argument("packages", nargs="*", help="PATH:SIZE (bytes)")
    w.set_defaults(run=follow)
    f = sub.add_parser("finish")
    f.add_argument("--installroot", default="/")
    f.add_argument("--keep", choices=("auto", "always", "never"), default="auto")
    f.add_argument("--keepcache", type=int, default=0)
    f.add_argument("--private")
    # what rpm's cow plugin reported (the C++ side asks it)
    f.add_argument("--cow", type=int, default=0)
    f.add_argument("--cloned", type=int, default=0)
    f.add_argument("--copied", type=int, default=0)
    f.add_argument("--total", type=int, default=0)
    f.add_argument("packages", nargs="*")
    f.set_defaults(run=finish)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as exc:             # noqa: BLE001 - dnf5 goes on the stock way
        say(MSG_NOT_USED % ("internal error: %r" % exc))
        return 0


if __name__ == "__main__":
    sys.exit(main())
