"""The FUSE head: `plenum mount` beside a real server (the server serves the
mount) and on its own (the command opens the data directory), exercised with
git, tar, sqlite3, rsync, a random-operation comparison against a plain
directory, and the same bytes through S3 and NFS."""
import errno
import hashlib
import os
import random
import shutil
import signal
import stat
import subprocess
import time

import pytest

from conftest import BUILD, Mount, Plenum, Server, free_port, run, sha

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fuse3 (scripts/deps.sh installs it)")


@pytest.fixture
def fs(tmp_path):
    """A server with S3 and NFS, and bucket bkt mounted through it."""
    data = tmp_path / "data"
    Plenum(data).ok("mb", "pl://bkt")
    port, mport = free_port(), free_port()
    srv = Server(data, s3=True,
                 extra=["--nfs", f"127.0.0.1:{port}", "--mountd", f"127.0.0.1:{mport}"])
    srv.nfs_url = lambda p: (f"nfs://127.0.0.1/bkt/{p}?nfsport={port}&mountport={mport}"
                             "&version=3")
    try:
        m = Mount(data, "bkt", tmp_path / "mnt")
        srv.m, srv.mp, srv.data = m, m.mp, data
        yield srv
        assert m.stop() == 0
        assert not os.path.ismount(m.mp)
    finally:
        if srv.proc.poll() is None:
            assert srv.stop() == 0


def test_posix_semantics(fs):
    mp = fs.mp
    p = os.path.join(mp, "f.txt")
    with open(p, "wb") as f:
        f.write(b"hello")
        f.flush()
        os.fsync(f.fileno())
    with open(p, "ab") as f:  # O_APPEND lands at the end
        f.write(b" world")
    assert open(p, "rb").read() == b"hello world"
    # write at an offset past the end leaves a hole of zeros
    fd = os.open(p, os.O_WRONLY)
    os.pwrite(fd, b"!", 20)
    os.close(fd)
    assert open(p, "rb").read() == b"hello world" + b"\0" * 9 + b"!"
    os.truncate(p, 5)
    assert open(p, "rb").read() == b"hello"
    os.truncate(p, 8)
    assert open(p, "rb").read() == b"hello\0\0\0"
    # mode, times, ownership
    os.chmod(p, 0o640)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    os.utime(p, ns=(1_600_000_000_123_456_789, 1_600_000_000_987_654_321))
    st = os.stat(p)
    assert st.st_mtime_ns == 1_600_000_000_987_654_321
    assert st.st_atime_ns == 1_600_000_000_123_456_789
    os.chown(p, 1234, 5678)
    assert (os.stat(p).st_uid, os.stat(p).st_gid) == (1234, 5678)
    # hard links share the element
    os.link(p, os.path.join(mp, "g.txt"))
    assert os.stat(p).st_nlink == 2 and os.stat(p).st_ino == os.stat(os.path.join(mp, "g.txt")).st_ino
    # symlinks
    os.symlink("f.txt", os.path.join(mp, "s"))
    assert os.readlink(os.path.join(mp, "s")) == "f.txt"
    assert open(os.path.join(mp, "s"), "rb").read() == b"hello\0\0\0"
    # xattrs
    os.setxattr(p, "user.tag", b"v1")
    assert os.getxattr(p, "user.tag") == b"v1"
    with pytest.raises(FileExistsError):
        os.setxattr(p, "user.tag", b"v2", os.XATTR_CREATE)
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.none", b"v", os.XATTR_REPLACE)
    assert e.value.errno == errno.ENODATA
    assert "user.tag" in os.listxattr(p)
    os.removexattr(p, "user.tag")
    assert "user.tag" not in os.listxattr(p)
    # rename over an existing file replaces it
    with open(os.path.join(mp, "new.txt"), "wb") as f:
        f.write(b"new")
    os.rename(os.path.join(mp, "new.txt"), os.path.join(mp, "g.txt"))
    assert open(os.path.join(mp, "g.txt"), "rb").read() == b"new"
    assert os.stat(p).st_nlink == 1
    # an open file stays readable after its last name goes
    fd = os.open(p, os.O_RDONLY)
    os.unlink(p)
    os.unlink(os.path.join(mp, "s"))
    assert os.pread(fd, 5, 0) == b"hello"
    os.close(fd)
    # errors
    with pytest.raises(FileNotFoundError):
        os.stat(p)
    with pytest.raises(FileExistsError):
        os.open(os.path.join(mp, "g.txt"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.makedirs(os.path.join(mp, "d/e"))
    with pytest.raises(OSError) as e:
        os.rmdir(os.path.join(mp, "d"))
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        os.rename(os.path.join(mp, "d"), os.path.join(mp, "d/e/x"))
    assert e.value.errno == errno.EINVAL
    with pytest.raises(IsADirectoryError):
        open(os.path.join(mp, "d"), "rb")
    with pytest.raises(NotADirectoryError):
        os.listdir(os.path.join(mp, "g.txt"))
    with pytest.raises(OSError) as e:
        open(os.path.join(mp, "x" * 300), "wb")
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(PermissionError):
        os.mkfifo(os.path.join(mp, "fifo"))
    os.rmdir(os.path.join(mp, "d/e"))
    os.rmdir(os.path.join(mp, "d"))
    assert sorted(os.listdir(mp)) == ["g.txt"]
    # sparse files: SEEK_DATA / SEEK_HOLE
    sp = os.path.join(mp, "sparse")
    fd = os.open(sp, os.O_CREAT | os.O_RDWR)
    os.pwrite(fd, b"x" * 65536, 8 << 20)
    os.fsync(fd)
    assert os.lseek(fd, 0, os.SEEK_DATA) >= 4 << 20
    assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
    os.close(fd)
    assert os.statvfs(mp).f_bavail > 0


def test_big_file_and_many_files(fs, tmp_path):
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(256):
            f.write(os.urandom(1 << 20))
    dst = os.path.join(fs.mp, "big.bin")
    run("dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fsync", "status=none")
    assert os.path.getsize(dst) == 256 << 20
    run("sh", "-c", "echo 3 > /proc/sys/vm/drop_caches")
    assert sha(dst) == sha(src)
    d = os.path.join(fs.mp, "many")
    os.mkdir(d)
    for i in range(3000):
        with open(os.path.join(d, f"f{i:05d}"), "w") as f:
            f.write(str(i))
    names = os.listdir(d)
    assert len(names) == 3000 and len(set(names)) == 3000
    assert sorted(names) == [f"f{i:05d}" for i in range(3000)]
    assert open(os.path.join(d, "f02999")).read() == "2999"


def test_git(fs):
    repo = os.path.join(fs.mp, "repo")
    src = os.path.join(os.path.dirname(__file__), "../../src")
    shutil.copytree(src, os.path.join(repo, "src"))
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    run(*git, "init", "-q", cwd=repo)
    run(*git, "add", "-A", cwd=repo)
    run(*git, "commit", "-qm", "first", cwd=repo)
    with open(os.path.join(repo, "src/README"), "w") as f:
        f.write("changed\n")
    run(*git, "add", "-A", cwd=repo)
    run(*git, "commit", "-qm", "second", cwd=repo)
    assert run("git", "status", "--porcelain", cwd=repo) == ""
    run("git", "fsck", "--full", "--strict", cwd=repo)
    assert len(run("git", "log", "--oneline", cwd=repo).splitlines()) == 2
    # a clone out of the mount is byte-identical to the tree in it
    out = os.path.join(os.path.dirname(fs.mp), "clone")
    run("git", "clone", "-q", repo, out)
    run("diff", "-r", os.path.join(repo, "src"), os.path.join(out, "src"))


def test_tar_and_rsync(fs, tmp_path):
    # a large tarball: many small files and a few big ones (/usr/include
    # without the two largest package trees: 4,300 files, every FUSE
    # operation a durable commit; all 9,000 took five minutes under ASan)
    tree = tmp_path / "tree"
    shutil.copytree("/usr/include", tree / "include", symlinks=True,
                    ignore=lambda d, names: ({"node", "llvm-14"} & set(names)
                                             if d == "/usr/include" else set()))
    assert sum(len(f) for _, _, f in os.walk(tree)) > 2000
    for i in range(3):
        with open(tree / f"blob{i}.bin", "wb") as f:
            f.write(os.urandom(24 << 20))
    os.symlink("blob0.bin", tree / "link")
    os.chmod(tree / "blob1.bin", 0o600)
    tarball = tmp_path / "t.tar"
    run("tar", "-C", str(tmp_path), "-cf", str(tarball), "tree")
    x = os.path.join(fs.mp, "x")
    os.mkdir(x)
    run("tar", "-C", x, "-xf", str(tarball))
    run("diff", "-r", "--no-dereference", str(tree), os.path.join(x, "tree"))
    # tar's own comparison checks modes, times and link targets too
    run("tar", "-C", x, "-df", str(tarball))
    # rsync -a in and out; a dry run afterwards finds nothing to change
    r = os.path.join(fs.mp, "r")
    run("rsync", "-a", f"{tree}/", f"{r}/")
    assert run("rsync", "-ani", "--checksum", f"{tree}/", f"{r}/") == ""
    back = tmp_path / "back"
    run("rsync", "-a", f"{r}/", f"{back}/")
    run("diff", "-r", "--no-dereference", str(tree), str(back))
    assert run("rsync", "-ani", "--checksum", f"{tree}/", f"{back}/") == ""


SQL_WORKLOAD = """
PRAGMA journal_mode=%s;
CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB);
CREATE INDEX tk ON t(k);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000)
INSERT INTO t SELECT i, 'k' || (i * 7919 %% 1000), randomblob(200) FROM c;
UPDATE t SET v = zeroblob(50) WHERE id %% 3 = 0;
DELETE FROM t WHERE id %% 5 = 0;
BEGIN; INSERT INTO t(k, v) VALUES ('late', x'00ff'); ROLLBACK;
VACUUM;
"""


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_sqlite(fs, tmp_path, journal):
    db = os.path.join(fs.mp, f"w-{journal}.db")
    ref = str(tmp_path / "ref.db")
    for path in (db, ref):
        run("sqlite3", path, SQL_WORKLOAD % journal)
    q = "SELECT count(*), sum(length(v)), group_concat(DISTINCT k) FROM t; PRAGMA integrity_check;"
    got, want = run("sqlite3", db, q), run("sqlite3", ref, q)
    assert got == want and got.strip().endswith("ok")


def tree_state(root):
    """Everything the random test compares: per path type, mode, size, link
    count, content, and link target."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode))
            else:
                with open(p, "rb") as f:
                    out[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_size, st.st_nlink,
                                hashlib.md5(f.read()).hexdigest())
    return out


def test_random_ops_match_a_local_directory(fs, tmp_path):
    """Every operation runs on the mount and on a plain directory; results
    (success or errno, data read) and, every 25 steps, the whole trees must
    agree."""
    ref = str(tmp_path / "ref")
    os.mkdir(ref)
    mnt = os.path.join(fs.mp, "rnd")
    os.mkdir(mnt)
    rng = random.Random(1234)
    names = ["a", "b", "c", "d1", "d2", "d1/x", "d1/y", "d2/x", "d1/z/q"]

    def do(root, op, args):
        P = lambda n: os.path.join(root, n)  # noqa: E731
        try:
            if op == "create":
                with open(P(args[0]), "xb") as f:
                    f.write(args[1])
            elif op == "write":
                fd = os.open(P(args[0]), os.O_WRONLY)
                try:
                    os.pwrite(fd, args[2], args[1])
                finally:
                    os.close(fd)
            elif op == "truncate":
                os.truncate(P(args[0]), args[1])
            elif op == "rename":
                os.rename(P(args[0]), P(args[1]))
            elif op == "link":
                os.link(P(args[0]), P(args[1]))
            elif op == "unlink":
                os.unlink(P(args[0]))
            elif op == "mkdir":
                os.mkdir(P(args[0]))
            elif op == "rmdir":
                os.rmdir(P(args[0]))
            elif op == "chmod":
                os.chmod(P(args[0]), args[1])
            elif op == "read":
                with open(P(args[0]), "rb") as f:
                    f.seek(args[1])
                    return ("ok", f.read(args[2]))
            return ("ok", None)
        except OSError as e:
            return ("err", e.errno)

    for step in range(1500):
        op = rng.choice(["create", "write", "write", "truncate", "rename", "link", "unlink",
                         "mkdir", "rmdir", "chmod", "read", "read"])
        n1, n2 = rng.choice(names), rng.choice(names)
        if op == "create":
            args = (n1, rng.randbytes(rng.randrange(0, 300000)))
        elif op == "write":
            args = (n1, rng.randrange(0, 400000), rng.randbytes(rng.randrange(1, 200000)))
        elif op == "truncate":
            args = (n1, rng.randrange(0, 500000))
        elif op == "chmod":
            args = (n1, rng.choice([0o600, 0o644, 0o755, 0o700]))
        elif op == "read":
            args = (n1, rng.randrange(0, 400000), rng.randrange(1, 300000))
        elif op in ("rename", "link"):
            args = (n1, n2)
        else:
            args = (n1,)
        want, got = do(ref, op, args), do(mnt, op, args)
        assert got == want, f"step {step}: {op}{args[:1] + args[1:2] if op != 'create' else args[:1]}"
        if step % 25 == 24:
            assert tree_state(mnt) == tree_state(ref), f"trees differ after step {step}"
    assert tree_state(mnt) == tree_state(ref)


def test_attribute_changes_of_a_file_being_written_land_with_its_data(fs):
    """tar sets times, owner and mode of every file it writes before closing
    it; through the mount they show at once, and the store has them, with
    the data, once the file is closed. A write after a change of mtime sets
    it anew, as on a local file system."""
    p = os.path.join(fs.mp, "attrs.bin")
    stored = lambda: Plenum(fs.data).json("stat", "pl://bkt/attrs.bin")
    data = os.urandom(100_000)
    mt = 1_600_000_000_123_456_789
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.write(fd, data)
    os.utime(fd, ns=(mt, mt))
    os.fchown(fd, 1234, 4321)
    os.fchmod(fd, 0o640)
    st = os.fstat(fd)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
            st.st_size) == (0o640, 1234, 4321, mt, len(data))
    os.close(fd)
    s = stored()
    assert (s["mode"], s["uid"], s["gid"], s["mtime_ns"], s["size"]) == \
        (0o640, 1234, 4321, mt, len(data))
    assert s["ctime_ns"] > time.time_ns() - 120 * 10**9
    assert open(p, "rb").read() == data
    # write, set mtime, write again: the second write's time wins
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"more")
    os.utime(fd, ns=(mt, mt))
    os.chmod(p, 0o604)
    os.write(fd, b"again")
    t0 = time.time_ns() - 120 * 10**9
    st = os.fstat(fd)
    assert st.st_mtime_ns > t0 and stat.S_IMODE(st.st_mode) == 0o604
    os.fsync(fd)
    s = stored()
    assert s["mtime_ns"] > t0 and s["mode"] == 0o604 and s["size"] == len(data) + 9
    os.close(fd)
    # with nothing in flight a change is made at once
    os.chmod(p, 0o600)
    assert stored()["mode"] == 0o600
    assert open(p, "rb").read() == data + b"moreagain"
    # a file of several write-back batches: the change lands after all of them
    for i in range(2):
        big = os.path.join(fs.mp, f"big{i}.bin")
        with open(big, "wb") as f:
            f.write(os.urandom((48 << 20) + i))
            os.utime(f.fileno(), ns=(mt, mt + i))
            os.fchmod(f.fileno(), 0o604)
        s = Plenum(fs.data).json("stat", f"pl://bkt/big{i}.bin")
        assert (s["mtime_ns"], s["mode"], s["size"]) == (mt + i, 0o604, (48 << 20) + i)


def test_same_bytes_through_s3_and_nfs(fs):
    from s3util import client
    s3 = client(fs.s3_url)
    mp = fs.mp
    # S3 PUT -> the mount reads the same bytes, in the listing at once
    body = os.urandom(3 << 20) + b"tail"
    s3.put_object(Bucket="bkt", Key="dir/obj.bin", Body=body)
    assert "obj.bin" in os.listdir(os.path.join(mp, "dir"))
    assert open(os.path.join(mp, "dir/obj.bin"), "rb").read() == body
    # the kernel cached those pages; an overwrite through S3 must replace them
    body2 = os.urandom(3 << 20)
    s3.put_object(Bucket="bkt", Key="dir/obj.bin", Body=body2)
    deadline = time.time() + 2  # invalidations are sent asynchronously; the cache lives 5 s
    while open(os.path.join(mp, "dir/obj.bin"), "rb").read() != body2:
        assert time.time() < deadline, "the mount kept serving the replaced object"
        time.sleep(0.05)
    # a name looked up while missing (negative entry) appears when S3 creates it
    assert not os.path.exists(os.path.join(mp, "later.txt"))
    s3.put_object(Bucket="bkt", Key="later.txt", Body=b"now")
    deadline = time.time() + 2
    while not os.path.exists(os.path.join(mp, "later.txt")):
        assert time.time() < deadline, "a new S3 key stayed invisible in the mount"
        time.sleep(0.05)
    # FUSE write -> S3 and NFS see new size, bytes and ETag without a restart
    p = os.path.join(mp, "fromfuse.bin")
    data = os.urandom(5 << 20)
    with open(p, "wb") as f:
        f.write(data)
    head = s3.head_object(Bucket="bkt", Key="fromfuse.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    nfs = subprocess.run(["nfs-cat", fs.nfs_url("fromfuse.bin")], capture_output=True)
    assert nfs.returncode == 0 and nfs.stdout == data
    with open(p, "r+b") as f:  # an in-place change gets a new ETag
        f.seek(1000)
        f.write(b"CHANGED")
    data = data[:1000] + b"CHANGED" + data[1007:]
    head = s3.head_object(Bucket="bkt", Key="fromfuse.bin")
    assert head["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    assert s3.get_object(Bucket="bkt", Key="fromfuse.bin")["Body"].read() == data
    # a rewrite through NFS shows through a file the mount has open and cached
    fd = os.open(p, os.O_RDONLY)
    assert os.pread(fd, 7, 1000) == b"CHANGED"
    patch = os.urandom(4096)
    p2 = subprocess.run([os.path.join(BUILD, "nfs_ops"), fs.nfs_url(""), "pwrite",
                         "/fromfuse.bin", "2000000"], input=patch, capture_output=True)
    assert p2.returncode == 0, p2.stderr.decode()
    data = data[:2000000] + patch + data[2004096:]
    deadline = time.time() + 2
    while os.pread(fd, len(data), 0) != data:
        assert time.time() < deadline, "the mount kept serving what NFS overwrote"
        time.sleep(0.05)
    os.close(fd)
    # a rename in the mount is a key change over S3
    os.rename(p, os.path.join(mp, "renamed.bin"))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bkt")["Contents"]]
    assert "renamed.bin" in keys and "fromfuse.bin" not in keys
    # S3 delete -> gone from the mount
    s3.delete_object(Bucket="bkt", Key="renamed.bin")
    deadline = time.time() + 2
    while os.path.exists(os.path.join(mp, "renamed.bin")):
        assert time.time() < deadline, "an S3 delete stayed visible in the mount"
        time.sleep(0.05)


def test_scattered_overlapping_writes_land_in_order(fs):
    """Small writes at random offsets, many overlapping, to two files at once:
    the write-back stores them many per transaction, and what S3 and NFS read
    after fsync is every byte's last write."""
    import threading
    from s3util import client
    size = 1 << 20
    models = {}

    def scatter(name, seed):
        rnd = random.Random(seed)
        model, end = bytearray(size), 0
        fd = os.open(os.path.join(fs.mp, name), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for i in range(3000):
                n = rnd.randint(1, 6000)
                off = rnd.randrange(0, size - n)
                b = bytes([i % 251 + 1]) * n if i % 3 else rnd.randbytes(n)
                assert os.pwrite(fd, b, off) == n
                model[off:off + n] = b
                end = max(end, off + n)
            os.fsync(fd)
        finally:
            os.close(fd)
        models[name] = bytes(model[:end])

    ts = [threading.Thread(target=scatter, args=(f"scatter{k}.bin", k)) for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    s3 = client(fs.s3_url)
    for name, model in models.items():
        assert s3.get_object(Bucket="bkt", Key=name)["Body"].read() == model
        nfs = subprocess.run(["nfs-cat", fs.nfs_url(name)], capture_output=True)
        assert nfs.returncode == 0 and nfs.stdout == model


def test_concurrent_writers_never_mix(fs):
    """S3 replaces an object again and again while readers in the mount read
    it whole: every read is one complete version."""
    import threading
    from s3util import client
    s3 = client(fs.s3_url)
    versions = [bytes([i]) * (2 << 20) for i in range(4)]
    s3.put_object(Bucket="bkt", Key="hot.bin", Body=versions[0])
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            s3.put_object(Bucket="bkt", Key="hot.bin", Body=versions[i % 4])

    t = threading.Thread(target=writer)
    t.start()
    try:
        seen = set()
        for _ in range(150):
            b = open(os.path.join(fs.mp, "hot.bin"), "rb").read()
            assert b in versions, "a read mixed two versions"
            seen.add(b[0])
    finally:
        stop.set()
        t.join()
    assert len(seen) >= 1


def test_unmount_ways(tmp_path):
    data = tmp_path / "data"
    pl = Plenum(data)
    pl.ok("mb", "pl://solo")
    # the command opens the data directory itself; SIGTERM unmounts cleanly
    m = Mount(data, "solo", tmp_path / "m1")
    with open(os.path.join(m.mp, "kept.txt"), "wb") as f:
        f.write(b"survives the unmount")
    assert m.stop(signal.SIGTERM) == 0
    assert not os.path.ismount(m.mp)
    assert pl.ok("cat", "pl://solo/kept.txt").stdout == b"survives the unmount"
    # fusermount3 -u ends the command too, with status 0
    m = Mount(data, "solo", tmp_path / "m1")
    subprocess.run(["fusermount3", "-u", m.mp], check=True)
    assert m.proc.wait(timeout=30) == 0
    # a sub-directory mount, beside a server, read-only
    os.makedirs(tmp_path / "m2")
    pl.ok("cp", "-", "pl://solo/sub/dir/f.txt", input=b"deep")
    srv = Server(data)
    try:
        m = Mount(data, "solo/sub", tmp_path / "m2", "--read-only")
        assert os.listdir(m.mp) == ["dir"]
        assert open(os.path.join(m.mp, "dir/f.txt"), "rb").read() == b"deep"
        with pytest.raises(OSError) as e:
            open(os.path.join(m.mp, "new"), "wb")
        assert e.value.errno == errno.EROFS
        assert m.stop(signal.SIGINT) == 0
    finally:
        assert srv.stop() == 0
    # errors say what to do
    r = pl.run("mount", "nosuch", str(tmp_path / "m2"))
    assert r.returncode == 1 and b"bucket" in r.stderr
    r = pl.run("mount", "solo", str(tmp_path / "missing-dir"))
    assert r.returncode == 1 and b"mkdir" in r.stderr
    r = pl.run("mount", "solo")
    assert r.returncode == 2
