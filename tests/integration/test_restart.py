#!/usr/bin/env python3
"""Restart and recovery: the pool object and the SSD files outlive the daemon, and a daemon
started again with the same arguments gets every sealed block and directory back.

Covered:
- a clean unmount and restart: every block (content, size, mode, uid, gid, mtime) and every
  directory (mode, uid, gid, empty ones too) is back, status recovered == blocks,
  recovery_dropped == 0, recovery_ns > 0; renames, unlinks, chmod/chown and rmdir made after
  a restart survive the next one; the start log line (foreground) says what was recovered;
- the same with an SSD tier and blocks on both tiers (DRAM only, SSD only, promoted);
- kill -9 at random points while a writer process writes (and fsyncs) blocks, for a few
  rounds: every block the writer reported reads back byte-exact, every block present holds
  exactly its own bytes, none is left "writing", and the daemon still takes writes; the same
  while blocks are being demoted to SSD; a block being written at the kill is gone, one
  fsync'ed (still open) or sealed at close is there; a block whose writer closed a
  descriptor is there even when the kill comes before the release that seals it (a dup still
  open, or a kill right after close()), unless it was written again after that close;
- corruption: a block record whose name bytes were flipped in the pool object is dropped
  (ENOENT, recovery_dropped >= 1); a block whose payload was flipped (in the pool object, or
  in the SSD file for an SSD-resident block) is never served (EIO or ENOENT, then gone); the
  other blocks are intact;
- a restart with another --pool-size is refused (one line on stderr) while blocks are there,
  and a restart with the right size still recovers them; --fresh discards them (DRAM and SSD);
  an empty pool is simply made again at another size;
- 100k small blocks: all listed after a restart, a sample read back, recovered == 100k.

Block contents are derived from their names (kvc.det_bytes), so checks need no copies; the
crash tests print their random seed (set KVC_TEST_SEED to replay one)."""

import errno
import os
import random
import re
import stat
import subprocess
import sys
import tempfile
import time

import kvc
from kvc import KiB, MiB, Mount, det_bytes, det_size, wait_until

POOL16 = ("--pool-size", "16M", "--evict-high", "90", "--evict-low", "50")
MTIME_NS = 1_600_000_000_123_456_789

def setUpModule():
    kvc.require_environment()


def close_dead(*fds):
    """Close descriptors of a mount whose daemon may be dead (the close may fail)."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def tree(root):
    """{relative path: attributes} of every directory and block below root, from stat alone
    (nothing is opened, so no block moves between tiers)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            s = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISDIR(s.st_mode):
                out[rel] = ("dir", oct(stat.S_IMODE(s.st_mode)), s.st_uid, s.st_gid,
                            s.st_mtime_ns)
            else:
                out[rel] = ("block" if stat.S_ISREG(s.st_mode) else oct(s.st_mode),
                            oct(stat.S_IMODE(s.st_mode)), s.st_uid, s.st_gid, s.st_size,
                            s.st_mtime_ns)
    return out


def find_all(data, pattern):
    out, i = [], data.find(pattern)
    while i >= 0:
        out.append(i)
        i = data.find(pattern, i + 1)
    return out


def flip_all(path, pattern, at, mask=0xFF):
    """XOR mask into byte `at` of every occurrence of pattern in the file at path (an
    unmounted pool object or SSD file); return the offsets of the occurrences."""
    with open(path, "r+b") as f:
        data = f.read()
        offs = find_all(data, pattern)
        for o in offs:
            f.seek(o + at)
            f.write(bytes([data[o + at] ^ mask]))
        f.flush()
        os.fsync(f.fileno())
    return offs


class RestartCase(kvc.TestCase):
    def mount(self, *args, ssd=None):
        """A mount for this test; ssd: the size of an SSD file in a disk temp dir."""
        if ssd:
            self.ssd = os.path.join(kvc.disk_tempdir(self), "ssd.img")
            args += ("--ssd", "%s:%s" % (self.ssd, ssd))
        self.m = Mount.for_test(self, *args)
        self.cap = self.m.status()["capacity"]
        return self.m

    def p(self, *parts):
        return self.m.path(*parts)

    def assertBytes(self, path, key, size):
        got = kvc.read_block(path)
        self.assertEqual(len(got), size, "%s: %d bytes, expected %d" % (path, len(got), size))
        self.assertTrue(got == det_bytes(key, size), "%s: wrong bytes" % path)

    def assertTree(self, before, what="after the restart"):
        """The tree below the mountpoint is before (same entries, same attributes)."""
        after = tree(self.m.mnt)
        diff = ["%s: %s -> %s" % (k, before.get(k, "(none)"), after.get(k, "(none)"))
                for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
        if diff:
            self.fail("%d entries differ %s (kind, mode, uid, gid[, size, mtime_ns]):\n  %s"
                      % (len(diff), what, "\n  ".join(diff[:20])))

    def assertRecovered(self, st, n, dropped=0):
        self.assertEqual(st["recovered"], n, st)
        self.assertEqual(st["recovery_dropped"], dropped, st)
        self.assertGreater(st["recovery_ns"], 0, st)
        self.assertEqual(st["blocks"], n, st)
        self.assertEqual(st["writing"], 0, st)

    def settled(self, pred=None, timeout=10):
        return self.assertSettled(self.m, self.cap, pred, timeout)

    def assertNeverServed(self, path):
        """Opening or reading path fails with EIO or ENOENT (never any bytes), and then the
        block is gone."""
        try:
            got = kvc.read_block(path)
        except OSError as e:
            self.assertIn(e.errno, (errno.EIO, errno.ENOENT),
                          "%s: %s, expected EIO or ENOENT" % (path, e))
        else:
            self.fail("%s: a corrupted block was served (%d bytes)" % (path, len(got)))
        self.assertGone(path)
        self.assertErrno(errno.ENOENT, os.open, path, os.O_RDONLY)

    def rng(self):
        seed = int(os.environ.get("KVC_TEST_SEED") or time.time_ns() % 1000000007)
        sys.stderr.write("\n%s: seed %d (KVC_TEST_SEED=%d replays it)\n"
                         % (self.id(), seed, seed))
        return random.Random(seed), seed


# --------------------------------------------------------------------------------------------

class CleanRestart(RestartCase):
    def build_tree(self):
        """Directories and blocks of many shapes; returns {path: (content key, size)}."""
        exp = {}

        def mkdir(rel, mode, owner=None):
            os.mkdir(self.p(rel))
            os.chmod(self.p(rel), mode)
            if owner:
                os.chown(self.p(rel), *owner)

        def put(rel, size, mode=None, owner=None, mtime=None):
            kvc.write_block(self.p(rel), det_bytes(rel, size))
            if mode is not None:
                os.chmod(self.p(rel), mode)
            if owner:
                os.chown(self.p(rel), *owner)
            if mtime:
                os.utime(self.p(rel), ns=(mtime, mtime))
            exp[rel] = (rel, size)

        mkdir("a", 0o750, (1234, 2345))
        mkdir("a/b", 0o700)
        mkdir("a/b/c", 0o755)  # empty
        mkdir("empty", 0o711, (0, 100))
        mkdir("a/deep", 0o755)
        for sub in ("d1", "d1/d2", "d1/d2/d3", "d1/d2/d3/d4"):
            mkdir("a/deep/" + sub, 0o755)
        for size in (0, 1, 4095, 4096, 4097, 3 * MiB + 5):
            put("r%d" % size, size)
        put("owned", 10000, mode=0o600, owner=(4321, 5432), mtime=MTIME_NS)
        put("a/ro", 777, mode=0o444)
        put("a/b/exec", 12345, mode=0o755, owner=(65534, 65534))
        put("a/deep/d1/d2/d3/d4/leaf", 100000, mtime=MTIME_NS + 1)
        put("a/" + "n" * 255, 300)
        put("a/b/name with spaces é", 4321)
        for i in range(20):
            put("a/b/k%02d" % i, det_size("k%d" % i, 1, 200 * KiB))
        return exp

    def check(self, exp, before):
        self.assertTree(before)
        for rel, (key, size) in exp.items():
            self.assertBytes(self.p(rel), key, size)
            self.assertEqual(kvc.xattr(self.p(rel), "state"), b"sealed", rel)

    def test_blocks_and_directories_come_back(self):
        self.mount("--pool-size", "64M")
        exp = self.build_tree()
        before = tree(self.m.mnt)
        st0 = self.m.status()
        self.assertEqual(st0["blocks"], len(exp))
        self.m.restart()
        st = self.m.status()
        self.assertRecovered(st, len(exp))
        self.assertEqual(st["directories"], st0["directories"], (st0, st))
        self.check(exp, before)

        # changes made after a restart are what the next restart finds
        os.rename(self.p("a/b/k00"), self.p("a/moved"))
        exp["a/moved"] = exp.pop("a/b/k00")
        os.rename(self.p("a/b/k01"), self.p("a/b/k02"))  # replaces k02
        exp["a/b/k02"] = exp.pop("a/b/k01")
        os.unlink(self.p("r1"))
        del exp["r1"]
        os.chmod(self.p("r4096"), 0o640)
        os.chown(self.p("r4096"), 7, 8)
        os.utime(self.p("r4097"), ns=(MTIME_NS, MTIME_NS + 2))
        os.rmdir(self.p("empty"))
        os.rename(self.p("a/deep/d1"), self.p("a/b/c/d1"))
        exp = {k.replace("a/deep/d1", "a/b/c/d1"): v for k, v in exp.items()}
        os.mkdir(self.p("new"))
        os.chmod(self.p("new"), 0o700)
        kvc.write_block(self.p("new/blk"), det_bytes("new/blk", 5000))
        exp["new/blk"] = ("new/blk", 5000)
        before = tree(self.m.mnt)
        self.m.restart()
        self.assertRecovered(self.m.status(), len(exp))
        self.check(exp, before)
        for gone in ("a/b/k00", "a/b/k01", "r1", "empty", "a/deep/d1"):
            self.assertGone(self.p(gone))
        # and a restart changes nothing by itself
        self.m.restart()
        self.assertRecovered(self.m.status(), len(exp))
        self.check(exp, before)
        # the daemon takes new blocks next to the recovered ones
        kvc.write_block(self.p("a/after"), b"after restart")
        self.assertEqual(kvc.read_block(self.p("a/after")), b"after restart")
        self.assertEqual(self.m.status()["blocks"], len(exp) + 1)

    def test_ssd_and_mixed_tiers_come_back(self):
        self.mount(*POOL16, ssd="64M")
        os.mkdir(self.p("kv"))
        os.chmod(self.p("kv"), 0o750)
        os.chown(self.p("kv"), 1000, 1001)
        names = ["kv/b%02d" % i for i in range(32)]
        for i, n in enumerate(names):
            kvc.write_block(self.p(n), det_bytes(n, MiB))
            if i == 0:
                os.chown(self.p(n), 321, 654)
                os.chmod(self.p(n), 0o604)
                os.utime(self.p(n), ns=(MTIME_NS, MTIME_NS))
        self.settled(lambda s: s["demotions"] > 0)
        self.assertTrue(wait_until(lambda: kvc.tier(self.p(names[2])) == "ssd", timeout=10))
        # attributes changed while the block is on SSD
        self.assertEqual(kvc.tier(self.p(names[1])), "ssd")
        os.chmod(self.p(names[1]), 0o640)
        os.chown(self.p(names[1]), 11, 12)
        # promote two: in DRAM again, their SSD copies kept
        for n in names[2:4]:
            self.assertBytes(self.p(n), n, MiB)
        st0 = self.settled()
        tiers = {n: kvc.tier(self.p(n)) for n in names}
        self.assertIn("ssd", tiers.values())
        self.assertIn("dram", tiers.values())
        before = tree(self.m.mnt)
        self.m.restart()
        st = self.m.status()
        self.assertRecovered(st, 32)
        self.assertTree(before)
        self.assertEqual({n: kvc.tier(self.p(n)) for n in names}, tiers,
                         "blocks changed tiers across the restart")
        self.assertEqual(st["dram_blocks"], st0["dram_blocks"], (st0, st))
        self.assertGreaterEqual(st["ssd_blocks"], list(tiers.values()).count("ssd"), st)
        self.assertGreater(st["ssd_used"], 0, st)
        for n in names:
            self.assertBytes(self.p(n), n, MiB)
        # still a working SSD tier: more blocks demote, all read back
        more = ["kv/c%02d" % i for i in range(16)]
        for n in more:
            kvc.write_block(self.p(n), det_bytes(n, MiB))
        self.settled()
        self.assertEqual(self.m.status()["blocks"], 48)
        for n in names + more:
            self.assertBytes(self.p(n), n, MiB)

    def test_renames_on_ssd_come_back_under_the_new_name(self):
        """A block renamed while only on SSD, one renamed while it has copies on both tiers,
        and a directory renamed over SSD blocks: each comes back once, under its new name."""
        self.mount(*POOL16, ssd="64M")
        os.mkdir(self.p("d1"))
        names = ["d1/r%02d" % i for i in range(32)]
        for n in names:
            kvc.write_block(self.p(n), det_bytes(n, MiB))
        self.settled(lambda s: s["demotions"] > 0)
        self.assertTrue(wait_until(lambda: kvc.tier(self.p(names[1])) == "ssd", timeout=10))
        # names[0]: renamed while only on SSD
        self.assertEqual(kvc.tier(self.p(names[0])), "ssd")
        os.rename(self.p(names[0]), self.p("d1/moved0"))
        # names[1]: promoted (both copies), then renamed
        self.assertBytes(self.p(names[1]), names[1], MiB)
        self.assertEqual(kvc.tier(self.p(names[1])), "dram")
        os.rename(self.p(names[1]), self.p("d1/moved1"))
        # the directory holding them all
        os.rename(self.p("d1"), self.p("d2"))
        self.settled()
        before = tree(self.m.mnt)
        self.m.restart()
        self.assertRecovered(self.m.status(), 32)
        self.assertTree(before)
        self.assertEqual(sorted(os.listdir(self.m.mnt)), ["d2"])
        self.assertBytes(self.p("d2/moved0"), names[0], MiB)
        self.assertBytes(self.p("d2/moved1"), names[1], MiB)
        for n in names[2:]:
            self.assertBytes(self.p("d2/" + n.split("/")[1]), n, MiB)

    def test_start_log_line(self):
        m = self.mount("--pool-size", "16M")
        sizes = {"x0": 0, "x1": 1, "x2": 5000, "x3": 70000}
        for n, size in sizes.items():
            kvc.write_block(self.p(n), det_bytes(n, size))
        os.mkdir(self.p("sub"))
        m.shutdown()
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen([kvc.KVCACHEFS, "-f"] + m.args + [m.mnt],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=kvc.sanitizer_env(m.logdir))

        def stop_fg():
            if proc.poll() is None:
                kvc.unmount(m.mnt)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            kvc.lazy_unmount(m.mnt)
            log.close()
        self.addCleanup(stop_fg)  # before the Mount's own cleanup

        def text():
            log.seek(0)
            return log.read().decode(errors="replace")
        # "recovered N blocks (SIZE), [D directories, ]X dropped, in T ms"; SIZE in bytes
        # or with a unit ("73.2 KiB")
        pat = re.compile(r"recovered (\d+) blocks \(([^)]*)\),(?: (\d+) directories,)? "
                         r"(\d+) dropped, in [\d.]+ ms")
        self.assertTrue(wait_until(lambda: pat.search(text()) or proc.poll() is not None,
                                   timeout=20), "no start log line: %r" % text())
        self.assertIsNone(proc.poll(), "kvcachefs -f exited: %r" % text())
        g = pat.search(text())
        self.assertIsNotNone(g, text())
        self.assertEqual(int(g.group(1)), len(sizes), g.group(0))
        size = re.fullmatch(r"([\d.]+) ?(bytes|B|KiB|MiB|GiB)", g.group(2))
        self.assertIsNotNone(size, g.group(0))
        shown = float(size.group(1)) * {"bytes": 1, "B": 1, "KiB": KiB, "MiB": MiB,
                                        "GiB": 1024 * MiB}[size.group(2)]
        total = sum(sizes.values())
        self.assertLessEqual(abs(shown - total), 0.01 * total, g.group(0))
        if g.group(3) is not None:
            self.assertEqual(int(g.group(3)), 1, g.group(0))
        self.assertEqual(int(g.group(4)), 0, g.group(0))
        self.assertTrue(wait_until(lambda: kvc.is_mounted(m.mnt), timeout=10))
        for n, size in sizes.items():
            self.assertBytes(self.p(n), n, size)
        kvc.unmount(m.mnt)
        self.assertEqual(proc.wait(timeout=15), 0, text())


class PoolSizeAndFresh(RestartCase):
    def test_other_pool_size_refused_while_blocks_are_there(self):
        m = self.mount("--pool-size", "16M")
        names = ["s%d" % i for i in range(5)]
        for n in names:
            kvc.write_block(self.p(n), det_bytes(n, 100 * KiB))
        m.shutdown()
        pool = m.pool_path()
        self.assertTrue(os.path.exists(pool), "the pool object went away at unmount")
        r = m.try_restart(args=["--pool-size", "32M"])
        err = r.stderr.strip()
        self.assertNotEqual(r.returncode, 0, "started with another --pool-size over blocks")
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, "expected one line on stderr: %r" % err)
        self.assertTrue(lines[0].startswith("kvcachefs: "), lines[0])
        self.assertRegex(lines[0], r"16\s*M|16777216|--fresh")
        self.assertFalse(kvc.is_mounted(m.mnt))
        self.assertIsNone(kvc.find_daemon(m.mnt))
        self.assertTrue(os.path.exists(pool), "a refused start removed the pool object")
        # the right size recovers everything
        m.restart()
        self.assertRecovered(m.status(), 5)
        for n in names:
            self.assertBytes(self.p(n), n, 100 * KiB)
        # --fresh with another size: taken, empty
        m.restart(args=["--pool-size", "32M", "--fresh"])
        st = m.status()
        self.assertEqual(os.listdir(m.mnt), [])
        self.assertEqual(st["blocks"], 0, st)
        self.assertEqual(st["recovered"], 0, st)
        self.assertGreater(st["pool_size"], 30 * MiB, st)
        self.assertLessEqual(st["pool_size"], 32 * MiB, st)
        # an empty pool is simply made again, at any size
        m.restart()
        st = m.status()
        self.assertGreater(st["pool_size"], 14 * MiB, st)
        self.assertLessEqual(st["pool_size"], 16 * MiB, st)
        self.assertEqual(st["blocks"], 0, st)
        kvc.write_block(self.p("ok"), b"ok")
        self.assertEqual(kvc.read_block(self.p("ok")), b"ok")

    def test_fresh_discards_dram_and_ssd_blocks(self):
        m = self.mount(*POOL16, ssd="64M")
        os.mkdir(self.p("dir"))
        for i in range(24):
            kvc.write_block(self.p("dir", "f%02d" % i), det_bytes("f%d" % i, MiB))
        self.settled(lambda s: s["ssd_blocks"] > 0)
        m.restart("--fresh")
        st = m.status()
        self.assertEqual(os.listdir(m.mnt), [])
        for k in ("blocks", "recovered", "ssd_blocks", "ssd_used", "dram_blocks"):
            self.assertEqual(st[k], 0, "%s after --fresh: %r" % (k, st))
        self.assertEqual(st["directories"], 0, st)
        kvc.write_block(self.p("new"), b"new")
        # discarded for good: a plain restart finds only what came after
        m.restart()
        st = m.status()
        self.assertEqual(os.listdir(m.mnt), ["new"])
        self.assertRecovered(st, 1)
        self.assertEqual(st["ssd_blocks"], 0, st)
        self.assertEqual(kvc.read_block(self.p("new")), b"new")


# --------------------------------------------------------------------------------------------

class Crash(RestartCase):
    LO, HI = 1, 32 * KiB

    def check_writer_blocks(self, d, printed, lo, hi, others=0):
        """After a restart: every printed name is in d and every block in d is a writer's,
        with exactly its bytes, sealed; status agrees. Returns the names present."""
        present = set(os.listdir(d))
        missing = sorted(set(printed) - present)
        self.assertEqual(missing, [], "%d sealed (fsync'ed and reported) blocks are missing "
                         "after kill -9 and restart: %s" % (len(missing), missing[:10]))
        for n in sorted(present):
            self.assertRegex(n, r"^r\d+-\d{6}$", "unexpected entry %r" % n)
            p = os.path.join(d, n)
            self.assertEqual(kvc.xattr(p, "state"), b"sealed", n)
            size = det_size(n, lo, hi)
            got = kvc.read_block(p)
            self.assertTrue(got == det_bytes(n, size), "%s: %d bytes read back, not the %d "
                            "written" % (n, len(got), size))
        st = self.m.status()
        self.assertRecovered(st, len(present) + others)
        return present

    def crash_rounds(self, d, rounds, count, lo, hi, budget, before_kill, others=0):
        rng, seed = self.rng()
        printed = set()
        deadline = time.monotonic() + budget
        for rnd in range(rounds):
            if rnd >= 2 and time.monotonic() > deadline:
                break
            w = kvc.BlockWriter(d, "r%d" % rnd, count, lo, hi)
            self.addCleanup(w.kill)
            try:
                before_kill(rng, w)
                self.m.kill9()
            finally:
                names = w.finish(kill=True)
            printed.update(names)
            self.m.restart()
            with self.subTest(round=rnd, seed=seed, written=len(names)):
                self.check_writer_blocks(d, printed, lo, hi, others)
        return printed

    def test_kill9_at_random_points_while_writing(self):
        # 5 rounds of at most 1000 blocks of 1..32 KiB (at most 36 KiB of pages each): the
        # pool holds all of it, so nothing may be evicted
        self.mount("--pool-size", "256M")
        d = self.p("w")
        os.mkdir(d)
        kvc.write_block(self.p("before"), det_bytes("before", 300000))

        def before_kill(rng, w):
            w.wait_started()
            time.sleep(rng.uniform(0.0, 0.3))
        printed = self.crash_rounds(d, 5, 1000, self.LO, self.HI, 40, before_kill, others=1)
        self.assertBytes(self.p("before"), "before", 300000)
        self.assertTrue(os.path.isdir(d))
        # the daemon still takes writes: a writer runs to its end, all of it there
        w = kvc.BlockWriter(d, "r99", 50, self.LO, self.HI)
        self.addCleanup(w.kill)
        names = w.finish()
        self.assertEqual(w.returncode, 0, w.stderr)
        self.assertEqual(len(names), 50)
        for n in names:
            self.assertBytes(os.path.join(d, n), n, det_size(n, self.LO, self.HI))
        self.assertEqual(self.m.status()["blocks"], len(os.listdir(d)) + 1)
        sys.stderr.write("%d blocks reported by the writers before their kills\n" % len(printed))

    def test_kill9_during_demotion(self):
        # 3 rounds of at most 48 blocks of 256K..1M: at most 144 MiB, which DRAM and SSD
        # together hold, so nothing may be dropped
        self.mount(*POOL16, ssd="160M")
        d = self.p("w")
        os.mkdir(d)
        lo, hi = 256 * KiB, MiB

        def before_kill(rng, w):
            # kill once blocks are moving to SSD (or the writer is done)
            wait_until(lambda: w.proc.poll() is not None or
                       self.m.status()["demotions"] > 0, timeout=20, interval=0.02)
            time.sleep(rng.uniform(0.0, 0.3))
        self.crash_rounds(d, 3, 48, lo, hi, 60, before_kill)
        st = self.m.status()
        self.assertGreater(st["ssd_blocks"], 0, st)
        self.assertEqual(st["ssd_evictions"], 0, st)
        kvc.write_block(self.p("after"), b"after")
        self.assertEqual(kvc.read_block(self.p("after")), b"after")

    def test_kill9_drops_blocks_being_written_only(self):
        self.mount("--pool-size", "64M")
        os.mkdir(self.p("dir"))
        os.chmod(self.p("dir"), 0o751)
        kvc.write_block(self.p("dir", "closed"), det_bytes("closed", 200000))
        self.assertTrue(wait_until(
            lambda: kvc.xattr(self.p("dir", "closed"), "state") == b"sealed", timeout=5))
        synced = os.open(self.p("dir", "synced"), os.O_WRONLY | os.O_CREAT, 0o644)
        partial = os.open(self.p("dir", "partial"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            kvc.write_all(synced, det_bytes("synced", 150000))
            os.fsync(synced)  # sealed now, though still open
            kvc.write_all(partial, det_bytes("partial", 300000))
            self.assertEqual(kvc.xattr(self.p("dir", "partial"), "state"), b"writing")
            self.m.kill9()
        finally:
            close_dead(synced, partial)
        self.m.restart()
        self.assertEqual(oct(stat.S_IMODE(os.stat(self.p("dir")).st_mode)), oct(0o751))
        self.assertBytes(self.p("dir", "closed"), "closed", 200000)
        self.assertBytes(self.p("dir", "synced"), "synced", 150000)
        self.assertGone(self.p("dir", "partial"))
        self.assertEqual(sorted(os.listdir(self.p("dir"))), ["closed", "synced"])
        self.assertRecovered(self.m.status(), 2)
        # the name of the lost block is free
        kvc.write_block(self.p("dir", "partial"), b"again")
        self.assertEqual(kvc.read_block(self.p("dir", "partial")), b"again")


    def test_kill9_after_close_before_release(self):
        self.mount("--pool-size", "64M")
        used0 = self.m.status()["used"]  # the record pages of an empty pool
        # closing one of two descriptors records the block as it is (flush); the other keeps
        # the release, which seals it, from coming: the kill falls in between
        fd = os.open(self.p("closed-dup"), os.O_WRONLY | os.O_CREAT, 0o640)
        fd2 = os.dup(fd)
        kvc.write_all(fd, det_bytes("closed-dup", 3 * MiB + 5))
        os.close(fd)
        # written again after its close: that record no longer holds
        again = os.open(self.p("written-again"), os.O_WRONLY | os.O_CREAT, 0o644)
        again2 = os.dup(again)
        kvc.write_all(again, b"first part,")
        os.close(again2)
        kvc.write_all(again, b"second part")
        # a burst of plain writers with no fsync, killed right after the last close()
        names = ["plain%02d" % k for k in range(40)]
        try:
            self.assertEqual(kvc.xattr(self.p("closed-dup"), "state"), b"writing")
            for n in names:
                kvc.write_block(self.p(n), det_bytes(n, det_size(n, 1, 200 * KiB)))
            self.m.kill9()
        finally:
            close_dead(fd2, again)
        self.m.restart()
        self.assertEqual(kvc.xattr(self.p("closed-dup"), "state"), b"sealed")
        self.assertBytes(self.p("closed-dup"), "closed-dup", 3 * MiB + 5)
        self.assertEqual(oct(stat.S_IMODE(os.stat(self.p("closed-dup")).st_mode)), oct(0o640))
        self.assertGone(self.p("written-again"))
        for n in names:
            self.assertBytes(self.p(n), n, det_size(n, 1, 200 * KiB))
        st = self.m.status()
        self.assertRecovered(st, 1 + len(names))
        # the recorded block came back with the pages its bytes need, not the room it had
        # grown while written (4 MiB for these 3 MiB): a record page or two more at most
        pages = lambda n: -(-n // 4096)  # noqa: E731
        need = 4096 * (pages(3 * MiB + 5) +
                       sum(pages(det_size(n, 1, 200 * KiB)) for n in names))
        self.assertLessEqual(st["used"] - used0, need + 16 * 4096, (used0, st))


# --------------------------------------------------------------------------------------------

class Corruption(RestartCase):
    def test_corrupted_record_and_payload_in_pool(self):
        m = self.mount("--pool-size", "32M")
        tag = det_bytes("tag", 8).hex()
        rec_victim = "record-victim-" + tag
        pay_victim = "payload-victim-" + tag
        others = ["other%02d" % i for i in range(10)]
        sizes = {n: det_size(n, 1000, 300 * KiB) for n in others}
        sizes[rec_victim] = 50000
        sizes[pay_victim] = 256 * KiB
        for n, size in sizes.items():
            kvc.write_block(self.p(n), det_bytes(n, size))
        m.shutdown()
        pool = m.pool_path()
        self.assertTrue(os.path.exists(pool), "the pool object went away at unmount")
        # the record: flip a bit in every copy of the name's bytes
        offs = flip_all(pool, rec_victim.encode(), len(rec_victim) // 2, mask=0x01)
        self.assertGreaterEqual(len(offs), 1, "the block's name is nowhere in %s" % pool)
        # the payload: flip a byte in the middle of the block's bytes
        pattern = det_bytes(pay_victim, sizes[pay_victim])[100000:100064]
        offs = flip_all(pool, pattern, 32)
        self.assertGreaterEqual(len(offs), 1, "the block's bytes are nowhere in %s" % pool)
        m.restart()
        st = m.status()
        self.assertGreaterEqual(st["recovery_dropped"], 1, st)
        self.assertIn(st["recovered"], (len(others), len(others) + 1), st)
        self.assertGone(self.p(rec_victim))
        self.assertErrno(errno.ENOENT, os.open, self.p(rec_victim), os.O_RDONLY)
        listed = set(os.listdir(m.mnt)) - {pay_victim}
        self.assertEqual(listed, set(others), "a damaged record came back under a wrong name?")
        self.assertNeverServed(self.p(pay_victim))
        for n in others:
            self.assertBytes(self.p(n), n, sizes[n])
        st = m.status()
        self.assertEqual(st["blocks"], len(others), st)
        # both names are free again
        for n in (rec_victim, pay_victim):
            kvc.write_block(self.p(n), b"fresh " + n.encode())
            self.assertEqual(kvc.read_block(self.p(n)), b"fresh " + n.encode())
        # and the damage is not found again at the next start
        m.restart()
        self.assertRecovered(m.status(), len(others) + 2)

    def test_corrupted_payload_on_ssd(self):
        m = self.mount(*POOL16, ssd="64M")
        names = ["b%02d" % i for i in range(24)]
        for n in names:
            kvc.write_block(self.p(n), det_bytes(n, MiB))
        self.settled(lambda s: s["demotions"] > 0)
        self.assertTrue(wait_until(lambda: all(kvc.tier(self.p(n)) == "ssd" for n in names[:3]),
                                   timeout=10), "the oldest blocks were not demoted")
        victim = names[0]
        m.shutdown()
        self.assertTrue(os.path.exists(self.ssd), "the SSD file went away at unmount")
        pattern = det_bytes(victim, MiB)[500000:500064]
        offs = flip_all(self.ssd, pattern, 32)
        self.assertGreaterEqual(len(offs), 1, "the block's bytes are nowhere in the SSD file")
        m.restart()
        st = m.status()
        self.assertIn(st["recovered"], (23, 24), st)
        self.assertEqual(kvc.tier(self.p(names[1])), "ssd")
        self.assertNeverServed(self.p(victim))
        # the other SSD blocks and the DRAM ones are intact
        for n in names[1:]:
            self.assertBytes(self.p(n), n, MiB)
        self.assertEqual(sorted(os.listdir(m.mnt)), names[1:])
        self.assertEqual(m.status()["blocks"], 23)


# --------------------------------------------------------------------------------------------

class Many(RestartCase):
    # fewer in the sanitizer build, where every request is several times slower
    N = 20000 if kvc.SANITIZE else 100000
    WRITERS = 4
    SIZE = 1 * KiB

    def test_100k_blocks(self):
        m = self.mount("--pool-size", "1G")
        dirs = [self.p("d%d" % i) for i in range(self.WRITERS)]
        for d in dirs:
            os.mkdir(d)
        per = self.N // self.WRITERS
        t0 = time.monotonic()
        ws = [kvc.BlockWriter(d, "r%d" % i, per, self.SIZE, self.SIZE, fsync=False)
              for i, d in enumerate(dirs)]
        for w in ws:
            self.addCleanup(w.kill)
        written = [w.finish(timeout=150) for w in ws]
        t_write = time.monotonic() - t0
        for w, names in zip(ws, written):
            self.assertEqual(w.returncode, 0, w.stderr)
            self.assertEqual(len(names), per)
        self.assertTrue(wait_until(lambda: m.status()["blocks"] == per * self.WRITERS,
                                   timeout=10), m.status())
        t0 = time.monotonic()
        m.restart()
        t_restart = time.monotonic() - t0
        st = m.status()
        self.assertRecovered(st, per * self.WRITERS)
        t0 = time.monotonic()
        for d, names in zip(dirs, written):
            listed = os.listdir(d)
            self.assertEqual(len(listed), per)
            self.assertEqual(set(listed), set(names))
        t_list = time.monotonic() - t0
        rng = random.Random(per)
        for d, names in zip(dirs, written):
            for n in rng.sample(names, 200):
                self.assertBytes(os.path.join(d, n), n, self.SIZE)
        sys.stderr.write("\n%d blocks: written in %.1f s, restart %.1f s (recovery %.1f ms), "
                         "listed in %.1f s\n" % (per * self.WRITERS, t_write, t_restart,
                                                 st["recovery_ns"] / 1e6, t_list))


if __name__ == "__main__":
    kvc.main()
