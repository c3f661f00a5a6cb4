"""A private PostgreSQL server for tests that stop and restart the database (never the shared one).

`initdb` (trust auth, superuser `postgres`) into a fresh temporary directory, then `pg_ctl start`
with its own port on 127.0.0.1 and its unix socket inside that directory; `stop()` is
`pg_ctl stop -m fast` (clients are disconnected, a shutdown checkpoint is written), `start()` brings
the same cluster back on the same port with its data. PostgreSQL refuses to run as root, so as root
every command runs as the `postgres` OS user (`runuser -u postgres --`) in a directory it owns.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

TOOLS = ("initdb", "pg_ctl", "postgres")
OS_USER = "postgres"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_bindir():
    """The directory holding initdb, pg_ctl and postgres together, or None.

    /usr/local/bin first (often symlinks into a versioned directory, hence realpath), then the
    newest /usr/lib/postgresql/<version>/bin.
    """
    candidates = []
    found = shutil.which("pg_ctl", path="/usr/local/bin")
    if found:
        candidates.append(os.path.dirname(os.path.realpath(found)))
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(os.path.dirname(os.path.realpath(found)))

    def version(path):
        name = path.split(os.sep)[-2]
        return tuple(int(part) for part in name.split(".") if part.isdigit())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, tool), os.X_OK) for tool in TOOLS):
            return bindir
    return None


def _accepts(port, timeout=0.5):
    """Whether something accepts TCP connections on the port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


class PostgresServer:
    """A throwaway PostgreSQL cluster; a context manager that starts it and removes it afterwards.

    `url` is a SQLAlchemy/psycopg2 URL of its `postgres` database (user `postgres`, no password).
    `settings`: server settings passed as `-c name=value` (e.g. {"max_connections": 12}); the
    default max_connections is 200.
    """

    def __init__(self, port=None, bindir=None, settings=None):
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found in "
                               "/usr/local/bin or /usr/lib/postgresql/*/bin")
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                self._owner = pwd.getpwnam(OS_USER)
            except KeyError:
                raise RuntimeError(f"running as root, but there is no `{OS_USER}` OS user to run "
                                   "PostgreSQL as (initdb refuses root)") from None
        self.port = port or _free_port()
        self.settings = {"max_connections": 200, **(settings or {})}
        self.base = None  # the temporary directory: data/, sock/, server.log
        self._initialized = False

    # -- paths ---------------------------------------------------------------------------------

    @property
    def url(self):
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self):
        return os.path.join(self.base, "data")

    @property
    def socket_dir(self):
        return os.path.join(self.base, "sock")

    @property
    def log_path(self):
        return os.path.join(self.base, "server.log")

    def log(self):
        """The server's log so far (for failure messages)."""
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()
        except (OSError, TypeError):
            return ""

    # -- running the tools ---------------------------------------------------------------------

    def _run(self, tool, *args, timeout=60):
        cmd = [os.path.join(self.bindir, tool), *args]
        if self._as_root:
            cmd = ["runuser", "-u", OS_USER, "--", *cmd]
        # Output goes to a file, never a pipe: the postmaster pg_ctl leaves behind would hold a pipe
        # open and make the wait for EOF hang.
        with tempfile.TemporaryFile() as out:
            done = subprocess.run(cmd, cwd=self.base, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout,
                                  env={**os.environ, "LC_ALL": "C", "PGPORT": str(self.port)})
            out.seek(0)
            text = out.read().decode(errors="replace")
        return done.returncode, text

    def _check(self, tool, *args, timeout=60):
        code, text = self._run(tool, *args, timeout=timeout)
        if code != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} exited with {code}:\n{text}\n{self.log()}")
        return text

    def _prepare(self):
        """A temporary directory the server's OS user owns (pytest's tmp dirs are root-only)."""
        self.base = tempfile.mkdtemp(prefix="gw-pg-")
        os.mkdir(self.socket_dir, 0o700)
        if self._as_root:
            for path in (self.base, self.socket_dir):
                os.chown(path, self._owner.pw_uid, self._owner.pw_gid)
        self._check("initdb", "-D", self.data_dir, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                    "--no-sync", "--no-instructions", timeout=120)
        self._initialized = True

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout=30):
        """Start the cluster (initdb on first use) and wait until it accepts connections."""
        if self.base is None or not self._initialized:
            self._prepare()
        if self.running():
            return self
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   + " ".join(f"-c {name}={value}" for name, value in self.settings.items()))
        self._check("pg_ctl", "start", "-D", self.data_dir, "-l", self.log_path, "-w", "-t", str(timeout),
                    "-o", options, timeout=timeout + 10)
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {self.port} did not accept connections:\n{self.log()}")
            time.sleep(0.05)
        return self

    def running(self):
        """Whether the postmaster of this cluster is up (pg_ctl status)."""
        if not self._initialized:
            return False
        code, _text = self._run("pg_ctl", "status", "-D", self.data_dir, timeout=30)
        return code == 0

    def stop(self, mode="fast", timeout=30):
        """`pg_ctl stop -m <mode>` (fast: connections are cut, no client is waited for)."""
        if not self._initialized or not self.running():
            return
        self._check("pg_ctl", "stop", "-D", self.data_dir, "-m", mode, "-w", "-t", str(timeout),
                    timeout=timeout + 10)
        deadline = time.monotonic() + 5
        while _accepts(self.port, 0.2) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self, timeout=30):
        """Stop (fast) and start again: same port, same data."""
        self.stop(timeout=timeout)
        return self.start(timeout=timeout)

    def remove(self):
        """Stop the server (immediate if fast fails) and delete its directory."""
        if self.base is None:
            return
        try:
            self.stop()
        except (RuntimeError, subprocess.TimeoutExpired):
            try:
                self._run("pg_ctl", "stop", "-D", self.data_dir, "-m", "immediate", "-w", timeout=30)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.base, ignore_errors=True)
        self.base, self._initialized = None, False

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc):
        self.remove()
