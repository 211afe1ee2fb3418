#!/usr/bin/env python3
"""The SSD tier (--ssd): blocks evicted from a full DRAM pool are demoted to SSD, not dropped,
and read back byte-exact; opening one promotes it to DRAM (its tier xattr says "dram" again);
a full SSD drops its least recently used copies (ENOENT, never a write error, never wrong
bytes); statfs counts the SSD capacity; rename and unlink of an SSD-resident block; the side
channel (kvcachectl lookup, kvc_get through libkvcache) sees SSD blocks and a pin promotes;
start-up refusals: a filesystem without O_DIRECT (ramfs), tmpfs (memory, though it may take
O_DIRECT), a new file without a size, a formatted file given another size, and malformed
--ssd / --ssd-queue-depth / --demote-above values; demotion ahead of eviction
(--demote-above), and only at eviction (--demote-above 100).

One mount per test (each needs its pool in a known state): a 16 MiB DRAM pool with watermarks
90/50 and an SSD file in a temporary directory on a disk filesystem (kvc.disk_tempdir). Block
contents are derived from their names (kvc.det_bytes)."""

import ctypes
import errno
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import kvc

kvc.reexec_for_libkvcache()  # in the sanitizer build: preload the runtimes, then come back

from kvc import MiB, Mount, det_bytes, wait_until  # noqa: E402

POOL = ("--pool-size", "16M", "--evict-high", "90", "--evict-low", "50")

def setUpModule():
    kvc.require_environment()


def content(name, size=MiB):
    return det_bytes(name, size)


class TierCase(kvc.TestCase):
    """A test with its own mount: DRAM pool POOL, one SSD file ssd.img in a disk temp dir."""

    def mount(self, ssd_size="64M", pool=POOL, extra=()):
        self.dir = kvc.disk_tempdir(self)
        self.ssd = os.path.join(self.dir, "ssd.img")
        self.m = Mount.for_test(self, *(tuple(pool) + ("--ssd", "%s:%s" % (self.ssd, ssd_size))
                                        + tuple(extra)))
        st = self.m.status()
        self.cap = st["capacity"]
        self.assertEqual(st["ssd_devices"], 1, st)
        self.assertGreater(st["ssd_capacity"], 0, st)
        return self.m

    def p(self, *parts):
        return self.m.path(*parts)

    def fill(self, n, prefix="b", size=MiB):
        """Write n blocks prefix00.. of size bytes (no error allowed); return their names."""
        names = ["%s%02d" % (prefix, i) for i in range(n)]
        for name in names:
            kvc.write_block(self.p(name), content(name, size))
        return names

    def settled(self, pred=None, timeout=10):
        return self.assertSettled(self.m, self.cap, pred, timeout)

    def assertContent(self, name, size=MiB):
        got = kvc.read_block(self.p(name))
        self.assertEqual(len(got), size, "%s: %d bytes read, %d written" % (name, len(got), size))
        self.assertTrue(got == content(name, size), "%s: the bytes read back differ" % name)

    def wait_tier(self, name, want, timeout=10):
        ok = wait_until(lambda: kvc.tier(self.p(name)) == want, timeout=timeout, interval=0.1)
        self.assertTrue(ok, "%s: tier %r, expected %r" % (name, kvc.tier(self.p(name)), want))

    def ssd_names(self, names):
        return [n for n in names if kvc.tier(self.p(n)) == "ssd"]


class Demotion(TierCase):
    def test_full_pool_demotes_oldest_to_ssd(self):
        self.mount()
        names = self.fill(32)  # 32 MiB into a 16 MiB pool; the 64 MiB SSD takes the rest
        st = self.settled(lambda s: s["demotions"] > 0)
        for n in names[:4]:
            self.wait_tier(n, "ssd")
        self.assertEqual(kvc.tier(self.p(names[-1])), "dram", "the newest block left DRAM")
        st = self.m.status()
        # nothing was dropped: every block is listed, counted, and on one of the tiers
        self.assertEqual(st["blocks"], 32, st)
        self.assertEqual(sorted(os.listdir(self.m.mnt)), names)
        self.assertGreater(st["demotions"], 0, st)
        self.assertGreater(st["ssd_blocks"], 0, st)
        self.assertGreater(st["ssd_used"], 0, st)
        self.assertLessEqual(st["ssd_used"], st["ssd_capacity"], st)
        self.assertEqual(st["ssd_evictions"], 0, st)
        self.assertGreaterEqual(st["evictions"], st["demotions"], st)
        tiers = {n: kvc.tier(self.p(n)) for n in names}
        self.assertEqual(set(tiers.values()) - {"dram", "ssd"}, set(), tiers)
        ssd = [n for n, t in tiers.items() if t == "ssd"]
        # no block was read yet: none is on both tiers
        self.assertEqual(st["ssd_blocks"], len(ssd), (st, tiers))
        self.assertEqual(st["dram_blocks"], 32 - len(ssd), (st, tiers))
        # demotion follows LRU: once a block is in DRAM, every later one is too
        order = [tiers[n] == "dram" for n in names]
        first = order.index(True)
        self.assertTrue(all(order[first:]), "demotion was not in LRU order: %s" % tiers)
        # stat is unchanged by the move
        for n in ssd:
            s = os.stat(self.p(n))
            self.assertEqual(s.st_size, MiB)
            self.assertEqual(kvc.xattr(self.p(n), "state"), b"sealed")
        # and every block reads back byte-exact, from either tier
        for n in names:
            self.assertContent(n)

    def test_read_promotes_to_dram(self):
        self.mount()
        names = self.fill(32)
        self.settled(lambda s: s["demotions"] > 0)
        self.wait_tier(names[0], "ssd")
        before = self.m.status()
        self.assertEqual(before["promotions"], 0, before)
        self.assertContent(names[0])
        self.assertEqual(kvc.tier(self.p(names[0])), "dram")
        st = self.m.status()
        self.assertGreater(st["promotions"], 0, st)
        self.assertEqual(st["blocks"], 32, st)
        # the SSD copy stays: the block is counted on SSD still, nothing was dropped there
        self.assertGreaterEqual(st["ssd_blocks"], before["ssd_blocks"], (before, st))
        self.assertEqual(st["ssd_evictions"], 0, st)
        # an open descriptor reads the promoted bytes; the block stays in DRAM while open
        fd = os.open(self.p(names[1]), os.O_RDONLY)
        try:
            self.assertEqual(kvc.tier(self.p(names[1])), "dram")
            self.assertTrue(os.pread(fd, MiB + 1, 0) == content(names[1]))
        finally:
            os.close(fd)
        # reading every block promotes each in turn and demotes others: all stay exact
        for _ in range(2):
            for n in names:
                self.assertContent(n)
        st = self.settled()
        self.assertEqual(st["blocks"], 32, st)
        self.assertGreater(st["promotions"], 2, st)

    def test_ssd_full_drops_least_recently_used(self):
        self.mount(ssd_size="16M", pool=("--pool-size", "8M", "--evict-high", "90",
                                         "--evict-low", "50"))
        # 64 MiB into 8 MiB of DRAM and 16 MiB of SSD: no write may fail
        names = self.fill(64)
        st = self.settled(lambda s: s["ssd_evictions"] > 0)
        self.assertGreater(st["demotions"], 0, st)
        self.assertLessEqual(st["ssd_used"], st["ssd_capacity"], st)
        # the oldest are gone, from stat and open
        for n in names[:8]:
            self.assertGone(self.p(n))
            self.assertErrno(errno.ENOENT, os.open, self.p(n), os.O_RDONLY)
        # the newest are there; whatever survived is intact, and listed
        for n in names[-3:]:
            self.assertContent(n)
        survivors = [n for n in names if kvc.exists(self.p(n))]
        self.assertLess(len(survivors), 24 + 1, survivors)
        self.assertGreater(len(survivors), 4, survivors)
        self.assertTrue(wait_until(lambda: sorted(os.listdir(self.m.mnt)) == survivors,
                                   timeout=3),
                        "readdir %s != surviving %s" % (sorted(os.listdir(self.m.mnt)),
                                                       survivors))
        # dropping follows LRU: once a block survived, every later one did
        alive = [n in survivors for n in names]
        self.assertTrue(all(alive[alive.index(True):]), "not dropped in LRU order: %s" % alive)
        st = self.m.status()
        self.assertEqual(st["blocks"], len(survivors), st)
        self.assertGreaterEqual(st["evictions"], 64 - len(survivors), st)
        # reading promotes, which demotes others, which drops more from the full SSD: a
        # survivor may be gone by the time it is read, but never reads wrong
        read = 0
        for n in survivors:
            try:
                got = kvc.read_block(self.p(n))
            except FileNotFoundError:
                continue
            self.assertTrue(got == content(n), "%s: the bytes read back differ" % n)
            read += 1
        self.assertGreater(read, 4)
        # a dropped name can be written again
        kvc.write_block(self.p(names[0]), b"again")
        self.assertEqual(kvc.read_block(self.p(names[0])), b"again")

    def test_demotion_ahead_of_eviction(self):
        # 16 MiB of DRAM: blocks with no SSD copy may fill 25% of it (4 MiB) before the
        # oldest are written to SSD, keeping their DRAM copy; eviction starts at 90%
        self.mount(pool=("--pool-size", "16M", "--evict-high", "90", "--evict-low", "80",
                         "--demote-above", "25"))
        names = self.fill(8)  # 8 MiB: about half the pool, below the high mark
        st = self.settled(lambda s: s["demotions"] >= 3)
        self.assertEqual(st["evictions"], 0, st)
        self.assertEqual(st["dram_blocks"], 8, st)
        self.assertEqual(st["ssd_blocks"], st["demotions"], st)
        self.assertLessEqual(st["demotions"], 5, st)  # the newest stay DRAM-only
        for n in names:  # a DRAM copy, maybe an SSD one too: "dram"
            self.assertEqual(kvc.tier(self.p(n)), "dram", n)
        # the oldest went first
        on_ssd = st["ssd_blocks"]
        # past the high mark, eviction drops those DRAM copies first, without writing
        more = self.fill(8, prefix="c")
        st = self.settled(lambda s: s["evictions"] > 0)
        self.assertEqual(st["blocks"], 16, st)
        self.assertEqual(st["ssd_evictions"], 0, st)
        gone = self.ssd_names(names + more)
        self.assertGreater(len(gone), 0, st)
        self.assertEqual(gone, names[:len(gone)], "not evicted oldest first")
        self.assertGreaterEqual(on_ssd, 1)
        for n in names + more:  # every block reads back byte-exact, from either tier
            self.assertContent(n)

    def test_demotion_ahead_never_churns_a_small_ssd(self):
        # an SSD smaller than what DRAM would write ahead: once it is full of copies of
        # blocks still in DRAM, writing ahead stops (it never drops those copies to make
        # room for others, which would rewrite them again and again)
        self.mount(ssd_size="8M", pool=("--pool-size", "16M", "--evict-high", "90",
                                        "--evict-low", "80", "--demote-above", "10"))
        names = self.fill(12)
        st = self.settled(lambda s: s["demotions"] > 0)
        time.sleep(2.5)  # past the retry delay of a refused batch (1 s)
        again = self.settled()
        self.assertEqual(again["demotions"], st["demotions"], (st, again))
        self.assertEqual(again["ssd_evictions"], 0, again)
        self.assertEqual(again["evictions"], 0, again)
        self.assertEqual(again["dram_blocks"], 12, again)
        self.assertLess(again["demotions"], 12, again)
        # eviction still makes room, and nothing written is lost
        more = self.fill(6, prefix="c")
        st = self.settled(lambda s: s["evictions"] > 0)
        self.assertGreater(st["blocks"], 0, st)
        for n in names + more:
            if kvc.exists(self.p(n)):
                self.assertContent(n)

    def test_demote_above_100_demotes_only_at_eviction(self):
        self.mount(pool=("--pool-size", "16M", "--evict-high", "90", "--evict-low", "80",
                         "--demote-above", "100"))
        names = self.fill(8)
        time.sleep(0.5)
        st = self.settled()
        self.assertEqual(st["demotions"], 0, st)
        self.assertEqual(st["ssd_blocks"], 0, st)
        self.fill(8, prefix="c")  # 16 MiB: past the high mark
        st = self.settled(lambda s: s["demotions"] > 0)
        self.assertEqual(st["blocks"], 16, st)
        self.assertEqual(kvc.tier(self.p(names[0])), "ssd")
        self.assertContent(names[0])

    def test_statfs_counts_ssd(self):
        with Mount(*POOL) as plain:
            without = os.statvfs(plain.mnt)
        self.mount()
        st = self.m.status()
        ssd_cap = st["ssd_capacity"]
        self.assertLessEqual(ssd_cap, 64 * MiB, st)
        self.assertGreater(ssd_cap, 60 * MiB, st)
        with_ssd = os.statvfs(self.m.mnt)
        total = lambda v: v.f_blocks * v.f_frsize  # noqa: E731
        free = lambda v: v.f_bfree * v.f_frsize  # noqa: E731
        grown = total(with_ssd) - total(without)
        self.assertLessEqual(abs(grown - ssd_cap), with_ssd.f_frsize,
                             "statfs total grew by %d, the SSD holds %d" % (grown, ssd_cap))
        self.assertGreater(free(with_ssd), free(without) + 60 * MiB)
        # blocks on SSD use space too: free goes down as they are demoted
        self.fill(24)
        self.settled(lambda s: s["demotions"] > 0)
        after = os.statvfs(self.m.mnt)
        self.assertLess(free(after), free(with_ssd) - 20 * MiB)
        self.assertEqual(total(after), total(with_ssd))


class RenameUnlink(TierCase):
    def test_unlink_ssd_block_frees_ssd_space(self):
        self.mount()
        names = self.fill(32)
        self.settled(lambda s: s["demotions"] > 0)
        self.wait_tier(names[0], "ssd")
        time.sleep(0.3)  # let a demotion pass that may still be running finish
        before = self.m.status()
        victim = names[0]
        os.unlink(self.p(victim))
        self.assertGone(self.p(victim))
        self.assertErrno(errno.ENOENT, os.open, self.p(victim), os.O_RDONLY)
        self.assertNotIn(victim, os.listdir(self.m.mnt))
        ok = wait_until(lambda: self.m.status()["ssd_used"] <= before["ssd_used"] - MiB,
                        timeout=5)
        st = self.m.status()
        self.assertTrue(ok, "ssd_used %d -> %d after unlinking a 1 MiB SSD block"
                        % (before["ssd_used"], st["ssd_used"]))
        self.assertEqual(st["ssd_blocks"], before["ssd_blocks"] - 1, (before, st))
        self.assertEqual(st["blocks"], 31, st)
        # the others are untouched, and the name is free again
        for n in names[1:4]:
            self.assertContent(n)
        kvc.write_block(self.p(victim), b"new")
        self.assertEqual(kvc.read_block(self.p(victim)), b"new")

    def test_rename_ssd_block_keeps_content(self):
        self.mount()
        names = self.fill(32)
        self.settled(lambda s: s["demotions"] > 0)
        for n in names[:3]:
            self.wait_tier(n, "ssd")
        os.mkdir(self.p("sub"))
        # rename within the directory, into another one, and over an existing SSD block
        os.rename(self.p(names[0]), self.p("renamed"))
        os.rename(self.p(names[1]), self.p("sub", "moved"))
        os.rename(self.p(names[2]), self.p(names[3]))
        for n in names[:3]:
            self.assertGone(self.p(n))
        self.assertEqual(os.stat(self.p("renamed")).st_size, MiB)
        self.assertIn(kvc.tier(self.p("renamed")), ("ssd", "dram"))
        self.assertEqual(self.m.status()["blocks"], 31)
        self.assertTrue(kvc.read_block(self.p("renamed")) == content(names[0]))
        self.assertTrue(kvc.read_block(self.p("sub", "moved")) == content(names[1]))
        self.assertTrue(kvc.read_block(self.p(names[3])) == content(names[2]))
        self.assertEqual(sorted(os.listdir(self.p("sub"))), ["moved"])
        for n in names[4:8]:
            self.assertContent(n)
        # the replaced block's SSD copy is not leaked: unlink everything, SSD empties
        for root, dirs, files in os.walk(self.m.mnt):
            for f in files:
                os.unlink(os.path.join(root, f))
        ok = wait_until(lambda: self.m.status()["ssd_blocks"] == 0, timeout=5)
        st = self.m.status()
        self.assertTrue(ok, st)
        self.assertEqual(st["ssd_used"], 0, st)
        self.assertEqual(st["blocks"], 0, st)


class SideChannel(TierCase):
    def test_lookup_counts_ssd_blocks(self):
        self.mount()
        names = self.fill(32)
        self.settled(lambda s: s["demotions"] > 0)
        self.wait_tier(names[0], "ssd")
        r = kvc.run_ctl("lookup", self.m.mnt, *names)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "32", "an SSD block is not a cached block?")
        self.assertContent(names[0])

    def test_pin_promotes_ssd_block(self):
        kvc.require_libkvcache()
        lib = ctypes.CDLL(kvc.LIBKVCACHE, use_errno=True)
        vp = ctypes.c_void_p

        class KvcBlock(ctypes.Structure):  # struct kvc_block (fs/uapi/kvcache.h)
            _fields_ = [("data", vp), ("len", ctypes.c_size_t), ("generation", ctypes.c_uint64),
                        ("checksum", ctypes.c_uint64), ("pin", ctypes.c_uint64),
                        ("dir", vp)]
        lib.kvc_open.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.POINTER(vp)]
        lib.kvc_close.argtypes = [vp]
        lib.kvc_close.restype = None
        lib.kvc_dir_open.argtypes = [vp, ctypes.c_char_p, ctypes.POINTER(vp)]
        lib.kvc_dir_close.argtypes = [vp]
        lib.kvc_dir_close.restype = None
        lib.kvc_get.argtypes = [vp, ctypes.c_char_p, ctypes.POINTER(KvcBlock)]
        lib.kvc_release.argtypes = [ctypes.POINTER(KvcBlock)]

        self.mount()
        names = self.fill(32)
        self.settled(lambda s: s["demotions"] > 0)
        self.wait_tier(names[0], "ssd")
        k, d = vp(), vp()
        self.assertEqual(lib.kvc_open(self.m.mnt.encode(), 0, ctypes.byref(k)), 0)
        self.addCleanup(lib.kvc_close, k)  # runs after the kvc_dir_close below
        self.assertEqual(lib.kvc_dir_open(k, b".", ctypes.byref(d)), 0)
        self.addCleanup(lambda: d.value and lib.kvc_dir_close(d))
        b = KvcBlock()
        rc = lib.kvc_get(d, names[0].encode(), ctypes.byref(b))
        self.assertEqual(rc, 0, "kvc_get of an SSD block: %d (%s)" % (
            rc, kvc.errname(-rc) if rc < 0 else ""))
        try:
            self.assertEqual(b.len, MiB)
            self.assertTrue(ctypes.string_at(b.data, b.len) == content(names[0]),
                            "the pinned bytes of a promoted block differ")
            self.assertEqual(kvc.tier(self.p(names[0])), "dram")
            st = self.m.status()
            self.assertGreater(st["promotions"], 0, st)
            self.assertGreaterEqual(st["pinned"], 1, st)
            # a pinned block is never demoted: push everything else out
            self.fill(24, prefix="c")
            self.settled()
            self.assertEqual(kvc.tier(self.p(names[0])), "dram")
            self.assertTrue(ctypes.string_at(b.data, b.len) == content(names[0]))
        finally:
            self.assertEqual(lib.kvc_release(ctypes.byref(b)), 0)
        lib.kvc_dir_close(d)
        d.value = None
        self.assertContent(names[0])


class Refused(kvc.TestCase):
    """The daemon refuses to start: non-zero exit, one line on stderr starting with
    "kvcachefs: ", nothing mounted, no daemon left, no pool object left."""

    def setUp(self):
        self.mnt = os.path.realpath(tempfile.mkdtemp(prefix="kvc-itest-tiers-"))
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        if kvc.is_mounted(self.mnt):
            kvc.unmount(self.mnt)
        pid = kvc.find_daemon(self.mnt)
        if pid:
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not kvc.pid_alive(pid), timeout=5)
            kvc.lazy_unmount(self.mnt)
        for n in kvc.shm_leftovers(self.mnt):
            kvc.remove_regular_file(os.path.join("/dev/shm", n))
        shutil.rmtree(self.mnt, ignore_errors=True)

    def check_refused(self, args, mnt=None):
        mnt = self.mnt if mnt is None else mnt
        r, san = kvc.run_daemon(list(args) + [mnt], timeout=60)
        err = r.stderr.decode(errors="replace")
        self.assertNotEqual(r.returncode, 0, "kvcachefs %s succeeded; stderr: %s" % (
            " ".join(args), err))
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, "expected exactly one line on stderr, got: %r" % err)
        self.assertTrue(lines[0].startswith("kvcachefs: "),
                        "the error must start with 'kvcachefs: ': %r" % lines[0])
        self.assertFalse(kvc.is_mounted(mnt), "%s is mounted after a failed start" % mnt)
        self.assertIsNone(kvc.find_daemon(mnt), "a daemon is left running")
        self.assertEqual(kvc.shm_leftovers(mnt), [], "pool object left in /dev/shm")
        self.assertEqual(san, [], "sanitizer report:\n" + "\n".join(san))
        return lines[0]

    def ramfs_dir(self):
        d = tempfile.mkdtemp(prefix="kvc-itest-ramfs-")
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        r = subprocess.run(["mount", "-t", "ramfs", "kvc-itest-ramfs", d],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            raise unittest.SkipTest("cannot mount a ramfs (%s): the O_DIRECT refusal needs "
                                    "a filesystem without it" % r.stderr.strip())
        self.addCleanup(subprocess.run, ["umount", "-l", d], stdin=subprocess.DEVNULL,
                        capture_output=True)
        self.assertFalse(kvc.odirect_ok(d), "this ramfs accepts O_DIRECT")
        return d

    def test_no_odirect_refused(self):
        d = self.ramfs_dir()
        line = self.check_refused(["--pool-size", "16M", "--ssd",
                                   os.path.join(d, "ssd.img") + ":16M"])
        self.assertIn("O_DIRECT", line)

    def test_tmpfs_refused(self):
        # tmpfs takes O_DIRECT on recent kernels, but it is memory: refused all the same
        f = os.path.join("/dev/shm", "kvc-itest-ssd-%d.img" % os.getpid())
        self.addCleanup(lambda: os.path.exists(f) and os.unlink(f))
        line = self.check_refused(["--pool-size", "16M", "--ssd", f + ":16M"])
        self.assertIn("tmpfs", line)
        self.assertIn("O_DIRECT", line)
        self.assertFalse(os.path.exists(f), "the daemon left the SSD file it created")

    def test_new_file_needs_size(self):
        d = kvc.disk_tempdir(self)
        f = os.path.join(d, "new.img")
        self.check_refused(["--pool-size", "16M", "--ssd", f])
        self.assertFalse(os.path.exists(f), "the daemon created an SSD file it refused")

    def test_formatted_file_other_size_refused(self):
        d = kvc.disk_tempdir(self)
        f = os.path.join(d, "ssd.img")
        m = Mount.for_test(self, "--pool-size", "16M", "--ssd", f + ":16M")
        self.assertEqual(os.path.getsize(f), 16 * MiB)
        kvc.write_block(m.path("a"), b"a" * 5000)
        m.shutdown()
        # the same file with another size: refused, the file untouched
        r = m.try_restart(args=["--pool-size", "16M", "--ssd", f + ":32M"])
        err = r.stderr.strip()
        self.assertNotEqual(r.returncode, 0, "a formatted SSD file was given another size")
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("kvcachefs: "), err)
        self.assertFalse(kvc.is_mounted(m.mnt))
        self.assertIsNone(kvc.find_daemon(m.mnt))
        self.assertEqual(os.path.getsize(f), 16 * MiB)
        # without a size, or with its own, a formatted file is taken as it is
        m.restart(args=["--pool-size", "16M", "--ssd", f])
        self.assertEqual(m.status()["ssd_devices"], 1)
        self.assertEqual(kvc.read_block(m.path("a")), b"a" * 5000)
        self.assertLessEqual(m.status()["ssd_capacity"], 16 * MiB)
        m.restart(args=["--pool-size", "16M", "--ssd", f + ":16M"])
        self.assertEqual(m.status()["ssd_devices"], 1)

    def test_malformed_ssd_options(self):
        d = kvc.disk_tempdir(self)
        f = os.path.join(d, "x.img")
        for args in (["--ssd", f + ":"],                          # a ':' but no size
                     ["--ssd", f + ":16M", "--ssd", f + ":16M"],  # the same path twice
                     ["--ssd", f + ":16M", "--ssd", f],
                     ["--ssd-queue-depth", "0", "--ssd", f + ":16M"],
                     ["--ssd-queue-depth", "4097", "--ssd", f + ":16M"],
                     ["--ssd-queue-depth", "many", "--ssd", f + ":16M"],
                     ["--demote-above", "0", "--ssd", f + ":16M"],
                     ["--demote-above", "101", "--ssd", f + ":16M"],
                     ["--demote-above", "half", "--ssd", f + ":16M"],
                     # more than KVC_MAX_SSD (8) devices
                     sum((["--ssd", "%s%d:1M" % (f, i)] for i in range(9)), [])):
            with self.subTest(args=args):
                self.check_refused(["--pool-size", "16M"] + args)
        self.assertEqual(os.listdir(d), [], "a refused start left SSD files")


if __name__ == "__main__":
    kvc.main()
