"""The load test's browsers stand for the visitors' own machines: the crowd's run at the lowest CPU priority, so that
on one small machine the measured times are the server's, not those of a dozen Chromiums competing with it.

* ``launcher(dir, niceness)``: a wrapper executable for Playwright's ``executable_path``: ``nice -n niceness`` (from
  the Playwright driver's niceness, the harness's) and, when run as root, ``setpriv`` dropping CAP_SYS_NICE.
  Chromium sets its own threads' priorities (display-critical threads to -8, the others to 0: measured here as
  root, 58 threads at -8 and 171 at 0 under a plain ``nice -n 19``); without CAP_SYS_NICE those calls fail and
  every thread stays at the niceness it was started with.
* ``census(pids)``: how many threads of the browsers run at each niceness (the report prints them).
* ``tree_cpu_seconds(root, skip)``: user + system CPU seconds of ``root``'s descendants (their reaped children
  included), the server's process tree ``skip``-ped: the browsers' and the driver's CPU, not other users' Chromiums.
"""
from __future__ import annotations

import os
import shutil
import stat
from collections import Counter
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
LOWEST = 19


def launcher(folder: str, niceness: int = LOWEST, chromium: str = CHROMIUM) -> str:
    """A shell script that starts ``chromium`` at ``niceness`` (19: the lowest priority), unable to raise its
    threads' priority above it (as root too: Chromium would put display-critical threads at -8)."""
    drop = ""
    if os.geteuid() == 0 and shutil.which("setpriv"):
        # root's CAP_SYS_NICE would let Chromium put its threads back to 0 and -8
        drop = "setpriv --inh-caps=-sys_nice --bounding-set=-sys_nice "
    path = Path(folder) / f"chromium-nice{niceness}"
    path.write_text(f'#!/bin/sh\nexec {drop}nice -n {niceness} "{chromium}" "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def descendants(root: int, skip: int | None = None) -> list[int]:
    """The processes below ``root`` (not ``root``), without ``skip`` and its own descendants."""
    kids = _children()
    out, todo = [], list(kids.get(root, []))
    while todo:
        p = todo.pop()
        if p == skip:
            continue
        out.append(p)
        todo += kids.get(p, [])
    return out


def _stat(pid: int, tid: int | None = None) -> list[str]:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    return open(path).read().rsplit(")", 1)[1].split()  # fields from the 3rd (state) on


def tree_cpu_seconds(root: int, skip: int | None = None) -> float:
    """utime + stime + cutime + cstime of every descendant of ``root`` but ``skip``'s tree, in seconds."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for p in descendants(root, skip):
        try:
            total += sum(int(x) for x in _stat(p)[11:15]) / tick  # fields 14-17 of proc(5)
        except (OSError, ValueError):
            continue
    return total


def census(pids: list[int]) -> Counter:
    """{niceness: threads} over every thread of ``pids``."""
    out: Counter = Counter()
    for p in pids:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                out[int(_stat(p, int(t))[16])] += 1  # field 19 of proc(5): nice
            except (OSError, ValueError, IndexError):
                continue
    return out
