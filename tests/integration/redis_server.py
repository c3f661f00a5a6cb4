"""A private redis-server for tests that stop and restart Redis: its own port, no persistence."""

import shutil
import socket
import subprocess
import time


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(port, timeout=0.5):
    """True when a Redis answers PING on the port (raw RESP, no client library needed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """`redis-server --port <free> --save "" --appendonly no`, started and stopped on demand.

    Use as a context manager; `stop()` kills it (SIGKILL: an outage, not a shutdown) and `start()`
    brings it back on the same port, empty.
    """

    def __init__(self, port=None, executable=None):
        self.executable = executable or shutil.which("redis-server")
        if self.executable is None:
            raise RuntimeError("redis-server is not installed")
        self.port = port or _free_port()
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout=10):
        """Start the server and wait until it answers PING."""
        if self.running():
            return self
        self.proc = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err}")
            if _ping(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING within {timeout}s")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Kill the server (like a crash) and wait until the port no longer answers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        deadline = time.monotonic() + 5
        while _ping(self.port, 0.2) and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
