"""Fixtures: the real plenum binary, temporary data directories, a real server
on free loopback ports. Nothing here mocks Plenum."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import time

import pytest

BIN = os.environ.get("PLENUM_BIN", os.path.join(os.path.dirname(__file__), "../../build/plenum"))
BUILD = os.environ.get("PLENUM_BUILD", os.path.join(os.path.dirname(__file__), "../../build"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha(path):
    """SHA-256 of a file, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def run(*args, timeout=600, **kw):
    """Run a client; fail the test with its stderr when it fails; its stdout."""
    p = subprocess.run(list(args), capture_output=True, timeout=timeout, **kw)
    assert p.returncode == 0, f"{args[0]} failed: {p.stderr.decode(errors='replace')[-2000:]}"
    return p.stdout.decode(errors="replace")


class Plenum:
    """Runs plenum commands against one data directory."""

    def __init__(self, data):
        self.data = str(data)

    def run(self, *args, input=None, env=None, check=False, timeout=300):
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run([BIN, "--data", self.data, *args], input=input,
                           capture_output=True, env=e, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"plenum {' '.join(args)} failed ({p.returncode}): "
                                 f"{p.stderr.decode(errors='replace')}")
        return p

    def ok(self, *args, **kw):
        return self.run(*args, check=True, **kw)

    def json(self, *args):
        return json.loads(self.ok(*args, "--json").stdout)


ACCESS_KEY = "PLTESTACCESSKEY00001"
SECRET_KEY = "plenum-test-secret-key-0123456789abcdef"


class Server:
    def __init__(self, data, extra=(), s3=False):
        self.data = str(data)
        self.log_path = os.path.join(os.path.dirname(self.data), "server.log")
        self.log = open(self.log_path, "ab")
        # a port free_port() found may be taken by some client's ephemeral port
        # before the server binds it: then try other ports
        for attempt in range(3):
            if self._launch(extra, s3) or attempt == 2:
                break
            with open(self.log_path, "rb") as f:
                if b"Address already in use" not in f.read()[-4096:]:
                    break
        if self.proc.poll() is not None:
            raise AssertionError("server did not start: " + "".join(self.banner))

    def _launch(self, extra, s3):
        self.admin_port = free_port()
        self.s3_port = free_port() if s3 else None
        args = [BIN, "server", "--data", self.data, "--admin", f"127.0.0.1:{self.admin_port}"]
        for name in ("s3", "nfs", "mountd", "portmap", "nbd", "kafka", "pg", "resp"):
            if name == "s3" and s3:
                args += ["--s3", f"127.0.0.1:{self.s3_port}"]
            else:
                args += [f"--{name}", "off"]
        env = dict(os.environ, PLENUM_ROOT_ACCESS_KEY=ACCESS_KEY,
                   PLENUM_ROOT_SECRET_KEY=SECRET_KEY)
        self.proc = subprocess.Popen(args + list(extra), stdout=subprocess.PIPE,
                                     stderr=self.log, env=env)
        self.banner = []
        deadline = time.time() + 20
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            self.banner.append(line)
            if line.strip().startswith("admin"):
                break
        self.url = f"http://127.0.0.1:{self.admin_port}"
        self.s3_url = f"http://127.0.0.1:{self.s3_port}" if s3 else None
        if self.proc.poll() is not None:
            self.proc.wait()
            return False
        return True

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self.log.close()
        return rc


def drop_data(top):
    """Remove what a test stored under top, keeping its *.log files: a run of
    the whole suite stores tens of GiB, and CI machines have less free disk
    than that. Never walks into a mount a failed test left behind."""
    for root, dirs, files in os.walk(top, topdown=True):
        dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(root, d))]
        for f in files:
            if not f.endswith(".log"):
                try:
                    os.unlink(os.path.join(root, f))
                except OSError:
                    pass


@pytest.fixture(autouse=True)
def _drop_test_data(tmp_path):
    """Torn down after every other fixture of the test (servers are stopped)."""
    yield
    drop_data(tmp_path)


@pytest.fixture
def launch_with():
    """launch_with(start, ...) runs start(...) for a server; every server
    started so is gone after the test, pass or fail."""
    started = []

    def go(start, *args, **kw):
        s = start(*args, **kw)
        started.append(s)
        return s
    yield go
    for s in started:
        if s.proc.poll() is None:
            s.stop(signal.SIGKILL)


@pytest.fixture
def pl(tmp_path):
    return Plenum(tmp_path / "data")


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data")
    yield s
    if s.proc.poll() is None:
        s.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def s3server(tmp_path_factory):
    top = tmp_path_factory.mktemp("s3")
    s = Server(top / "data", s3=True)
    yield s
    try:
        if s.proc.poll() is None:
            assert s.stop() == 0, "server did not stop cleanly"
    finally:
        drop_data(top)


# ---- FUSE mounts (test_fuse, test_events) ----
def wait_mounted(mp, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.ismount(mp):
            return
        assert proc.poll() is None, f"plenum mount exited: {proc.stderr.read().decode()}"
        time.sleep(0.05)
    raise AssertionError(f"{mp} was not mounted")


class Mount:
    """`plenum mount` as a user runs it: in the foreground, until a signal."""

    def __init__(self, data, src, mp, *extra):
        self.mp = str(mp)
        os.makedirs(self.mp, exist_ok=True)
        self.proc = subprocess.Popen([BIN, "--data", str(data), "mount", *extra, src, self.mp],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_mounted(self.mp, self.proc)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=60)
        finally:
            if os.path.ismount(self.mp):  # never leave a mount behind a failed test
                subprocess.run(["fusermount3", "-uz", self.mp])
        return rc
