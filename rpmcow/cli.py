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

PROG = "rpmcow"


def _size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return str(n)


def _page_size(text):
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text) from None
    if v < 512 or v > 65536 or v & (v - 1):
        raise argparse.ArgumentTypeError("page size must be a power of two from 512 to 65536")
    return v


def cmd_transcode(args):
    from . import transcode
    if args.output is None:
        if args.input != "-":
            raise errors.UsageError("name the output with -o FILE (or -o - for stdout)")
        args.output = "-"
    if args.output != "-" and os.path.isdir(args.output):
        raise errors.UsageError("output %s is a directory" % args.output)
    algos = args.digest or list(transcode.DEFAULT_ALGOS)
    for a in algos:
        by_name(a)
    r = transcode.transcode_path(args.input, args.output, algos=algos,
                                 page_size=args.page_size, target=_target(args),
                                 level=args.verify_level)
    if not args.quiet:
        if r.passthrough:
            print("%s: deny-listed (%s), copied unchanged" % (r.nevra, r.denied_by),
                  file=sys.stderr)
        else:
            print("%s: %d files, %d distinct contents (%s), %d shared; %s -> %s"
                  % (r.nevra, r.files, r.blobs, _size(r.blob_bytes), r.dup_files,
                     _size(r.input_len), _size(r.output_len)), file=sys.stderr)
    return 0


def _target(args):
    return rpmconfig.Target(root=args.root or "/", dbpath=args.dbpath)


def _root_options(p):
    p.add_argument("--root", metavar="DIR",
                   help="root whose keyring and %%_pkgverify_level apply (default /)")
    p.add_argument("--dbpath", metavar="DIR", help="rpm database inside the root")


def cmd_checksig(args):
    from . import checksig
    return checksig.checksig(args.files, _target(args), verbose=args.verbose,
                             files=args.files_digests)


def cmd_install(args):
    from . import install
    opts = install.Options(
        root=args.root or "/", dbpath=args.dbpath, upgrade=args.upgrade, nodeps=args.nodeps,
        noscripts=args.noscripts, notriggers=args.notriggers, test=args.test,
        replacepkgs=args.replacepkgs, replacefiles=args.replacefiles,
        oldpackage=args.oldpackage, excludedocs=args.excludedocs, level=args.verify_level,
        verify_files=args.verify_files)
    r = install.install(args.files, opts)
    if not args.quiet and not args.test:
        for nevra in r.cow:
            print("%s: installed copy-on-write" % nevra, file=sys.stderr)
        for nevra in r.plain:
            print("%s: installed" % nevra, file=sys.stderr)
    return 0


def cmd_inspect(args):
    from . import inspect as inspect_mod
    report = inspect_mod.inspect_path(args.file, with_table=args.table or args.json)
    if args.json:
        import json
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(inspect_mod.format_report(report, with_table=args.table))
    return 0 if report["transcoded"] else 1


def _transcode_arguments(t):
    t.add_argument("input", help="package file, or - for standard input")
    t.add_argument("-o", "--output", help="extents file to write, or - for standard output "
                   "(written under a temporary name and renamed when complete)")
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
    _root_options(c)


def _install_arguments(n):
    n.add_argument("files", nargs="+", metavar="FILE")
    n.add_argument("-U", "--upgrade", action="store_true", help="upgrade, like rpm -U")
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
    _root_options(n)
    n.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def _inspect_arguments(i):
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--table", action="store_true", help="list every table entry")


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
    "inspect": Command(
        "show what an extents file contains",
        "Say whether FILE is an extents file and show its footer, verification record, table "
        "and input digests. Works on files made by upstream rpm2extents too. Exit 1 if FILE "
        "is not an extents file.",
        _inspect_arguments, cmd_inspect),
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
                           formatter_class=_Formatter)
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
                                formatter_class=_Formatter)
    cmd.arguments(p)
    p.set_defaults(func=cmd.run, command=name)
    return p


def _run(func, args, prog):
    try:
        return func(args)
    except errors.RpmcowError as exc:
        print("%s: %s" % (prog, exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("%s: interrupted" % prog, file=sys.stderr)
        return 130
    except BrokenPipeError:
        print("%s: output closed early" % prog, file=sys.stderr)
        return 1


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
    if argv and argv[0] in COMMANDS:
        args = build_command_parser(argv[0]).parse_args(argv[1:])
    else:
        args = build_parser().parse_args(argv)
    rc = _run(args.func, args, PROG)
    if as_program:
        _exiting()
    return rc


def build_rpm2extents_parser():
    p = argparse.ArgumentParser(
        prog="rpm2extents", formatter_class=_Formatter, description="Transcode the package on standard input into an "
        "extents file on standard output, recording the input's digests in the named "
        "algorithms (as rpm spells them: %s)." % " ".join(a.name for a in ALGOS))
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
