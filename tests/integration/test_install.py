#!/usr/bin/env python3
"""cmake --install puts libkvcache (shared and static), its headers and kvcache.pc where an
application finds them: the C example builds out of tree with pkg-config, both ways."""

import os
import shutil
import subprocess
import tempfile
import unittest

import kvc

BUILD_DIR = os.path.dirname(kvc.BIN_DIR)


class Install(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for tool in ("cmake", "gcc", "pkg-config"):
            if not shutil.which(tool):
                raise unittest.SkipTest("%s is not installed (tools/setup.sh installs it)" % tool)
        cls.prefix = tempfile.mkdtemp(prefix="kvc-itest-install-")
        cls.addClassCleanup(shutil.rmtree, cls.prefix, True)
        r = subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", cls.prefix],
                           capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise AssertionError("cmake --install failed: " + r.stderr)
        cls.env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(cls.prefix, "lib", "pkgconfig"))

    def pkg(self, *args):
        r = subprocess.run(["pkg-config"] + list(args) + ["kvcache"], capture_output=True,
                           text=True, env=self.env, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.split()

    def test_files(self):
        for rel in ("bin/kvcachefs", "bin/kvcachectl", "bin/kvcache-bench", "lib/libkvcache.so",
                    "lib/libkvcache.a", "include/kvcachefs/kvcache.h",
                    "include/kvcachefs/kvcachefs.h", "lib/pkgconfig/kvcache.pc"):
            self.assertTrue(os.path.exists(os.path.join(self.prefix, rel)), rel)

    def build_example(self, link):
        out = os.path.join(self.prefix, "example")
        src = os.path.join(kvc.SOURCE_DIR, "examples", "save_load.c")
        # The sanitizer build's library is instrumented: its users link the runtimes too.
        san = ["-fsanitize=address,undefined"] if kvc.SANITIZE else []
        cmd = ["gcc", "-std=c17", "-Wall", "-Wextra", "-Werror"] + san + \
            self.pkg("--cflags") + [src, "-o", out] + link
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, " ".join(cmd) + "\n" + r.stderr)
        return out

    def test_example_builds_shared(self):
        exe = self.build_example(self.pkg("--libs"))
        r = subprocess.run(["ldd", exe], capture_output=True, text=True)
        self.assertIn("libkvcache.so.0", r.stdout)

    def test_example_builds_static(self):
        lib = os.path.join(self.prefix, "lib", "libkvcache.a")
        private = [f for f in self.pkg("--libs", "--static") if f != "-lkvcache"]
        exe = self.build_example([lib] + private)
        r = subprocess.run(["ldd", exe], capture_output=True, text=True)
        self.assertNotIn("libkvcache", r.stdout)


if __name__ == "__main__":
    kvc.main()
