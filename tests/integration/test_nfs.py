"""The NFS head with real clients: libnfs's nfs-ls, nfs-cp and nfs-cat, and a
libnfs program (tests/nfs/nfs_ops.c) driving the procedures and their errors,
against a real plenum server; the same bytes checked through the CLI (the
object view). Raw RPC is used only to send what no client would."""
import hashlib
import os
import random
import re
import signal
import socket
import struct
import subprocess
import time
import urllib.request

import pytest

from conftest import BUILD, Plenum, Server, free_port, run, sha

pytestmark = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "command -v nfs-ls nfs-cp nfs-cat"],
                   capture_output=True).returncode != 0,
    reason="libnfs-utils is installed by scripts/deps.sh")

NFS_OPS = os.path.join(BUILD, "nfs_ops")


@pytest.fixture
def nfs(tmp_path):
    data = tmp_path / "data"
    pl = Plenum(data)
    pl.ok("mb", "pl://bkt")
    port, mport = free_port(), free_port()
    srv = Server(data, extra=["--nfs", f"127.0.0.1:{port}", "--mountd", f"127.0.0.1:{mport}"])
    srv.port, srv.mport, srv.pl = port, mport, pl
    srv.url = lambda path="": (f"nfs://127.0.0.1/bkt{path}?nfsport={port}&mountport={mport}"
                               "&version=3")
    yield srv
    if srv.proc.poll() is None:
        assert srv.stop() == 0


# ---- raw RPC, for what no real client sends ----
def xstr(b):
    return struct.pack(">I", len(b)) + b + b"\0" * (-len(b) % 4)


def call_record(xid, prog, vers, proc, args=b"", uid=0):
    cred = struct.pack(">I", 0) + xstr(b"test") + struct.pack(">III", uid, uid, 0)
    body = (struct.pack(">IIIIII", xid, 0, 2, prog, vers, proc) + struct.pack(">I", 1) +
            xstr(cred) + struct.pack(">II", 0, 0) + args)
    return struct.pack(">I", 0x80000000 | len(body)) + body


def recv_record(s):
    hdr = b""
    while len(hdr) < 4:
        c = s.recv(4 - len(hdr))
        if not c:
            return None
        hdr += c
    n = struct.unpack(">I", hdr)[0] & 0x7FFFFFFF
    data = b""
    while len(data) < n:
        c = s.recv(n - len(data))
        if not c:
            return None
        data += c
    return data


def rpc(s, prog, vers, proc, args=b""):
    s.sendall(call_record(random.randint(1, 1 << 30), prog, vers, proc, args))
    return recv_record(s)


def mount_fh(port, path=b"/bkt"):
    with socket.create_connection(("127.0.0.1", port)) as m:
        r = rpc(m, 100005, 3, 1, xstr(path))
    assert struct.unpack(">I", r[24:28])[0] == 0
    return r[32:32 + struct.unpack(">I", r[28:32])[0]]


def test_nfs_tools_roundtrip_and_object_view(nfs, tmp_path):
    pl = nfs.pl
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(16 << 20))  # 1 GiB
    run("nfs-cp", str(src), nfs.url("/big.bin"))
    back = tmp_path / "back.bin"
    run("nfs-cp", nfs.url("/big.bin"), str(back))
    assert sha(back) == sha(src)
    # the same bytes as an object, with its size
    st = pl.json("stat", "pl://bkt/big.bin")
    assert st["size"] == 1 << 30
    md5 = hashlib.md5()
    with open(src, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            md5.update(b)
    assert st["etag"] == md5.hexdigest()  # computed once, as an object view needs it
    out = tmp_path / "cli.bin"
    pl.ok("cp", "pl://bkt/big.bin", str(out))
    assert sha(out) == sha(src)
    # an object written through the CLI reads the same over NFS
    obj = tmp_path / "obj.txt"
    obj.write_bytes(b"written as an object\n" * 1000)
    pl.ok("cp", str(obj), "pl://bkt/docs/obj.txt")
    assert subprocess.run(["nfs-cat", nfs.url("/docs/obj.txt")], capture_output=True,
                          timeout=60).stdout == obj.read_bytes()
    listing = run("nfs-ls", nfs.url())
    assert "big.bin" in listing and "docs" in listing
    assert "obj.txt" in run("nfs-ls", nfs.url("/docs"))


def read_ahead_counts(srv):
    text = urllib.request.urlopen(f"http://127.0.0.1:{srv.admin_port}/metrics",
                                  timeout=30).read().decode()
    return {m[0]: int(m[1]) for m in
            re.findall(r'plenum_nfs_read_ahead_total\{outcome="(\w+)"\} (\d+)', text)}


def test_nfs_sequential_reader_read_ahead_sees_every_write(nfs, tmp_path):
    """nfs-cat keeps one READ in flight: the server reads its next piece before
    it asks. The bytes must be right, and a write from another client between
    two READs must show in the second, committed or not."""
    src = tmp_path / "seq.bin"
    blob = bytearray(os.urandom((24 << 20) + 12345))
    src.write_bytes(blob)
    run("nfs-cp", str(src), nfs.url("/seq.bin"))
    before = read_ahead_counts(nfs)
    out = subprocess.run(["nfs-cat", nfs.url("/seq.bin")], capture_output=True,
                         timeout=120).stdout
    assert out == blob
    after = read_ahead_counts(nfs)
    assert after["used"] - before["used"] >= 20  # of 25 READs
    # another client overwrites every other piece just before the reader gets there
    back = tmp_path / "seq.back"
    run(NFS_OPS, nfs.url(), "seqwrite", "/seq.bin", str(back))
    for i in range(2, (len(blob) + (1 << 20) - 1) >> 20, 2):
        piece = blob[i << 20:(i + 1) << 20]
        blob[i << 20:(i << 20) + len(piece)] = bytes([ord("A") + i % 26]) * len(piece)
    assert back.read_bytes() == blob
    final = read_ahead_counts(nfs)
    assert final["changed"] > after["changed"]  # read ahead, then dropped as stale
    assert subprocess.run(["nfs-cat", nfs.url("/seq.bin")], capture_output=True,
                          timeout=120).stdout == blob


def test_nfs_procedures_and_errors_with_libnfs(nfs):
    out = run(NFS_OPS, nfs.url(), "ops")
    for name in ("create exclusive EXIST", "read back", "commit", "rename over a file",
                 "rmdir NOTEMPTY", "lookup through a file NOTDIR", "NAMETOOLONG",
                 "readdirplus names", "mknod refused", "fsstat", "readlink", "link count"):
        assert f"ok {name}\n" in out
    # another user may not create in a root-owned 0755 directory
    out = run(NFS_OPS, nfs.url(), "asuser", "1000")
    assert "ok ACCES creating in another user's directory" in out


def test_nfs_large_directory_listed_completely(nfs):
    assert run(NFS_OPS, nfs.url(), "many", "10000", "/many").strip() == "10000"
    names = [l.split()[-1] for l in run("nfs-ls", nfs.url("/many")).splitlines()]
    assert len([n for n in names if n.startswith("file-")]) == 10000
    # and the S3 view agrees
    keys = nfs.pl.ok("ls", "-r", "pl://bkt/many/").stdout.decode().splitlines()
    assert len(keys) == 10000


def test_nfs_stale_handle_and_snapshot_view(nfs, tmp_path):
    fh = mount_fh(nfs.mport)
    f = tmp_path / "v1.txt"
    f.write_bytes(b"version one\n")
    run("nfs-cp", str(f), nfs.url("/snap.txt"))
    nfs.pl.ok("snapshot", "create", "s1")
    f.write_bytes(b"version two, longer\n")
    run("nfs-cp", nfs.url("/snap.txt"), str(tmp_path / "old.txt"))
    nfs.pl.ok("rm", "pl://bkt/snap.txt")
    run("nfs-cp", str(f), nfs.url("/snap.txt"))
    # the snapshot still shows the first version, read-only
    old = subprocess.run(["nfs-cat", nfs.url("/.snapshot/s1/snap.txt")], capture_output=True,
                         timeout=60)
    assert old.stdout == b"version one\n"
    assert subprocess.run(["nfs-cat", nfs.url("/snap.txt")], capture_output=True,
                          timeout=60).stdout == b"version two, longer\n"
    assert "s1" in run("nfs-ls", nfs.url("/.snapshot"))
    ro = subprocess.run(["nfs-cp", str(f), nfs.url("/.snapshot/s1/new.txt")],
                        capture_output=True, timeout=60)
    assert ro.returncode != 0
    # a handle to a removed file answers NFS3ERR_STALE (70)
    with socket.create_connection(("127.0.0.1", nfs.port)) as s:
        r = rpc(s, 100003, 3, 8, xstr(fh) + xstr(b"gone") + struct.pack(">I", 0) +
                struct.pack(">6I", 0, 0, 0, 0, 0, 0))
        assert struct.unpack(">I", r[24:28])[0] == 0
        gone = r[36:36 + struct.unpack(">I", r[32:36])[0]]
        r = rpc(s, 100003, 3, 12, xstr(fh) + xstr(b"gone"))
        assert struct.unpack(">I", r[24:28])[0] == 0
        r = rpc(s, 100003, 3, 1, xstr(gone))
        assert struct.unpack(">I", r[24:28])[0] == 70
        # a forged handle is BADHANDLE (10001)
        bad = bytearray(fh)
        bad[12] ^= 1
        r = rpc(s, 100003, 3, 1, xstr(bytes(bad)))
        assert struct.unpack(">I", r[24:28])[0] == 10001


def test_nfs_retransmitted_remove_answered_from_cache(nfs):
    fh = mount_fh(nfs.mport)
    with socket.create_connection(("127.0.0.1", nfs.port)) as s:
        r = rpc(s, 100003, 3, 8, xstr(fh) + xstr(b"once") + struct.pack(">I", 0) +
                struct.pack(">6I", 0, 0, 0, 0, 0, 0))
        assert struct.unpack(">I", r[24:28])[0] == 0
        rec = call_record(777, 100003, 3, 12, xstr(fh) + xstr(b"once"))
        s.sendall(rec)
        first = recv_record(s)
        s.sendall(rec)  # the client did not see the reply: it sends the same call
        again = recv_record(s)
        assert struct.unpack(">I", first[24:28])[0] == 0
        assert again == first  # not NOENT: the cached reply


def mount_list(r):
    """(host, path) pairs of a MOUNT DUMP reply."""
    out, off = [], 24
    while struct.unpack(">I", r[off:off + 4])[0]:
        off += 4
        pair = []
        for _ in range(2):
            n = struct.unpack(">I", r[off:off + 4])[0]
            pair.append(r[off + 4:off + 4 + n].decode())
            off += 4 + n + (-n % 4)
        out.append(tuple(pair))
    return out


def test_nfs_mount_list_and_rpcbind(nfs):
    """MOUNT DUMP/UMNT/UMNTALL/EXPORT and RPCBIND GETADDR, on the MOUNT port (every
    listener answers every program); showmount covers them on port 111."""
    with socket.create_connection(("127.0.0.1", nfs.mport)) as m:
        assert nfs_status(rpc(m, 100005, 3, 1, xstr(b"/bkt"))) == 0
        nfs.pl.ok("mb", "pl://other")
        assert nfs_status(rpc(m, 100005, 3, 1, xstr(b"/other"))) == 0
        assert mount_list(rpc(m, 100005, 3, 2)) == [("127.0.0.1", "/bkt"),
                                                          ("127.0.0.1", "/other")]
        assert struct.unpack(">I", rpc(m, 100005, 3, 3, xstr(b"/bkt"))[20:24])[0] == 0
        assert mount_list(rpc(m, 100005, 3, 2)) == [("127.0.0.1", "/other")]
        assert struct.unpack(">I", rpc(m, 100005, 3, 4)[20:24])[0] == 0  # UMNTALL
        assert mount_list(rpc(m, 100005, 3, 2)) == []
        # EXPORT: each bucket, to loopback (no rule configured); groups are a list too
        r = rpc(m, 100005, 3, 5)
        assert b"/bkt" in r and b"/other" in r and b"127.0.0.0/8" in r
        # RPCBIND v4 GETADDR of MOUNT v3 over TCP: this very port, as a universal address
        q = struct.pack(">II", 100005, 3) + xstr(b"tcp") + xstr(b"") + xstr(b"")
        r = rpc(m, 100000, 4, 3, q)
        ua = r[28:28 + struct.unpack(">I", r[24:28])[0]].decode()
        assert ua == f"127.0.0.1.{nfs.mport >> 8}.{nfs.mport & 255}"
        r = rpc(m, 100000, 3, 3, struct.pack(">II", 100005, 3) + xstr(b"udp") + xstr(b"") +
                xstr(b""))
        assert struct.unpack(">I", r[24:28])[0] == 0  # not over UDP: ""
        r = rpc(m, 100000, 5, 0)  # PROG_MISMATCH naming 2..4
        assert struct.unpack(">III", r[20:32]) == (2, 2, 4)


def test_nfs_bad_input_keeps_serving(nfs):
    port = nfs.port
    # garbage that is not a record of a call
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\x80\x00\x00\x10" + os.urandom(16))
        s.settimeout(5)
        assert s.recv(100) == b""  # closed
    # a record length over the limit
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(struct.pack(">I", 0x80000000 | (1 << 30)))
        s.settimeout(5)
        assert s.recv(100) == b""
    with socket.create_connection(("127.0.0.1", port)) as s:
        # truncated arguments: GARBAGE_ARGS (4), connection kept
        r = rpc(s, 100003, 3, 1, b"\x00\x00")
        assert struct.unpack(">I", r[20:24])[0] == 4
        # unknown procedure: PROC_UNAVAIL (3); unknown program: PROG_UNAVAIL (1)
        assert struct.unpack(">I", rpc(s, 100003, 3, 99)[20:24])[0] == 3
        assert struct.unpack(">I", rpc(s, 123456, 1, 0)[20:24])[0] == 1
        # NFS v2: PROG_MISMATCH (2) naming 3..3
        r = rpc(s, 100003, 2, 0)
        assert struct.unpack(">III", r[20:32]) == (2, 3, 3)
        # many calls in flight on one connection, all answered
        for i in range(200):
            s.sendall(call_record(10000 + i, 100003, 3, 0))
        xids = set()
        for _ in range(200):
            xids.add(struct.unpack(">I", recv_record(s)[0:4])[0])
        assert xids == set(range(10000, 10200))
    # a client that sends half a record and stalls does not block others
    stall = socket.create_connection(("127.0.0.1", port))
    stall.sendall(call_record(5, 100003, 3, 0)[:10])
    run("nfs-ls", nfs.url(), timeout=30)  # answered while the stalled one waits
    stall.close()


def test_nfs_portmap_lets_clients_omit_ports(tmp_path):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 111))
        except OSError:
            pytest.skip("port 111 is taken here (rpcbind?)")
    data = tmp_path / "data"
    pl = Plenum(data)
    pl.ok("mb", "pl://pmap")
    srv = Server(data, extra=["--nfs", f"127.0.0.1:{free_port()}", "--mountd",
                              f"127.0.0.1:{free_port()}", "--portmap", "127.0.0.1:111"])
    try:
        f = tmp_path / "x.txt"
        f.write_bytes(b"through the portmapper\n")
        run("nfs-cp", str(f), "nfs://127.0.0.1/pmap/x.txt")
        out = subprocess.run(["nfs-cat", "nfs://127.0.0.1/pmap/x.txt"], capture_output=True,
                             timeout=60)
        assert out.stdout == b"through the portmapper\n"
        # libtirpc's tools ask RPCBIND v4/v3 for a TCP address first (then PORTMAP v2)
        assert "/pmap 127.0.0.0/8" in run("showmount", "-e", "127.0.0.1", timeout=30)
        assert "127.0.0.1:/pmap" in run("showmount", "-a", "127.0.0.1", timeout=30)
        assert "/pmap" in run("showmount", "-d", "127.0.0.1", timeout=30)
        ports = run("rpcinfo", "-p", "127.0.0.1", timeout=30)  # PORTMAP v2 DUMP
        assert "100005    3   tcp" in ports and "100003    3   tcp" in ports
        binds = run("rpcinfo", "127.0.0.1", timeout=30)  # RPCBIND v4 DUMP
        assert "127.0.0.1.0.111" in binds and "mountd" in binds
        assert "ready and waiting" in run("rpcinfo", "-T", "tcp", "127.0.0.1", "nfs", "3",
                                          timeout=30)
    finally:
        assert srv.stop() == 0


def test_nfs_write_survives_kill9(nfs, tmp_path):
    src = tmp_path / "k.bin"
    src.write_bytes(os.urandom(8 << 20))
    run("nfs-cp", str(src), nfs.url("/k.bin"))
    nfs.stop(signal.SIGKILL)
    srv = Server(nfs.data, extra=["--nfs", f"127.0.0.1:{nfs.port}", "--mountd",
                                  f"127.0.0.1:{nfs.mport}"])
    try:
        back = tmp_path / "k.back"
        run("nfs-cp", nfs.url("/k.bin"), str(back))
        assert sha(back) == sha(src)
    finally:
        assert srv.stop() == 0


def test_same_bytes_over_nfs_and_s3(tmp_path):
    from s3util import client
    data = tmp_path / "data"
    port, mport = free_port(), free_port()
    srv = Server(data, s3=True,
                 extra=["--nfs", f"127.0.0.1:{port}", "--mountd", f"127.0.0.1:{mport}"])
    url = lambda p: f"nfs://127.0.0.1/xhead{p}?nfsport={port}&mountport={mport}"
    try:
        s3 = client(srv.s3_url)
        s3.create_bucket(Bucket="xhead")
        # a file made over NFS is an object with its size, ETag and default type
        body = os.urandom(3 << 20) + b"end"
        f = tmp_path / "nfs.bin"
        f.write_bytes(body)
        run("nfs-cp", str(f), url("/from-nfs.bin"))
        head = s3.head_object(Bucket="xhead", Key="from-nfs.bin")
        assert head["ContentLength"] == len(body)
        assert head["ETag"].strip('"') == hashlib.md5(body).hexdigest()
        assert head["ContentType"] == "binary/octet-stream"
        keys = {o["Key"]: o for o in s3.list_objects_v2(Bucket="xhead")["Contents"]}
        assert keys["from-nfs.bin"]["ETag"].strip('"') == hashlib.md5(body).hexdigest()
        assert s3.get_object(Bucket="xhead", Key="from-nfs.bin")["Body"].read() == body
        # an object PUT over S3 reads the same over NFS
        obj = os.urandom(1 << 20)
        s3.put_object(Bucket="xhead", Key="dir/from-s3.bin", Body=obj)
        assert subprocess.run(["nfs-cat", url("/dir/from-s3.bin")], capture_output=True,
                              timeout=60).stdout == obj
        # a rename over NFS is a key change over S3
        fh = mount_fh(mport, b"/xhead")
        with socket.create_connection(("127.0.0.1", port)) as s:
            r = rpc(s, 100003, 3, 14, xstr(fh) + xstr(b"from-nfs.bin") + xstr(fh) +
                    xstr(b"renamed.bin"))
            assert struct.unpack(">I", r[24:28])[0] == 0
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="xhead")["Contents"]]
        assert "renamed.bin" in keys and "from-nfs.bin" not in keys
        # rewriting over NFS gives a new ETag at once
        body2 = os.urandom(1 << 20)
        f.write_bytes(body2)
        s3.delete_object(Bucket="xhead", Key="renamed.bin")
        run("nfs-cp", str(f), url("/renamed.bin"))
        head = s3.head_object(Bucket="xhead", Key="renamed.bin")
        assert head["ETag"].strip('"') == hashlib.md5(body2).hexdigest()
    finally:
        assert srv.stop() == 0


def nfs_status(r):
    return struct.unpack(">I", r[24:28])[0]


def create_call(fh, name):
    return xstr(fh) + xstr(name) + struct.pack(">I", 0) + struct.pack(">6I", 0, 0, 0, 0, 0, 0)


def test_nfs_export_rules(nfs, tmp_path):
    pl = nfs.pl
    f = tmp_path / "e.txt"
    f.write_bytes(b"exported\n")
    run("nfs-cp", str(f), nfs.url("/e.txt"))
    # read-only for loopback: reads work, writes answer ROFS (30)
    pl.ok("export", "add", "/bkt", "--clients", "127.0.0.0/8", "--options", "ro,no_root_squash")
    rules = pl.json("export", "list")["exports"]
    assert rules == [{"path": "/bkt", "clients": "127.0.0.0/8", "readonly": True,
                      "squash": "none", "anon_uid": 65534, "anon_gid": 65534}]
    time.sleep(1.2)  # the server reloads rules every second
    fh = mount_fh(nfs.mport)
    with socket.create_connection(("127.0.0.1", nfs.port)) as s:
        assert nfs_status(rpc(s, 100003, 3, 8, create_call(fh, b"new"))) == 30
    assert subprocess.run(["nfs-cat", nfs.url("/e.txt")], capture_output=True,
                          timeout=60).stdout == b"exported\n"
    # root squashed to 65534: root may not write in the root-owned bucket directory
    pl.ok("export", "add", "/bkt", "--clients", "127.0.0.0/8", "--options", "rw,root_squash")
    time.sleep(1.2)
    with socket.create_connection(("127.0.0.1", nfs.port)) as s:
        assert nfs_status(rpc(s, 100003, 3, 8, create_call(fh, b"new"))) == 13
    # and without squashing it may
    pl.ok("export", "add", "/bkt", "--clients", "127.0.0.0/8", "--options", "no_root_squash")
    time.sleep(1.2)
    with socket.create_connection(("127.0.0.1", nfs.port)) as s:
        assert nfs_status(rpc(s, 100003, 3, 8, create_call(fh, b"new"))) == 0
    # a rule for other clients only: loopback can neither mount nor use old handles
    pl.ok("export", "remove", "/bkt", "--clients", "127.0.0.0/8")
    pl.ok("export", "add", "/bkt", "--clients", "10.0.0.0/8")
    time.sleep(1.2)
    with socket.create_connection(("127.0.0.1", nfs.mport)) as m:
        r = rpc(m, 100005, 3, 1, xstr(b"/bkt"))
        assert struct.unpack(">I", r[24:28])[0] == 13  # MNT3ERR_ACCES
    with socket.create_connection(("127.0.0.1", nfs.port)) as s:
        assert nfs_status(rpc(s, 100003, 3, 1, xstr(fh))) == 13
    # an export of a missing bucket is refused with the next step
    p = pl.run("export", "add", "/nosuch")
    assert p.returncode == 1 and b"bucket" in p.stderr
    # no rules: the default again
    pl.ok("export", "remove", "/bkt", "--clients", "10.0.0.0/8")
    assert "no export rules" in pl.ok("export", "list").stdout.decode()
    time.sleep(1.2)
    assert "e.txt" in run("nfs-ls", nfs.url())


def write_call(fh, off, data, stable):
    return xstr(fh) + struct.pack(">QII", off, len(data), stable) + xstr(data)


def test_nfs_unstable_writes_commit_and_verifier(nfs, tmp_path):
    fh = mount_fh(nfs.mport)
    with socket.create_connection(("127.0.0.1", nfs.port)) as s:
        r = rpc(s, 100003, 3, 8, create_call(fh, b"wb.bin"))
        assert nfs_status(r) == 0
        f = r[36:36 + struct.unpack(">I", r[32:36])[0]]
        blob = os.urandom(3 << 20)
        verfs = set()
        for off in range(0, len(blob), 1 << 20):
            r = rpc(s, 100003, 3, 7, write_call(f, off, blob[off:off + (1 << 20)], 0))
            assert nfs_status(r) == 0
            committed, verf = struct.unpack(">I", r[-12:-8])[0], r[-8:]
            assert committed == 0  # UNSTABLE: not durable until COMMIT
            verfs.add(verf)
        assert len(verfs) == 1
        # attributes and reads see the data before it is committed
        r = rpc(s, 100003, 3, 1, xstr(f))
        assert struct.unpack(">Q", r[48:56])[0] == len(blob)  # fattr3 size
        r = rpc(s, 100003, 3, 6, xstr(f) + struct.pack(">QI", (2 << 20) + 5, 10))
        assert r[-12:-2] == blob[(2 << 20) + 5:(2 << 20) + 15]
        r = rpc(s, 100003, 3, 21, xstr(f) + struct.pack(">QI", 0, 0))
        assert nfs_status(r) == 0 and r[-8:] == verf
        # a stable write reports FILE_SYNC
        r = rpc(s, 100003, 3, 7, write_call(f, 0, b"head", 2))
        assert struct.unpack(">I", r[-12:-8])[0] == 2
    # committed data survives kill -9; the verifier changes with the restart
    nfs.stop(signal.SIGKILL)
    srv = Server(nfs.data, extra=["--nfs", f"127.0.0.1:{nfs.port}", "--mountd",
                                  f"127.0.0.1:{nfs.mport}"])
    try:
        back = tmp_path / "wb.back"
        run("nfs-cp", nfs.url("/wb.bin"), str(back))
        assert back.read_bytes() == b"head" + blob[4:]
        with socket.create_connection(("127.0.0.1", nfs.port)) as s:
            r = rpc(s, 100003, 3, 21, xstr(f) + struct.pack(">QI", 0, 0))
            assert nfs_status(r) == 0 and r[-8:] != verf
    finally:
        assert srv.stop() == 0


def test_nfs_subdirectory_mount_stays_below(nfs, tmp_path):
    f = tmp_path / "x.txt"
    f.write_bytes(b"below\n")
    nfs.pl.ok("cp", str(f), "pl://bkt/sub/deeper/x.txt")
    top = mount_fh(nfs.mport, b"/bkt/sub")
    with socket.create_connection(("127.0.0.1", nfs.port)) as s:
        # ".." of the mounted directory is itself: the bucket above stays out of reach
        r = rpc(s, 100003, 3, 3, xstr(top) + xstr(b".."))
        assert nfs_status(r) == 0
        assert r[32:32 + struct.unpack(">I", r[28:32])[0]] == top
        r = rpc(s, 100003, 3, 3, xstr(top) + xstr(b"deeper"))
        assert nfs_status(r) == 0
        deeper = r[32:32 + struct.unpack(">I", r[28:32])[0]]
        r = rpc(s, 100003, 3, 3, xstr(deeper) + xstr(b".."))
        assert r[32:32 + struct.unpack(">I", r[28:32])[0]] == top
    assert subprocess.run(["nfs-cat", f"nfs://127.0.0.1/bkt/sub/deeper/x.txt?nfsport={nfs.port}"
                           f"&mountport={nfs.mport}"], capture_output=True,
                          timeout=60).stdout == b"below\n"


def parse_readdir(r):
    """READDIR3resok -> (verifier, [(name, cookie)], eof)."""
    assert nfs_status(r) == 0
    at = 28
    if struct.unpack(">I", r[at:at + 4])[0]:
        at += 4 + 84  # post_op_attr with an fattr3
    else:
        at += 4
    verf = r[at:at + 8]
    at += 8
    out = []
    while struct.unpack(">I", r[at:at + 4])[0]:
        at += 4 + 8
        n = struct.unpack(">I", r[at:at + 4])[0]
        name = r[at + 4:at + 4 + n].decode()
        at += 4 + n + (-n % 4)
        cookie = struct.unpack(">Q", r[at:at + 8])[0]
        at += 8
        out.append((name, cookie))
    eof = struct.unpack(">I", r[at + 4:at + 8])[0]
    return verf, out, eof


def test_nfs_readdir_paging_cookies_and_pathconf(nfs):
    fh = mount_fh(nfs.mport)
    with socket.create_connection(("127.0.0.1", nfs.port)) as s:
        r = rpc(s, 100003, 3, 9, xstr(fh) + xstr(b"many") + struct.pack(">6I", 0, 0, 0, 0, 0, 0))
        assert nfs_status(r) == 0
        d = r[36:36 + struct.unpack(">I", r[32:36])[0]]
        for i in range(300):
            assert nfs_status(rpc(s, 100003, 3, 8, create_call(d, b"f%03d" % i))) == 0
        # plain READDIR in small pages, resuming from the last cookie each time
        names, cookie, verf, pages = [], 0, b"\0" * 8, 0
        while True:
            verf, entries, eof = parse_readdir(
                rpc(s, 100003, 3, 16, xstr(d) + struct.pack(">Q", cookie) + verf +
                    struct.pack(">I", 2048)))
            pages += 1
            names += [n for n, _ in entries]
            if eof:
                break
            cookie = entries[-1][1]
            # a file removed and one added meanwhile do not upset the listing
            if pages == 2:
                assert nfs_status(rpc(s, 100003, 3, 12, xstr(d) + xstr(b"f000"))) == 0
        assert pages > 3
        assert names[:2] == [".", ".."]
        assert sorted(n for n in names[2:]) == ["f%03d" % i for i in range(300)]
        # a cookie we never gave, or the wrong verifier: BAD_COOKIE (10003)
        r = rpc(s, 100003, 3, 16, xstr(d) + struct.pack(">Q", 123456789) + verf +
                struct.pack(">I", 2048))
        assert nfs_status(r) == 10003
        r = rpc(s, 100003, 3, 16, xstr(d) + struct.pack(">Q", cookie) + b"x" * 8 +
                struct.pack(">I", 2048))
        assert nfs_status(r) == 10003
        # PATHCONF: names up to 255 bytes, no truncation, case preserved
        r = rpc(s, 100003, 3, 20, xstr(d))
        assert nfs_status(r) == 0
        linkmax, name_max, no_trunc, chown_r, case_ins, case_pres = struct.unpack(
            ">6I", r[-24:])
        assert name_max == 255 and no_trunc == 1 and case_ins == 0 and case_pres == 1
