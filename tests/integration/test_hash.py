#!/usr/bin/env python3
"""Prefix hashing and lookup from the command line: `kvcachectl hash` checked against the
independent `xxhsum -H2` (Debian package xxhash) on byte strings built here, and `kvcachectl
lookup` on a real mount.

The chain (fs/uapi/kvcache.h): h0 = XXH3-128(seed as 8 little-endian bytes); h_i =
XXH3-128(canonical big-endian bytes of h_{i-1} || block i's tokens as little-endian u32); the
name of block i is the hex of canonical(h_i), which is exactly what xxhsum -H2 prints.
"""

import errno
import os
import re
import shutil
import struct
import subprocess
import tempfile
import unittest

import kvc

XXHSUM = shutil.which("xxhsum")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def setUpModule():
    if not os.access(kvc.KVCACHECTL, os.X_OK):
        raise RuntimeError("%s not found or not executable (set KVC_BIN_DIR)" % kvc.KVCACHECTL)


def lookup_max():
    """KVCACHEFS_LOOKUP_MAX from the ABI header (KVC_LOOKUP_MAX is defined as it)."""
    src = os.environ.get("KVC_SOURCE_DIR") or os.path.join(kvc.HERE, "..", "..")
    with open(os.path.join(src, "fs", "uapi", "kvcachefs.h")) as f:
        m = re.search(r"#define\s+KVCACHEFS_LOOKUP_MAX\s+(\d+)", f.read())
    return int(m.group(1))


def ctl(*args, stdin_text=None):
    """Run kvcachectl (stdin from stdin_text, else /dev/null); returns the CompletedProcess
    (text mode). Fails the test on a sanitizer report."""
    logdir = tempfile.mkdtemp(prefix="kvc-itest-log-")
    try:
        r = subprocess.run([kvc.KVCACHECTL] + [str(a) for a in args],
                           input=stdin_text,
                           stdin=subprocess.DEVNULL if stdin_text is None else None,
                           capture_output=True, text=True, timeout=60,
                           env=kvc.sanitizer_env(logdir))
        reports = kvc.sanitizer_reports(logdir)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    if reports:
        raise AssertionError("sanitizer report(s) from kvcachectl %s:\n%s"
                             % (" ".join(map(str, args)), "\n".join(reports)))
    return r


class Xxhsum:
    """xxhsum -H2 of byte strings, through a temporary file."""

    def __init__(self):
        fd, self.path = tempfile.mkstemp(prefix="kvc-itest-xxh-")
        os.close(fd)

    def close(self):
        os.unlink(self.path)

    def __call__(self, data):
        with open(self.path, "wb") as f:
            f.write(data)
        r = subprocess.run([XXHSUM, "-H2", self.path], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError("xxhsum -H2 failed (exit %d): %s" % (r.returncode, r.stderr))
        digest = r.stdout.split()[0] if r.stdout.split() else ""
        if not HEX32.match(digest):
            raise AssertionError("unexpected xxhsum -H2 output: %r" % r.stdout)
        return digest


def expected_names(xxh, seed, block_tokens, tokens):
    """The names of every full block, computed with xxhsum alone."""
    h = xxh(struct.pack("<Q", seed))
    names = []
    for i in range(len(tokens) // block_tokens):
        block = tokens[i * block_tokens:(i + 1) * block_tokens]
        h = xxh(bytes.fromhex(h) + struct.pack("<%dI" % block_tokens, *block))
        names.append(h)
    return names


def pseudo_tokens(n, x=0x9E3779B9):
    """n deterministic tokens spread over the whole u32 range (xorshift32)."""
    out = []
    for _ in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out.append(x)
    return out


@unittest.skipUnless(XXHSUM, "xxhsum not installed (Debian package xxhash; tools/setup.sh)")
class HashMatchesXxhsum(kvc.TestCase):
    def setUp(self):
        self.xxh = Xxhsum()
        self.addCleanup(self.xxh.close)

    def check(self, seed, block_tokens, tokens, seed_arg=None):
        want = expected_names(self.xxh, seed, block_tokens, tokens)
        r = ctl("hash", "--block-tokens", block_tokens,
                "--seed", seed if seed_arg is None else seed_arg, *tokens)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        self.assertEqual(r.stdout.splitlines(), want,
                         "seed %#x, block_tokens %d, %d tokens" % (seed, block_tokens,
                                                                    len(tokens)))
        return want

    def test_small_blocks(self):
        self.check(0, 4, [1, 2, 3, 4, 5, 6, 7, 8])
        self.check(1, 1, [0, 0xFFFFFFFF, 7])
        self.check(0x0123456789ABCDEF, 3, [0, 0xFFFFFFFF, 7, 42, 100000, 3, 9, 9, 9])

    def test_extreme_tokens_and_seeds(self):
        for seed in (0, 1, 1 << 32, (1 << 64) - 1):
            self.check(seed, 2, [0, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 1, 0x01020304])

    def test_large_blocks(self):
        # longer than the library's 256-token conversion buffer, and not a multiple of it
        self.check(42, 300, pseudo_tokens(900))
        self.check(7, 256, pseudo_tokens(512 + 3))
        self.check(7, 1000, pseudo_tokens(1000))

    def test_default_seed_is_zero(self):
        tokens = [5, 6, 7, 8]
        want = expected_names(self.xxh, 0, 2, tokens)
        r = ctl("hash", "--block-tokens", 2, *tokens)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), want)

    def test_hex_seed(self):
        tokens = [11, 22, 33, 44]
        for arg in ("0xdeadbeefcafe", "0XDEADBEEFCAFE", "0xDeadBeefCafe", "244837814094590"):
            self.check(0xDEADBEEFCAFE, 2, tokens, seed_arg=arg)
        self.check((1 << 64) - 1, 2, tokens, seed_arg="0xffffffffffffffff")
        self.check((1 << 64) - 1, 2, tokens, seed_arg="18446744073709551615")

    def test_equals_form_of_options(self):
        tokens = [1, 2, 3, 4]
        want = expected_names(self.xxh, 9, 2, tokens)
        r = ctl("hash", "--block-tokens=2", "--seed=9", *tokens)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), want)

    def test_partial_block_gets_no_name(self):
        names = self.check(3, 4, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        self.assertEqual(len(names), 2)
        r = ctl("hash", "--block-tokens", 4, "--seed", 3, 1, 2, 3, 4, 5, 6, 7, 8, 99, 100)
        self.assertEqual(r.stdout.splitlines(), names)

    def test_fewer_tokens_than_a_block(self):
        r = ctl("hash", "--block-tokens", 16, 1, 2, 3)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""))

    def test_prefix_names_lead_longer_names(self):
        tokens = pseudo_tokens(64)
        full = ctl("hash", "--block-tokens", 8, *tokens).stdout.splitlines()
        self.assertEqual(len(full), 8)
        for n in (8, 20, 40, 63):
            part = ctl("hash", "--block-tokens", 8, *tokens[:n]).stdout.splitlines()
            self.assertEqual(part, full[:n // 8])

    def test_stdin(self):
        tokens = pseudo_tokens(50)
        want = expected_names(self.xxh, 5, 7, tokens)
        text = " ".join(map(str, tokens[:10])) + "\n" + ",".join(map(str, tokens[10:30])) + \
            "\n\t" + ", ".join(map(str, tokens[30:45])) + " ,, \n" + \
            "\n".join(map(str, tokens[45:]))
        r = ctl("hash", "--block-tokens", 7, "--seed", 5, stdin_text=text)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), want)
        # the same without a trailing separator, and with one
        for t in ("1 2 3 4", "1 2 3 4\n", "1,2,3,4,"):
            r = ctl("hash", "--block-tokens", 2, stdin_text=t)
            self.assertEqual(r.stdout.splitlines(), expected_names(self.xxh, 0, 2, [1, 2, 3, 4]))

    def test_empty_stdin(self):
        for t in ("", "\n", " , \n"):
            r = ctl("hash", "--block-tokens", 2, stdin_text=t)
            self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""), repr(t))

    def test_arguments_win_over_stdin(self):
        r = ctl("hash", "--block-tokens", 2, 1, 2, stdin_text="3 4")
        self.assertEqual(r.stdout.splitlines(), expected_names(self.xxh, 0, 2, [1, 2]))

    def test_double_dash_ends_options(self):
        r = ctl("hash", "--block-tokens", 2, "--", 1, 2)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), expected_names(self.xxh, 0, 2, [1, 2]))


class HashErrors(kvc.TestCase):
    def assertUsageError(self, r, *needles):
        self.assertEqual(r.returncode, 2, "stdout %r stderr %r" % (r.stdout, r.stderr))
        self.assertEqual(r.stdout, "")
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 1, "want one line on stderr: %r" % r.stderr)
        self.assertTrue(lines[0].startswith("kvcachectl: hash: "), lines[0])
        for n in needles:
            self.assertIn(n, lines[0])

    def test_bad_token_argument(self):
        for bad in ("12x", "4294967296", "99999999999999999999", "-1", "1.5", "0x10", "+3",
                    " 4", ""):
            with self.subTest(token=bad):
                r = ctl("hash", "--block-tokens", 2, 1, bad, 3)
                self.assertUsageError(r, "'%s'" % bad, "token")

    def test_bad_token_stdin(self):
        for bad in ("12x", "4294967296", "-1", "abc", "[1"):
            with self.subTest(token=bad):
                r = ctl("hash", "--block-tokens", 1, stdin_text="1 2\n3,%s, 5\n" % bad)
                self.assertUsageError(r, "'%s'" % bad, "token")

    def test_largest_token_is_fine(self):
        r = ctl("hash", "--block-tokens", 1, 4294967295)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(HEX32.match(r.stdout.strip()), r.stdout)

    def test_missing_block_tokens(self):
        self.assertUsageError(ctl("hash", 1, 2, 3), "--block-tokens")
        self.assertUsageError(ctl("hash", "--seed", 1, 1, 2), "--block-tokens")

    def test_block_tokens_without_value(self):
        self.assertUsageError(ctl("hash", "--block-tokens"), "--block-tokens")

    def test_bad_block_tokens(self):
        for bad in ("0", "-2", "x", "4294967296", "1k", ""):
            with self.subTest(block_tokens=bad):
                r = ctl("hash", "--block-tokens", bad, 1, 2)
                self.assertUsageError(r, "--block-tokens", "'%s'" % bad)

    def test_bad_seed(self):
        for bad in ("0x", "0xg1", "18446744073709551616", "0x10000000000000000", "-1", "abc",
                    "1e3", ""):
            with self.subTest(seed=bad):
                r = ctl("hash", "--block-tokens", 2, "--seed", bad, 1, 2)
                self.assertUsageError(r, "--seed", "'%s'" % bad)

    def test_unknown_option(self):
        self.assertUsageError(ctl("hash", "--block-tokens", 2, "--frobnicate", 1, 2),
                              "--frobnicate")

    def test_help_mentions_commands(self):
        r = ctl("--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        for s in ("hash", "--block-tokens", "--seed", "lookup", "status"):
            self.assertIn(s, r.stdout)


class LookupUsage(kvc.TestCase):
    def assertUsageError(self, r, needle):
        self.assertEqual(r.returncode, 2, "stdout %r stderr %r" % (r.stdout, r.stderr))
        self.assertEqual(r.stdout, "")
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertIn(needle, r.stderr)

    def test_missing_dir(self):
        self.assertUsageError(ctl("lookup"), "DIR")

    def test_missing_names(self):
        self.assertUsageError(ctl("lookup", "/tmp"), "NAME")

    def test_unknown_option(self):
        self.assertUsageError(ctl("lookup", "--frobnicate", "/tmp", "a"), "--frobnicate")


class LookupOnMount(kvc.DirTestCase):
    @classmethod
    def setUpClass(cls):
        kvc.require_environment()
        super().setUpClass()

    def lookup(self, *names, d=None):
        r = ctl("lookup", self.d if d is None else d, *names)
        self.assertEqual(r.returncode, 0, "lookup %r: exit %d: %s" % (names, r.returncode,
                                                                    r.stderr))
        self.assertEqual(r.stderr, "")
        self.assertRegex(r.stdout, r"^\d+\n$")
        return int(r.stdout)

    def assertLookupError(self, d, names, message):
        r = ctl("lookup", d, *names)
        self.assertEqual(r.returncode, 1, "stdout %r stderr %r" % (r.stdout, r.stderr))
        self.assertEqual(r.stdout, "")
        self.assertEqual(r.stderr, "kvcachectl: lookup: %s: %s\n" % (d, message))

    def make_blocks(self, *names):
        for n in names:
            kvc.write_block(self.p(n), n.encode() * 100)

    def test_leading_count(self):
        self.make_blocks("n0", "n1", "n2", "n3", "n4")
        self.assertEqual(self.lookup("n0", "n1", "n2", "missing", "n4"), 3)
        self.assertEqual(self.lookup("missing", "n0", "n1"), 0)
        self.assertEqual(self.lookup("n0", "n1", "n2", "n3", "n4"), 5)
        self.assertEqual(self.lookup("n4"), 1)
        self.assertEqual(self.lookup("n3", "n2", "n1", "n0"), 4)

    def test_block_being_written_does_not_count(self):
        self.make_blocks("n0", "n1")
        fd = os.open(self.p("n2"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"partial")
            self.assertEqual(self.lookup("n0", "n1", "n2"), 2)
        finally:
            os.close(fd)
        self.assertEqual(self.lookup("n0", "n1", "n2"), 3)

    def test_directory_does_not_count(self):
        self.make_blocks("n0")
        os.mkdir(self.p("sub"))
        self.assertEqual(self.lookup("n0", "sub"), 1)

    def test_unlinked_block_does_not_count(self):
        self.make_blocks("n0", "n1", "n2")
        os.unlink(self.p("n1"))
        self.assertEqual(self.lookup("n0", "n1", "n2"), 1)

    def test_hash_names_end_to_end(self):
        tokens = pseudo_tokens(40)
        r = ctl("hash", "--block-tokens", 10, "--seed", 0xABC, *tokens)
        self.assertEqual(r.returncode, 0, r.stderr)
        names = r.stdout.split()
        self.assertEqual(len(names), 4)
        self.make_blocks(*names[:2])
        self.assertEqual(self.lookup(*names), 2)

    def test_many_names(self):
        mx = lookup_max()
        self.make_blocks("n0", "n1")
        names = ["n0", "n1"] + ["m%d" % i for i in range(mx - 2)]
        self.assertEqual(self.lookup(*names), 2)
        # more than the library takes in one call: its E2BIG comes through
        self.assertLookupError(self.d, names + ["one-too-many"], os.strerror(errno.E2BIG))

    def test_not_a_directory(self):
        self.make_blocks("n0")
        self.assertLookupError(self.p("n0"), ["n0"], "Not a directory")

    def test_missing_directory(self):
        self.assertLookupError(self.p("nowhere"), ["n0"], "No such file or directory")

    def test_bad_name(self):
        r = ctl("lookup", self.d, "a/b")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertTrue(r.stderr.startswith("kvcachectl: lookup: %s: " % self.d), r.stderr)

    def test_not_kvcachefs(self):
        d = tempfile.mkdtemp(prefix="kvc-itest-plain-")
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        with open(os.path.join(d, "n0"), "wb") as f:
            f.write(b"x")
        r = ctl("lookup", d, "n0")
        self.assertEqual(r.returncode, 1, "stdout %r stderr %r" % (r.stdout, r.stderr))
        self.assertEqual(r.stdout, "")
        self.assertTrue(r.stderr.startswith("kvcachectl: lookup: %s: " % d), r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)


if __name__ == "__main__":
    kvc.main()
