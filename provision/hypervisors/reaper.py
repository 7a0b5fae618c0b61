"""PID 1 of a namespace hypervisor: reap orphans, and exit on SIGTERM or SIGINT.

Run as a script (`python -I -S reaper.py virtio-lab-hypervisor hvK`), never imported: it
must start in milliseconds and import nothing. The daemons of the hypervisor detach and end
up as its children; when it dies the kernel kills every process of its PID namespace, which
is how `provision hosts down` stops a hypervisor. Its arguments only mark it in `ps` and
/proc/PID/cmdline, where `hosts down` finds it.
"""

import os
import signal
import sys


def reap() -> None:
    """Collect every child that has exited."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    # Blocked signals are queued even for a namespace's init (signals it does not handle
    # are dropped), and sigwaitinfo takes them without a race between reaping and waiting.
    wanted = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    while True:
        reap()
        if signal.sigwaitinfo(wanted).si_signo != signal.SIGCHLD:
            sys.exit(0)


if __name__ == "__main__":
    main()
