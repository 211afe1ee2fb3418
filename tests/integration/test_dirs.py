#!/usr/bin/env python3
"""Directories: mkdir -p, rmdir, readdir, rename; opaque names and nested layouts."""

import errno
import os

import kvc


def setUpModule():
    kvc.require_environment()


class Dirs(kvc.DirTestCase):
    def test_mkdir_p_deep(self):
        parts = ["l%02d" % i for i in range(12)]
        deep = self.p(*parts)
        os.makedirs(deep)
        self.assertTrue(os.path.isdir(deep))
        # every level lists exactly the next one
        for i in range(12):
            lvl = self.p(*parts[:i])
            self.assertEqual(os.listdir(lvl), [parts[i]])
            self.assertTrue(os.path.isdir(os.path.join(lvl, parts[i])))
        kvc.write_block(os.path.join(deep, "blk"), b"deep block")
        self.assertEqual(kvc.read_block(os.path.join(deep, "blk")), b"deep block")
        self.assertEqual(os.listdir(deep), ["blk"])
        # mkdir -p again is a no-op
        os.makedirs(deep, exist_ok=True)

    def test_mkdir_existing(self):
        os.mkdir(self.p("a"))
        self.assertErrno(errno.EEXIST, os.mkdir, self.p("a"))
        kvc.write_block(self.p("f"), b"1")
        self.assertErrno(errno.EEXIST, os.mkdir, self.p("f"))

    def test_mkdir_in_missing_parent(self):
        self.assertErrno(errno.ENOENT, os.mkdir, self.p("nope", "a"))

    def test_directory_attributes(self):
        os.mkdir(self.p("a"), 0o755)
        st = os.stat(self.p("a"))
        self.assertTrue(os.path.isdir(self.p("a")))
        self.assertEqual(st.st_mode & 0o777, 0o755)

    def test_rmdir_empty(self):
        os.mkdir(self.p("e"))
        os.rmdir(self.p("e"))
        self.assertGone(self.p("e"))
        self.assertNotIn("e", os.listdir(self.d))
        self.assertErrno(errno.ENOENT, os.rmdir, self.p("e"))
        # the name can be reused, as a directory or as a block
        os.mkdir(self.p("e"))
        os.rmdir(self.p("e"))
        kvc.write_block(self.p("e"), b"now a block")
        self.assertEqual(kvc.read_block(self.p("e")), b"now a block")

    def test_rmdir_with_subdir_enotempty(self):
        os.makedirs(self.p("a", "b"))
        self.assertErrno(errno.ENOTEMPTY, os.rmdir, self.p("a"))
        self.assertTrue(os.path.isdir(self.p("a", "b")))

    def test_rmdir_with_block_enotempty(self):
        os.mkdir(self.p("a"))
        kvc.write_block(self.p("a", "blk"), b"data")
        self.assertErrno(errno.ENOTEMPTY, os.rmdir, self.p("a"))
        self.assertEqual(kvc.read_block(self.p("a", "blk")), b"data")
        os.unlink(self.p("a", "blk"))
        os.rmdir(self.p("a"))
        self.assertGone(self.p("a"))

    def test_rmdir_with_block_being_written_enotempty(self):
        os.mkdir(self.p("a"))
        fd = os.open(self.p("a", "w"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"partial")
            # not listed yet, but it counts
            self.assertEqual(os.listdir(self.p("a")), [])
            self.assertErrno(errno.ENOTEMPTY, os.rmdir, self.p("a"))
        finally:
            os.close(fd)
        self.assertTrue(os.path.isdir(self.p("a")))
        self.assertEqual(kvc.read_block(self.p("a", "w")), b"partial")

    def test_rmdir_on_block_enotdir(self):
        kvc.write_block(self.p("f"), b"x")
        self.assertErrno(errno.ENOTDIR, os.rmdir, self.p("f"))
        self.assertEqual(kvc.read_block(self.p("f")), b"x")

    def test_unlink_on_dir(self):
        os.mkdir(self.p("a"))
        self.assertErrno((errno.EISDIR, errno.EPERM), os.unlink, self.p("a"))
        self.assertTrue(os.path.isdir(self.p("a")))

    def test_readdir_lists_subdirs_and_sealed_blocks(self):
        dirs = {"d%d" % i for i in range(5)}
        blocks = {"b%d" % i for i in range(7)}
        for n in dirs:
            os.mkdir(self.p(n))
        for i, n in enumerate(sorted(blocks)):
            kvc.write_block(self.p(n), bytes([i]) * (i * 100))
        names = os.listdir(self.d)
        self.assertEqual(len(names), len(set(names)), "duplicates in readdir: %s" % names)
        self.assertEqual(set(names), dirs | blocks)
        kinds = {e.name: (e.is_dir(), e.is_file()) for e in os.scandir(self.d)}
        for n in dirs:
            self.assertEqual(kinds[n], (True, False), n)
        for n in blocks:
            self.assertEqual(kinds[n], (False, True), n)
        # "." and ".." exist
        self.assertTrue(os.path.samestat(os.stat(os.path.join(self.d, ".")), os.stat(self.d)))
        self.assertTrue(os.path.samestat(os.stat(os.path.join(self.d, "..")),
                                         os.stat(self.m.mnt)))

    def test_readdir_many_entries(self):
        # more entries than fit in one readdir buffer: offsets must be right
        names = {"%032x" % (i * 0x9E3779B97F4A7C15 % (1 << 128)) for i in range(600)}
        for n in names:
            kvc.write_block(self.p(n), n.encode())
        listed = os.listdir(self.d)
        self.assertEqual(len(listed), len(names))
        self.assertEqual(set(listed), names)
        for n in list(names)[:20]:
            self.assertEqual(kvc.read_block(self.p(n)), n.encode())

    def test_readdir_after_unlink_and_rmdir(self):
        os.mkdir(self.p("d"))
        kvc.write_block(self.p("b"), b"b")
        kvc.write_block(self.p("c"), b"c")
        os.unlink(self.p("b"))
        os.rmdir(self.p("d"))
        self.assertEqual(os.listdir(self.d), ["c"])

    def test_rename_directory(self):
        os.makedirs(self.p("old", "sub", "subsub"))
        kvc.write_block(self.p("old", "top"), b"top block")
        kvc.write_block(self.p("old", "sub", "subsub", "leaf"), b"leaf block")
        os.rename(self.p("old"), self.p("new"))
        self.assertGone(self.p("old"))
        self.assertGone(self.p("old", "top"))
        self.assertEqual(kvc.read_block(self.p("new", "top")), b"top block")
        self.assertEqual(kvc.read_block(self.p("new", "sub", "subsub", "leaf")), b"leaf block")
        self.assertEqual(sorted(os.listdir(self.p("new"))), ["sub", "top"])
        self.assertEqual(os.listdir(self.d), ["new"])
        # new children go to the right place
        kvc.write_block(self.p("new", "sub", "later"), b"later")
        self.assertEqual(sorted(os.listdir(self.p("new", "sub"))), ["later", "subsub"])

    def test_rename_directory_to_other_parent(self):
        os.makedirs(self.p("a", "x"))
        os.makedirs(self.p("b"))
        kvc.write_block(self.p("a", "x", "blk"), b"moved")
        os.rename(self.p("a", "x"), self.p("b", "y"))
        self.assertEqual(os.listdir(self.p("a")), [])
        self.assertEqual(os.listdir(self.p("b")), ["y"])
        self.assertEqual(kvc.read_block(self.p("b", "y", "blk")), b"moved")
        os.rmdir(self.p("a"))  # now empty
        self.assertErrno(errno.ENOTEMPTY, os.rmdir, self.p("b"))

    def test_rename_directory_into_own_subdir_einval(self):
        os.makedirs(self.p("a", "b", "c"))
        self.assertErrno(errno.EINVAL, os.rename, self.p("a"), self.p("a", "b", "c", "a2"))
        self.assertErrno(errno.EINVAL, os.rename, self.p("a"), self.p("a", "x"))
        self.assertTrue(os.path.isdir(self.p("a", "b", "c")))

    def test_rename_directory_onto_nonempty_dir(self):
        os.makedirs(self.p("a"))
        os.makedirs(self.p("b"))
        kvc.write_block(self.p("b", "keep"), b"keep")
        self.assertErrno((errno.ENOTEMPTY, errno.EEXIST), os.rename, self.p("a"), self.p("b"))
        self.assertEqual(kvc.read_block(self.p("b", "keep")), b"keep")
        self.assertTrue(os.path.isdir(self.p("a")))

    def test_rename_directory_onto_empty_dir(self):
        os.makedirs(self.p("a"))
        os.makedirs(self.p("b"))
        kvc.write_block(self.p("a", "blk"), b"in a")
        os.rename(self.p("a"), self.p("b"))
        self.assertGone(self.p("a"))
        self.assertEqual(kvc.read_block(self.p("b", "blk")), b"in a")

    def test_rename_block_onto_dir_and_dir_onto_block(self):
        os.makedirs(self.p("d", "x"))
        kvc.write_block(self.p("f"), b"f")
        self.assertErrno(errno.EISDIR, os.rename, self.p("f"), self.p("d"))
        self.assertErrno(errno.ENOTDIR, os.rename, self.p("d"), self.p("f"))
        self.assertEqual(kvc.read_block(self.p("f")), b"f")
        self.assertTrue(os.path.isdir(self.p("d", "x")))

    def test_opaque_names(self):
        names = [
            "x" * 255,
            "with space and\ttab",
            "unicode-\u00e9\u4e2d\u6587-\U0001F600",
            "key.data.tmp",
            ".hidden",
            "-dash",
            "a:b;c,d=e+f@g#h%i&j!k'l\"m(n)o[p]q{r}s~t`u|v\\w",
            "0123456789abcdef0123456789abcdef",
        ]
        for i, n in enumerate(names):
            kvc.write_block(self.p(n), ("%d:%s" % (i, n)).encode())
        self.assertEqual(set(os.listdir(self.d)), set(names))
        for i, n in enumerate(names):
            self.assertEqual(kvc.read_block(self.p(n)), ("%d:%s" % (i, n)).encode())
        os.mkdir(self.p("d" * 255))
        self.assertTrue(os.path.isdir(self.p("d" * 255)))

    def test_llm_d_layout(self):
        h = "3fa1c0de" * 8
        rel = ["Qwen3-8B", "block_16", "tp_1_pp_1", "rank_0", "bfloat16", h[:3], h[3:5]]
        os.makedirs(self.p(*rel), exist_ok=True)
        data = os.urandom(70000)
        kvc.write_block(self.p(*rel, h + ".bin"), data)
        self.assertEqual(kvc.read_block(self.p(*rel, h + ".bin")), data)
        self.assertEqual(os.listdir(self.p(*rel)), [h + ".bin"])

    def test_concurrent_mkdir_p(self):
        # two "engines" racing to create the same nested path (llm-d does this)
        import threading
        path = self.p("m", "n", "o", "p")
        errs = []
        barrier = threading.Barrier(4)

        def work():
            try:
                barrier.wait()
                os.makedirs(path, exist_ok=True)
            except Exception as e:  # noqa: BLE001
                errs.append(e)
        ts = [threading.Thread(target=work) for _ in range(4)]
        kvc.start_join(ts)
        self.assertEqual(errs, [])
        self.assertTrue(os.path.isdir(path))
        self.assertEqual(os.listdir(self.p("m")), ["n"])


if __name__ == "__main__":
    kvc.main()
