# rpmtiming.py -- measuring dnf plugin: when did rpm's transaction run?
"""Appends "start <t>" at pre_transaction and "end <t>" at transaction to
the file named by $RPMCOW_BENCH_TIMING (monotonic clock).  Not a plugin
for users: rpmcow.scenario loads it (make demo, bench/dnf_bench.py) through
--setopt=pluginpath, and it does nothing without that variable."""
import os
import time

import dnf


class RpmTiming(dnf.Plugin):
    name = "rpmtiming"

    def _mark(self, what):
        path = os.environ.get("RPMCOW_BENCH_TIMING")
        if path:
            with open(path, "a") as f:
                f.write("%s %.6f\n" % (what, time.monotonic()))

    def pre_transaction(self):
        self._mark("start")

    def transaction(self):
        self._mark("end")
