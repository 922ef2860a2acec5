"""The launcher of ``tests.children.run_child``: ``python -m tests.process.children.launcher LIMIT
PEAK_FILE COMMAND...`` forks COMMAND under an address-space LIMIT (bytes, 0: none), writes the
command's own peak resident memory (ru_maxrss, KiB) to PEAK_FILE, and ends as the command ended
(its exit code, or the same signal).

The peak cannot be read from wait4 in pytest: a process forked from pytest starts with pytest's
pages counted, and Linux carries that high-water mark across exec (a 1 GB worker made a 450 MB read
look like 976 MB). This launcher, started fresh, forks the command itself, so its child's
ru_maxrss counts the command's own pages only.
"""

from __future__ import annotations

import os
import resource
import signal
import sys


def main(argv: list[str]) -> int:
    limit, peak_file, command = int(argv[0]), argv[1], argv[2:]
    pid = os.fork()
    if pid == 0:
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.execvp(command[0], command)
    _, status, usage = os.wait4(pid, 0)
    with open(peak_file, "w") as f:
        f.write(str(usage.ru_maxrss))
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
