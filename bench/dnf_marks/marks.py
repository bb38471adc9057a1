"""A dnf 4 plugin for bench/image_phases.py: appends "TIME EVENT" lines
(time.time()) to the file $RPMCOW_MARKS_FILE at dnf's hooks, around
download_packages and around rpm's test transaction.  Measures only; loaded
through --setopt=pluginpath by the benchmark, never installed."""
import os
import time

import dnf
import dnf.rpm.transaction

OUT = os.environ.get("RPMCOW_MARKS_FILE")


def mark(event):
    if OUT:
        with open(OUT, "a") as f:
            f.write("%.6f %s\n" % (time.time(), event))


class Marks(dnf.Plugin):
    name = "rpmcow_bench_marks"

    def __init__(self, base, cli):
        super().__init__(base, cli)
        mark("init")
        download = base.download_packages

        def download_packages(*args, **kwargs):
            mark("download-start")
            try:
                return download(*args, **kwargs)
            finally:
                mark("download-end")
        base.download_packages = download_packages
        cls = dnf.rpm.transaction.TransactionWrapper
        test_run = cls.test

        def test(ts, *args, **kwargs):
            mark("test-start")
            try:
                return test_run(ts, *args, **kwargs)
            finally:
                mark("test-end")
        cls.test = test

    def resolved(self):
        mark("resolved")

    def pre_transaction(self):
        mark("pre_transaction")

    def transaction(self):
        mark("transaction")
