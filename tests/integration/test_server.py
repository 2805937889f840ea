"""plenum server: listeners, the admin API, the CLI through the server,
signals, a second instance, corruption while serving."""
import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import BIN, Plenum, Server, free_port


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def test_banner_health_metrics(tmp_path):
    # element events off: their topic would add its own bytes to the logical
    # total whenever the publisher gets to it
    cfg = tmp_path / "plenum.ini"
    cfg.write_text("[events]\nenabled = off\n")
    server = Server(tmp_path / "data", extra=["--config", str(cfg)])
    try:
        banner_health_metrics(server)
    finally:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL)


def banner_health_metrics(server):
    banner = "".join(server.banner)
    assert "admin" in banner and f"127.0.0.1:{server.admin_port}" in banner
    assert "s3      off" in banner
    st, body = get(server.url + "/health")
    assert st == 200 and json.loads(body)["status"] == "ok"
    pl = Plenum(server.data)
    pl.ok("mb", "pl://met")
    pl.ok("cp", "-", "pl://met/k", input=b"12345")
    st, body = get(server.url + "/metrics")
    text = body.decode()
    assert 'plenum_requests_total{head="admin",op="put"} 1' in text
    assert 'plenum_bytes_in_total{head="admin",op="put"} 5' in text
    assert 'plenum_request_seconds_bucket{head="admin",op="put",le="+Inf"} 1' in text
    assert "plenum_logical_bytes 5" in text
    assert "plenum_meta_batch_size_bucket" in text
    assert "plenum_physical_bytes" in text
    assert 'plenum_hot_chunk_lookups_total{outcome="found"} 0' in text
    assert "plenum_hot_chunk_bytes 0" in text


def test_cli_through_server(server, tmp_path):
    pl = Plenum(server.data)
    data = os.urandom(12 * 1024 * 1024 + 7)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    pl.ok("mb", "pl://thru")
    pl.ok("cp", str(src), "pl://thru/a/b.bin")
    assert pl.ok("cat", "pl://thru/a/b.bin").stdout == data
    out = tmp_path / "out.bin"
    pl.ok("cp", "pl://thru/a/b.bin", str(out))
    assert out.read_bytes() == data
    st = pl.json("stat", "pl://thru/a/b.bin")
    assert st["etag"] == hashlib.md5(data).hexdigest()
    assert [e["key"] for e in pl.json("ls", "-r", "pl://thru")["entries"]] == ["a/b.bin"]
    s = pl.json("stats")
    # plus the few hundred bytes of this bucket's $events topic
    assert len(data) <= s["logical_bytes"] < len(data) + 64 * 1024 and s["elements"] >= 3
    r = pl.run("cat", "pl://thru/missing")
    assert r.returncode == 1 and len(r.stderr.decode().strip().splitlines()) == 1
    r = pl.run("cp", "-", "pl://nob/k", input=b"x")
    assert r.returncode == 1 and b"plenum mb" in r.stderr
    pl.ok("snapshot", "create", "s")
    pl.ok("rm", "pl://thru/a/b.bin")
    assert pl.ok("cat", "--snapshot", "s", "pl://thru/a/b.bin").stdout == data
    assert pl.ok("fsck").stdout.decode().strip() == "fsck: clean"
    # bad requests to the admin API get an error, and the server keeps serving
    req = urllib.request.Request(server.url + "/api/v1/put", data=b"x", method="POST",
                                 headers={"X-Plenum-Args": "{not json"})
    try:
        urllib.request.urlopen(req, timeout=10)
        assert False, "expected an error"
    except urllib.error.HTTPError as e:
        assert e.code == 400
    assert get(server.url + "/health")[0] == 200


def test_second_instance_and_sigterm(tmp_path):
    s = Server(tmp_path / "data")
    try:
        p = subprocess.run([BIN, "server", "--data", s.data, "--admin",
                            f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 1
        assert "already in use" in p.stderr and str(s.proc.pid) in p.stderr
        # same admin port, other directory: a clear message too
        p = subprocess.run([BIN, "server", "--data", str(tmp_path / "other"), "--admin",
                            f"127.0.0.1:{s.admin_port}"], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 1 and "cannot listen" in p.stderr
        pl = Plenum(s.data)
        pl.ok("mb", "pl://keep")
        pl.ok("cp", "-", "pl://keep/k", input=b"durable")
    finally:
        rc = s.stop(signal.SIGTERM)
    assert rc == 0
    assert not os.path.exists(os.path.join(s.data, "server.json"))
    # the directory works without a server, then with a new one
    assert Plenum(s.data).ok("cat", "pl://keep/k").stdout == b"durable"
    s2 = Server(tmp_path / "data")
    try:
        assert Plenum(s2.data).ok("cat", "pl://keep/k").stdout == b"durable"
    finally:
        assert s2.stop() == 0


# every head off: the credentials come before any of them, and a default port
# some other program holds must not fail the test
HEADS_OFF = [a for h in ("s3", "nfs", "mountd", "portmap", "nbd", "kafka", "pg", "resp")
             for a in (f"--{h}", "off")]


def test_root_credentials(tmp_path):
    env = dict(os.environ, PLENUM_ROOT_ACCESS_KEY="ROOTKEYEXAMPLE", PLENUM_ROOT_SECRET_KEY="s3cr3t-value-1")
    data = tmp_path / "data"
    p = subprocess.Popen([BIN, "server", "--data", str(data), "--admin", f"127.0.0.1:{free_port()}",
                          *HEADS_OFF], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0
    assert b"secret" not in out  # given by the environment: nothing printed
    keys = Plenum(data).json("key", "list", "root")["keys"]
    assert [k["access_key"] for k in keys] == ["ROOTKEYEXAMPLE"]
    # generated: printed once, stored 0600
    data2 = tmp_path / "data2"
    env2 = {k: v for k, v in os.environ.items() if not k.startswith("PLENUM_ROOT")}
    for i in range(2):
        p = subprocess.Popen([BIN, "server", "--data", str(data2), "--admin",
                              f"127.0.0.1:{free_port()}", *HEADS_OFF], env=env2,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
        assert (b"secret key" in out) == (i == 0)
    cred = data2 / "root.credentials"
    assert oct(cred.stat().st_mode & 0o777) == "0o600"
    assert "secret_key=" in cred.read_text()


def test_corruption_while_serving(server, tmp_path):
    pl = Plenum(server.data)
    pl.ok("mb", "pl://cor")
    victim = os.urandom(3 * 1024 * 1024)
    pl.ok("cp", "-", "pl://cor/victim", input=victim)
    # flip bytes in the middle of the segment on both buffer mirrors
    for m in ("buffer0", "buffer1"):
        segdir = os.path.join(server.data, m, "seg")
        for name in os.listdir(segdir):
            path = os.path.join(segdir, name)
            size = os.path.getsize(path)
            if size > 1000:
                with open(path, "r+b") as f:
                    f.seek(size // 2)
                    b = f.read(1)
                    f.seek(size // 2)
                    f.write(bytes([b[0] ^ 0xFF]))
    r = pl.run("cat", "pl://cor/victim")
    assert r.returncode == 1
    r = pl.run("fsck")
    assert r.returncode == 1 and b"/cor/victim" in r.stdout
    # everyone else is still served
    pl.ok("cp", "-", "pl://cor/other", input=b"still fine")
    assert pl.ok("cat", "pl://cor/other").stdout == b"still fine"
    assert get(server.url + "/health")[0] == 200


def test_kill9_server_mid_upload(tmp_path):
    s = Server(tmp_path / "data")
    pl = Plenum(s.data)
    pl.ok("mb", "pl://kill9")
    pl.ok("cp", "-", "pl://kill9/before", input=b"acknowledged")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 * 1024 * 1024))
    up = subprocess.Popen([BIN, "--data", s.data, "cp", str(big), "pl://kill9/partial"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    up.wait(timeout=60)
    assert Plenum(s.data).ok("cat", "pl://kill9/before").stdout == b"acknowledged"
    st = Plenum(s.data).run("stat", "--json", "pl://kill9/partial")
    if up.returncode == 0:  # the upload won the race: then it must be whole
        assert json.loads(st.stdout)["size"] == 64 * 1024 * 1024
    else:
        assert st.returncode == 1
    assert Plenum(s.data).run("fsck").returncode == 0


def test_parallel_recursive_copy_through_the_server(server, tmp_path):
    """cp -r runs several transfers at once through the admin API: every file
    arrives whole under its own key, both ways; failures are counted per file
    and make the exit status 1."""
    pl = Plenum(server.data)
    pl.ok("mb", "pl://par")
    tree = tmp_path / "tree"
    want = {}
    for i in range(120):
        d = tree / f"d{i % 7}" / f"e{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        body = os.urandom(i * 9973 % 300000) + f"file {i}".encode()
        (d / f"f{i}.bin").write_bytes(body)
        want[f"d{i % 7}/e{i % 3}/f{i}.bin"] = body
    os.mkfifo(tree / "d1" / "not-a-file")  # neither copied nor counted
    p = pl.run("cp", "-r", "-j", "8", str(tree), "pl://par/t")
    assert p.returncode == 0, p.stderr
    assert b"120 files copied, 0 failed" in p.stdout
    ents = pl.json("ls", "-r", "pl://par/t/")["entries"]
    assert sorted(e["key"] for e in ents) == sorted("t/" + k for k in want)
    for e in ents:
        assert e["size"] == len(want[e["key"][2:]])
    back = tmp_path / "back"
    p = pl.run("cp", "-r", "--jobs", "3", "pl://par/t/", str(back))
    assert p.returncode == 0 and b"120 files copied, 0 failed" in p.stdout, p.stderr
    for k, body in want.items():
        assert (back / k).read_bytes() == body
    # every transfer fails (no such bucket): each is counted, none hangs
    p = pl.run("cp", "-r", "-j", "4", str(tree), "pl://nobucket/t")
    assert p.returncode == 1 and b"0 files copied, 120 failed" in p.stdout
    bad = pl.run("cp", "-r", "-j", "0", str(tree), "pl://par/x")
    assert bad.returncode == 2 and b"--jobs takes a number" in bad.stderr


@pytest.mark.parametrize("text,says", [
    ("[nbd]\nwrite_cache_mb = 0\n", "[nbd] write_cache_mb is a size in MiB"),
    ("[nbd]\nwrite_cache_mb = lots\n", "[nbd] write_cache_mb is a size in MiB"),
    ("[nbd]\nwrite_cache = 5\n", "unknown setting [nbd] write_cache"),
    ("[resp]\nloops = 0\n", "[resp] loops must be 1..64"),
])
def test_bad_config_is_refused_with_the_line(tmp_path, text, says):
    cfg = tmp_path / "plenum.conf"
    cfg.write_text(text)
    p = subprocess.run([BIN, "server", "--data", str(tmp_path / "data"), "--config", str(cfg)],
                       capture_output=True, timeout=30)
    assert p.returncode != 0
    err = p.stderr.decode()
    assert says in err and f"{cfg}:2:" in err
