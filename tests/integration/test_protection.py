"""Data protection on a real server: erasure-coded stripes under lost and
corrupt capacity devices, rebuild onto replacements, scrub, kill -9 during
destage and rebuild. Objects go in and come out through S3 (boto3) and the
CLI; devices are broken by removing and scribbling on their directories."""
import glob
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time

import botocore
import pytest

from conftest import BIN, Plenum, Server
from s3util import client


def wait_for(cond, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def devices(pl):
    return {d["id"]: d for d in pl.json("device", "list")["devices"]}


def put_many(s3, bucket, n, seed, size_max=3 << 20):
    rnd = random.Random(seed)
    bodies = {}
    for i in range(n):
        size = rnd.randint(1, size_max)
        body = rnd.randbytes(size) if i % 3 else (b"protected text %d\n" % i) * (size // 20 + 1)
        key = f"obj/{seed}/{i:04d}"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        bodies[key] = hashlib.sha256(body).hexdigest()
    return bodies


def protected_server(tmp_path, bucket, n, seed, extra=()):
    """A server on a new data directory, a bucket of n objects, all on stripes."""
    data = tmp_path / "data"
    srv = Server(data, s3=True, extra=list(extra))
    pl = Plenum(data)
    try:
        s3 = client(srv.s3_url)
        s3.create_bucket(Bucket=bucket)
        bodies = put_many(s3, bucket, n, seed)
        pl.ok("flush")
    except BaseException:
        srv.stop()
        raise
    return data, srv, pl, s3, bodies


def check_all(s3, bucket, bodies):
    for key, digest in bodies.items():
        got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(got).hexdigest() == digest, key


def flip_bytes(path_glob, seed, per_file=3):
    rnd = random.Random(seed)
    files = sorted(glob.glob(path_glob))
    assert files
    for f in files:
        size = os.path.getsize(f)
        with open(f, "r+b") as fh:
            for _ in range(per_file):
                off = rnd.randrange(8192, size)  # past the header: payload and checksums
                fh.seek(off)
                b = fh.read(1)
                fh.seek(off)
                fh.write(bytes([b[0] ^ 0x5A]))


@pytest.mark.parametrize("layout", ["4+2", "8+3"])
def test_lose_m_devices_under_load_then_rebuild(tmp_path, layout):
    k, m = map(int, layout.split("+"))
    _, srv, pl, s3, bodies = protected_server(tmp_path, "prot", 30, 1, ["--ec", layout])
    try:
        assert pl.json("stats")["stripes"] >= 1
        caps = sorted(i for i, d in devices(pl).items() if d["role"] == "capacity")
        assert len(caps) == k + m

        # a workload keeps writing and reading while m devices vanish
        stop, errors, written = threading.Event(), [], {}

        def workload():
            c = client(srv.s3_url)
            i = 0
            while not stop.is_set():
                body = os.urandom(random.randint(1, 1 << 20))
                key = f"live/{i}"
                try:
                    c.put_object(Bucket="prot", Key=key, Body=body)
                    written[key] = hashlib.sha256(body).hexdigest()
                    got = c.get_object(Bucket="prot", Key=key)["Body"].read()
                    if got != body:
                        errors.append(key)
                except Exception as e:  # noqa: BLE001 - any failure is a finding
                    errors.append(f"{key}: {e}")
                i += 1

        t = threading.Thread(target=workload)
        t.start()
        lost = caps[1:1 + m]
        for dev in lost:
            shutil.rmtree(devices(pl)[dev]["path"])
        wait_for(lambda: all(devices(pl)[d]["state"] == "failed" for d in lost), 30,
                 "the lost devices to be noticed")
        check_all(s3, "prot", bodies)
        r = pl.run("flush")  # too few devices: stays mirrored in the buffer, says so
        assert r.returncode == 1 and b"capacity devices" in r.stderr
        assert pl.json("stats")["degraded_reads"] > 0

        # empty replacements at new paths: rebuilt in the background while the
        # workload goes on
        for dev in lost:
            pl.ok("device", "replace", str(dev), str(tmp_path / f"new{dev}"))
        check_all(s3, "prot", bodies)
        wait_for(lambda: all(devices(pl)[d]["state"] == "ok" for d in lost), 120,
                 "the rebuild")
        stop.set()
        t.join()
        assert not errors, errors[:5]
        check_all(s3, "prot", written)
        status = pl.ok("device", "status").stdout.decode()
        assert "failed" not in status
        pl.ok("flush")
        assert pl.json("stats")["buffer_segments"] == 0
        fsck = pl.run("fsck")
        assert fsck.returncode == 0, fsck.stdout.decode()
        check_all(s3, "prot", bodies)
        check_all(s3, "prot", written)
    finally:
        assert srv.stop() == 0


def test_scrub_repairs_flipped_bytes_and_m_plus_1_fails_cleanly(tmp_path):
    data, srv, pl, s3, bodies = protected_server(tmp_path, "scrub", 25, 2)
    try:
        devs = devices(pl)
        caps = sorted(i for i, d in devs.items() if d["role"] == "capacity")
        # flipped bytes in every strip of two devices: reads right, scrub repairs
        for dev in caps[:2]:
            flip_bytes(os.path.join(devs[dev]["path"], "stripes", "*"), dev)
        check_all(s3, "scrub", bodies)
        r = pl.json("scrub", "--now")
        assert r["repaired"] > 0 and r["unrecoverable"] == 0
        assert pl.json("scrub", "--now")["repaired"] == 0
        assert pl.json("stats")["scrub"]["repaired"] >= r["repaired"]
        assert pl.run("fsck").returncode == 0

        # a byte flipped in one buffer mirror is repaired from the other
        s3.put_object(Bucket="scrub", Key="buffered", Body=b"in the buffer " * 1000)
        seg = [f for f in sorted(glob.glob(str(data / "buffer0" / "seg" / "*.seg")))
               if os.path.getsize(f) > 60][-1]
        with open(seg, "r+b") as fh:  # a payload byte of the (compressed) block
            fh.seek(60)
            b = fh.read(1)
            fh.seek(60)
            fh.write(bytes([b[0] ^ 1]))
        assert s3.get_object(Bucket="scrub", Key="buffered")["Body"].read() == b"in the buffer " * 1000
        r = pl.json("scrub", "--now")
        assert r["repaired"] >= 1

        # m + 1 devices gone: affected reads fail with an error, never wrong bytes,
        # and the server keeps serving what it can
        for dev in caps[:3]:
            shutil.rmtree(devs[dev]["path"])
        wait_for(lambda: sum(d["state"] == "failed" for d in devices(pl).values()) == 3, 30,
                 "the lost devices to be noticed")
        failures = 0
        for key, digest in bodies.items():
            try:
                got = s3.get_object(Bucket="scrub", Key=key)["Body"].read()
                assert hashlib.sha256(got).hexdigest() == digest, key
            except (botocore.exceptions.ClientError, botocore.exceptions.ResponseStreamingError,
                    botocore.exceptions.IncompleteReadError):
                failures += 1
        assert failures > 0
        r = pl.run("scrub", "--now", "--json")
        assert r.returncode == 1 and json.loads(r.stdout)["unrecoverable"] > 0
        assert s3.get_object(Bucket="scrub", Key="buffered")["Body"].read() == b"in the buffer " * 1000
        s3.put_object(Bucket="scrub", Key="after", Body=b"still serving")
        assert s3.get_object(Bucket="scrub", Key="after")["Body"].read() == b"still serving"
        cat = pl.run("cat", "pl://scrub/" + next(iter(bodies)))
        if cat.returncode:
            assert b"fsck" in cat.stderr  # says what to do next
    finally:
        assert srv.stop() == 0


def test_device_fail_add_remove_and_their_errors(tmp_path):
    _, srv, pl, s3, bodies = protected_server(tmp_path, "devs", 12, 3)
    try:
        listed = pl.json("device", "list")["devices"]
        assert all({"id", "role", "path", "state"} <= set(d) for d in listed)
        assert [d["role"] for d in listed].count("buffer") == 2
        caps = sorted(d["id"] for d in listed if d["role"] == "capacity")
        assert len(caps) == 6 and all(d["state"] == "ok" for d in listed)

        def fails(*args, says):
            r = pl.run("device", *args)
            assert r.returncode == 1, (args, r.stdout, r.stderr)
            assert says in r.stderr.decode(), (args, r.stderr)

        fails("fail", "0", says="buffer mirror")
        fails("remove", "1", says="buffer mirror")
        fails("fail", "999", says="no such device")
        fails("fail", "seven", says="is a number")
        fails("remove", str(caps[0]), says="add one first")  # 5 would be left for 4+2
        fails("add", devices(pl)[caps[0]]["path"], says="a device already")

        # failed by request: parity serves the reads
        pl.ok("device", "fail", str(caps[2]))
        assert devices(pl)[caps[2]]["state"] == "failed"
        check_all(s3, "devs", bodies)
        assert pl.json("stats")["degraded_reads"] > 0

        # two new devices; then the failed one is removed: its strips are
        # rebuilt from parity onto a device the stripe does not use yet
        added = []
        for i in range(2):
            out = pl.ok("device", "add", str(tmp_path / f"extra{i}")).stdout.decode()
            added.append(int(out.split()[1]))
            assert "added" in out
        assert all(devices(pl)[d]["state"] == "ok" for d in added)
        pl.ok("device", "remove", str(caps[2]))
        assert caps[2] not in devices(pl)
        assert sum(devices(pl)[d]["strips"] for d in added) > 0
        check_all(s3, "devs", bodies)
        # a working device goes the same way, its strips copied
        pl.ok("device", "remove", str(caps[3]))
        assert caps[3] not in devices(pl)
        more = put_many(s3, "devs", 6, 4)
        pl.ok("flush")
        assert pl.run("fsck").returncode == 0
        check_all(s3, "devs", bodies)
        check_all(s3, "devs", more)
        fails("remove", str(caps[0]), says="add one first")  # six left: the stripe width
    finally:
        assert srv.stop() == 0


def test_kill9_during_destage_and_rebuild(tmp_path):
    data = tmp_path / "data"
    pl = Plenum(data)
    acked = {}
    rnd = random.Random(7)
    for rnd_i in range(10):
        srv = Server(data, s3=True)
        s3 = client(srv.s3_url)
        if rnd_i == 0:
            s3.create_bucket(Bucket="crash")
        acked.update(put_many(s3, "crash", 12, 100 + rnd_i, size_max=2 << 20))
        # flush through the server, and kill the server somewhere inside it
        p = subprocess.Popen([BIN, "--data", str(data), "flush"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.0, 0.4))
        srv.stop(signal.SIGKILL)
        p.wait(timeout=60)
        # every acknowledged object is intact after the crash
        srv = Server(data, s3=True)
        s3 = client(srv.s3_url)
        check_all(s3, "crash", acked)
        if rnd_i % 3 == 1:
            # a device replaced, and the rebuild interrupted too
            caps = sorted(i for i, d in devices(pl).items() if d["role"] == "capacity")
            victim = caps[rnd_i % len(caps)]
            shutil.rmtree(devices(pl)[victim]["path"])
            pl.ok("device", "replace", str(victim), str(tmp_path / f"swap{rnd_i}"))
            time.sleep(rnd.uniform(0.0, 0.3))
            srv.stop(signal.SIGKILL)
            srv = Server(data, s3=True)
            s3 = client(srv.s3_url)
            check_all(s3, "crash", acked)
            wait_for(lambda: all(d["state"] == "ok" for d in devices(pl).values()), 120,
                     "the rebuild after the crash")
        assert srv.stop() == 0
    assert pl.run("fsck").returncode == 0
