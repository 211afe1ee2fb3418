#!/usr/bin/env python3
"""Blocks: writing (any offsets, holes, limits), sealing at close or fsync, immutability."""

import errno
import os

import kvc
from kvc import KiB, MiB, Mount


def setUpModule():
    kvc.require_environment()


class Writing(kvc.DirTestCase):
    MOUNT_ARGS = ("--pool-size", "64M", "--max-block-size", "1M")

    def test_sequential_write_read(self):
        data = os.urandom(300 * KiB + 7)
        kvc.write_block(self.p("b"), data, chunk=64 * KiB)
        self.assertEqual(os.stat(self.p("b")).st_size, len(data))
        self.assertEqual(kvc.read_block(self.p("b")), data)

    def test_out_of_order_and_sparse_writes(self):
        size = 200 * KiB + 11
        expect = bytearray(size)
        pieces = [  # (offset, length): out of order, overlapping, with holes
            (150 * KiB, 10 * KiB), (0, 100), (size - 11, 11), (4096, 8192),
            (4000, 200), (99 * KiB + 5, 3 * KiB),
        ]
        fd = os.open(self.p("s"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for off, n in pieces:
                chunk = os.urandom(n)
                self.assertEqual(kvc.write_all(fd, chunk, off), n)
                expect[off:off + n] = chunk
        finally:
            os.close(fd)
        self.assertEqual(os.stat(self.p("s")).st_size, size)
        got = kvc.read_block(self.p("s"))
        self.assertEqual(len(got), size)
        self.assertTrue(got == bytes(expect), "content differs (holes must read as zeros)")
        # a few holes explicitly
        self.assertEqual(got[100:4000], bytes(3900))
        self.assertEqual(got[12288:99 * KiB + 5], bytes(99 * KiB + 5 - 12288))

    def test_write_only_at_end_leaves_leading_hole(self):
        fd = os.open(self.p("h"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, b"END", 500 * KiB)
        finally:
            os.close(fd)
        got = kvc.read_block(self.p("h"))
        self.assertEqual(len(got), 500 * KiB + 3)
        self.assertEqual(got[-3:], b"END")
        self.assertEqual(got[:-3].count(0), 500 * KiB)

    def test_pread_at_offsets(self):
        data = os.urandom(256 * KiB)
        kvc.write_block(self.p("r"), data)
        fd = os.open(self.p("r"), os.O_RDONLY)
        try:
            for off, n in ((0, 1), (4095, 2), (100000, 5000), (len(data) - 10, 100),
                           (len(data), 10), (len(data) + 4096, 10)):
                self.assertEqual(os.pread(fd, n, off), data[off:off + n], (off, n))
        finally:
            os.close(fd)

    def test_ftruncate_extends_with_zeros(self):
        fd = os.open(self.p("t"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"abc")
            os.ftruncate(fd, 10000)
        finally:
            os.close(fd)
        self.assertEqual(os.stat(self.p("t")).st_size, 10000)
        self.assertEqual(kvc.read_block(self.p("t")), b"abc" + bytes(9997))

    def test_write_up_to_max_block_size(self):
        data = os.urandom(1 * MiB)
        kvc.write_block(self.p("max"), data, chunk=256 * KiB)
        self.assertEqual(kvc.read_block(self.p("max")), data)

    def test_write_beyond_max_block_size_efbig(self):
        fd = os.open(self.p("big"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            kvc.write_all(fd, b"a" * (MiB - 10), 0)
            # ending beyond the maximum: refused as a whole
            self.assertErrno(errno.EFBIG, os.pwrite, fd, b"b" * 20, MiB - 10)
            # starting at / beyond the maximum
            self.assertErrno(errno.EFBIG, os.pwrite, fd, b"c", MiB)
            self.assertErrno(errno.EFBIG, os.pwrite, fd, b"c", 5 * MiB)
            # sequential write that crosses the limit
            os.lseek(fd, MiB - 10, os.SEEK_SET)
            try:
                n = os.write(fd, b"d" * 20)
            except OSError as e:
                self.assertEqual(e.errno, errno.EFBIG, e)
            else:
                self.fail("write across --max-block-size returned %d, expected EFBIG" % n)
            # ending exactly at the maximum still works
            self.assertEqual(kvc.write_all(fd, b"e" * 10, MiB - 10), 10)
        finally:
            os.close(fd)
        got = kvc.read_block(self.p("big"))
        self.assertEqual(len(got), MiB)
        self.assertEqual(got, b"a" * (MiB - 10) + b"e" * 10)

    def test_single_write_larger_than_max_efbig(self):
        fd = os.open(self.p("huge"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            # the kernel splits this into requests of at most 1 MiB: the first may be
            # accepted (a short write), the one past the limit must fail with EFBIG
            self.assertErrno(errno.EFBIG, kvc.write_all, fd, bytes(MiB + 4096))
        finally:
            os.close(fd)
        self.assertLessEqual(os.stat(self.p("huge")).st_size, MiB)

    def test_ftruncate_beyond_max_efbig(self):
        fd = os.open(self.p("tr"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"xyz")
            self.assertErrno(errno.EFBIG, os.ftruncate, fd, MiB + 1)
            self.assertErrno(errno.EFBIG, os.ftruncate, fd, 100 * MiB)
            os.ftruncate(fd, MiB)  # at the limit: fine
        finally:
            os.close(fd)
        self.assertEqual(os.stat(self.p("tr")).st_size, MiB)

    def test_empty_block(self):
        fd = os.open(self.p("empty"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
        self.assertEqual(os.stat(self.p("empty")).st_size, 0)
        self.assertEqual(kvc.read_block(self.p("empty")), b"")
        self.assertIn("empty", os.listdir(self.d))
        self.assertEqual(kvc.xattr(self.p("empty"), "state"), b"sealed")

    def test_python_open_wb(self):
        data = os.urandom(5000)
        with open(self.p("py"), "wb") as f:
            f.write(data)
        with open(self.p("py"), "rb") as f:
            self.assertEqual(f.read(), data)


class Sealing(kvc.DirTestCase):
    def test_block_being_written(self):
        path = self.p("w")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            kvc.write_all(fd, b"0123456789" * 1000)
            # other opens: EBUSY
            self.assertErrno(errno.EBUSY, os.open, path, os.O_RDONLY)
            self.assertErrno(errno.EBUSY, os.open, path, os.O_WRONLY)
            self.assertErrno(errno.EBUSY, os.open, path, os.O_RDWR)
            self.assertErrno(errno.EBUSY, os.open, path, os.O_WRONLY | os.O_CREAT, 0o644)
            self.assertErrno((errno.EBUSY, errno.EEXIST), os.open, path,
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            # not listed, but stat works and says "writing"
            self.assertNotIn("w", os.listdir(self.d))
            st = os.stat(path)
            self.assertTrue(st.st_mode & 0o170000 == 0o100000, oct(st.st_mode))
            self.assertEqual(kvc.xattr(path, "state"), b"writing")
            # the writer can keep writing after those refusals
            kvc.write_all(fd, b"tail")
        finally:
            os.close(fd)
        # sealed at close: visible and readable at once
        self.assertIn("w", os.listdir(self.d))
        self.assertEqual(kvc.xattr(path, "state"), b"sealed")
        self.assertEqual(os.stat(path).st_size, 10004)
        self.assertEqual(kvc.read_block(path), b"0123456789" * 1000 + b"tail")

    def test_readable_right_after_close(self):
        # `write && cat`: a reader that opens immediately after the writer's close() must
        # find the block sealed (FUSE sends RELEASE asynchronously after close() returned;
        # several threads make that window visible)
        import threading
        errors = []

        def work(t):
            try:
                for i in range(250):
                    path = self.p("r%d-%d" % (t, i))
                    data = os.urandom(1000 + i)
                    kvc.write_block(path, data)
                    if kvc.read_block(path) != data:
                        errors.append("%s: content differs" % path)
                    if kvc.xattr(path, "state") != b"sealed":
                        errors.append("%s: not sealed after close" % path)
            except OSError as e:
                errors.append("%s: %s right after the writer's close" % (
                    e.filename, kvc.errname(e.errno)))
        ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        kvc.start_join(ts)
        self.assertEqual(errors, [], "\n".join(errors[:10]))

    def test_fsync_seals(self):
        path = self.p("f")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            kvc.write_all(fd, b"synced")
            os.fsync(fd)
            self.assertEqual(kvc.xattr(path, "state"), b"sealed")
            self.assertIn("f", os.listdir(self.d))
            # sealed: a reader may open it while the writer still holds its fd
            self.assertEqual(kvc.read_block(path), b"synced")
            # and the writer cannot change it anymore
            self.assertErrno(errno.EPERM, os.write, fd, b"more")
            self.assertErrno(errno.EPERM, os.pwrite, fd, b"X", 0)
        finally:
            os.close(fd)
        self.assertEqual(kvc.read_block(path), b"synced")
        self.assertEqual(os.stat(path).st_size, 6)

    def test_fdatasync_seals(self):
        path = self.p("fd")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            kvc.write_all(fd, b"data-synced")
            os.fdatasync(fd)
            self.assertEqual(kvc.xattr(path, "state"), b"sealed")
            self.assertErrno(errno.EPERM, os.write, fd, b"more")
        finally:
            os.close(fd)
        self.assertEqual(kvc.read_block(path), b"data-synced")

    def test_dup_of_writer_fd(self):
        # closing one of two descriptors of the writer's open file must not lose data
        path = self.p("dup")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        fd2 = os.dup(fd)
        os.write(fd, b"one,")
        os.close(fd2)
        try:
            os.write(fd, b"two")
        except OSError as e:
            # sealing on the first close (flush) is acceptable: then EPERM
            self.assertEqual(e.errno, errno.EPERM)
            os.close(fd)
            self.assertEqual(kvc.read_block(path), b"one,")
        else:
            os.close(fd)
            self.assertEqual(kvc.read_block(path), b"one,two")


class Immutable(kvc.TestCase):
    SIZES = (0, 1, 4095, 4096, 4097, MiB + 3, 3 * MiB)

    @classmethod
    def setUpClass(cls):
        cls.m = Mount.for_class(cls, "--pool-size", "64M")
        cls.data = {}
        for n in cls.SIZES:
            cls.data[n] = os.urandom(n)
            kvc.write_block(cls.m.path("s%d" % n), cls.data[n])

    def test_content_exact(self):
        for n in self.SIZES:
            p = self.m.path("s%d" % n)
            self.assertEqual(os.stat(p).st_size, n)
            got = kvc.read_block(p)
            self.assertEqual(len(got), n)
            self.assertTrue(got == self.data[n], "content of the %d-byte block differs" % n)

    def test_content_exact_small_reads(self):
        p = self.m.path("s%d" % (MiB + 3))
        fd = os.open(p, os.O_RDONLY)
        try:
            got = kvc.read_all(fd, chunk=4093)
        finally:
            os.close(fd)
        self.assertTrue(got == self.data[MiB + 3])

    def test_many_readers(self):
        p = self.m.path("s%d" % (3 * MiB))
        fds = [os.open(p, os.O_RDONLY) for _ in range(8)]
        try:
            for fd in fds:
                self.assertEqual(os.pread(fd, 4096, 2 * MiB), self.data[3 * MiB][2 * MiB:2 * MiB + 4096])
        finally:
            for fd in fds:
                os.close(fd)

    def test_open_for_writing_eperm(self):
        p = self.m.path("s4097")
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND,
                      os.O_WRONLY | os.O_CREAT, os.O_WRONLY | os.O_TRUNC,
                      os.O_RDWR | os.O_TRUNC, os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
            with self.subTest(flags=oct(flags)):
                self.assertErrno(errno.EPERM, os.open, p, flags, 0o644)
        self.assertEqual(kvc.read_block(p), self.data[4097])

    def test_open_rdonly_trunc_eperm(self):
        p = self.m.path("s4096")
        self.assertErrno(errno.EPERM, os.open, p, os.O_RDONLY | os.O_TRUNC)
        self.assertEqual(kvc.read_block(p), self.data[4096])

    def test_python_overwrite_eperm(self):
        p = self.m.path("s1")
        with self.assertRaises(OSError) as cm:
            open(p, "wb").close()
        self.assertEqual(cm.exception.errno, errno.EPERM)
        with self.assertRaises(OSError) as cm:
            open(p, "ab").close()
        self.assertEqual(cm.exception.errno, errno.EPERM)
        self.assertEqual(kvc.read_block(p), self.data[1])

    def test_truncate_path_eperm(self):
        p = self.m.path("s4095")
        self.assertErrno(errno.EPERM, os.truncate, p, 0)
        self.assertErrno(errno.EPERM, os.truncate, p, 100)
        self.assertErrno(errno.EPERM, os.truncate, p, 8192)
        self.assertEqual(os.stat(p).st_size, 4095)
        self.assertEqual(kvc.read_block(p), self.data[4095])

    def test_ftruncate_on_reader_fd_fails(self):
        p = self.m.path("s4095")
        fd = os.open(p, os.O_RDONLY)
        try:
            self.assertErrno((errno.EINVAL, errno.EBADF, errno.EPERM), os.ftruncate, fd, 0)
            self.assertErrno(errno.EBADF, os.write, fd, b"x")
        finally:
            os.close(fd)
        self.assertEqual(kvc.read_block(p), self.data[4095])

    def test_empty_block_is_sealed_too(self):
        p = self.m.path("s0")
        self.assertErrno(errno.EPERM, os.open, p, os.O_WRONLY)
        self.assertErrno(errno.EPERM, os.truncate, p, 10)
        self.assertEqual(os.stat(p).st_size, 0)

    def test_create_excl_on_sealed_eexist(self):
        p = self.m.path("s1")
        self.assertErrno(errno.EEXIST, os.open, p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)


if __name__ == "__main__":
    kvc.main()
