#!/usr/bin/env python3
"""The example programs against a real mount: examples/save_load.c (kvcache-example) stores
then finds its blocks; examples/connector.py does the same through plain files and through
libkvcache, and each mode finds what the other (and the C example) stored. Block names are
checked against `kvcachectl hash`, block bytes against the examples' shared generator."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

import kvc
from kvc import KiB, Mount

BLOCK_BYTES = 256 * KiB


def load_connector():
    spec = importlib.util.spec_from_file_location("connector", kvc.CONNECTOR)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


connector = None


def setUpModule():
    global connector
    kvc.require_environment()
    kvc.require_libkvcache()
    for p in (kvc.KVCACHE_EXAMPLE, kvc.CONNECTOR):
        if not os.path.exists(p):
            raise RuntimeError("%s not found" % p)
    connector = load_connector()  # for its token and payload generators only


class Examples(kvc.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = Mount.for_class(cls, "--pool-size", "64M")

    def run_prog(self, argv, python=False, rc=0):
        """Run argv (a python3 that loads libkvcache when python); it must exit with rc and
        leave no sanitizer report. Returns the CompletedProcess."""
        logdir = tempfile.mkdtemp(prefix="kvc-itest-log-")
        try:
            env = kvc.sanitizer_env(logdir, kvc.python_lib_env() if python else None)
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               env=env, timeout=120)
            reports = kvc.sanitizer_reports(logdir)
        finally:
            shutil.rmtree(logdir, ignore_errors=True)
        self.assertEqual(reports, [], "sanitizer report from %s" % argv)
        self.assertEqual(r.returncode, rc, "%s: exit %d\nstdout: %s\nstderr: %s"
                         % (" ".join(argv), r.returncode, r.stdout, r.stderr))
        return r

    def example(self, directory, rc=0):
        return self.run_prog([kvc.KVCACHE_EXAMPLE, self.m.mnt, directory], rc=rc)

    def connect(self, directory, *args, rc=0):
        r = self.run_prog([sys.executable, kvc.CONNECTOR, self.m.mnt, "--dir", directory]
                          + list(args), python=True, rc=rc)
        if rc != 0:
            return r
        lines = r.stdout.strip().splitlines()
        self.assertEqual(len(lines), 1, "connector.py printed %r" % r.stdout)
        return json.loads(lines[0])

    def hash_names(self, ntokens, seed=42, block_tokens=16):
        """The block names `kvcachectl hash` gives the examples' token stream."""
        toks = connector.make_tokens(seed, ntokens)
        r = kvc.run_ctl("hash", "--block-tokens", str(block_tokens), *map(str, toks))
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.split()

    def check_blocks(self, directory, names):
        """names are the sealed blocks of directory, each with the generator's bytes."""
        path = self.m.path(directory)
        self.assertEqual(sorted(n for n in os.listdir(path) if not n.startswith(".")),
                         sorted(names))
        for n in names:
            self.assertTrue(kvc.read_block(os.path.join(path, n)) ==
                            connector.payload(n, BLOCK_BYTES), "block %s differs" % n)

    # ---- kvcache-example
    def test_save_load_stores_then_hits(self):
        r = self.example("ex/a")
        self.assertIn("0 hit, 4 stored, 4 verified", r.stdout)
        names = self.hash_names(64)
        self.assertEqual(len(names), 4)
        self.assertIn("last block (the whole prefix): %s" % names[-1], r.stdout)
        self.check_blocks("ex/a", names)
        r = self.example("ex/a")
        self.assertIn("4 hit, 0 stored, 4 verified", r.stdout)
        # one block evicted or deleted in the middle: the prefix ends before it
        os.unlink(self.m.path("ex/a", names[2]))
        r = self.example("ex/a")
        self.assertIn("2 hit, 2 stored, 4 verified", r.stdout)
        self.check_blocks("ex/a", names)

    def test_save_load_errors(self):
        r = self.run_prog([kvc.KVCACHE_EXAMPLE], rc=2)
        self.assertIn("Usage", r.stderr)
        with tempfile.TemporaryDirectory() as t:
            r = self.run_prog([kvc.KVCACHE_EXAMPLE, t], rc=1)
        self.assertIn("kvc_open", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        # a block of the example's name that is not what the example stored: detected
        names = self.hash_names(64)
        os.makedirs(self.m.path("ex/bad"))
        kvc.write_block(self.m.path("ex/bad", names[0]), b"not the KV")
        r = self.example("ex/bad", rc=1)
        self.assertIn(names[0], r.stderr)

    # ---- connector.py
    def test_connector_names(self):
        for ntok in (0, 15, 16, 64, 70):
            with self.subTest(tokens=ntok):
                want = self.hash_names(ntok) if ntok else []
                for hasher in ("kvcache", "xxhash"):
                    r = self.run_prog([sys.executable, kvc.CONNECTOR, self.m.mnt,
                                       "--tokens", str(ntok), "--hasher", hasher,
                                       "--print-names"], python=True)
                    self.assertEqual(r.stdout.split(), want, hasher)

    def test_connector_file_then_lib(self):
        s = self.connect("c/fl", "--api", "file")
        self.assertEqual((s["blocks"], s["hits"], s["stored"], s["loaded_bytes"]), (4, 0, 4, 0))
        s = self.connect("c/fl", "--api", "lib")
        self.assertEqual((s["hits"], s["stored"], s["loaded_bytes"]), (4, 0, 4 * BLOCK_BYTES))
        # a longer request extends the prefix: 4 hits, 2 new blocks, stored through the lib
        s = self.connect("c/fl", "--api", "lib", "--tokens", "100")
        self.assertEqual((s["blocks"], s["hits"], s["stored"]), (6, 4, 2))
        s = self.connect("c/fl", "--api", "file", "--tokens", "100")
        self.assertEqual((s["blocks"], s["hits"], s["stored"], s["loaded_bytes"]),
                         (6, 6, 0, 6 * BLOCK_BYTES))
        self.check_blocks("c/fl", self.hash_names(96))

    def test_connector_lib_then_file(self):
        for write in ("reserve", "put"):
            with self.subTest(write=write):
                d = "c/lf-" + write
                s = self.connect(d, "--api", "lib", "--write", write)
                self.assertEqual((s["hits"], s["stored"], s["verified"]), (0, 4, 4))
                s = self.connect(d, "--api", "file")
                self.assertEqual((s["hits"], s["stored"], s["loaded_bytes"]),
                                 (4, 0, 4 * BLOCK_BYTES))
                s = self.connect(d, "--api", "lib", "--write", write)
                self.assertEqual((s["hits"], s["stored"]), (4, 0))
                self.check_blocks(d, self.hash_names(64))

    def test_connector_other_request(self):
        # another token stream shares nothing with the first: no hit, its own blocks
        self.connect("c/other", "--api", "lib")
        s = self.connect("c/other", "--api", "file", "--seed", "7")
        self.assertEqual((s["hits"], s["stored"]), (0, 4))
        s = self.connect("c/other", "--api", "lib", "--seed", "7")
        self.assertEqual((s["hits"], s["stored"]), (4, 0))
        self.assertEqual(len(os.listdir(self.m.path("c/other"))), 8)

    def test_connector_finds_save_load_blocks(self):
        self.example("ex/shared")
        for api in ("file", "lib"):
            with self.subTest(api=api):
                s = self.connect("ex/shared", "--api", api)
                self.assertEqual((s["hits"], s["stored"], s["loaded_bytes"]),
                                 (4, 0, 4 * BLOCK_BYTES))
        # and the C example finds what the connector stored
        self.connect("c/for-example", "--api", "file")
        r = self.example("c/for-example")
        self.assertIn("4 hit, 0 stored", r.stdout)

    def test_connector_detects_bad_bytes(self):
        names = self.hash_names(64)
        os.makedirs(self.m.path("c/bad"))
        kvc.write_block(self.m.path("c/bad", names[0]), b"garbage")
        for api in ("file", "lib"):
            with self.subTest(api=api):
                r = self.connect("c/bad", "--api", api, rc=1)
                self.assertIn(names[0], r.stderr)

    def test_connector_not_kvcachefs(self):
        with tempfile.TemporaryDirectory() as t:
            r = self.run_prog([sys.executable, kvc.CONNECTOR, t, "--api", "lib"], python=True,
                              rc=1)
            self.assertIn("kvc_open", r.stderr)
            # plain files work anywhere (the connector is a file-system client)
            r = self.run_prog([sys.executable, kvc.CONNECTOR, t, "--api", "file"], python=True)
            self.assertEqual(json.loads(r.stdout)["stored"], 4)


if __name__ == "__main__":
    kvc.main()
