"""One line per transaction to the system log (the journal), as rpm's own
syslog plugin does for its transactions: fleets can see copy-on-write at
work (``journalctl -t rpmcow``)."""

from .units import size

IDENT = "rpmcow"


def log(message):
    """Send message to syslog (facility authpriv, as rpm's plugin; priority
    notice).  Never fails: where there is no system log, nothing happens."""
    try:
        import syslog
        syslog.openlog(IDENT, syslog.LOG_PID, syslog.LOG_AUTHPRIV)
        try:
            syslog.syslog(syslog.LOG_NOTICE, message)
        finally:
            syslog.closelog()
    except Exception:        # noqa: BLE001 - the log is a report, never a failure
        pass


def install_line(result, root):
    """The line for one rpmcow install transaction (install.Result)."""
    cloned = sum(1 for n in result.cow if getattr(result.plugin.get(n), "cloned", 0))
    copied = sum(1 for n in result.cow if getattr(result.plugin.get(n), "copied", 0)
                 and not getattr(result.plugin.get(n), "cloned", 0))
    return ("install into %s: %d packages, %d copy-on-write (%s cloned), %d copied (%s), "
            "%d the stock way" % (root, len(result.cow) + len(result.plain), cloned,
                                  size(result.shared_bytes), copied, size(result.copied_bytes),
                                  len(result.plain)))


# the dnf plugins' closing lines (dnf 4: dnf-plugins/cow.py; dnf5: rpmcow.dnf5cow)
MSG_SUMMARY = ("cow: %d of %d packages installed copy-on-write, %s of file data "
               "shared with the cache")
# keepcache=0: the extents files go with the cache, nothing stays shared; what
# the user keeps is the data that was cloned instead of written again
MSG_SUMMARY_NOCACHE = ("cow: %d of %d packages installed copy-on-write, %s of file data "
                       "cloned, not written again (the cache is not kept)")
MSG_JOURNAL = ("%s transaction into %s: %d packages, %d copy-on-write (%s cloned, %s copied), "
               "%d the stock way")


def dnf_summary(n, total, cloned, kept):
    """What the dnf plugins say after a transaction: n of total packages went
    copy-on-write, cloned bytes; kept: whether the extents files stay."""
    return (MSG_SUMMARY if kept else MSG_SUMMARY_NOCACHE) % (n, total, size(cloned))


def dnf_line(front_end, root, total, n, cloned, copied):
    """The journal line of a dnf or dnf5 transaction."""
    return MSG_JOURNAL % (front_end, root, total, n, size(cloned), size(copied), total - n)
