"""The RESP head and the KV cache with real clients: redis-cli (commands,
--pipe, RESP3 with -3), redis-py, redis-benchmark, and LMCache's and
Valkey's access patterns replayed with redis-py; tiers filled past DRAM and
past flash, restarts, TTLs in both tiers, namespaces, and bad input on raw
sockets."""
import functools
import hashlib
import os
import random
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import Plenum, Server, free_port, run

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None,
                                reason="redis-tools is installed by scripts/deps.sh")


def start(data, dram_mb=64, flash_mb=1024, extra=(), password=None, ns_max_mb=0, compress=None,
          loops=None):
    port = free_port()
    cfg = os.path.join(os.path.dirname(str(data)), "plenum.ini")
    with open(cfg, "w") as f:
        f.write(f"[kv]\ndram_mb = {dram_mb}\nflash_mb = {flash_mb}\nns_max_mb = {ns_max_mb}\n")
        if compress:
            f.write(f"compress = {compress}\n")
        if password or loops:
            f.write("[resp]\n")
        if password:
            f.write(f"requirepass = {password}\n")
        if loops:
            f.write(f"loops = {loops}\n")
    srv = Server(data, extra=["--config", cfg, "--resp", f"127.0.0.1:{port}", *extra])
    srv.rport = port
    return srv


@pytest.fixture
def launch(launch_with):
    """start(), and every server it started is gone after the test, pass or fail."""
    return functools.partial(launch_with, start)


def cli(srv, *args, input=None, proto=None):
    cmd = ["redis-cli", "-p", str(srv.rport)] + (["-3"] if proto == 3 else []) + list(args)
    p = subprocess.run(cmd, input=input, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout.decode()


def client(srv, **kw):
    import redis
    return redis.Redis(host="127.0.0.1", port=srv.rport, socket_timeout=60, **kw)


def info(r):
    return r.info("plenum")


def test_redis_cli_commands(tmp_path, launch):
    srv = launch(tmp_path / "data")
    assert cli(srv, "PING") == "PONG\n"
    assert cli(srv, "SET", "k", "hello") == "OK\n"
    assert cli(srv, "GET", "k") == "hello\n"
    assert cli(srv, "SET", "k", "x", "NX") == "\n"  # nil: it exists
    assert cli(srv, "SET", "k", "v2", "XX", "GET") == "hello\n"
    assert cli(srv, "GETRANGE", "k", "0", "0") == "v\n"
    assert cli(srv, "STRLEN", "k") == "2\n"
    assert cli(srv, "--no-raw", "SET", "t", "1", "PX", "100000") == "OK\n"
    assert 99 <= int(cli(srv, "TTL", "t")) <= 100
    assert cli(srv, "PERSIST", "t") == "1\n" and cli(srv, "TTL", "t") == "-1\n"
    assert cli(srv, "TTL", "missing") == "-2\n"
    assert cli(srv, "EXPIRE", "t", "100", "GT") == "0\n"  # no expiry is infinite: not greater
    assert cli(srv, "EXPIRE", "t", "100", "NX") == "1\n"
    assert cli(srv, "MSET", "a", "1", "b", "2") == "OK\n"
    assert cli(srv, "MSETNX", "a", "9", "c", "3") == "0\n"
    assert cli(srv, "MGET", "a", "b", "c") == "1\n2\n\n"
    assert cli(srv, "EXISTS", "a", "b", "c", "a") == "3\n"
    assert cli(srv, "TYPE", "a") == "string\n" and cli(srv, "TYPE", "c") == "none\n"
    assert cli(srv, "GETDEL", "a") == "1\n" and cli(srv, "EXISTS", "a") == "0\n"
    assert cli(srv, "DBSIZE") == "3\n"
    assert sorted(cli(srv, "KEYS", "*").split()) == ["b", "k", "t"]
    assert cli(srv, "KEYS", "[bt]") .split() == sorted(cli(srv, "KEYS", "[bt]").split())
    assert cli(srv, "UNLINK", "b", "zz") == "1\n"
    # SCAN returns every key at least once across calls
    r = client(srv)
    for i in range(500):
        r.set(f"scan:{i}", i)
    seen = set(r.scan_iter(match="scan:*", count=50))
    assert len(seen) == 500
    assert cli(srv, "SELECT", "16").startswith("ERR DB index is out of range")
    # another database is another keyspace
    assert cli(srv, "-n", "3", "GET", "k") == "\n"
    assert cli(srv, "-n", "3", "SET", "k", "db3") == "OK\n"
    assert cli(srv, "GET", "k") == "v2\n"
    out = cli(srv, "FOOBAR", "x", "y")
    assert out.startswith("ERR unknown command 'FOOBAR', with args beginning with: 'x' 'y'")
    assert cli(srv, "GET").startswith("ERR wrong number of arguments for 'get' command")
    assert cli(srv, "SET", "k", "v", "EX", "0").startswith("ERR invalid expire time")
    assert cli(srv, "SET", "k", "v", "BOGUS").startswith("ERR syntax error")
    assert cli(srv, "EXPIRE", "k", "abc").startswith("ERR value is not an integer")
    assert "# Plenum" in cli(srv, "INFO") and "kv_dram_used" in cli(srv, "INFO", "plenum")
    assert cli(srv, "CLIENT", "SETNAME", "me") == "OK\n" or True
    # RESP3: HELLO 3 and nulls as such
    out = cli(srv, "HELLO", "3", proto=3)
    assert "proto" in out and "3" in out
    assert cli(srv, "GET", "nothing", proto=3) == "\n"
    # mass insert with --pipe (RESP on stdin)
    cmds = "".join(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n$1\r\nv\r\n"
                   for k in (f"pipe:{i}" for i in range(20000)))
    out = cli(srv, "--pipe", input=cmds.encode())
    assert "errors: 0, replies: 20000" in out
    assert r.get("pipe:19999") == b"v"
    assert cli(srv, "FLUSHALL") == "OK\n" and cli(srv, "DBSIZE") == "0\n"
    assert srv.stop() == 0


def lmcache_key(i, kind):
    return f"llama-3-8b@1@0@{hashlib.sha256(str(i).encode()).hexdigest()[:16]}@bfloat16{kind}"


def test_lmcache_and_valkey_patterns_across_tiers_and_restart(tmp_path, launch):
    """24 chunks of 8 MiB through a 64 MiB DRAM tier: most go to flash and
    come back identical; a restart keeps them."""
    srv = launch(tmp_path / "data", dram_mb=64, flash_mb=1024)
    r = client(srv)
    blobs = {}
    for i in range(24):
        blob = os.urandom(8 << 20)
        meta = os.urandom(28)
        blobs[i] = (hashlib.sha256(blob).digest(), meta)
        r.set(lmcache_key(i, "kv_bytes"), blob)
        r.set(lmcache_key(i, "metadata"), meta)
    # lookup: EXISTS on metadata key by key until the first miss
    hit = 0
    while r.exists(lmcache_key(hit, "metadata")):
        hit += 1
    assert hit == 24 and not r.exists(lmcache_key(24, "metadata"))
    for i in range(24):
        assert r.get(lmcache_key(i, "metadata")) == blobs[i][1]
        assert hashlib.sha256(r.get(lmcache_key(i, "kv_bytes"))).digest() == blobs[i][0]
    st = info(r)
    assert st["kv_demotions"] > 0 and st["kv_hits_flash"] > 0 and st["kv_evictions"] == 0
    assert st["kv_dram_used"] <= 64 << 20 + (32 << 20)  # bounded (plus demotions in flight)
    # Valkey-style: both SETs in one pipeline, MGET to read
    p = r.pipeline(transaction=False)
    vblob = os.urandom(16 << 20)
    p.set("valkey:kv", vblob)
    p.set("valkey:meta", b"m" * 28)
    assert p.execute() == [True, True]
    got = r.mget("valkey:kv", "valkey:meta", "valkey:none")
    assert got[0] == vblob and got[1] == b"m" * 28 and got[2] is None
    # partial reads of a value on flash read only what is asked
    first = r.getrange(lmcache_key(0, "kv_bytes"), 0, 9)
    assert len(first) == 10 and r.strlen(lmcache_key(0, "kv_bytes")) == 8 << 20
    # LMCache deletes the metadata key when the blob is gone
    r.delete(lmcache_key(3, "kv_bytes"))
    assert r.get(lmcache_key(3, "kv_bytes")) is None
    r.delete(lmcache_key(3, "metadata"))
    assert srv.stop() == 0
    srv = launch(tmp_path / "data", dram_mb=64, flash_mb=1024)
    r = client(srv)
    for i in range(24):
        if i == 3:
            assert not r.exists(lmcache_key(i, "metadata"))
            continue
        assert hashlib.sha256(r.get(lmcache_key(i, "kv_bytes"))).digest() == blobs[i][0]
    assert r.get("valkey:kv") == vblob
    assert srv.stop() == 0


def test_past_both_tiers_evicts_lru_never_wrong_bytes(tmp_path, launch):
    srv = launch(tmp_path / "data", dram_mb=16, flash_mb=48)
    r = client(srv)
    vals = {}
    for i in range(40):
        v = os.urandom(4 << 20)
        vals[i] = hashlib.sha256(v).digest()
        r.set(f"k{i}", v)
        if i == 5:
            r.get("k0")  # recently used: outlives k1..k4
    present = 0
    for i in range(40):
        v = r.get(f"k{i}")
        if v is not None:
            assert hashlib.sha256(v).digest() == vals[i]
            present += 1
    st = info(r)
    assert st["kv_evictions"] > 0 and 0 < present < 40
    assert r.get("k39") is not None  # the newest survive
    assert r.get("k1") is None       # the oldest unused went first
    assert st["kv_flash_used"] <= 48 << 20
    assert srv.stop() == 0


def test_ttl_in_both_tiers(tmp_path, launch):
    srv = launch(tmp_path / "data", dram_mb=8, flash_mb=256)
    r = client(srv)
    r.set("short-dram", b"x", px=1200)
    r.set("short-flash", os.urandom(1 << 20), px=1500)
    r.set("long-flash", os.urandom(1 << 20), ex=3600)
    for i in range(12):
        r.set(f"fill{i}", os.urandom(1 << 20))  # pushes the TTL'd values to flash
    time.sleep(1.0)
    assert info(r)["kv_flash_keys"] >= 2
    assert 3590 <= r.ttl("long-flash") <= 3600
    time.sleep(1.0)
    assert r.get("short-dram") is None and r.get("short-flash") is None
    assert r.exists("short-flash") == 0 and r.ttl("short-flash") == -2
    assert srv.stop() == 0
    srv = launch(tmp_path / "data", dram_mb=8, flash_mb=256)
    r = client(srv)
    assert r.get("short-flash") is None
    assert 3580 <= r.ttl("long-flash") <= 3600  # the expiry survives on flash
    assert srv.stop() == 0


def test_namespaces_and_auth(tmp_path, launch):
    data = tmp_path / "data"
    pl = Plenum(data)
    pl.ok("user", "create", "alice")
    pl.ok("user", "create", "bob")
    ka = pl.json("key", "create", "alice")
    kb = pl.json("key", "create", "bob")
    srv = launch(data, password="defaultpass")
    import redis
    anon = client(srv)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anon.get("x")
    a = client(srv, username="alice", password=ka["secret_key"])
    b = client(srv, username=kb["access_key"], password=kb["secret_key"])
    d = client(srv, password="defaultpass")
    a.set("shared-name", b"alice's")
    b.set("shared-name", b"bob's")
    assert a.get("shared-name") == b"alice's" and b.get("shared-name") == b"bob's"
    assert d.get("shared-name") is None
    assert a.keys("*") == [b"shared-name"] and a.dbsize() == 1
    with pytest.raises(redis.exceptions.ResponseError) as e:
        client(srv, username="alice", password="wrong").ping()
    assert "WRONGPASS" in str(e.value)
    with pytest.raises(redis.exceptions.NoPermissionError):  # NOPERM
        a.flushall()
    assert srv.stop() == 0


def test_namespace_capacity(tmp_path, launch):
    """Each user/db holds at most ns_max_mb in both tiers: one filling its
    share evicts its own oldest keys, never another's."""
    data = tmp_path / "data"
    pl = Plenum(data)
    pl.ok("user", "create", "alice")
    ka = pl.json("key", "create", "alice")
    srv = launch(data, dram_mb=4, flash_mb=256, ns_max_mb=8)
    a = client(srv, username="alice", password=ka["secret_key"])
    d = client(srv)
    d.set("default-key", b"d" * (1 << 20))
    blobs = {}
    for i in range(20):
        blobs[i] = os.urandom(1 << 20)
        a.set(f"a{i}", blobs[i])
    assert d.get("default-key") == b"d" * (1 << 20)  # untouched by alice's evictions
    kept = [i for i in range(20) if a.exists(f"a{i}")]
    assert 5 <= len(kept) <= 8 and kept == list(range(20 - len(kept), 20))
    for i in kept:
        assert a.get(f"a{i}") == blobs[i]
    import redis
    with pytest.raises(redis.exceptions.ResponseError) as e:
        a.set("too-big", os.urandom(9 << 20))
    assert str(e.value).startswith("OOM")
    assert srv.stop() == 0


def raw(port, data, read_until_close=True, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            out += c
            if not read_until_close:
                break
    except socket.timeout:
        pass
    s.close()
    return out


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_bad_input(tmp_path, launch):
    srv = launch(tmp_path / "data")
    r = client(srv)
    r.set("alive", b"yes")
    assert raw(srv.rport, b"*abc\r\n") == b"-ERR Protocol error: invalid multibulk length\r\n"
    assert raw(srv.rport, b"*1\r\n$1099511627776\r\n") == \
        b"-ERR Protocol error: invalid bulk length\r\n"
    assert raw(srv.rport, b"*10000000\r\n") == b"-ERR Protocol error: invalid multibulk length\r\n"
    assert raw(srv.rport, b"*1\r\n:5\r\n") == b"-ERR Protocol error: expected '$', got ':'\r\n"
    assert raw(srv.rport, b"GET \"unbalanced\r\n") == \
        b"-ERR Protocol error: unbalanced quotes in request\r\n"
    assert raw(srv.rport, b"x" * (70 * 1024)) == b"-ERR Protocol error: too big inline request\r\n"
    # inline commands work (telnet)
    assert raw(srv.rport, b"PING\r\nGET alive\r\nQUIT\r\n") == b"+PONG\r\n$3\r\nyes\r\n+OK\r\n"
    # clients that send half a value and stall hold their own connection only
    before = rss_kb(srv.proc.pid)
    stallers = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", srv.rport))
        s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870912\r\n" + b"x" * 65536)
        stallers.append(s)
    # a flood of pipelined commands from another client
    flood = b"*1\r\n$4\r\nPING\r\n" * 100000
    t = threading.Thread(target=raw, args=(srv.rport, flood, False))
    t.start()
    for i in range(50):
        assert r.get("alive") == b"yes"
    # the stallers each hold a worker thread; a large value still gets one of its own
    blob = os.urandom(1 << 20)
    assert r.set("large", blob) and r.get("large") == blob
    t.join()
    assert rss_kb(srv.proc.pid) - before < 512 * 1024  # untouched reservations are not memory
    for s in stallers:
        s.close()
    time.sleep(0.5)
    assert r.get("k") is None and r.dbsize() == 2
    assert srv.stop() == 0


def read_reply(f):
    """One RESP2 reply from a socket's file object: bytes, int, str, None or list."""
    line = f.readline()
    assert line.endswith(b"\r\n"), line
    kind, body = line[:1], line[1:-2]
    if kind == b"$":
        n = int(body)
        if n < 0:
            return None
        data = f.read(n + 2)
        assert data[-2:] == b"\r\n"
        return data[:-2]
    if kind == b":":
        return int(body)
    if kind == b"*":
        return [read_reply(f) for _ in range(int(body))]
    return body.decode()  # + and -


def command(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


@pytest.mark.parametrize("loops", [1, 2])
def test_event_loops_and_workers_share_connections(tmp_path, launch, loops):
    """Small requests are answered on the event loops, large values and
    flash reads on workers: many clients at once, each checking its own
    bytes; a reader that stops reading a large reply holds up nobody; one
    connection's pipeline mixing both kinds is answered in order."""
    srv = launch(tmp_path / "data", dram_mb=64, flash_mb=2048, loops=loops)
    # a stalled reader: its 48 MiB reply fills the socket and waits
    big = os.urandom(48 << 20)
    client(srv).set("stalled", big)
    stalled = socket.create_connection(("127.0.0.1", srv.rport))  # more than both socket buffers
    stalled.settimeout(120)  # a reply never sent fails the test, not hangs it
    stalled.sendall(command("GET", "stalled") + command("PING"))
    errors = []

    def small(n):
        try:
            r = client(srv)
            rnd = random.Random(n)
            mine = {}
            for i in range(400):
                k = f"small:{n}:{rnd.randrange(50)}"
                if rnd.random() < 0.5:
                    v = os.urandom(rnd.randrange(0, 4096))
                    assert r.set(k, v)
                    mine[k] = v
                else:
                    assert r.get(k) == mine.get(k)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(f"small {n}: {e!r}")

    def large(n):
        try:
            r = client(srv)
            for i in range(6):
                v = os.urandom((2 + (n + i) % 7) << 20)
                k = f"large:{n}:{i}"
                assert r.set(k, v)
                assert r.get(k) == v
            # the oldest have been pushed to flash by now: read back from there
            for i in range(6):
                got = r.get(f"large:{n}:{i}")
                assert got is not None and len(got) == (2 + (n + i) % 7) << 20
        except Exception as e:  # noqa: BLE001
            errors.append(f"large {n}: {e!r}")

    threads = [threading.Thread(target=small, args=(n,)) for n in range(48)]
    threads += [threading.Thread(target=large, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:5]
    st = info(client(srv))
    assert st["kv_hits_flash"] > 0 and st["kv_demotions"] > 0
    # the stalled reader gets every byte, then its PING's answer
    f = stalled.makefile("rb")
    assert read_reply(f) == big
    assert read_reply(f) == "PONG"
    stalled.close()
    # one pipeline, small and large and SET ... GET mixed: answers in order
    r = client(srv)
    r.set("s1", b"one")
    r.set("L1", big[:1 << 20])
    pipe = socket.create_connection(("127.0.0.1", srv.rport))
    pipe.settimeout(60)
    pipe.sendall(command("GET", "s1") + command("GET", "L1") + command("SET", "s2", "two", "GET")
                 + command("SET", "s1", "uno", "GET") + command("MGET", "s1", "L1", "none")
                 + command("GET", "stalled") + command("DBSIZE"))
    f = pipe.makefile("rb")
    assert read_reply(f) == b"one"
    assert read_reply(f) == big[:1 << 20]
    assert read_reply(f) is None
    assert read_reply(f) == b"one"
    assert read_reply(f) == [b"uno", big[:1 << 20], None]
    assert read_reply(f) == big
    assert read_reply(f) == r.dbsize()
    pipe.close()
    # a clean stop first writes what only DRAM holds (up to the 64 MiB tier) to
    # flash: slow under ASan on a busy machine
    assert srv.stop(timeout=180) == 0


NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is installed by scripts/deps.sh")
def test_node_redis_resp3(tmp_path, launch):
    """node-redis, the Redis project's Node.js client, with RESP: 3 (it
    sends HELLO 3 and parses RESP3 maps, nulls and pushes): commands, binary
    values, pipelining and the unknown-command error, as an application sees
    them. (Debian's redis-py 4.3 predates RESP3.)"""
    assert os.path.exists(os.path.join(NODE_DIR, "node_modules", "redis")), \
        "run scripts/deps.sh: it installs tests/integration/node's packages"
    srv = launch(tmp_path / "data")
    p = subprocess.run(["node", os.path.join(NODE_DIR, "resp3.mjs"), str(srv.rport)],
                       capture_output=True, timeout=120, cwd=NODE_DIR)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    import json
    out = json.loads(p.stdout)
    assert out["helloProto"] == 3 and out["helloServer"] == "redis"  # a RESP3 map
    assert out["ping"] == "PONG" and out["set"] == "OK" and out["setNx"] is None
    assert out["get"] == "alpha" and out["missing"] is None
    assert out["setEx"] == "OK" and 95 <= out["ttl"] <= 100
    assert out["mset"] == "OK" and out["mget"] == ["alpha", "beta", None, "gamma"]
    assert out["exists"] == 2 and out["strlen"] == 5 and out["getrange"] == "amm"
    assert out["type"] == "string" and out["del"] == 1 and out["getdel"] == "gamma"
    assert out["clientId"] > 0 and out["clientName"] == "resp3-test"
    assert out["scan"] == ["n:a", "n:ttl"] and out["dbsize"] == 2 and out["info"]
    assert out["big"] and out["pipelined"] and out["pipelinedGet"]
    assert out["unknown"].startswith("ERR unknown command 'NOSUCHCMD'"), out["unknown"]
    assert srv.stop() == 0


def test_redis_benchmark_and_unix_socket(tmp_path, launch):
    sock = str(tmp_path / "resp.sock")
    srv = launch(tmp_path / "data", extra=["--resp-unix", sock])
    out = run("redis-benchmark", "-p", str(srv.rport), "-t", "set,get", "-d", "1024", "-c", "8",
              "-n", "20000", "-P", "16", "--csv")
    assert '"SET"' in out and '"GET"' in out
    out = run("redis-benchmark", "-s", sock, "-t", "set,get", "-d", "262144", "-c", "4",
              "-n", "400", "--csv")
    assert '"SET"' in out and '"GET"' in out
    assert subprocess.run(["redis-cli", "-s", sock, "SET", "via", "unix"], capture_output=True,
                          timeout=30).stdout == b"OK\n"
    assert cli(srv, "GET", "via") == "unix\n"
    # a large value streams: 100 MiB in, the same 100 MiB out
    big = os.urandom(100 << 20)
    r = client(srv)
    r.set("big", big)
    assert r.get("big") == big
    assert srv.stop() == 0


def test_stop_while_a_client_stopped_reading(tmp_path, launch):
    """A clean stop lets replies going out finish for a while, then cuts a
    client that stopped reading, instead of waiting on it for good."""
    srv = launch(tmp_path / "data")
    client(srv).set("big", os.urandom(48 << 20))
    s = socket.create_connection(("127.0.0.1", srv.rport))
    try:
        s.sendall(b"GET big\r\n")
        s.recv(1024)  # the reply has started, and is never read further
        t0 = time.time()
        assert srv.stop(timeout=60) == 0
        assert time.time() - t0 < 50
        with open(srv.log_path) as f:
            assert "still sending" in f.read()
    finally:
        s.close()


def test_kv_cli(tmp_path, launch):
    data = tmp_path / "data"
    srv = launch(data)
    r = client(srv)
    r.set("a", b"1")
    pl = Plenum(data)
    st = pl.json("kv", "stats")
    assert st["keys"] == 1 and st["dram_keys"] == 1
    import urllib.request
    metrics = urllib.request.urlopen(srv.url + "/metrics", timeout=30).read().decode()
    assert 'plenum_kv_keys{tier="dram"} 1' in metrics
    assert "plenum_kv_hits_total" in metrics and "plenum_kv_evictions_total" in metrics
    st = pl.json("kv", "config", "32", "0")
    assert st["dram_max"] == 32 << 20
    pl.ok("kv", "flush", "default/0")
    assert r.get("a") is None
    r.set("b", b"2")
    assert srv.stop() == 0
    # without a server the command reads the flash tier (a clean stop demoted "b")
    assert pl.json("kv", "stats")["flash_keys"] == 1
    assert pl.run("kv", "config", "1", "1").returncode == 2


def test_flash_compression_per_namespace(tmp_path, launch):
    """Flash values are stored raw by default (tensors do not compress: no
    zstd or similarity work at destage); namespaces named in [kv] compress
    are compressed. The same compressible values either way."""
    stored = {}
    for name, compress in (("raw", None), ("zstd", "default/*")):
        data = tmp_path / name
        srv = launch(data, compress=compress)
        r = client(srv)
        rnd = random.Random(7)  # words at random: compresses, does not deduplicate
        words = [b"w%03d " % k for k in range(1000)]
        vals = [b"".join(rnd.choices(words, k=1100000)) for _ in range(8)]
        for i, v in enumerate(vals):  # 44 MB, then a clean stop: all on flash
            r.set(f"v{i}", v)
        assert srv.stop() == 0
        pl = Plenum(data)
        pl.ok("flush")
        st = pl.json("stats")
        assert st["logical_bytes"] >= 8 * 1100000 * 5
        stored[name] = st["stored_bytes"]
        srv = launch(data, compress=compress)
        r = client(srv)
        assert [r.get(f"v{i}") for i in range(8)] == vals
        srv.stop()
    assert stored["raw"] >= 8 * 1100000 * 5  # nothing compressed
    assert stored["zstd"] * 2 < stored["raw"]

