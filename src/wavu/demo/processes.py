"""A tiny supervisor for `wavu demo`: start a list of child processes, stop them all together.

`wavu demo` runs one process group: the web server and the background worker (`wavu worker`, jobs
and the scheduler) today, and the local simulators as later issues add them. Each is a
`ChildProcess` (a name and a command line); the supervisor starts them in order, prefixes nothing
and captures nothing (children write straight to the terminal), and stops everything when any
child exits or the operator presses Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class ChildProcess:
    """One long-running child: `argv` is run as is; `env` entries are added to the parent's environment."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        self.popen = subprocess.Popen(self.argv, env={**os.environ, **self.env})

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()


def wavu_command(*args: str) -> list[str]:
    """The command line of a `wavu` subcommand run with this interpreter (works without the console script)."""
    return [sys.executable, "-m", "wavu.cli", *args]


class Supervisor:
    """Runs children until one exits or Ctrl-C; then stops the rest (SIGTERM, then SIGKILL after a grace time).

    Guarantees: every started child is waited for before `run()` returns, so no orphan keeps a port;
    the return code is 0 after Ctrl-C and the first failing child's code otherwise.
    """

    def __init__(
        self,
        children: Sequence[ChildProcess],
        *,
        grace_seconds: float = 5.0,
        poll_seconds: float = 0.2,
        log: Callable[[str], None] = print,
    ):
        self.children = list(children)
        self.grace_seconds = grace_seconds
        self.poll_seconds = poll_seconds
        self.log = log

    def run(self) -> int:
        exit_code = 0
        previous_term = signal.getsignal(signal.SIGTERM)
        # `kill <pid>` of the supervisor stops the group the same way as Ctrl-C.
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            for child in self.children:
                self.log(f"starting {child.name}: {' '.join(child.argv)}")
                child.start()
            while True:
                for child in self.children:
                    code = child.returncode
                    if code is not None:
                        self.log(f"{child.name} exited with code {code}; stopping the others")
                        exit_code = code
                        return exit_code
                time.sleep(self.poll_seconds)
        except KeyboardInterrupt:
            self.log("stopping…")
            return exit_code
        finally:
            previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan children
            try:
                self.stop()
            finally:
                signal.signal(signal.SIGINT, previous_int)
                signal.signal(signal.SIGTERM, previous_term)

    def stop(self) -> None:
        running = [c for c in self.children if c.popen is not None and c.popen.poll() is None]
        for child in running:
            child.popen.terminate()
        deadline = time.monotonic() + self.grace_seconds
        for child in running:
            try:
                child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{child.name} did not stop in {self.grace_seconds:.0f} s; killing it")
                child.popen.kill()
                child.popen.wait()


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt
