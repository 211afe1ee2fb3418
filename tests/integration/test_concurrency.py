#!/usr/bin/env python3
"""Concurrency: writers publishing by rename onto shared names while readers verify every
block they see (never torn, never mixed); racing creators; eviction under concurrent use."""

import errno
import json
import os
import random
import subprocess
import sys
import threading
import time

import kvc
from kvc import KiB, MiB, Mount, wait_until

DURATION = float(os.environ.get("KVC_STRESS_SECONDS", "3"))
REC = 64  # bytes of one self-describing record


def make_block(name, version, writer, size):
    """size (a multiple of REC) bytes: one record describing the block, repeated."""
    rec = ("KVC|%s|%010d|%03d|%010d|" % (name, version, writer, size)).encode()
    rec = rec.ljust(REC - 1, b"#") + b"\n"
    assert len(rec) == REC
    return rec * (size // REC)


def check_block(data, name):
    """None if data is a complete block made by make_block for name, else what is wrong."""
    if len(data) < REC or len(data) % REC:
        return "length %d is not a positive multiple of %d" % (len(data), REC)
    rec = data[:REC]
    try:
        tag, n, version, writer, size, _ = rec.decode().split("|", 5)
        size = int(size)
    except (UnicodeDecodeError, ValueError):
        return "bad record %r" % rec
    if tag != "KVC" or n != name:
        return "record %r does not belong to %s" % (rec, name)
    if size != len(data):
        return "record says %d bytes, block has %d" % (size, len(data))
    if data != rec * (size // REC):
        # find the first foreign record, for the message
        for off in range(0, len(data), REC):
            if data[off:off + REC] != rec:
                return "mixed block: record %r at 0, %r at %d" % (rec, data[off:off + REC], off)
    return None


class Publish(kvc.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = Mount.for_class(cls, "--pool-size", "128M")

    def test_rename_publish_stress_threads(self):
        d = self.m.path("stress")
        os.mkdir(d)
        shared = ["s%d" % i for i in range(4)]
        stop = time.monotonic() + DURATION
        errors = []
        stats = {"published": 0, "reads": 0, "enoent": 0, "unlinks": 0}
        lock = threading.Lock()

        def err(msg):
            with lock:
                errors.append(msg)

        def writer(w):
            rnd = random.Random(w)
            version = 0
            try:
                while time.monotonic() < stop and not errors:
                    version += 1
                    name = rnd.choice(shared)
                    size = REC * rnd.choice((1, 64, 1000, 4096, 16384, 24000))
                    tmp = os.path.join(d, "tmp.%d.%d" % (w, version))
                    kvc.write_block(tmp, make_block(name, version, w, size), chunk=256 * KiB)
                    os.rename(tmp, os.path.join(d, name))
                    with lock:
                        stats["published"] += 1
            except Exception as e:  # noqa: BLE001
                err("writer %d: %r" % (w, e))

        def reader(r):
            rnd = random.Random(100 + r)
            try:
                while time.monotonic() < stop and not errors:
                    name = rnd.choice(shared)
                    try:
                        fd = os.open(os.path.join(d, name), os.O_RDONLY)
                    except FileNotFoundError:
                        with lock:
                            stats["enoent"] += 1
                        continue
                    try:
                        if rnd.random() < 0.5:
                            data = kvc.read_all(fd, chunk=rnd.choice((4096, 65536, 1 << 20)))
                        else:
                            size = os.fstat(fd).st_size
                            data = os.pread(fd, size + 1, 0)
                            if len(data) != size:
                                err("%s: fstat size %d, read %d bytes" % (name, size, len(data)))
                    finally:
                        os.close(fd)
                    problem = check_block(data, name)
                    if problem:
                        err("reader %d, %s: %s" % (r, name, problem))
                    with lock:
                        stats["reads"] += 1
            except Exception as e:  # noqa: BLE001
                err("reader %d: %r" % (r, e))

        def unlinker():
            rnd = random.Random(7)
            try:
                while time.monotonic() < stop and not errors:
                    time.sleep(0.05)
                    try:
                        os.unlink(os.path.join(d, rnd.choice(shared)))
                        with lock:
                            stats["unlinks"] += 1
                    except FileNotFoundError:
                        pass
            except Exception as e:  # noqa: BLE001
                err("unlinker: %r" % e)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        threads += [threading.Thread(target=reader, args=(r,)) for r in range(4)]
        threads.append(threading.Thread(target=unlinker))
        self.assertThreadsFinish(threads, DURATION + 120)
        self.assertEqual(errors, [], "\n".join(errors[:20]))
        self.assertGreater(stats["published"], 10, stats)
        self.assertGreater(stats["reads"], 10, stats)
        # afterwards: only the shared names are left (every temp was renamed), all intact
        left = os.listdir(d)
        self.assertTrue(set(left) <= set(shared), left)
        for name in left:
            self.assertIsNone(check_block(kvc.read_block(os.path.join(d, name)), name))
        st = self.m.status()
        if "writing" in st:
            self.assertEqual(st["writing"], 0)
        sys.stderr.write("  stress: %s\n" % stats)

    def test_rename_publish_stress_processes(self):
        d = self.m.path("pstress")
        os.mkdir(d)
        worker = r'''
import json, os, random, sys, time
sys.path.insert(0, %(here)r)
import test_concurrency as tc, kvc
role, idx, d, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
shared = ["p%%d" %% i for i in range(3)]
rnd = random.Random(idx)
stop = time.monotonic() + duration
out = {"ops": 0, "enoent": 0, "errors": []}
version = 0
while time.monotonic() < stop and len(out["errors"]) < 5:
    name = rnd.choice(shared)
    try:
        if role == "w":
            version += 1
            tmp = os.path.join(d, "t.%%d.%%d" %% (idx, version))
            size = tc.REC * rnd.choice((1, 100, 4096, 20000))
            kvc.write_block(tmp, tc.make_block(name, version, idx, size))
            os.replace(tmp, os.path.join(d, name))
        else:
            try:
                data = kvc.read_block(os.path.join(d, name))
            except FileNotFoundError:
                out["enoent"] += 1
                continue
            p = tc.check_block(data, name)
            if p:
                out["errors"].append(p)
        out["ops"] += 1
    except Exception as e:
        out["errors"].append(repr(e))
print(json.dumps(out))
''' % {"here": os.path.dirname(os.path.abspath(__file__))}
        procs = []
        for role, idx in (("w", 1), ("w", 2), ("r", 3), ("r", 4)):
            procs.append(subprocess.Popen([sys.executable, "-c", worker, role, str(idx), d,
                                           str(DURATION)], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        results = []
        for p in procs:
            out, errout = p.communicate(timeout=DURATION + 120)
            self.assertEqual(p.returncode, 0, errout)
            results.append(json.loads(out.strip().splitlines()[-1]))
        for r in results:
            self.assertEqual(r["errors"], [], r)
            self.assertGreater(r["ops"], 0, results)
        left = os.listdir(d)
        self.assertTrue(set(left) <= {"p0", "p1", "p2"}, left)

    def test_many_readers_one_block(self):
        data = os.urandom(3 * MiB + 17)
        kvc.write_block(self.m.path("hot"), data)
        errors = []

        def reader():
            try:
                for _ in range(5):
                    if kvc.read_block(self.m.path("hot")) != data:
                        errors.append("content differs")
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
        ts = [threading.Thread(target=reader) for _ in range(8)]
        kvc.start_join(ts)
        self.assertEqual(errors, [])
        self.assertTrue(wait_until(lambda: kvc.xattr(self.m.path("hot"), "refs") == b"0",
                                   timeout=3))

    def test_parallel_writers_distinct_blocks(self):
        d = self.m.path("par")
        os.mkdir(d)
        errors = []

        def writer(w):
            try:
                for i in range(30):
                    name = os.path.join(d, "w%d-%d" % (w, i))
                    kvc.write_block(name, make_block("w%d-%d" % (w, i), i, w, REC * (50 + i)))
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
        ts = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        kvc.start_join(ts)
        self.assertEqual(errors, [])
        names = os.listdir(d)
        self.assertEqual(len(names), 240)
        for n in names:
            self.assertIsNone(check_block(kvc.read_block(os.path.join(d, n)), n))


class RacingCreators(kvc.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = Mount.for_class(cls, "--pool-size", "32M")

    def race(self, flags, allowed, rounds=40):
        d = self.m.path("race%o" % flags)
        os.mkdir(d)
        for rnd in range(rounds):
            path = os.path.join(d, "n%d" % rnd)
            start = threading.Barrier(2)
            opened = threading.Barrier(2)
            results = [None, None]

            def creator(i):
                start.wait()
                try:
                    fd = os.open(path, flags, 0o644)
                except OSError as e:
                    results[i] = e.errno
                    opened.wait()
                    return
                results[i] = "ok"
                opened.wait()  # hold the block open until both attempts are done
                try:
                    os.write(fd, b"writer %d" % i)
                finally:
                    os.close(fd)
            ts = [threading.Thread(target=creator, args=(i,)) for i in range(2)]
            kvc.start_join(ts, timeout=30)
            winners = [i for i in range(2) if results[i] == "ok"]
            self.assertEqual(len(winners), 1, "round %d: results %s" % (rnd, [
                kvc.errname(r) if isinstance(r, int) else r for r in results]))
            loser = results[1 - winners[0]]
            self.assertIn(loser, allowed, "round %d: the other creator got %s" % (
                rnd, kvc.errname(loser)))
            self.assertEqual(kvc.read_block(path), b"writer %d" % winners[0])

    def test_two_creators_same_name_ebusy(self):
        self.race(os.O_WRONLY | os.O_CREAT, (errno.EBUSY,))

    def test_two_creators_same_name_excl(self):
        self.race(os.O_WRONLY | os.O_CREAT | os.O_EXCL, (errno.EEXIST, errno.EBUSY))


class EvictionUnderLoad(kvc.TestCase):
    def test_concurrent_writers_readers_small_pool(self):
        m = Mount.for_test(self, "--pool-size", "16M", "--evict-high", "90", "--evict-low", "50")
        written = []
        lock = threading.Lock()
        errors = []
        stop = time.monotonic() + DURATION
        hard_stop = stop + 60
        total = [0]

        def running():
            # at least DURATION seconds and 48 MiB written (3 pools' worth), at most +60 s
            now = time.monotonic()
            return not errors and now < hard_stop and (now < stop or total[0] < 48 * MiB)

        def writer(w):
            rnd = random.Random(w)
            i = 0
            try:
                while running():
                    i += 1
                    name = "e%d-%d" % (w, i)
                    size = REC * rnd.choice((256, 4096, 16384))
                    kvc.write_block(m.path(name), make_block(name, i, w, size))
                    with lock:
                        written.append(name)
                        total[0] += size
            except Exception as e:  # noqa: BLE001
                errors.append("writer %d: %r" % (w, e))

        def reader(r):
            rnd = random.Random(50 + r)
            try:
                while running():
                    with lock:
                        if not written:
                            name = None
                        else:
                            name = written[rnd.randrange(len(written))]
                    if name is None:
                        time.sleep(0.01)
                        continue
                    try:
                        data = kvc.read_block(m.path(name))
                    except FileNotFoundError:
                        continue  # evicted
                    p = check_block(data, name)
                    if p:
                        errors.append("reader %d: %s" % (r, p))
            except Exception as e:  # noqa: BLE001
                errors.append("reader %d: %r" % (r, e))

        ts = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
        ts += [threading.Thread(target=reader, args=(r,)) for r in range(3)]
        self.assertThreadsFinish(ts, DURATION + 120)
        self.assertEqual(errors, [], "\n".join(errors[:10]))
        self.assertGreater(m.status()["evictions"], 0, "the test did not fill the pool")
        for name in os.listdir(m.mnt):
            self.assertIsNone(check_block(kvc.read_block(m.path(name)), name))


if __name__ == "__main__":
    kvc.main()
