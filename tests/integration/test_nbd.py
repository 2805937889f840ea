"""The NBD head with real clients: nbdinfo, nbdcopy and qemu-img against a
real plenum server; volumes made, snapshotted and cloned with the CLI."""
import hashlib
import os
import signal
import socket
import struct
import subprocess
import urllib.request

import pytest

from conftest import Plenum, Server, free_port, run, sha

pytestmark = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "command -v nbdcopy nbdinfo qemu-img"],
                   capture_output=True).returncode != 0,
    reason="libnbd-bin and qemu-utils are installed by scripts/deps.sh")


@pytest.fixture
def nbd(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    srv = Server(data, extra=["--nbd", f"127.0.0.1:{port}"])
    srv.nbd_url = f"nbd://127.0.0.1:{port}"
    srv.nbd_port = port
    srv.pl = Plenum(data)
    yield srv
    assert srv.stop() == 0


def volume_server(tmp_path, name, size, extra=()):
    """A server with one volume, and how to start one again on the same data and port
    (for stops and kills): (pl, srv, start(*extra), nbd URL of the volume)."""
    port = free_port()
    data = tmp_path / "data"
    pl = Plenum(data)

    def start(*more):
        return Server(data, extra=[*more, "--nbd", f"127.0.0.1:{port}"])

    srv = start(*extra)
    pl.ok("volume", "create", name, "--size", size)
    return pl, srv, start, f"nbd://127.0.0.1:{port}/{name}"


def test_nbdinfo_nbdcopy_qemu_img(nbd, tmp_path):
    pl = nbd.pl
    pl.ok("volume", "create", "disk", "--size", "256M")
    info = run("nbdinfo", "--json", f"{nbd.nbd_url}/disk")
    assert '"export-size": 268435456' in info
    listing = run("nbdinfo", "--list", nbd.nbd_url)
    assert "disk" in listing

    # a 256 MiB image: random data, a zero run, a hole at the end
    src = tmp_path / "src.img"
    with open(src, "wb") as f:
        f.write(os.urandom(96 << 20))
        f.write(b"\0" * (32 << 20))
        f.write(os.urandom(64 << 20))
        f.truncate(256 << 20)
    run("nbdcopy", str(src), f"{nbd.nbd_url}/disk")
    back = tmp_path / "back.img"
    run("nbdcopy", f"{nbd.nbd_url}/disk", str(back))
    assert sha(back) == sha(src)
    # the zero runs are holes: block status says so, and they take no space
    m = run("nbdinfo", "--map", f"{nbd.nbd_url}/disk")
    assert "hole" in m and "data" in m
    pl.ok("flush")  # stores the write cache, then destages
    first = pl.json("stats")["stored_bytes"]
    assert first < (170 << 20)

    # qemu-img both ways
    q = tmp_path / "q.raw"
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", f"{nbd.nbd_url}/disk", str(q))
    assert sha(q) == sha(src)
    pl.ok("volume", "create", "disk2", "--size", "256M")
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), f"{nbd.nbd_url}/disk2")
    run("nbdcopy", f"{nbd.nbd_url}/disk2", str(back))
    assert sha(back) == sha(src)
    # the second copy (other request sizes, so other chunk edges) mostly deduplicated
    pl.ok("flush")
    assert pl.json("stats")["stored_bytes"] - first < first / 2


def test_nbdcopy_1gib_both_ways(nbd, tmp_path):
    pl = nbd.pl
    pl.ok("volume", "create", "big", "--size", "1G")
    src = tmp_path / "big.img"
    with open(src, "wb") as f:
        for _ in range(32):
            f.write(os.urandom(16 << 20))  # 512 MiB of data
        f.write(b"\0" * (256 << 20))       # a zero run
        f.truncate(1 << 30)                # and a hole at the end
    run("nbdcopy", str(src), f"{nbd.nbd_url}/big")
    back = tmp_path / "big.back"
    run("nbdcopy", f"{nbd.nbd_url}/big", str(back))
    assert sha(back) == sha(src)
    # only the data takes space: zeros and the hole were skipped or stored as holes
    assert pl.json("stats")["stored_bytes"] < (600 << 20)
    assert "hole" in run("nbdinfo", "--map", f"{nbd.nbd_url}/big")
    back.unlink()
    src.unlink()


def test_snapshot_clone_resize_and_readonly(nbd, tmp_path):
    pl = nbd.pl
    pl.ok("volume", "create", "base", "--size", "32M")
    img = tmp_path / "a.img"
    img.write_bytes(os.urandom(32 << 20))
    run("nbdcopy", str(img), f"{nbd.nbd_url}/base")
    pl.ok("volume", "snapshot", "base", "v1")
    # writes after the snapshot do not show in it
    img2 = tmp_path / "b.img"
    img2.write_bytes(os.urandom(32 << 20))
    run("nbdcopy", str(img2), f"{nbd.nbd_url}/base")
    out = tmp_path / "out.img"
    run("nbdcopy", f"{nbd.nbd_url}/base@v1", str(out))
    assert sha(out) == sha(img)
    # a snapshot is read-only
    p = subprocess.run(["nbdcopy", str(img2), f"{nbd.nbd_url}/base@v1"], capture_output=True,
                       timeout=120)
    assert p.returncode != 0
    # a clone of the snapshot is writable and starts equal to it
    pl.ok("volume", "clone", "base@v1", "child")
    run("nbdcopy", f"{nbd.nbd_url}/child", str(out))
    assert sha(out) == sha(img)
    names = {v["name"]: v for v in pl.json("volume", "list")["volumes"]}
    assert set(names) == {"base", "base@v1", "child"} and names["base@v1"]["readonly"]
    pl.ok("volume", "resize", "child", "--size", "64M")
    assert '"export-size": 67108864' in run("nbdinfo", "--json", f"{nbd.nbd_url}/child")
    pl.ok("volume", "delete", "child")
    p = subprocess.run(["nbdinfo", f"{nbd.nbd_url}/child"], capture_output=True, timeout=60)
    assert p.returncode != 0
    r = pl.run("volume", "create", "bad/name", "--size", "1M")
    assert r.returncode == 1 and b"invalid" in r.stderr
    assert pl.run("fsck").returncode == 0


def test_bad_clients(nbd):
    pl = nbd.pl
    pl.ok("volume", "create", "v", "--size", "1M")

    def connect():
        s = socket.create_connection(("127.0.0.1", nbd.nbd_port), timeout=10)
        greet = s.recv(18, socket.MSG_WAITALL)
        assert greet[:8] == b"NBDMAGIC"
        return s

    def closed(s):
        try:
            return s.recv(100) == b""
        except ConnectionResetError:
            return True

    # garbage instead of an option: closed
    s = connect()
    s.sendall(b"\0\0\0\x01" + b"NOTANOPTION" * 6)
    assert closed(s)
    s.close()
    # a huge option: refused with TOO_BIG and closed
    s = connect()
    s.sendall(struct.pack(">I", 1) + b"IHAVEOPT" + struct.pack(">II", 7, 1 << 30))
    rep = s.recv(20, socket.MSG_WAITALL)
    assert struct.unpack(">QIII", rep)[2] == 0x80000009
    s.close()
    # an unknown export: an error reply, the connection stays usable
    s = connect()
    name = b"nope"
    body = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    s.sendall(struct.pack(">I", 1) + b"IHAVEOPT" + struct.pack(">II", 7, len(body)) + body)
    rep = s.recv(20, socket.MSG_WAITALL)
    magic, opt, typ, ln = struct.unpack(">QIII", rep)
    assert typ == 0x80000006
    s.recv(ln, socket.MSG_WAITALL)
    # go to "v", then a WRITE that claims 1 GiB: the connection is closed
    body = struct.pack(">I", 1) + b"v" + struct.pack(">H", 0)
    s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, len(body)) + body)
    while True:
        magic, opt, typ, ln = struct.unpack(">QIII", s.recv(20, socket.MSG_WAITALL))
        s.recv(ln, socket.MSG_WAITALL) if ln else None
        if typ == 1:
            break
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 7, 0, 1 << 30) + b"x" * 100)
    assert closed(s)
    s.close()
    # everyone else is still served
    assert '"export-size": 1048576' in run("nbdinfo", "--json", f"{nbd.nbd_url}/v")


def test_pipelined_requests_in_odd_pieces(nbd, tmp_path):
    """Hundreds of requests in flight, sent in 997-byte pieces that split headers and
    payloads: each is answered once (any order), a READ sees the writes before it, and
    the bytes are what nbdcopy reads back."""
    nbd.pl.ok("volume", "create", "p", "--size", "8M")
    s = socket.create_connection(("127.0.0.1", nbd.nbd_port), timeout=30)
    assert s.recv(18, socket.MSG_WAITALL)[:8] == b"NBDMAGIC"
    body = struct.pack(">I", 1) + b"p" + struct.pack(">H", 0)
    s.sendall(struct.pack(">I", 1) + b"IHAVEOPT" + struct.pack(">II", 7, len(body)) + body)
    while True:
        magic, opt, typ, ln = struct.unpack(">QIII", s.recv(20, socket.MSG_WAITALL))
        s.recv(ln, socket.MSG_WAITALL) if ln else None
        if typ == 1:
            break

    def req(typ, cookie, off, ln):
        return struct.pack(">IHHQQI", 0x25609513, 0, typ, cookie, off, ln)

    image = bytearray(8 << 20)
    stream = bytearray()
    seed = 5
    for h in range(1, 301):  # scattered 4 KiB writes
        off = (h * 7919 % 2000) * 4096
        data = bytes((seed * h + i) % 251 for i in range(0, 4096, 16)) * 16
        image[off:off + 4096] = data
        stream += req(1, h, off, 4096) + data
    big = os.urandom(1 << 20)  # a large one after them: read past the buffered part
    image[6 << 20:7 << 20] = big
    stream += req(1, 400, 6 << 20, len(big)) + big
    stream += req(3, 500, 0, 0)  # FLUSH
    probe = (150 * 7919 % 2000) * 4096  # written by request 150
    stream += req(0, 600, probe, 4096) + req(0, 601, 6 << 20, 4096)
    for i in range(0, len(stream), 997):
        s.sendall(stream[i:i + 997])
    got = {}
    while len(got) < 304:
        magic, err, h = struct.unpack(">IIQ", s.recv(16, socket.MSG_WAITALL))
        assert (magic, err) == (0x67446698, 0)
        assert h not in got
        got[h] = s.recv(4096, socket.MSG_WAITALL) if h in (600, 601) else b""
    assert got[600] == bytes(image[probe:probe + 4096])
    assert got[601] == big[:4096]
    s.sendall(req(2, 700, 0, 0))  # DISC
    s.close()
    run("nbdcopy", f"{nbd.nbd_url}/p", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == bytes(image)


def test_flushed_writes_survive_kill9(tmp_path):
    pl, srv, start, url = volume_server(tmp_path, "crash", "64M")
    img = tmp_path / "img"
    img.write_bytes(os.urandom(64 << 20))
    run("nbdcopy", "--flush", str(img), url)  # durable once FLUSH is answered
    srv.stop(signal.SIGKILL)
    srv = start()
    out = tmp_path / "out"
    run("nbdcopy", url, str(out))
    assert sha(out) == sha(img)
    assert srv.stop() == 0
    assert pl.run("fsck").returncode == 0


def test_write_cache_is_stored_at_a_clean_stop_and_shared_by_connections(tmp_path):
    """Writes are answered from the volume's write cache; a client that never
    sends FLUSH still finds them from a new connection at once, in a snapshot,
    and after a clean stop (SIGTERM stores what is cached)."""
    conf = tmp_path / "plenum.conf"
    conf.write_text("[nbd]\nwrite_cache_mb = 512   # as docs/operations.md shows it\n")
    pl, srv, start, url = volume_server(tmp_path, "wc", "256M", ["--config", str(conf)])
    img = tmp_path / "img"
    img.write_bytes(os.urandom(256 << 20))
    run("nbdcopy", str(img), url)  # no FLUSH
    out = tmp_path / "out"
    run("nbdcopy", url, str(out))  # another connection, while the writer still stores
    assert sha(out) == sha(img)
    metrics = urllib.request.urlopen(srv.url + "/metrics", timeout=10).read().decode()
    assert "plenum_nbd_write_cache_limit_bytes 536870912" in metrics
    assert "plenum_nbd_write_cache_bytes " in metrics
    # overwrite the first 64 MiB without FLUSH; a snapshot holds the new bytes
    first = bytearray(img.read_bytes())
    first[:64 << 20] = os.urandom(64 << 20)
    part = tmp_path / "part"
    part.write_bytes(bytes(first[:64 << 20]))
    run("nbdcopy", str(part), url)
    pl.ok("volume", "snapshot", "wc", "s1")
    img.write_bytes(bytes(first))
    run("nbdcopy", url + "@s1", str(out))
    assert sha(out) == sha(img)
    # a whole new image, then stop at once: the cache is stored before the server exits
    img.write_bytes(os.urandom(256 << 20))
    run("nbdcopy", str(img), url)
    assert srv.stop() == 0
    assert "lost" not in (tmp_path / "server.log").read_text()
    srv = start()
    run("nbdcopy", url, str(out))
    assert sha(out) == sha(img)
    assert srv.stop() == 0
    assert pl.run("fsck").returncode == 0


def test_fua_flush_and_trim_over_libnbd_survive_kill9(tmp_path):
    """libnbd's Python binding: a FUA write is durable when answered, a FLUSH on
    one connection makes another's writes durable (CAN_MULTI_CONN), and a trim
    of cached bytes stays a hole: all checked after kill -9."""
    nbd = pytest.importorskip("nbd", reason="python3-libnbd is installed by scripts/deps.sh")
    pl, srv, start, url = volume_server(tmp_path, "f", "64M")
    mib = 1 << 20
    a, b, d = os.urandom(mib), os.urandom(2 * mib), os.urandom(4 * mib)
    h, h2 = nbd.NBD(), nbd.NBD()
    h.connect_uri(url)
    h2.connect_uri(url)
    assert h.can_multi_conn() and h.can_fua() and h.can_flush() and h.can_trim()
    h.pwrite(a, 0, nbd.CMD_FLAG_FUA)
    h.pwrite(b, 4 * mib)
    assert h2.pread(2 * mib, 4 * mib) == b  # another connection sees cached writes
    h.pwrite(d, 16 * mib)
    h.trim(mib, 17 * mib)  # a hole in the middle of cached bytes
    h.zero(mib // 2, 19 * mib + mib // 4)
    want_d = d[:mib] + bytes(mib) + d[2 * mib:3 * mib + mib // 4] + bytes(mib // 2) + \
        d[3 * mib + 3 * mib // 4:]
    assert h.pread(4 * mib, 16 * mib) == want_d
    h2.flush()  # h's writes too
    h.pwrite(os.urandom(mib), 32 * mib)  # answered, never flushed: may be lost
    e = os.urandom(mib)
    h.pwrite(e, 40 * mib, nbd.CMD_FLAG_FUA)  # durable when answered
    srv.stop(signal.SIGKILL)
    srv = start()
    h = nbd.NBD()
    h.connect_uri(url)
    assert h.pread(mib, 0) == a
    assert h.pread(mib, 40 * mib) == e
    assert h.pread(2 * mib, 4 * mib) == b
    assert h.pread(4 * mib, 16 * mib) == want_d
    h.shutdown()
    assert srv.stop() == 0
    assert pl.run("fsck").returncode == 0


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v fio"], capture_output=True).returncode,
                    reason="fio is installed by scripts/deps.sh")
@pytest.mark.parametrize("rw,bs", [("randwrite", "4k"), ("randrw", "64k")])
def test_fio_verify(nbd, tmp_path, rw, bs):
    """fio's nbd engine: random writes through the write cache, read back and verified."""
    nbd.pl.ok("volume", "create", "fio", "--size", "128M")
    job = tmp_path / "job.fio"
    job.write_text(f"[global]\nioengine=nbd\nuri={nbd.nbd_url}/fio\nrw={rw}\nbs={bs}\n"
                   "size=32M\niodepth=16\nverify=crc32c\ndo_verify=1\nverify_fatal=1\n"
                   "[job]\n")
    # fio saves its verify state in the working directory: keep it in tmp_path
    out = run("fio", str(job), cwd=tmp_path)
    assert "err= 0" in out
    assert nbd.pl.run("fsck").returncode == 0


def test_object_volume_same_bytes_over_s3_nfs_and_nbd(tmp_path):
    """An object PUT over S3 served as a volume without a copy: NBD reads its bytes,
    NBD writes are what S3 and NFS read (with a new ETag), a newer PUT is what the
    next connection sees, and deleting the volume leaves the object."""
    from s3util import client
    nbd = pytest.importorskip("nbd", reason="python3-libnbd is installed by scripts/deps.sh")
    data = tmp_path / "data"
    port, nport, mport = free_port(), free_port(), free_port()
    srv = Server(data, s3=True, extra=["--nbd", f"127.0.0.1:{port}", "--nfs",
                                       f"127.0.0.1:{nport}", "--mountd", f"127.0.0.1:{mport}"])
    pl = Plenum(data)
    url = f"nbd://127.0.0.1:{port}"
    nfs = f"nfs://127.0.0.1/images/vm/disk.raw?nfsport={nport}&mountport={mport}"
    md5 = lambda b: hashlib.md5(b).hexdigest()
    try:
        s3 = client(srv.s3_url)
        s3.create_bucket(Bucket="images")
        mib = 1 << 20
        body = os.urandom(8 * mib) + bytes(4 * mib) + os.urandom(4 * mib - 5)
        s3.put_object(Bucket="images", Key="vm/disk.raw", Body=body)
        out = pl.ok("volume", "create", "img", "--object", "pl://images/vm/disk.raw").stdout.decode()
        assert "the object pl://images/vm/disk.raw" in out
        assert f'"export-size": {len(body)}' in run("nbdinfo", "--json", f"{url}/img")
        back = tmp_path / "back.raw"
        run("nbdcopy", f"{url}/img", str(back))
        assert back.read_bytes() == body
        listing = pl.ok("volume", "list").stdout.decode()
        assert "img" in listing and "pl://images/vm/disk.raw" in listing

        # NBD writes are the object's bytes: S3 and NFS read them, with a new ETag
        patch = os.urandom(mib)
        h = nbd.NBD()
        h.connect_uri(f"{url}/img")
        h.pwrite(patch, 3 * mib + 17)
        h.trim(mib, 10 * mib)
        h.flush()
        want = body[:3 * mib + 17] + patch + body[4 * mib + 17:]
        got = s3.get_object(Bucket="images", Key="vm/disk.raw")
        assert got["Body"].read() == want
        assert got["ETag"].strip('"') == md5(want)
        assert subprocess.run(["nfs-cat", nfs], capture_output=True, timeout=60).stdout == want

        # a read-only snapshot keeps those bytes while the object changes on
        pl.ok("volume", "snapshot", "img", "s1")
        h.pwrite(b"\xff" * 4096, 0, nbd.CMD_FLAG_FUA)
        assert s3.get_object(Bucket="images", Key="vm/disk.raw",
                             Range="bytes=0-4095")["Body"].read() == b"\xff" * 4096
        h.shutdown()
        run("nbdcopy", f"{url}/img@s1", str(back))
        assert back.read_bytes() == want

        # a newer PUT is what the next connection sees; resize changes the object
        body2 = os.urandom(2 * mib)
        s3.put_object(Bucket="images", Key="vm/disk.raw", Body=body2)
        run("nbdcopy", f"{url}/img", str(back))
        assert back.read_bytes() == body2
        pl.ok("volume", "resize", "img", "--size", "3M")
        head = s3.head_object(Bucket="images", Key="vm/disk.raw")
        assert head["ContentLength"] == 3 * mib
        assert head["ETag"].strip('"') == md5(body2 + bytes(mib))

        # --size makes a thin object where there is none; an existing one keeps its size
        pl.ok("volume", "create", "blank", "--object", "pl://images/blank.raw", "--size", "64M")
        assert s3.head_object(Bucket="images", Key="blank.raw")["ContentLength"] == 64 * mib
        r = pl.run("volume", "create", "x", "--object", "pl://images/blank.raw", "--size", "1M")
        assert r.returncode == 1 and "another size" in r.stderr.decode()
        r = pl.run("volume", "create", "x", "--object", "pl://images/none.raw")
        assert r.returncode == 1 and "add --size" in r.stderr.decode()
        r = pl.run("volume", "create", "x", "--object", "pl://images/vm")  # a directory
        assert r.returncode == 1
        r = pl.run("volume", "create", "img", "--object", "pl://images/blank.raw")
        assert r.returncode == 1 and "already exists" in r.stderr.decode()
        r = pl.run("volume", "create", "x@y", "--object", "pl://images/blank.raw")
        assert r.returncode == 1 and "bad volume name" in r.stderr.decode()

        # in a versioned bucket a connection opened before a newer PUT cannot change
        # the version it opened: its FLUSH fails, both versions keep their bytes
        s3.create_bucket(Bucket="vers")
        s3.put_bucket_versioning(Bucket="vers", VersioningConfiguration={"Status": "Enabled"})
        v1 = s3.put_object(Bucket="vers", Key="d.raw", Body=body)["VersionId"]
        pl.ok("volume", "create", "vd", "--object", "pl://vers/d.raw")
        h = nbd.NBD()
        h.connect_uri(f"{url}/vd")
        s3.put_object(Bucket="vers", Key="d.raw", Body=body2)
        h.pwrite(patch, 0)
        with pytest.raises(nbd.Error):
            h.flush()
        h.shutdown()
        assert s3.get_object(Bucket="vers", Key="d.raw", VersionId=v1)["Body"].read() == body
        assert s3.get_object(Bucket="vers", Key="d.raw")["Body"].read() == body2

        # deleting the volume leaves the object; a volume whose object went is listed
        pl.ok("volume", "delete", "img")
        assert s3.get_object(Bucket="images", Key="vm/disk.raw")["Body"].read() == \
            body2 + bytes(mib)
        s3.delete_object(Bucket="images", Key="blank.raw")
        assert b"no such object now" in pl.ok("volume", "list").stdout
        assert "blank" not in run("nbdinfo", "--list", url)
        assert subprocess.run(["nbdinfo", f"{url}/blank"], capture_output=True).returncode != 0
        pl.ok("volume", "delete", "blank")
        assert b"blank" not in pl.ok("volume", "list").stdout
    finally:
        assert srv.stop() == 0
    assert pl.run("fsck").returncode == 0
