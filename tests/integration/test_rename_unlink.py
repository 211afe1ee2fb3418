#!/usr/bin/env python3
"""Publishing by rename (LMCache's write-temp + os.replace) and unlink semantics."""

import errno
import os

import kvc
from kvc import KiB, MiB, wait_until


def setUpModule():
    kvc.require_environment()


class Rename(kvc.DirTestCase):
    def test_publish_by_rename(self):
        data = os.urandom(200 * KiB)
        kvc.write_block(self.p("final.tmp"), data)
        os.rename(self.p("final.tmp"), self.p("final"))
        self.assertGone(self.p("final.tmp"))
        self.assertEqual(os.listdir(self.d), ["final"])
        self.assertEqual(kvc.read_block(self.p("final")), data)
        self.assertEqual(os.stat(self.p("final")).st_size, len(data))
        self.assertEqual(kvc.xattr(self.p("final"), "state"), b"sealed")

    def test_lmcache_os_replace(self):
        # LMCache fs connector: <key>.data written through <key>.data.tmp + os.replace
        key = "vllm@Qwen3-8B@1@0@" + "ab" * 16
        final = self.p(key + ".data")
        tmp = final + ".tmp"
        for version in range(3):
            data = os.urandom(64 * KiB + version)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, final)
            self.assertFalse(os.path.exists(tmp))
            with open(final, "rb") as f:
                self.assertEqual(f.read(), data)
        self.assertEqual(os.listdir(self.d), [key + ".data"])

    def test_replace_keeps_old_reader(self):
        old = os.urandom(2 * MiB + 5)
        new = os.urandom(MiB + 1)
        kvc.write_block(self.p("final"), old)
        fd = os.open(self.p("final"), os.O_RDONLY)
        try:
            first = os.read(fd, 4096)
            kvc.write_block(self.p("final.tmp"), new)
            os.replace(self.p("final.tmp"), self.p("final"))
            # new blocks may reuse freed memory: the old block's must not have been freed
            for i in range(3):
                kvc.write_block(self.p("filler%d" % i), os.urandom(len(old)))
            # a new open sees the new block
            self.assertEqual(kvc.read_block(self.p("final")), new)
            self.assertEqual(os.stat(self.p("final")).st_size, len(new))
            # the old reader keeps reading the old bytes, all of them
            rest = kvc.read_all(fd)
            self.assertTrue(first + rest == old, "the reader of the replaced block saw other "
                            "bytes (got %d bytes, expected %d)" % (len(first + rest), len(old)))
            self.assertEqual(os.pread(fd, 100, 0), old[:100])
            self.assertEqual(os.fstat(fd).st_size, len(old))
        finally:
            os.close(fd)
        self.assertEqual(kvc.read_block(self.p("final")), new)
        self.assertGone(self.p("final.tmp"))

    def test_replace_many_times(self):
        for i in range(20):
            data = ("version %d " % i).encode() * (i + 1)
            kvc.write_block(self.p("t"), data)
            os.rename(self.p("t"), self.p("f"))
            self.assertEqual(kvc.read_block(self.p("f")), data)
        self.assertEqual(os.listdir(self.d), ["f"])

    def test_rename_noreplace_onto_existing_eexist(self):
        kvc.write_block(self.p("a"), b"content of a")
        kvc.write_block(self.p("b"), b"content of b")
        self.assertErrno(errno.EEXIST, kvc.renameat2, self.p("a"), self.p("b"),
                         kvc.RENAME_NOREPLACE)
        self.assertEqual(kvc.read_block(self.p("a")), b"content of a")
        self.assertEqual(kvc.read_block(self.p("b")), b"content of b")
        self.assertEqual(sorted(os.listdir(self.d)), ["a", "b"])

    def test_rename_noreplace_onto_new_name(self):
        kvc.write_block(self.p("a"), b"content of a")
        kvc.renameat2(self.p("a"), self.p("c"), kvc.RENAME_NOREPLACE)
        self.assertGone(self.p("a"))
        self.assertEqual(kvc.read_block(self.p("c")), b"content of a")

    def test_rename_exchange_einval(self):
        kvc.write_block(self.p("a"), b"A")
        kvc.write_block(self.p("b"), b"B")
        self.assertErrno(errno.EINVAL, kvc.renameat2, self.p("a"), self.p("b"),
                         kvc.RENAME_EXCHANGE)
        self.assertEqual(kvc.read_block(self.p("a")), b"A")
        self.assertEqual(kvc.read_block(self.p("b")), b"B")

    def test_rename_to_other_directory(self):
        os.mkdir(self.p("x"))
        os.mkdir(self.p("y"))
        kvc.write_block(self.p("x", "blk"), b"moving")
        os.rename(self.p("x", "blk"), self.p("y", "blk2"))
        self.assertEqual(os.listdir(self.p("x")), [])
        self.assertEqual(os.listdir(self.p("y")), ["blk2"])
        self.assertEqual(kvc.read_block(self.p("y", "blk2")), b"moving")

    def test_rename_missing_source_enoent(self):
        self.assertErrno(errno.ENOENT, os.rename, self.p("nope"), self.p("other"))
        self.assertErrno(errno.ENOENT, kvc.renameat2, self.p("nope"), self.p("other"),
                         kvc.RENAME_NOREPLACE)

    def test_rename_onto_itself(self):
        kvc.write_block(self.p("same"), b"same")
        os.rename(self.p("same"), self.p("same"))
        self.assertEqual(kvc.read_block(self.p("same")), b"same")

    def test_rename_keeps_metadata(self):
        kvc.write_block(self.p("m.tmp"), b"x" * 1234)
        before = os.stat(self.p("m.tmp"))
        os.rename(self.p("m.tmp"), self.p("m"))
        after = os.stat(self.p("m"))
        self.assertEqual(after.st_size, 1234)
        self.assertEqual(after.st_mtime_ns, before.st_mtime_ns)


class Unlink(kvc.DirTestCase):
    def test_unlink_removes_name(self):
        kvc.write_block(self.p("u"), b"bye")
        os.unlink(self.p("u"))
        self.assertErrno(errno.ENOENT, os.stat, self.p("u"))
        self.assertEqual(os.listdir(self.d), [])
        self.assertErrno(errno.ENOENT, os.open, self.p("u"), os.O_RDONLY)
        self.assertErrno(errno.ENOENT, os.unlink, self.p("u"))
        # the name can be written again
        kvc.write_block(self.p("u"), b"again")
        self.assertEqual(kvc.read_block(self.p("u")), b"again")

    def test_unlink_missing_enoent(self):
        self.assertErrno(errno.ENOENT, os.unlink, self.p("never"))

    def test_unlink_with_open_reader_and_memory_freed_at_last_close(self):
        size = 4 * MiB
        data = os.urandom(size)
        used0 = self.m.status()["used"]
        kvc.write_block(self.p("big"), data)
        used1 = self.m.status()["used"]
        self.assertGreaterEqual(used1 - used0, size, "used did not grow by the block size")
        fd = os.open(self.p("big"), os.O_RDONLY)
        try:
            head = os.read(fd, 1000)
            os.unlink(self.p("big"))
            self.assertErrno(errno.ENOENT, os.stat, self.p("big"))
            self.assertNotIn("big", os.listdir(self.d))
            # still held by the reader: not freed yet
            self.assertGreaterEqual(self.m.status()["used"], used1)
            # new blocks may reuse freed memory: the unlinked block's must not have been freed
            for i in range(3):
                kvc.write_block(self.p("filler%d" % i), os.urandom(size))
            for i in range(3):
                os.unlink(self.p("filler%d" % i))
            rest = kvc.read_all(fd)
            self.assertTrue(head + rest == data, "reader of an unlinked block saw other bytes")
            self.assertEqual(os.pread(fd, 10, size - 10), data[-10:])
            # a new block under the same name does not disturb the reader
            kvc.write_block(self.p("big"), b"new")
            self.assertEqual(os.pread(fd, 10, 0), data[:10])
            os.unlink(self.p("big"))
        finally:
            os.close(fd)
        # freed at the last close (the kernel may take a moment to forget the inode)
        self.assertTrue(wait_until(lambda: self.m.status()["used"] <= used0, timeout=5),
                        "used %d did not go back to %d after the last close"
                        % (self.m.status()["used"], used0))

    def test_unlink_without_reader_frees_memory(self):
        used0 = self.m.status()["used"]
        kvc.write_block(self.p("x"), os.urandom(MiB))
        self.assertGreater(self.m.status()["used"], used0)
        os.unlink(self.p("x"))
        self.assertTrue(wait_until(lambda: self.m.status()["used"] <= used0, timeout=5))

    def test_replace_frees_old_block(self):
        used0 = self.m.status()["used"]
        kvc.write_block(self.p("f"), os.urandom(2 * MiB))
        for _ in range(5):
            kvc.write_block(self.p("f.tmp"), os.urandom(2 * MiB))
            os.replace(self.p("f.tmp"), self.p("f"))
        self.assertTrue(wait_until(lambda: self.m.status()["used"] <= used0 + 2 * MiB + 64 * KiB,
                                   timeout=5), "replaced blocks were not freed")

    def test_blocks_count_follows_unlink(self):
        b0 = self.m.status()["blocks"]
        for i in range(3):
            kvc.write_block(self.p("c%d" % i), b"c")
        self.assertEqual(self.m.status()["blocks"], b0 + 3)
        os.unlink(self.p("c1"))
        self.assertEqual(self.m.status()["blocks"], b0 + 2)


if __name__ == "__main__":
    kvc.main()
