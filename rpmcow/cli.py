"""Command line: ``rpmcow SUBCOMMAND ...`` and the ``rpm2extents`` entry point.

Errors are reported once, as ``rpmcow: <message>`` on stderr, with the exit
code of their kind (rpmcow.errors); nothing here prints a traceback for an
error a user can cause.
"""
import argparse
import gc
import os
import sys
from collections import namedtuple

from . import __version__, errors, rpmconfig
from .digests import ALGOS, by_name
from .units import size as _size

PROG = "rpmcow"




def _page_size(text):
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text) from None
    if v < 512 or v > 65536 or v & (v - 1):
        raise argparse.ArgumentTypeError("page size must be a power of two from 512 to 65536")
    return v


def _plural(n, word, plural=None):
    return "%d %s" % (n, word if n == 1 else (plural or word + "s"))


def batch_name(path):
    """The extents file's name for package `path` in a -d directory: as the
    dnf plugin names them in its cache (NAME.cow.rpm, so that dnf's
    'clean packages' takes them)."""
    base = os.path.basename(path)
    return (base[:-4] if base.endswith(".rpm") else base) + ".cow.rpm"


def cmd_transcode(args):
    from . import transcode
    inputs = args.input
    if args.directory is not None:
        if args.output is not None:
            raise errors.UsageError("give -o FILE or -d DIR, not both")
        if not os.path.isdir(args.directory):
            raise errors.UsageError("%s: not a directory (-d names the directory the extents "
                                    "files go to)" % args.directory)
        if "-" in inputs:
            raise errors.UsageError("standard input cannot be transcoded into a directory: "
                                    "use -o FILE")
        jobs = [(i, os.path.join(args.directory, batch_name(i))) for i in inputs]
    else:
        if len(inputs) > 1:
            raise errors.UsageError("%d packages given: name a directory for their extents "
                                    "files with -d DIR" % len(inputs))
        output = args.output
        if output is None:
            if inputs[0] != "-":
                raise errors.UsageError("name the output with -o FILE (or -o - for stdout), or "
                                        "a directory with -d DIR")
            output = "-"
        if output != "-" and os.path.isdir(output):
            raise errors.UsageError("output %s is a directory: give a file name with -o, or "
                                    "use -d %s to name the extents file after the package"
                                    % (output, output))
        jobs = [(inputs[0], output)]
    algos = args.digest or list(transcode.DEFAULT_ALGOS)
    for a in algos:
        by_name(a)
    # Ctrl-C ends a transcode at once: the output has no name until it is
    # complete, so nothing is left behind (Python's handler would wait for
    # the C pass to end)
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    show = not args.quiet and not args.json and sys.stderr.isatty()
    reports, failed = [], 0
    for src, dst in jobs:
        try:
            r = transcode.transcode_path(src, dst, algos=algos, page_size=args.page_size,
                                         target=_target(args), level=args.verify_level,
                                         progress=_ProgressLine(src) if show else None)
        except errors.RpmcowError as exc:
            if show:
                sys.stderr.write("\r\033[K")
            if len(jobs) == 1:
                raise _named(src, exc) from None
            print("%s: %s" % (PROG, _named(src, exc)), file=sys.stderr)
            failed += 1
            reports.append({"input": src, "output": dst, "error": str(_named(src, exc))})
            continue
        reports.append(_transcode_report(src, dst, r))
        if show:
            sys.stderr.write("\r\033[K")
        if not args.quiet and not args.json:
            for line in _transcode_lines(r):
                print(line, file=sys.stderr)
    if args.json:
        import json
        json.dump(reports if args.directory is not None else reports[0], sys.stdout, indent=2,
                  sort_keys=True)
        sys.stdout.write("\n")
    if failed:
        print("%s: %d of %d packages failed" % (PROG, failed, len(jobs)), file=sys.stderr)
        return 1
    return 0


class _ProgressLine:
    """'NAME: 45% of 1.2 GiB' on a terminal, rewritten in place; erased when
    the next line is printed."""

    def __init__(self, name):
        self.name = os.path.basename(name)
        self.shown = False

    def __call__(self, done, total):
        if total:
            text = "%s: %3d%% of %s" % (self.name, min(100, done * 100 // total), _size(total))
        else:
            text = "%s: %s read" % (self.name, _size(done))
        sys.stderr.write("\r\033[K" + text)
        sys.stderr.flush()
        self.shown = True


def _named(path, exc):
    from .inputs import named
    return named(path, exc)


def _signature_verdict(verdict):
    """(word, warning or None) for the signatures of a transcode's verdict."""
    items = verdict.items if verdict is not None else []
    sigs = [i for i in items if i.is_signature and i.result != "NOTFOUND"]
    bad = [i for i in items if i.result == "BAD"]
    warning = ("WARNING: %s -- stored as it is because --verify-level is none; any install "
               "refuses it" % bad[0].reason) if bad else None
    if any(i.result == "OK" for i in sigs):
        return "signature OK", warning
    if any(i.result == "NOKEY" for i in sigs):
        return "signed, key not in the keyring (NOKEY)", warning
    if sigs:
        return "signature %s" % sigs[0].result, warning
    return "unsigned", warning


def _transcode_lines(r):
    if r.passthrough:
        return ["%s: deny-listed (%s), copied unchanged" % (r.nevra, r.denied_by)]
    word, warning = _signature_verdict(r.verdict)
    lines = ["%s: %s, %s (%s), %d shared; %s -> %s; %s"
             % (r.nevra, _plural(r.files, "file"), _plural(r.blobs, "distinct content"),
                _size(r.blob_bytes), r.dup_files, _size(r.input_len), _size(r.output_len), word)]
    if warning:
        lines.append("%s: %s" % (r.nevra, warning))
    return lines


def _transcode_report(src, dst, r):
    word, warning = _signature_verdict(r.verdict)
    out = {"input": src, "output": dst, "package": r.nevra, "passthrough": r.passthrough,
           "files": r.files, "distinct_contents": r.blobs, "content_bytes": r.blob_bytes,
           "duplicate_files": r.dup_files, "input_bytes": r.input_len,
           "output_bytes": r.output_len, "compressor": r.compressor, "signature": word}
    if r.verdict is not None:
        out["verdict"] = [{"item": i.label, "result": i.result, "detail": i.detail}
                          for i in r.verdict.items]
    if warning:
        out["warning"] = warning
    return out


def _target(args):
    return rpmconfig.Target(root=args.root or "/", dbpath=args.dbpath)


def _root_options(p):
    p.add_argument("--root", metavar="DIR",
                   help="root whose keyring and %%_pkgverify_level apply (default /)")
    p.add_argument("--dbpath", metavar="DIR", help="rpm database inside the root")


def cmd_checksig(args):
    from . import checksig
    return checksig.checksig(args.files, _target(args), verbose=args.verbose,
                             files=args.files_digests, as_json=args.json)


def cmd_install(args):
    from . import install
    opts = install.Options(
        root=args.root or "/", dbpath=args.dbpath, upgrade=args.upgrade, nodeps=args.nodeps,
        noscripts=args.noscripts, notriggers=args.notriggers, test=args.test,
        replacepkgs=args.replacepkgs, replacefiles=args.replacefiles,
        oldpackage=args.oldpackage, excludedocs=args.excludedocs, level=args.verify_level,
        verify_files=args.verify_files, share_tails=args.share_tails,
        report=_RpmLikeReport(args.hash) if (args.verbose or args.hash) and not args.quiet
        else None)
    r = install.install(args.files, opts)
    if not args.quiet and not args.test:
        for line in _install_lines(r):
            print(line, file=sys.stderr)
    return 0


class _RpmLikeReport:
    """rpm -iv / -ivh: a line per package as rpm begins to unpack it, with
    hash marks filling as it does (-h)."""

    WIDTH = 40

    def __init__(self, hashes):
        self.hashes = hashes
        self.n = 0
        self.current, self.marks = None, 0

    def __call__(self, event, nevra, amount, total):
        out = sys.stdout
        if event == "start":
            self._finish()
            self.n += 1
            self.current, self.marks = nevra, 0
            out.write("%4d:%-36s" % (self.n, nevra) if self.hashes else "%s\n" % nevra)
            if not self.hashes:
                self.current = None
        elif event == "progress" and self.hashes and self.current == nevra and total:
            want = min(self.WIDTH, amount * self.WIDTH // total)
            if want > self.marks:
                out.write("#" * (want - self.marks))
                self.marks = want
                if want == self.WIDTH:
                    self._finish()
        out.flush()

    def _finish(self):
        if self.current is not None and self.hashes:
            sys.stdout.write("#" * (self.WIDTH - self.marks) + " [100%]\n")
        self.current = None


def _install_lines(r):
    """Per package what really happened, then one summary line."""
    lines, cloned, copied = [], 0, 0
    for nevra in r.cow:
        pr = r.plugin.get(nevra)
        if pr is None or (pr.copied == 0 and pr.cloned == 0):
            lines.append("%s: installed from its extents file (no file large enough to clone)"
                         % nevra)
        elif pr.copied and not pr.cloned:
            lines.append("%s: installed, file data copied (%s): %s" % (
                nevra, pr.copy_why or "could not clone", _size(pr.copied)))
            copied += 1
        elif pr.copied:
            lines.append("%s: installed copy-on-write, %s cloned, %s copied (%s)" % (
                nevra, _size(pr.cloned), _size(pr.copied), pr.copy_why or "could not clone"))
            cloned += 1
        else:
            lines.append("%s: installed copy-on-write, %s cloned" % (nevra, _size(pr.cloned)))
            cloned += 1
    for nevra in r.plain:
        lines.append("%s: installed the stock way" % nevra)
    total = len(r.cow) + len(r.plain)
    lines.append("%s: %s installed: %d copy-on-write (%s shared), %d copied, %d the stock way"
                 % (PROG, _plural(total, "package"), cloned, _size(r.shared_bytes), copied,
                    len(r.plain)))
    return lines


def cmd_inspect(args):
    from . import inspect as inspect_mod
    report = inspect_mod.inspect_path(args.file, with_table=args.table or args.json)
    try:
        if args.json:
            import json
            json.dump(report, sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(inspect_mod.format_report(report, with_table=args.table))
        sys.stdout.flush()
    except BrokenPipeError:
        # a report read in part ('| head'): as for any filter, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if report["transcoded"] else 1


def cmd_cache(args):
    from . import cache, tailstore
    root = args.root or "/"
    dirs = args.dirs or cache.default_dirs(root)
    for d in dirs:
        if not os.path.isdir(d):
            raise errors.UsageError("%s: not a directory" % d)
    entries, parts = cache.scan(dirs, root, args.dbpath)
    stores = [s for s in map(tailstore.stores_in, dirs) if s]
    if args.action == "status":
        tails = [tailstore.status(s) for s in stores]
        if args.json:
            import json
            json.dump({"dirs": dirs, "files": [e.as_dict() for e in entries],
                       "stale_parts": parts, "tail_stores": tails},
                      sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
        else:
            print("\n".join(cache.status_lines(entries, parts) +
                            [tailstore.status_line(t) for t in tails]))
        return 0
    removed = cache.clean(entries, parts, everything=args.all, dry_run=args.dry_run)
    for store in stores:
        n, freed = tailstore.clean(store, dry_run=args.dry_run)
        if n:
            removed.append(("%s (%s no installed file shares)" % (store, _plural(n, "tail")),
                            freed))
    for path, freed in removed:
        print("%s %s (%s)" % ("would remove" if args.dry_run else "removed", path, _size(freed)))
    print("%s: %s, %s %s" % (PROG, _plural(len(removed), "file"),
                            _size(sum(f for _, f in removed)),
                            "would be freed" if args.dry_run else "freed"))
    return 0


def _cache_arguments(c):
    c.add_argument("action", choices=("status", "clean"), metavar="status|clean",
                   help="status: what extents files (and tail stores) cost and save; clean: "
                   "remove those no installed package uses, the tails no installed file "
                   "shares, and stale .part files")
    c.add_argument("dirs", nargs="*", metavar="DIR",
                   help="where to look (default: dnf's package caches in the root)")
    c.add_argument("--all", action="store_true",
                   help="clean: also the extents files of installed packages")
    c.add_argument("--dry-run", action="store_true", help="clean: only say what would go")
    c.add_argument("--json", action="store_true", help="status: machine-readable output")
    _root_options(c)


def _transcode_arguments(t):
    t.add_argument("input", nargs="+", help="package file, or - for standard input (several "
                   "with -d)")
    t.add_argument("-o", "--output", help="extents file to write, or - for standard output "
                   "(invisible until complete, then put in place)")
    t.add_argument("-d", "--directory", metavar="DIR",
                   help="write each package's extents file into DIR, named as dnf's cow "
                   "plugin names them (NAME.cow.rpm); the others go on when one fails")
    t.add_argument("--json", action="store_true",
                   help="print what was done as JSON on standard output")
    t.add_argument("--digest", action="append", metavar="ALGO",
                   help="digest of the input recorded in the C section (repeatable; default "
                   "SHA256; one of %s)" % " ".join(a.name for a in ALGOS))
    t.add_argument("--page-size", type=_page_size, default=None,
                   help="blob alignment in bytes (default: this machine's page size)")
    t.add_argument("--verify-level", choices=rpmconfig.LEVELS,
                   help="verification the package must pass to be written (default: the "
                   "root's %%_pkgverify_level)")
    _root_options(t)
    t.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def _checksig_arguments(c):
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("-v", "--verbose", action="store_true", help="one line per checked item")
    c.add_argument("--files", dest="files_digests", action="store_true",
                   help="also hash every file in an extents file against the header")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    _root_options(c)


# commands whose -h is not --help (install: rpm's -h, hash marks)
OWN_HELP = ("install",)


def _install_arguments(n):
    n.add_argument("--help", action="help", help="show this help message and exit")
    n.add_argument("files", nargs="+", metavar="FILE")
    n.add_argument("-U", "--upgrade", action="store_true", help="upgrade, like rpm -U")
    n.add_argument("-v", "--verbose", action="store_true",
                   help="name each package as it is installed, like rpm -v")
    n.add_argument("-h", "--hash", action="store_true",
                   help="hash marks as each package is installed, like rpm -h (-Uvh works; "
                   "--help for help)")
    n.add_argument("--nodeps", action="store_true", help="do not check dependencies")
    n.add_argument("--noscripts", action="store_true", help="do not run scriptlets")
    n.add_argument("--notriggers", action="store_true", help="do not run triggers")
    n.add_argument("--test", action="store_true", help="only check, install nothing")
    n.add_argument("--replacepkgs", action="store_true", help="reinstall installed packages")
    n.add_argument("--replacefiles", action="store_true", help="allow file conflicts")
    n.add_argument("--oldpackage", action="store_true", help="allow downgrades with -U")
    n.add_argument("--excludedocs", action="store_true", help="do not install documentation")
    n.add_argument("--verify-level", choices=rpmconfig.LEVELS,
                   help="verification every package must pass (default: the root's "
                   "%%_pkgverify_level)")
    n.add_argument("--verify-files", action="store_true",
                   help="hash every file of the extents files against their signed headers "
                   "even when their transcode-time verdict is trusted")
    n.add_argument("--share-tails", metavar="DIR",
                   help="image builds: keep each file's last partial block in DIR (made with "
                   "mode 0700) and clone it from there into every root installed with the same "
                   "DIR, instead of writing it in each (see rpmcow(8), SHARED TAILS)")
    _root_options(n)
    n.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def _inspect_arguments(i):
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--table", action="store_true", help="list every table entry")


MSG_NO_VENDOR_DNF5 = ("rpmcow vendor needs the rpmcow-vendor-dnf5 package (the sticky-vendor "
                      "policy on dnf5); on dnf 4 use `dnf vendor`")


def _vendor_arguments(p):
    try:
        from . import vendor_dnf5
    except ImportError:          # packaged apart (rpmcow-vendor-dnf5): main() says so
        return
    vendor_dnf5.arguments(p)


def _have_vendor_dnf5():
    import importlib.util
    try:
        return importlib.util.find_spec("rpmcow.vendor_dnf5") is not None
    except (ImportError, ValueError):
        return False


def cmd_vendor(args):
    try:
        from . import vendor_dnf5
    except ImportError:
        raise errors.UsageError(MSG_NO_VENDOR_DNF5) from None
    return vendor_dnf5.run(args)


class Command(namedtuple("Command", "help description arguments run")):
    """A subcommand: its one-line help, its description, the function adding
    its arguments to a parser, and the function running it."""
    __slots__ = ()


COMMANDS = {
    "transcode": Command(
        "turn an .rpm into an extents file",
        "Turn an .rpm into an extents file: lead, signature and header kept byte for byte, "
        "payload replaced by each distinct file content, page-aligned, then the S/T/C "
        "sections and the footer. Every file is checked against its header digest on the way.",
        _transcode_arguments, cmd_transcode),
    "checksig": Command(
        "check signatures and digests, like rpmkeys -K",
        "Check packages and extents files like rpmkeys -K. For an extents file the header "
        "signature and digests are checked now, against the current keyring, and the payload "
        "verdict stored at transcode time counts only if it belongs to this header and was "
        "made with this root's key. Exit status: the number of files that failed.",
        _checksig_arguments, cmd_checksig),
    "install": Command(
        "install extents files (and .rpm files), like rpm -i/-U",
        "Install packages like rpm -i (or rpm -U with --upgrade) on the stock rpm: extents "
        "files through the copy-on-write path, their file data cloned from the extents file; "
        "plain .rpm files the stock way, in the same transaction. The verification level must "
        "be met first.",
        _install_arguments, cmd_install),
    "cache": Command(
        "what extents files cost and save; remove unused ones",
        "Show how much copy-on-write saves on this host and what the extents files in dnf's "
        "caches cost (status), or remove the extents files no installed package uses, and "
        "the .part files killed transcodes left (clean).",
        _cache_arguments, cmd_cache),
    "inspect": Command(
        "show what an extents file contains",
        "Say whether FILE is an extents file and show its footer, verification record, table "
        "and input digests. Works on files made by upstream rpm2extents too. Exit 1 if FILE "
        "is not an extents file.",
        _inspect_arguments, cmd_inspect),
    "vendor": Command(
        "the sticky-vendor policy on dnf5 (as `dnf vendor` on dnf 4)",
        "Show and steer the sticky-vendor policy on a dnf5 system: status, list, held, "
        "explain, pin, unpin, switch, enable, disable, check -- the commands and output of "
        "`dnf vendor` (dnf 4). dnf5 enforces the policy itself from vendors.d files that "
        "enable, pin and unpin regenerate; check says what dnf5 cannot enforce. Needs "
        "python3-libdnf5.",
        _vendor_arguments, cmd_vendor),
}


def _columns():
    """The terminal's width, found as shutil.get_terminal_size finds it."""
    try:
        columns = int(os.environ.get("COLUMNS", 0))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's own, sized without shutil: argparse makes a formatter for
    every argument added, and its default one imports shutil (with bz2, lzma
    and fnmatch: ~1.5 ms of every command's start)."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        super().__init__(prog, indent_increment, max_help_position,
                         width if width is not None else _columns() - 2)


def build_parser():
    """The whole command line: every command as a subparser (for --help,
    and for anything that is not a command name)."""
    p = argparse.ArgumentParser(
        prog=PROG, description="Copy-on-write package installs for RPM: transcode "
        "packages to extents files and inspect them.", formatter_class=_Formatter)
    p.add_argument("--version", action="version", version="%(prog)s " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, cmd in COMMANDS.items():
        c = sub.add_parser(name, help=cmd.help, description=cmd.description,
                           formatter_class=_Formatter, add_help=name not in OWN_HELP)
        cmd.arguments(c)
        c.set_defaults(func=cmd.run)
    return p


def build_command_parser(name):
    """The parser of one command alone, equal to its subparser in
    build_parser: ``rpmcow NAME ...`` is parsed with it, so that a command
    does not wait for every other command's parser to be built first (~3 ms,
    in front of every transcode)."""
    cmd = COMMANDS[name]
    p = argparse.ArgumentParser(prog="%s %s" % (PROG, name), description=cmd.description,
                                formatter_class=_Formatter, add_help=name not in OWN_HELP)
    cmd.arguments(p)
    p.set_defaults(func=cmd.run, command=name)
    return p


# checked before these commands run; transcode is not among them: it imports
# librpm only once its header check runs (the start of every transcode is
# on its critical path), and a missing binding is one line there too
NEEDS_RPM = ("checksig", "install", "inspect", "cache")


def _run(func, args, prog):
    try:
        if getattr(args, "command", "transcode") in NEEDS_RPM:
            from . import support
            support.check_rpm(warn=lambda msg: print("%s: warning: %s" % (prog, msg),
                                                     file=sys.stderr))
        return func(args)
    except errors.RpmcowError as exc:
        print("%s: %s" % (prog, exc), file=sys.stderr)
        return exc.exit_code
    except MemoryError:
        print("%s: out of memory -- nothing was judged about the package" % prog,
              file=sys.stderr)
        return errors.ResourceError.exit_code
    except KeyboardInterrupt:
        print("%s: interrupted" % prog, file=sys.stderr)
        return 130
    except BrokenPipeError:
        print("%s: output closed early" % prog, file=sys.stderr)
        return 1
    except Exception as exc:         # noqa: BLE001 - a bug: one line, not a traceback
        if os.environ.get("RPMCOW_DEBUG"):
            raise
        where = "%s:%d" % _origin(exc)
        print("%s: internal error: %s: %s (at %s) -- this is a bug in rpmcow %s; please "
              "report it with the command that caused it (RPMCOW_DEBUG=1 shows the traceback)"
              % (prog, type(exc).__name__, exc, where, __version__), file=sys.stderr)
        return INTERNAL_ERROR_EXIT


INTERNAL_ERROR_EXIT = 70             # sysexits' EX_SOFTWARE


def _origin(exc):
    """(file, line) where the exception was raised (the innermost frame)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?", 0
    return os.path.basename(tb.tb_frame.f_code.co_filename), tb.tb_lineno


def _exiting():
    """The process exits next (main was run as the program): spare it the
    garbage collector's passes over every object at shutdown, most of
    Python's finalization (~3 ms of every command).  Everything else --
    atexit handlers, flushing, closing -- runs as usual."""
    gc.freeze()


def main(argv=None):
    """``rpmcow COMMAND ...``; argv None: sys.argv, run as the program (the
    console script), which exits when this returns."""
    as_program = argv is None
    argv = sys.argv[1:] if as_program else list(argv)
    try:
        if argv and argv[0] == "vendor" and not _have_vendor_dnf5():
            print("%s: %s" % (PROG, MSG_NO_VENDOR_DNF5), file=sys.stderr)
            return errors.UsageError.exit_code
        if argv and argv[0] in COMMANDS:
            # intermixed: file arguments may follow options ("cache status --json DIR")
            args = build_command_parser(argv[0]).parse_intermixed_args(argv[1:])
        else:
            args = build_parser().parse_args(argv)
    except MemoryError:           # argparse imports as it goes (Python 3.14: _colorize)
        print("%s: out of memory -- nothing was judged about the package" % PROG,
              file=sys.stderr)
        return errors.ResourceError.exit_code
    rc = _run(args.func, args, PROG)
    if as_program:
        _exiting()
    return rc


def build_rpm2extents_parser():
    p = argparse.ArgumentParser(
        prog="rpm2extents", formatter_class=_Formatter, description="Transcode the package on standard input into an "
        "extents file on standard output, recording the input's digests in the named "
        "algorithms (as rpm spells them: %s)." % " ".join(a.name for a in ALGOS))
    p.add_argument("--version", action="version", version="rpm2extents (rpmcow) " + __version__)
    p.add_argument("--root", help="root whose configuration and keyring apply")
    p.add_argument("--dbpath", help="rpm database path inside the root")
    p.add_argument("algos", nargs="*", metavar="DIGESTALGO")
    return p


def rpm2extents_main(argv=None):
    """``rpm2extents [--root R] [--dbpath D] DIGESTALGO...``: package on stdin,
    extents file on stdout; exit 1 on any error (whatever was written to
    stdout then has no footer: never a complete-looking file)."""
    args = build_rpm2extents_parser().parse_args(argv)

    def run(a):
        from . import transcode
        if not a.algos:
            raise errors.RpmcowError("no digest algorithm given (for example: SHA256)")
        for name in a.algos:
            by_name(name)
        transcode.transcode_path("-", "-", algos=a.algos, enforce=False,
                                 target=rpmconfig.Target(root=a.root or "/", dbpath=a.dbpath))
        return 0

    rc = _run(run, args, "rpm2extents")
    if argv is None:
        _exiting()
    return 1 if rc else 0
