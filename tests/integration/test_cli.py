"""The plenum CLI on a data directory no server holds."""
import hashlib
import json
import os
import re
import subprocess

from conftest import BIN, Plenum


def rand(n, seed=0):
    # os.urandom is fine here: content is checked by comparing with the file
    return os.urandom(n)


def test_help_lists_everything():
    p = subprocess.run([BIN, "--help"], capture_output=True, text=True)
    assert p.returncode == 0
    for cmd in ("server", "mb", "rb", "cp", "cat", "ls", "rm", "stat", "stats", "fsck", "gc",
                "snapshot", "user", "key"):
        assert re.search(rf"^  {cmd}\s", p.stdout, re.M), cmd
        h = subprocess.run([BIN, cmd, "--help"], capture_output=True, text=True)
        assert h.returncode == 0, cmd
        assert "usage: plenum " + cmd in h.stdout
        assert "example" in h.stdout, cmd
    bad = subprocess.run([BIN, "frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a plenum command" in bad.stderr


def test_roundtrip_and_listing(pl, tmp_path):
    src = tmp_path / "in.bin"
    data = rand(5 * 1024 * 1024 + 123)
    src.write_bytes(data)
    pl.ok("mb", "pl://bkt")
    pl.ok("cp", str(src), "pl://bkt/dir/sub/in.bin")
    pl.ok("cp", str(src), "pl://bkt/dir/")  # keeps the name
    out = pl.ok("cat", "pl://bkt/dir/sub/in.bin").stdout
    assert out == data
    st = pl.json("stat", "pl://bkt/dir/in.bin")
    assert st["size"] == len(data)
    assert st["etag"] == hashlib.md5(data).hexdigest()
    ls = pl.json("ls", "-r", "pl://bkt")
    assert [e["key"] for e in ls["entries"]] == ["dir/in.bin", "dir/sub/in.bin"]
    top = pl.ok("ls", "pl://bkt/dir/").stdout.decode()
    assert "PRE dir/sub/" in top and "dir/in.bin" in top
    dst = tmp_path / "out.bin"
    pl.ok("cp", "pl://bkt/dir/in.bin", str(dst))
    assert dst.read_bytes() == data
    pl.ok("cp", "pl://bkt/dir/in.bin", "pl://bkt/copy")
    assert pl.ok("cat", "pl://bkt/copy").stdout == data
    # recursive both ways
    tree = tmp_path / "tree"
    for i in range(30):
        d = tree / f"d{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    pl.ok("cp", "-r", str(tree), "pl://bkt/tree")
    assert len(pl.json("ls", "-r", "pl://bkt/tree/")["entries"]) == 30
    back = tmp_path / "back"
    pl.ok("cp", "-r", "pl://bkt/tree/", str(back))
    for i in range(30):
        assert (back / f"d{i % 4}" / f"f{i}.txt").read_text() == f"file {i}\n" * (i + 1)
    assert pl.json("rm", "-r", "pl://bkt/tree/")["deleted"] == 30
    pl.ok("rm", "pl://bkt/copy")
    assert pl.run("cat", "pl://bkt/copy").returncode == 1
    assert pl.json("buckets" if False else "stats")["elements"] >= 3
    assert pl.ok("fsck").stdout.decode().strip().endswith("clean")


def test_stdin_stdout_and_content_type(pl):
    pl.ok("mb", "pl://pipes")
    pl.ok("cp", "--content-type", "text/plain", "-", "pl://pipes/k.txt", input=b"from stdin\n")
    assert pl.ok("cat", "pl://pipes/k.txt").stdout == b"from stdin\n"
    assert pl.json("stat", "pl://pipes/k.txt")["content_type"] == "text/plain"
    assert pl.ok("cp", "pl://pipes/k.txt", "-").stdout == b"from stdin\n"


def test_dedup_100mib_ten_names(pl, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(rand(100 * 1024 * 1024))
    pl.ok("mb", "pl://dedup")
    for i in range(10):
        pl.ok("cp", str(src), f"pl://dedup/copy{i}")
    s = pl.json("stats")
    assert s["logical_bytes"] == 10 * 100 * 1024 * 1024
    assert s["unique_bytes"] == 100 * 1024 * 1024
    # stored about once (two buffer mirrors on disk)
    assert s["physical_bytes"] < 2 * 105 * 1024 * 1024
    assert s["dedup_ratio"] > 9.9


def test_delete_shrinks_data_directory(pl, tmp_path):
    def du(path):
        return sum(os.stat(os.path.join(r, f)).st_blocks * 512
                   for r, _, fs in os.walk(path) for f in fs)
    src = tmp_path / "x.bin"
    src.write_bytes(rand(40 * 1024 * 1024))
    pl.ok("mb", "pl://shrink")
    pl.ok("cp", str(src), "pl://shrink/x")
    full = du(pl.data)
    pl.ok("rm", "pl://shrink/x")
    pl.ok("gc")
    after = du(pl.data)
    assert after < full - 70 * 1024 * 1024, (full, after)
    assert pl.ok("fsck").returncode == 0


def test_snapshots(pl, tmp_path):
    pl.ok("mb", "pl://snap")
    pl.ok("cp", "-", "pl://snap/doc", input=b"version one")
    pl.ok("snapshot", "create", "v1")
    pl.ok("cp", "-", "pl://snap/doc", input=b"version two")
    pl.ok("rm", "pl://snap/doc")
    assert pl.run("cat", "pl://snap/doc").returncode == 1
    assert pl.ok("cat", "--snapshot", "v1", "pl://snap/doc").stdout == b"version one"
    snaps = pl.json("snapshot", "list")["snapshots"]
    assert [s["name"] for s in snaps] == ["v1"]
    r = pl.run("cat", "--snapshot", "nope", "pl://snap/doc")
    assert r.returncode == 1 and b"snapshot list" in r.stderr
    pl.ok("snapshot", "delete", "v1")
    assert pl.json("snapshot", "list")["snapshots"] == []


def test_users_and_keys(pl):
    pl.ok("user", "create", "alice")
    k = pl.json("key", "create", "alice")
    assert len(k["access_key"]) == 20 and len(k["secret_key"]) == 40
    keys = pl.json("key", "list", "alice")["keys"]
    assert [x["access_key"] for x in keys] == [k["access_key"]]
    assert k["secret_key"] not in pl.ok("key", "list").stdout.decode()
    pl.ok("key", "revoke", k["access_key"])
    assert pl.json("key", "list", "alice")["keys"] == []
    assert pl.run("user", "create", "alice").returncode == 1
    pl.ok("user", "delete", "alice")
    assert pl.json("user", "list")["users"] == []


def one_line_error(p):
    err = p.stderr.decode().strip()
    assert p.returncode == 1, (p.returncode, err)
    assert len(err.splitlines()) == 1, err
    return err


def test_errors_are_clear(pl, tmp_path):
    pl.ok("mb", "pl://errs")
    e = one_line_error(pl.run("cp", str(tmp_path / "missing"), "pl://errs/k"))
    assert "cannot read" in e and "missing" in e
    e = one_line_error(pl.run("cp", "-", "pl://nobucket/k", input=b"x"))
    assert "plenum mb" in e
    e = one_line_error(pl.run("cat", "pl://errs/none"))
    assert "pl://errs/none" in e
    e = one_line_error(pl.run("mb", "pl://Bad_Bucket"))
    assert "invalid bucket name" in e
    pl.ok("cp", "-", "pl://errs/a/b", input=b"x")
    e = one_line_error(pl.run("cp", "-", "pl://errs/a", input=b"y"))
    assert "prefix" in e
    e = one_line_error(pl.run("rb", "pl://errs"))
    assert "not empty" in e
    assert pl.run("cp", "onlyone").returncode == 2
    assert pl.run("ls", "--bogus").returncode == 2
    # a directory that is not a data directory
    notdata = tmp_path / "notdata"
    notdata.mkdir()
    (notdata / "precious.txt").write_text("mine")
    e = one_line_error(Plenum(notdata).run("ls"))
    assert "not a plenum data directory" in e
    assert (notdata / "precious.txt").read_text() == "mine"


def test_enospc_leaves_nothing_half_written(pl, tmp_path):
    pl.ok("mb", "pl://full")
    src = tmp_path / "f.bin"
    src.write_bytes(rand(8 * 1024 * 1024))
    p = pl.run("cp", str(src), "pl://full/f", env={"PLENUM_FAULT_ENOSPC_AFTER": "3000000"})
    e = one_line_error(p)
    assert "no space" in e and "nothing was written" in e
    assert pl.run("stat", "pl://full/f").returncode == 1
    assert pl.ok("fsck").returncode == 0
    # an unwritable local destination: no partial file left behind
    ro = tmp_path / "ro"
    ro.mkdir()
    pl.ok("cp", "-", "pl://full/small", input=b"abc")
    os.chmod(ro, 0o500)
    try:
        if os.geteuid() != 0:
            e = one_line_error(pl.run("cp", "pl://full/small", str(ro / "out")))
            assert "cannot write" in e
    finally:
        os.chmod(ro, 0o700)


def test_permission_denied_data_dir(pl, tmp_path):
    pl.ok("mb", "pl://perm")
    if os.geteuid() != 0:
        return
    # root ignores modes: run the CLI as nobody against root's 0700 directory
    os.chmod(tmp_path, 0o755)
    os.chmod(pl.data, 0o700)
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BIN,
                        "--data", pl.data, "ls"], capture_output=True)
    e = one_line_error(p)
    assert "permission denied" in e
