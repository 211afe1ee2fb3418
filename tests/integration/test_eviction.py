#!/usr/bin/env python3
"""Eviction (LRU between watermarks), open blocks never evicted, ENOSPC. One mount per test:
each test needs a pool in a known state."""

import errno
import os

import kvc
from kvc import KiB, MiB, Mount, wait_until

POOL = ("--pool-size", "16M", "--evict-high", "90", "--evict-low", "50")


def setUpModule():
    kvc.require_environment()


class Eviction(kvc.TestCase):
    def mount(self, *extra):
        self.m = Mount.for_test(self, *(POOL + extra))
        self.cap = self.m.status()["capacity"]
        self.assertGreater(self.cap, 14 * MiB)
        self.assertLessEqual(self.cap, 16 * MiB)
        return self.m

    def p(self, name):
        return self.m.path(name)

    def settled(self):
        """Wait until the evictor brought usage to at most the high watermark."""
        ok = wait_until(lambda: self.m.status()["used"] <= 0.90 * self.cap, timeout=5)
        st = self.m.status()
        self.assertTrue(ok, "used %d > 90%% of capacity %d" % (st["used"], self.cap))
        return st

    def test_fill_evicts_oldest(self):
        self.mount()
        data = {}
        for i in range(24):
            data[i] = os.urandom(MiB)
            kvc.write_block(self.p("b%02d" % i), data[i])
        st = self.settled()
        self.assertGreater(st["evictions"], 0)
        # the earliest blocks are gone, from stat and open (no stale kernel caches)
        for i in range(4):
            self.assertGone(self.p("b%02d" % i))
            self.assertErrno(errno.ENOENT, os.open, self.p("b%02d" % i), os.O_RDONLY)
        # the newest read back byte-exact
        for i in (21, 22, 23):
            self.assertTrue(kvc.read_block(self.p("b%02d" % i)) == data[i], "b%02d differs" % i)
        # whatever survived is intact, and readdir agrees with stat
        survivors = {"b%02d" % i for i in range(24) if kvc.exists(self.p("b%02d" % i))}
        self.assertLessEqual(len(survivors), 14)
        for n in survivors:
            self.assertTrue(kvc.read_block(self.p(n)) == data[int(n[1:])], "%s differs" % n)
        self.assertTrue(wait_until(lambda: set(os.listdir(self.m.mnt)) == survivors, timeout=3),
                        "readdir %s != surviving %s" % (sorted(os.listdir(self.m.mnt)),
                                                       sorted(survivors)))
        st = self.m.status()
        self.assertEqual(st["blocks"], len(survivors))
        self.assertGreaterEqual(st["evictions"], 24 - len(survivors))
        self.assertLessEqual(st["used"], 0.90 * st["capacity"])
        # an evicted name can be written again, and shows the new bytes
        new = os.urandom(3000)
        kvc.write_block(self.p("b00"), new)
        self.assertEqual(kvc.read_block(self.p("b00")), new)
        self.assertEqual(os.stat(self.p("b00")).st_size, 3000)

    def test_lru_recently_read_block_survives(self):
        self.mount()
        a = os.urandom(MiB)
        b = os.urandom(MiB)
        kvc.write_block(self.p("A"), a)
        kvc.write_block(self.p("B"), b)
        # keep A hot: read it after every new block, until something is evicted
        for i in range(40):
            kvc.write_block(self.p("X%02d" % i), os.urandom(MiB))
            self.assertEqual(kvc.read_block(self.p("A")), a)
            if self.m.status()["evictions"] > 0:
                break
        else:
            self.fail("nothing was evicted after writing 40 MiB into a 16 MiB pool")
        self.settled()
        # B (never read, oldest) went first; A (read recently) is still there
        self.assertGone(self.p("B"))
        self.assertTrue(kvc.exists(self.p("A")), "the recently read block was evicted")
        self.assertEqual(kvc.read_block(self.p("A")), a)
        # X00 was written right after B and never read: it is older than A too
        self.assertGone(self.p("X00"))

    def test_lru_order_without_reads(self):
        # plain LRU: with no reads, eviction removes blocks in the order they were written
        self.mount()
        n = 0
        while self.m.status()["evictions"] == 0 and n < 40:
            kvc.write_block(self.p("o%02d" % n), os.urandom(MiB))
            n += 1
        self.settled()
        alive = [kvc.exists(self.p("o%02d" % i)) for i in range(n)]
        # once a block survived, every later one survived too
        first = alive.index(True)
        self.assertTrue(all(alive[first:]), "eviction was not in LRU order: %s" % alive)
        self.assertGreater(first, 0)

    def test_open_block_never_evicted(self):
        self.mount()
        pinned = os.urandom(MiB)
        kvc.write_block(self.p("pinned"), pinned)
        fd = os.open(self.p("pinned"), os.O_RDONLY)
        try:
            self.assertEqual(kvc.xattr(self.p("pinned"), "refs"), b"1")
            for i in range(24):
                kvc.write_block(self.p("f%02d" % i), os.urandom(MiB))
            self.settled()
            self.assertGreater(self.m.status()["evictions"], 0)
            # the oldest block, but open: neither its name nor its bytes went away
            self.assertTrue(kvc.exists(self.p("pinned")), "an open block was evicted")
            self.assertIn("pinned", os.listdir(self.m.mnt))
            got = os.pread(fd, MiB, 0)
            self.assertTrue(got == pinned, "the open block's bytes changed")
            self.assertEqual(kvc.read_block(self.p("pinned")), pinned)
            self.assertGone(self.p("f00"))
        finally:
            os.close(fd)

    def test_block_being_written_never_evicted(self):
        self.mount()
        fd = os.open(self.p("slow"), os.O_WRONLY | os.O_CREAT, 0o644)
        first = os.urandom(MiB)
        try:
            kvc.write_all(fd, first)
            for i in range(20):
                kvc.write_block(self.p("g%02d" % i), os.urandom(MiB))
            self.settled()
            self.assertGreater(self.m.status()["evictions"], 0)
            self.assertEqual(kvc.xattr(self.p("slow"), "state"), b"writing")
            kvc.write_all(fd, b"end")
        finally:
            os.close(fd)
        self.assertEqual(kvc.read_block(self.p("slow")), first + b"end")

    def test_enospc_with_every_block_open(self):
        # No background eviction: between a writer's close() and the test's open(), a block
        # just sealed is the only one the evictor may take, and it would (the pool is above
        # the high watermark), so the pool would never fill with open blocks.
        self.mount("--evict-high", "100", "--evict-low", "99")
        readers = []
        failed = None
        try:
            for i in range(40):
                path = self.p("h%02d" % i)
                data = os.urandom(MiB)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    kvc.write_all(fd, data)
                except OSError as e:
                    self.assertEqual(e.errno, errno.ENOSPC,
                                     "write into a full pool: %s, expected ENOSPC" % e)
                    failed = i
                    try:
                        os.close(fd)
                    except OSError as e2:
                        self.assertEqual(e2.errno, errno.ENOSPC, e2)
                    break
                os.close(fd)
                readers.append((os.open(path, os.O_RDONLY), data))
            self.assertIsNotNone(failed, "40 MiB of open blocks fit in a 16 MiB pool")
            self.assertGreaterEqual(failed, 12, "ENOSPC with only %d MiB stored" % failed)
            bad = self.p("h%02d" % failed)
            # the refused block is discarded, nothing else is touched
            self.assertGone(bad)
            self.assertNotIn("h%02d" % failed, os.listdir(self.m.mnt))
            for fd, data in readers:
                self.assertTrue(os.pread(fd, MiB + 1, 0) == data, "an open block changed")
            st = self.m.status()
            self.assertEqual(st["blocks"], failed)
            if "enospc" in st:
                self.assertGreater(st["enospc"], 0)
            if "writing" in st:
                self.assertEqual(st["writing"], 0)
        finally:
            for fd, _ in readers:
                os.close(fd)
        # the filesystem keeps working: a small block, and the refused name again
        kvc.write_block(self.p("small"), b"still works")
        self.assertEqual(kvc.read_block(self.p("small")), b"still works")
        again = os.urandom(MiB)
        kvc.write_block(bad, again)
        self.assertEqual(kvc.read_block(bad), again)
        # blocks that survived eviction are intact
        for i in range(failed):
            path = self.p("h%02d" % i)
            if kvc.exists(path):
                self.assertTrue(kvc.read_block(path) == readers[i][1], path)

    def test_enospc_block_larger_than_pool(self):
        self.mount("--max-block-size", "64M")
        keep = os.urandom(MiB)
        kvc.write_block(self.p("keep"), keep)
        other = os.urandom(256 * KiB)
        kvc.write_block(self.p("other"), other)
        rfd = os.open(self.p("keep"), os.O_RDONLY)
        try:
            fd = os.open(self.p("huge"), os.O_WRONLY | os.O_CREAT, 0o644)
            written = 0
            err = None
            try:
                for _ in range(20):
                    kvc.write_all(fd, os.urandom(MiB))
                    written += MiB
            except OSError as e:
                err = e
            finally:
                try:
                    os.close(fd)
                except OSError as e2:
                    self.assertEqual(e2.errno, errno.ENOSPC, e2)
            self.assertIsNotNone(err, "a 20 MiB block was accepted by a 16 MiB pool")
            self.assertEqual(err.errno, errno.ENOSPC, err)
            self.assertLess(written, 16 * MiB)
            self.assertGone(self.p("huge"))
            self.assertNotIn("huge", os.listdir(self.m.mnt))
            # the open block is untouched
            self.assertTrue(os.pread(rfd, MiB, 0) == keep)
        finally:
            os.close(rfd)
        self.assertEqual(kvc.read_block(self.p("keep")), keep)
        if kvc.exists(self.p("other")):
            self.assertEqual(kvc.read_block(self.p("other")), other)
        # the space of the discarded block comes back
        self.assertTrue(wait_until(lambda: self.m.status()["used"] <= 2 * MiB, timeout=5),
                        "the discarded block's memory was not freed: %r" % self.m.status())
        small = os.urandom(10000)
        kvc.write_block(self.p("after"), small)
        self.assertEqual(kvc.read_block(self.p("after")), small)
        big = os.urandom(8 * MiB)
        kvc.write_block(self.p("after8M"), big)
        self.assertTrue(kvc.read_block(self.p("after8M")) == big)


if __name__ == "__main__":
    kvc.main()
