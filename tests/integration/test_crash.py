"""kill -9 in the middle of writes: every acknowledged object reads back
byte-identical, nothing unacknowledged is half-visible, fsck is clean."""
import os
import random
import signal
import subprocess
import time

from conftest import BUILD, Plenum

WRITER = os.path.join(BUILD, "crash_writer")


def test_kill9_rounds(tmp_path):
    data = str(tmp_path / "data")
    log = tmp_path / "acks.log"
    rng = random.Random(int(os.environ.get("PLENUM_CRASH_SEED", "1234")))
    pl = Plenum(data)
    rounds = int(os.environ.get("PLENUM_CRASH_ROUNDS", "20"))
    for rnd in range(rounds):
        with open(log, "ab") as out:  # cumulative: the verifier replays every round
            p = subprocess.Popen([WRITER, "write", data, str(rng.randrange(1 << 40))],
                                 stdout=out, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0.2, 1.5))
            p.send_signal(signal.SIGKILL)
            p.wait()
        acks = log.read_bytes().count(b"ACK")
        v = subprocess.run([WRITER, "verify", data, str(log)], capture_output=True, text=True)
        assert v.returncode == 0, f"round {rnd} ({acks} acks): {v.stderr}"
        f = pl.run("fsck")
        assert f.returncode == 0, f"round {rnd}: {f.stdout.decode()} {f.stderr.decode()}"
