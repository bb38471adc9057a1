# cow.py -- DNF plugin: copy-on-write package installs through stock dnf.
"""Install packages copy-on-write through stock dnf 4, rpm and librepo.

Each package is transcoded into an extents file while it downloads, from
its first bytes on (rpmcow.growing: librepo writes it in place; used only
if made from the very bytes librepo then verified) -- unless the cache keeps one made from exactly
its bytes (keepcache, or several roots installed from one cache), which is
used again; dnf's gpgcheck runs on the original packages as always.  Right
before rpm's test transaction the extents files are judged at the root's
verification level (the transcoder checked every payload and file digest);
where every package is to be fed (rpm 4.18 to 6.0), the test checks their
headers only, as the real run does -- rpm never reads an original's payload
then -- else it verifies every package whole, as stock.  rpm's real
transaction reads a cheap payload for the transcoded ones while rpmcow's
rpm plugin clones their file data from the extents files.  Packages that cannot (denied, failed to
transcode, a compressor without a cheap feed, a verdict below the
verification level) install the stock way in the same transaction.

Used only when the dnf cache and the install root are on one filesystem
that really clones; never for --downloadonly.
"""
import atexit
import collections
import concurrent.futures
import logging
import os
import sys
import threading
import time
import types

import dnf
import dnf.rpm.transaction
import dnf.yum.rpmtrans
import libdnf.transaction
import rpm

logger = logging.getLogger("dnf.plugin")

MSG_NOT_USED = "cow: not used: %s"
MSG_STOCK = "cow: %s installs the stock way: %s"
MSG_TRANSCODED = "cow: transcoded %s (%s -> %s, %.1fs)"
MSG_ERROR = "cow: internal error, installing the stock way: %s"
MSG_TAILS = "cow: last partial blocks are written, not shared: %s"

INSTALLING = (libdnf.transaction.TransactionItemAction_INSTALL,
              libdnf.transaction.TransactionItemAction_UPGRADE,
              libdnf.transaction.TransactionItemAction_DOWNGRADE,
              libdnf.transaction.TransactionItemAction_REINSTALL,
              libdnf.transaction.TransactionItemAction_OBSOLETE)


def _import_rpmcow():
    """rpmcow from the system, or from the checkout this plugin lives in."""
    try:
        import rpmcow  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from rpmcow import (cache, checksig, denylist, digests, errors, feeder, growing, rpmconfig,
                        rpmplugin, snapshot, tailstore, transcode, units, verify)
    return types.SimpleNamespace(cache=cache, checksig=checksig, denylist=denylist,
                                 digests=digests, growing=growing,
                                 errors=errors, feeder=feeder, rpmconfig=rpmconfig,
                                 rpmplugin=rpmplugin, snapshot=snapshot, tailstore=tailstore,
                                 transcode=transcode, units=units, verify=verify)


def extents_path(pkg):
    """Where a package's extents file goes: beside it in the repository's
    cache package directory, named *.rpm so `dnf clean packages` takes it."""
    base = os.path.basename(pkg.localPkg())
    if base.endswith(".rpm"):
        base = base[:-4]
    return os.path.join(pkg.repo.cache_pkgdir(), base + ".cow.rpm")


class Cow(dnf.Plugin):
    name = "cow"

    def __init__(self, base, cli):
        super().__init__(base, cli)
        self.base = base
        self.cli = cli
        self.enabled = True
        self.deny = []
        self.workers = 0
        self.keep = "auto"
        self.share_tails = "auto"
        self._reset()

    def _reset(self):
        self.progress = None
        self.active = False
        self.activation = None
        self.pool = None
        self.jobs = {}              # localPkg path -> future
        self.downloaded = {}        # localPkg path -> Event: librepo verified it
        self.downloads_over = threading.Event()
        self.stock = {}             # localPkg path -> reason
        self.feeds = {}             # localPkg path -> (feed, fd, transcode result, snapshot)
        self.gated = set()          # localPkg paths the rpm plugin works on in its thread
        self.stream = None          # the feed rpm reads now (feeder.Stream)
        self.prepared = False       # judged and set up before rpm's test run
        self._patched = None
        self._test_patched = None
        self._lock = threading.Lock()

    # ---- configuration ------------------------------------------------------
    def config(self):
        conf = self.read_config(self.base.conf)
        if conf.has_section("main"):
            if conf.has_option("main", "enabled"):
                self.enabled = conf.getboolean("main", "enabled")
            if conf.has_option("main", "denylist"):
                self.deny = conf.get("main", "denylist").replace(",", " ").split()
            if conf.has_option("main", "workers"):
                self.workers = conf.getint("main", "workers")
            if conf.has_option("main", "keep"):
                self.keep = conf.get("main", "keep").strip()
            if conf.has_option("main", "share_tails"):
                self.share_tails = conf.get("main", "share_tails").strip()

    # ---- decide, enable, start transcoding as downloads complete -------------
    def resolved(self):
        if not self.enabled or self.base.conf.downloadonly:
            return
        pkgs = self._installing()
        if not pkgs:
            return
        try:
            self.mods = _import_rpmcow()
        except Exception as exc:          # noqa: BLE001 - must not break dnf
            logger.warning(MSG_NOT_USED, "rpmcow cannot be loaded (%s)" % exc)
            return
        root = self.base.conf.installroot
        cache_dirs = {p.repo.cache_pkgdir() for p in pkgs if not p._from_cmdline}
        for d in sorted(cache_dirs):
            if not self.mods.snapshot.clones(d, root):
                logger.debug(MSG_NOT_USED, "%s and %s are not on one filesystem that "
                             "clones" % (d, root))
                return
        try:
            self.activation = self.mods.rpmplugin.Activation()
        except Exception as exc:          # noqa: BLE001
            logger.warning(MSG_NOT_USED, exc)
            return
        # dnf calls no hook when the transaction fails before rpm runs (e.g.
        # its gpgcheck): the private plugin directory goes at exit then
        atexit.register(self.activation.close)
        self.active = True
        workers = self.workers or os.cpu_count() or 1
        self.pool = concurrent.futures.ThreadPoolExecutor(
            self.mods.growing.pool_size(workers), "rpmcow")
        self._wrap_downloads()
        self._wrap_test()

    def _installing(self):
        return [tsi.pkg for tsi in self.base.transaction if tsi.action in INSTALLING]

    def _wrap_downloads(self):
        base, plugin = self.base, self
        original = base.download_packages

        class Progress(dnf.callback.DownloadProgress):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner or dnf.callback.NullDownloadProgress()

            def start(self, *a, **kw):
                return self.inner.start(*a, **kw)

            def progress(self, *a, **kw):
                return self.inner.progress(*a, **kw)

            def message(self, msg):
                return self.inner.message(msg)

            def end(self, payload, status, msg):
                r = self.inner.end(payload, status, msg)
                if status in (dnf.callback.STATUS_OK, dnf.callback.STATUS_ALREADY_EXISTS):
                    pkg = getattr(payload, "pkg", None)
                    if pkg is not None:
                        plugin._downloaded(pkg.localPkg()).set()   # librepo checked it
                        plugin._submit(pkg)
                return r

        def download_packages(pkglist, progress=None, callback_total=None):
            plugin.progress = progress
            plugin.downloads_over.clear()
            # each package is transcoded from its first downloaded bytes on
            watcher = threading.Thread(target=plugin._watch, args=(list(pkglist),),
                                       name="rpmcow-watch", daemon=True)
            watcher.start()
            try:
                result = original(pkglist, Progress(progress), callback_total)
            finally:
                plugin.downloads_over.set()
                watcher.join()
                plugin.progress = None     # later messages go to the log
            for pkg in pkglist:            # already in the cache: no callback
                plugin._submit(pkg)
            # rpm chroot()s the whole process into the installroot during the
            # test transaction that follows: every transcode (paths, rpmkeys)
            # must be finished before dnf goes on
            concurrent.futures.wait(list(plugin.jobs.values()))
            return result

        base.download_packages = download_packages

    def _submit(self, pkg):
        path = pkg.localPkg()
        with self._lock:
            if path in self.jobs or path in self.stock:
                return
            if pkg._from_cmdline:
                # no cache directory to put its extents file in (and a file
                # someone else may own): rpm installs it, the plugin checks it
                self.stock[path] = "given on the command line"
                return
            hit = self.mods.denylist.matches(pkg.name, self.deny)
            if hit:
                self.stock[path] = "denied by %r in cow.conf" % hit
                return
            self.jobs[path] = self.pool.submit(self._transcode, pkg)

    def _downloaded(self, path):
        with self._lock:
            return self.downloaded.setdefault(path, threading.Event())

    def _watch(self, pkglist):
        """Submit each package as soon as its download has written bytes
        (librepo writes it in place), until the downloads are over."""
        self.mods.growing.watch_starts({p.localPkg(): p for p in pkglist}, self.downloads_over,
                                       lambda path, pkg: self._submit(pkg))

    def _transcode(self, pkg):
        m = self.mods
        path, out = pkg.localPkg(), extents_path(pkg)
        if m.cache.made_from(out, path):
            # kept in the cache (keepcache, an earlier root sharing this
            # cache) and made from these very bytes: its blocks are shared
            # again, not made anew; its verdict is judged as any other's
            return out, None
        os.makedirs(os.path.dirname(out), exist_ok=True)
        t0 = time.monotonic()
        # the verdict is stored and enforced before rpm runs (keys dnf
        # imports meanwhile count then); only BAD stops it here
        kw = dict(target=m.rpmconfig.Target(root=self.base.conf.installroot), enforce=False,
                  deny=[])
        r = None
        if pkg.downloadsize:
            try:
                r = m.growing.transcode_while_written(path, pkg.downloadsize, out,
                                                      stop=self.downloads_over, **kw)
            except Exception:              # noqa: BLE001 - made again below
                r = None
        # used only if made from the very bytes librepo then verified (a
        # restarted download, another mirror): else again, from those
        downloaded = self._downloaded(path)
        while not (downloaded.is_set() or self.downloads_over.is_set()):
            downloaded.wait(0.05)
        if r is None or not m.cache.made_from(out, path):
            # from the final file: every download (and delta rebuild) over
            self.downloads_over.wait()
            r = m.transcode.transcode_path(path, out, **kw)
        size = self.mods.units.size
        self._say(MSG_TRANSCODED % (r.nevra, size(r.input_len), size(r.output_len),
                                    time.monotonic() - t0))
        return out, r

    def _say(self, msg):
        progress = getattr(self, "progress", None)
        if progress is not None and hasattr(progress, "message"):
            progress.message(msg + "\n")   # above dnf's download meter
        else:
            logger.info(msg)

    # ---- judge, and swap payloads, right before rpm's test run -------------
    def _wrap_test(self):
        """dnf runs rpm's test transaction after its gpgcheck (which may import
        keys) and before pre_transaction: the extents files are judged right
        before it, so that it need not read what is fed (_before_test)."""
        cls = dnf.rpm.transaction.TransactionWrapper
        original = cls.test
        plugin = self

        def test(ts, cb, conf={}):         # noqa: B006 - dnf's own signature
            restore = plugin._before_test(ts)
            try:
                return original(ts, cb, conf)
            finally:
                if restore is not None:
                    restore()

        cls.test = test
        self._test_patched = (cls, original)

    def _before_test(self, wrapper):
        """Judge and set up the feeds (_prepare).  Where every package the
        transaction installs is fed and rpm can check headers alone (4.18 to
        6.0), the test run does so, as the real run will: the transcoder
        verified each original's payload and file digests, and each extents
        file is bound to the very bytes dnf verified (cache.made_from).
        Otherwise the test run verifies every package whole, as stock dnf's
        does: its payload digest is then rpm's check of a package going the
        stock way.  Returns what puts the real run's settings back, or None."""
        if not self.active or self.prepared:
            return None
        ts = wrapper.ts
        before = (ts._vfyflags, ts._vfylevel)
        self._prepare_or_fall_back()
        if not self.prepared:
            return None
        all_fed = bool(self.feeds) and all(pkg.localPkg() in self.feeds
                                           for pkg in self._installing())
        if all_fed and self.mods.rpmplugin.PAYLOADLESS_VERIFY_PASS:
            logger.debug("cow: every package is fed: rpm's test run checks headers only")
            return None
        real = (ts._vfyflags, ts._vfylevel)
        ts._vfyflags, ts._vfylevel = before

        def restore():
            ts._vfyflags, ts._vfylevel = real
        return restore

    def pre_transaction(self):
        if not self.active:
            return
        if not self.prepared:             # no test run went first
            self._prepare_or_fall_back()
        if self.prepared:
            self._drop_originals()

    def _prepare_or_fall_back(self):
        try:
            self._prepare()
            self.prepared = True
        except Exception as exc:          # noqa: BLE001 - before rpm: fall back
            logger.warning(MSG_ERROR, exc)
            self._undo()

    def _prepare(self):
        m = self.mods
        rpmconfig = m.rpmconfig
        self.progress = None
        root = self.base.conf.installroot
        target = rpmconfig.Target(root=root)
        level = rpmconfig.verify_level(target)
        blk = os.statvfs(root).f_bsize
        blk = blk if 512 <= blk <= 65536 and not blk & (blk - 1) else 4096
        entries, digests = {}, {}
        pkgs = self._installing()
        # every package's header check by one rpmkeys (verify.HeaderChecks):
        # its start is most of a check's ~40 ms, once per package before
        opened, run = collections.deque(), None
        try:
            for pkg in pkgs:
                o = self._open_extents(pkg)
                if o is not None:
                    opened.append(o)
            try:
                run = m.verify.HeaderChecks(target, [o[5] for o in opened])
            except Exception as exc:     # noqa: BLE001 - those packages go stock
                self.stock.update((o[0], self._stock_reason(exc)) for o in opened)
            if run is not None:
                for i in range(len(opened)):
                    self._finish_check(opened.popleft(), target, run.of(i), level, blk,
                                       entries, digests)
        finally:
            if run is not None:
                run.close()
            for o in opened:               # (interrupted, or no run: none is used)
                self._close_opened(o)
        for path, reason in sorted(self.stock.items()):
            logger.info(MSG_STOCK, os.path.basename(path), reason)
        if not self.feeds:
            return
        self.activation.set_map(entries)
        self._share_tails(pkgs)
        digests.update(self._stock_digests(pkgs))
        self.activation.set_package_digests(digests)
        self.activation.clear_results()
        # rpm's file-digest check is off for the whole transaction: the
        # plugin checks the files of the packages that go the stock way
        self.activation.verify_others(len(self.feeds) < len(pkgs))
        ts = self.base._ts
        ts.addTsFlag(rpm.RPMTRANS_FLAG_NOFILEDIGEST)
        m.rpmplugin.verify_headers_only(ts.ts)
        self._patch_open(blk)

    def _open_extents(self, pkg):
        """Open and snapshot pkg's extents file and read its headers:
        (path, extents path, transcode result, fd, snap, prologue), or None
        where pkg goes stock."""
        m = self.mods
        path = pkg.localPkg()
        if path in self.stock:
            return None
        job = self.jobs.get(path)
        if job is None:
            self.stock[path] = "not downloaded through dnf"
            return None
        fd = snap = None
        try:
            out, r = job.result()
            fd = os.open(out, os.O_RDONLY | os.O_CLOEXEC)
            # judged, fed and cloned from one descriptor (rpmcow.install)
            snap = m.snapshot.take(fd, out)
            return (path, out, r, fd, snap, m.checksig.read_prologue(snap.fd))
        except BaseException as exc:
            if snap is not None:
                snap.close()
            if fd is not None:
                os.close(fd)
            if not isinstance(exc, Exception):
                raise
            self.stock[path] = self._stock_reason(exc)
            return None

    @staticmethod
    def _close_opened(opened):
        opened[4].close()
        os.close(opened[3])

    def _finish_check(self, opened, target, hcheck, level, blk, entries, digests):
        """Judge an opened package at the root's level (hcheck: its header
        check, under way) and make its feed, or send it the stock way with
        the reason."""
        m = self.mods
        path, out, r, fd, snap, prologue = opened
        try:
            try:
                check = m.checksig.InstallCheck(snap.fd, target, prologue=prologue,
                                                origin=snap.origin, hcheck=hcheck)
                ev = check.require(level)
                feed = m.feeder.PackageFeed(snap.fd, out, prologue=ev.prologue,
                                            sections=ev.sections, pkg=ev.package)
                if not feed.cheap:
                    raise m.errors.RpmcowError("its %s payload has no cheap feed"
                                               % feed.package.compressor)
            except BaseException:
                self._close_opened(opened)
                raise
            if self.keep == "auto":
                self.base._add_tempfiles([out])     # dnf's keepcache decides
            key = m.rpmplugin.header_key(feed.header)
            # the rpm plugin clones on a thread of its own while rpm goes
            # on; the feed holds back the archive's trailer until it is
            # done (release_gate)
            if self.activation.worker_ok and feed.gateable and feed.clones(blk):
                entries[key] = (snap.fd, blk, feed.last)
                self.gated.add(path)
            else:
                entries[key] = (snap.fd, blk)
            digests[key] = ev.package_digests
            self.feeds[path] = (feed, fd, r, snap)
        except Exception as exc:           # noqa: BLE001 - that package alone goes stock
            self.stock[path] = self._stock_reason(exc)

    def _stock_reason(self, exc):
        if isinstance(exc, OSError):
            return "cannot read its extents file: %s" % exc.strerror
        if isinstance(exc, self.mods.errors.RpmcowError):
            return str(exc)
        return "internal error: %r" % exc

    def _share_tails(self, pkgs):
        """Image builds (the cache outside the installroot, shared by the
        roots): the plugin clones each file's last partial block from the
        cache's tail store (rpmcow.tailstore; cow.conf's share_tails).  A
        store that cannot be used costs only the sharing."""
        m = self.mods
        try:
            self.activation.share_tails(m.tailstore.for_package_dirs(
                self.share_tails, {p.repo.cache_pkgdir() for p in pkgs if not p._from_cmdline},
                self.base.conf.installroot))
        except m.errors.RpmcowError as exc:
            logger.warning(MSG_TAILS, exc)

    def _stock_digests(self, pkgs):
        """{header key: digests} of the packages going the stock way beside
        fed ones, for rpm 6's database: rpm's pass that records them does not
        run while extents files are fed (rpmplugin.verify_headers_only).
        Read from dnf's cache, which only root can change."""
        algos = self.mods.rpmconfig.package_digest_algos()
        out = {}
        if not algos:
            return out
        ts = rpm.TransactionSet()
        ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
        for pkg in pkgs:
            path = pkg.localPkg()
            if path in self.feeds:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                h = ts.hdrFromFdno(fd)
                out[self.mods.rpmplugin.header_key(h)] = \
                    self.mods.digests.fd_hexdigests(fd, algos)
            except (rpm.error, OSError):
                pass
            finally:
                os.close(fd)
        return out

    def _drop_originals(self):
        """When the cache is not kept, the original packages of copy-on-write
        installs are dead weight from here on -- gpgcheck and rpm's test
        transaction have read them, rpm's real transaction reads the feed --
        so they go now, and peak disk use stays below a stock install's
        (which holds them until the end).  Only packages dnf downloaded."""
        if self.base.conf.keepcache:      # dnf's keepcache alone decides about them
            return
        for path in self.feeds:
            if path in self.base._trans_tempfiles or path in self.base._tempfiles:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def _patch_open(self, blk):
        """dnf hands rpm each package through RPMTransaction's callbacks:
        the open hands rpm the feed instead, the progress releases the
        feed's gate once rpm has read the last entry's header (the rpm
        plugin's work on the files before it must be done, else the stream
        is cut short and rpm fails the package), the close ends the feed."""
        cls = dnf.yum.rpmtrans.RPMTransaction
        originals = (cls._instOpenFile, cls._instProgress, cls._instCloseFile)
        open_file, progress, close_file = originals
        plugin = self

        def _instOpenFile(cb, key):
            pkg = cb._extract_cbkey(key)[0].pkg
            path = pkg.localPkg()
            entry = None if cb.test else plugin.feeds.get(path)
            plugin.activation.feeding(entry is not None)
            plugin.stream = None
            if entry is None:
                return open_file(cb, key)
            # what dnf's own _instOpenFile does, with the feed for the file
            # (the original package may be gone already: see _drop_originals)
            cb.lastmsg = None
            plugin.stream = entry[0].open_stream(blk, gated=path in plugin.gated)
            cb.fd = os.fdopen(plugin.stream.fd, "rb")
            if cb.trans_running:
                cb.total_installed += 1
                cb.installed_pkg_names.add(pkg.name)
            return cb.fd.fileno()

        def _instProgress(cb, amount, total, key):
            stream = plugin.stream
            if stream is not None and amount > stream.gate_at:
                stream.release_after(plugin.activation.drain)
            return progress(cb, amount, total, key)

        def _instCloseFile(cb, key):
            stream, plugin.stream = plugin.stream, None
            if stream is not None:
                stream.close_gate()
            return close_file(cb, key)

        cls._instOpenFile = _instOpenFile
        cls._instProgress = _instProgress
        cls._instCloseFile = _instCloseFile
        self._patched = (cls, originals)

    # ---- after rpm --------------------------------------------------------
    def transaction(self):
        if not self.active:
            return
        for feed, _, _, _ in self.feeds.values():
            if feed.error is not None:      # rpm failed that package: say why
                logger.error("cow: feeding %s to rpm failed: %s", feed.nevra, feed.error)
        done = self.activation.package_results() if self.activation else {}
        cloned = sum(r.cloned for r in done.values())
        copied = sum(r.copied for r in done.values())
        n, total = sum(1 for r in done.values() if r.ok), len(self._installing())
        kept = self._extents_kept()
        self._undo()
        if n:
            from rpmcow import journal
            logger.info("%s", journal.dnf_summary(n, total, cloned, kept))
            try:
                journal.log(journal.dnf_line("dnf", self.base.conf.installroot, total, n,
                                             cloned, copied))
            except Exception:             # noqa: BLE001 - a report never fails dnf
                pass

    def _extents_kept(self):
        """Whether the extents files stay in the cache after this transaction."""
        if self.keep == "always":
            return True
        if self.keep == "never":
            return False
        return bool(self.base.conf.keepcache)

    def _undo(self):
        if self.stream is not None:
            self.stream.close_gate()
            self.stream = None
        if self._patched:
            cls, (cls._instOpenFile, cls._instProgress, cls._instCloseFile) = self._patched
            self._patched = None
        if self._test_patched:
            cls, cls.test = self._test_patched
            self._test_patched = None
        for feed, fd, _, snap in self.feeds.values():
            feed.join()
            snap.close()
            os.close(fd)
        if self.keep == "never":
            for path in self.jobs:
                try:
                    out, _ = self.jobs[path].result()
                    os.unlink(out)
                except Exception:          # noqa: BLE001 - best effort
                    pass
        if self.pool:
            self.pool.shutdown(wait=True)
        if self.activation:
            self.activation.close()
        self._reset()
