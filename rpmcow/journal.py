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
