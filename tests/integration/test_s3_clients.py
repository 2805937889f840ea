"""The S3 head with the command-line clients people already use: awscli,
s3cmd, rclone. And what bad clients do to it."""
import filecmp
import hashlib
import json
import os
import socket
import subprocess
import time

import pytest

from conftest import ACCESS_KEY, SECRET_KEY
from s3util import client, raw, sign

AWS = "/usr/bin/aws"


def env_for():
    e = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    e.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
             AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
             AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    return e


def aws(srv, *args, check=True):
    p = subprocess.run([AWS, "--endpoint-url", srv.s3_url, *args], capture_output=True,
                       text=True, env=env_for(), timeout=600)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_awscli_large_multipart_and_sync(s3server, tmp_path):
    aws(s3server, "s3", "mb", "s3://awscli")
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(300):
            f.write(os.urandom(1 << 20))
    aws(s3server, "s3", "cp", "--no-progress", str(big), "s3://awscli/big.bin")
    head = aws(s3server, "s3api", "head-object", "--bucket", "awscli", "--key", "big.bin").stdout
    assert '"ContentLength": 314572800' in head and "-" in head.split('"ETag"')[1].split("\n")[0]
    back = tmp_path / "back.bin"
    aws(s3server, "s3", "cp", "--no-progress", "s3://awscli/big.bin", str(back))
    assert filecmp.cmp(big, back, shallow=False)
    # sync 1000 small files up and back
    tree = tmp_path / "tree"
    for i in range(1000):
        d = tree / f"d{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_bytes(f"small file {i}\n".encode() * (i % 7 + 1))
    aws(s3server, "s3", "sync", "--no-progress", str(tree), "s3://awscli/tree")
    ls = aws(s3server, "s3", "ls", "--recursive", "s3://awscli/tree/").stdout.splitlines()
    assert len(ls) == 1000
    down = tmp_path / "down"
    aws(s3server, "s3", "sync", "--no-progress", "s3://awscli/tree", str(down))
    for i in range(0, 1000, 37):
        assert (down / f"d{i % 10}" / f"f{i}.txt").read_bytes() == f"small file {i}\n".encode() * (i % 7 + 1)
    assert sum(len(f) for _, _, f in os.walk(down)) == 1000
    # a second sync has nothing to do
    again = aws(s3server, "s3", "sync", "--no-progress", str(tree), "s3://awscli/tree").stdout
    assert again.strip() == ""
    aws(s3server, "s3", "rm", "--recursive", "--only-show-errors", "s3://awscli/tree/")
    assert aws(s3server, "s3", "ls", "--recursive", "s3://awscli/tree/", check=False).stdout == ""
    v = aws(s3server, "s3api", "get-bucket-versioning", "--bucket", "awscli").stdout
    assert "Enabled" not in v
    # versioning through s3api: two versions, a delete marker, an old version back
    aws(s3server, "s3api", "put-bucket-versioning", "--bucket", "awscli",
        "--versioning-configuration", "Status=Enabled")
    assert json.loads(aws(s3server, "s3api", "get-bucket-versioning", "--bucket",
                          "awscli").stdout)["Status"] == "Enabled"
    f1, f2 = tmp_path / "v1.txt", tmp_path / "v2.txt"
    f1.write_bytes(b"first")
    f2.write_bytes(b"second")
    v1 = json.loads(aws(s3server, "s3api", "put-object", "--bucket", "awscli", "--key", "doc",
                        "--body", str(f1)).stdout)["VersionId"]
    aws(s3server, "s3api", "put-object", "--bucket", "awscli", "--key", "doc", "--body", str(f2))
    dm = json.loads(aws(s3server, "s3api", "delete-object", "--bucket", "awscli", "--key",
                        "doc").stdout)
    assert dm["DeleteMarker"] is True
    lv = json.loads(aws(s3server, "s3api", "list-object-versions", "--bucket", "awscli",
                        "--prefix", "doc").stdout)
    assert len(lv["Versions"]) == 2 and lv["DeleteMarkers"][0]["IsLatest"] is True
    out = tmp_path / "old.txt"
    aws(s3server, "s3api", "get-object", "--bucket", "awscli", "--key", "doc", "--version-id", v1,
        str(out))
    assert out.read_bytes() == b"first"
    aws(s3server, "s3api", "delete-object", "--bucket", "awscli", "--key", "doc", "--version-id",
        dm["VersionId"])
    aws(s3server, "s3", "cp", "--no-progress", "s3://awscli/doc", str(out))
    assert out.read_bytes() == b"second"
    aws(s3server, "s3api", "put-bucket-versioning", "--bucket", "awscli",
        "--versioning-configuration", "Status=Suspended")


def test_s3cmd(s3server, tmp_path):
    host = f"127.0.0.1:{s3server.s3_port}"
    cfg = tmp_path / "s3cfg"
    cfg.write_text(f"[default]\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\n"
                   f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\n"
                   "signature_v2 = False\n")

    def s3cmd(*args):
        p = subprocess.run(["s3cmd", "-c", str(cfg), *args], capture_output=True, text=True,
                           timeout=300, env=env_for())
        assert p.returncode == 0, p.stderr + p.stdout
        return p.stdout

    s3cmd("mb", "s3://s3cmd-bkt")
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(3 * 1024 * 1024 + 1))
    s3cmd("put", str(f), "s3://s3cmd-bkt/dir/f.bin")
    assert "dir/f.bin" in s3cmd("ls", "-r", "s3://s3cmd-bkt")
    out = tmp_path / "out.bin"
    s3cmd("get", "s3://s3cmd-bkt/dir/f.bin", str(out))
    assert out.read_bytes() == f.read_bytes()
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(20):
        (tree / f"x{i}").write_text(str(i))
    s3cmd("sync", str(tree) + "/", "s3://s3cmd-bkt/tree/")
    assert len([l for l in s3cmd("ls", "s3://s3cmd-bkt/tree/").splitlines() if l.strip()]) == 20
    s3cmd("del", "s3://s3cmd-bkt/dir/f.bin")
    assert "dir/f.bin" not in s3cmd("ls", "-r", "s3://s3cmd-bkt")


def test_rclone(s3server, tmp_path):
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"[pl]\ntype = s3\nprovider = Other\naccess_key_id = {ACCESS_KEY}\n"
                    f"secret_access_key = {SECRET_KEY}\nendpoint = {s3server.s3_url}\n"
                    "force_path_style = true\nregion = us-east-1\n")

    def rclone(*args):
        p = subprocess.run(["rclone", "--config", str(conf), *args], capture_output=True,
                           text=True, timeout=300, env=env_for())
        assert p.returncode == 0, p.stderr
        return p.stdout

    src = tmp_path / "src"
    for i in range(50):
        d = src / f"sub{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i}").write_bytes(os.urandom(1000 * (i + 1)))
    (src / "large").write_bytes(os.urandom(20 * 1024 * 1024))
    rclone("mkdir", "pl:rclone-bkt")
    rclone("copy", str(src), "pl:rclone-bkt/copy")
    rclone("check", "--download", str(src), "pl:rclone-bkt/copy")
    (src / "sub0" / "file0").unlink()
    (src / "new").write_text("new")
    rclone("sync", str(src), "pl:rclone-bkt/copy")
    rclone("check", "--download", str(src), "pl:rclone-bkt/copy")
    listing = rclone("lsf", "-R", "pl:rclone-bkt/copy")
    assert "new" in listing and "sub0/file0" not in listing


# ---- bad clients ----
def alive(srv):
    s3 = client(srv.s3_url)
    s3.list_buckets()


def test_garbage_and_malformed(s3server):
    port = s3server.s3_port
    out = raw(port, b"\x00\x01garbage that is not http\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")
    out = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431") or out == b""
    alive(s3server)
    # 100 MB of headers: cut off long before the end, the server goes on serving
    sent, limit = 0, 100 * 1024 * 1024
    block = (b"X-Filler: " + b"a" * 1000 + b"\r\n") * 64
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sck:
        try:
            sck.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            while sent < limit:
                sck.sendall(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
    assert sent < limit
    alive(s3server)
    # malformed XML to DeleteObjects, correctly signed
    s3 = client(s3server.s3_url)
    s3.create_bucket(Bucket="bad-input")
    host = f"127.0.0.1:{port}"
    body = b"<Delete><Object><Key>unterminated"
    h = sign("POST", host, "/bad-input", query="delete=", body=body,
             headers={"content-length": str(len(body))})
    req = ("POST /bad-input?delete= HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
           + "\r\n").encode() + body
    out = raw(port, req)
    assert b"MalformedXML" in out and out.startswith(b"HTTP/1.1 400")
    alive(s3server)


def test_truncated_body_and_slow_reader(s3server):
    port = s3server.s3_port
    s3 = client(s3server.s3_url)
    s3.create_bucket(Bucket="trunc")
    host = f"127.0.0.1:{port}"
    # promise 10 MB, send 1 MB, hang up: nothing becomes visible
    req_h = _sign_unsigned(host, "/trunc/partial", 10_000_000)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sck:
        sck.sendall(("PUT /trunc/partial HTTP/1.1\r\n" +
                     "".join(f"{k}: {v}\r\n" for k, v in req_h.items()) + "\r\n").encode())
        sck.sendall(os.urandom(1_000_000))
    time.sleep(0.5)
    import botocore
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket="trunc", Key="partial")
    # a client that stops reading in the middle of a GET
    s3.put_object(Bucket="trunc", Key="big", Body=os.urandom(32 * 1024 * 1024))
    h = sign("GET", host, "/trunc/big")
    sck = socket.create_connection(("127.0.0.1", port), timeout=10)
    sck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sck.sendall(("GET /trunc/big HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
                 + "\r\n").encode())
    sck.recv(1000)
    # ... and never reads again; others are still served meanwhile
    t0 = time.time()
    for i in range(20):
        s3.put_object(Bucket="trunc", Key=f"k{i}", Body=b"x" * 1000)
        assert s3.get_object(Bucket="trunc", Key=f"k{i}")["Body"].read() == b"x" * 1000
    assert time.time() - t0 < 60
    sck.close()
    alive(s3server)


def _sign_unsigned(host, path, length):
    """SigV4 headers for a PUT with UNSIGNED-PAYLOAD."""
    import datetime
    import hmac
    import urllib.parse
    when = datetime.datetime.now(datetime.timezone.utc)
    amz = when.strftime("%Y%m%dT%H%M%SZ")
    h = {"host": host, "x-amz-date": amz, "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
         "content-length": str(length)}
    names = sorted(h)
    creq = "\n".join(["PUT", urllib.parse.quote(path, safe="/-_.~"), "",
                      "".join(f"{n}:{h[n]}\n" for n in names), ";".join(names), "UNSIGNED-PAYLOAD"])
    scope = f"{amz[:8]}/us-east-1/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(creq.encode()).hexdigest()])
    k = f"AWS4{SECRET_KEY}".encode()
    for part in (amz[:8], "us-east-1", "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, "
                          f"SignedHeaders={';'.join(names)}, Signature={sig}")
    return h


def test_many_idle_connections(s3server):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    socks = []
    try:
        for _ in range(2000):
            socks.append(socket.create_connection(("127.0.0.1", s3server.s3_port), timeout=10))
        alive(s3server)
        s3 = client(s3server.s3_url)
        s3.create_bucket(Bucket="idle")
        s3.put_object(Bucket="idle", Key="k", Body=b"served")
        assert s3.get_object(Bucket="idle", Key="k")["Body"].read() == b"served"
    finally:
        for s in socks:
            s.close()
    alive(s3server)


def test_clients_vanishing_mid_response(s3server):
    """Readers that reset the connection in the middle of a GET body, many at
    once (what wrk does when its time is up): the server must not touch the
    request afterwards (this crashed once; ASan runs this suite)."""
    import struct
    s3 = client(s3server.s3_url)
    s3.create_bucket(Bucket="vanish")
    s3.put_object(Bucket="vanish", Key="big", Body=os.urandom(16 * 1024 * 1024))
    host = f"127.0.0.1:{s3server.s3_port}"
    for round_ in range(5):
        socks = []
        for _ in range(16):
            h = sign("GET", host, "/vanish/big")
            sck = socket.create_connection(("127.0.0.1", s3server.s3_port), timeout=10)
            sck.sendall(("GET /vanish/big HTTP/1.1\r\n" +
                         "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode())
            socks.append(sck)
        for sck in socks:
            sck.recv(65536)
        time.sleep(0.05)
        for sck in socks:
            sck.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sck.close()  # RST while the server is still writing
    time.sleep(0.5)
    alive(s3server)
    assert s3.get_object(Bucket="vanish", Key="big")["ContentLength"] == 16 * 1024 * 1024


def test_wrk_load_then_disconnect(s3server):
    """wrk hammering small and large GETs and then dropping every connection
    mid-response: the server stays up and correct (found a use-after-free)."""
    import shutil
    if not shutil.which("wrk"):
        pytest.skip("wrk not installed")
    s3 = client(s3server.s3_url)
    s3.create_bucket(Bucket="wrk-load")
    s3.put_object(Bucket="wrk-load", Key="small", Body=b"s" * 4096)
    s3.put_object(Bucket="wrk-load", Key="big", Body=os.urandom(32 * 1024 * 1024))
    urls = [s3.generate_presigned_url("get_object", Params={"Bucket": "wrk-load", "Key": k},
                                      ExpiresIn=600) for k in ("small", "big")]
    for _ in range(3):
        for url, conns in zip(urls, ("32", "8")):
            p = subprocess.run(["wrk", "-t2", "-c" + conns, "-d3s", url], capture_output=True,
                               text=True, timeout=60)
            assert p.returncode == 0, p.stderr
            assert "Non-2xx" not in p.stdout, p.stdout
            assert float(p.stdout.split("Requests/sec:")[1].split()[0]) > 0, p.stdout
        alive(s3server)
    assert s3.get_object(Bucket="wrk-load", Key="small")["Body"].read() == b"s" * 4096
