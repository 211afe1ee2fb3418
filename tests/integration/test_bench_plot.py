#!/usr/bin/env python3
"""kvcache-bench --plot FILE.png: after measuring, a command draws its figures with gnuplot into
a PNG, also when a target is missed; gnuplot missing or an unwritable path is a clear error
(exit status 1) found before the run; a gnuplot that fails after the run leaves the printed
figures, and an older plot, as they were; the temporary script and data are removed.

The quick commands are run with small options: memory (one mount, a few thousand blocks), fs
(three mounts, 16 blocks of two sizes) and transfer (no mount, iperf3 as its baseline)."""

import json
import os
import shutil
import stat
import struct
import subprocess
import tempfile
import unittest

import kvc

BENCH = os.path.join(kvc.BIN_DIR, "kvcache-bench")
COMMANDS = ("fs", "memory", "zerocopy", "transfer", "cluster", "ssd")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MEMORY_ARGS = ["memory", "--blocks", "2000"]


def png_size(path):
    """(width, height) from the IHDR chunk of the PNG at path; fails on anything else."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != PNG_MAGIC:
        raise AssertionError("%s does not start with the PNG signature: %r" % (path, head[:8]))
    if head[12:16] != b"IHDR":
        raise AssertionError("%s: no IHDR chunk first: %r" % (path, head[12:16]))
    return struct.unpack(">II", head[16:24])


def path_without(prog):
    """A directory of links to every program of $PATH except prog: PATH stripped of it."""
    d = tempfile.mkdtemp(prefix="kvc-itest-path-")
    for p in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        try:
            names = os.listdir(p)
        except OSError:
            continue
        for n in names:
            src = os.path.join(p, n)
            dst = os.path.join(d, n)
            if n == prog or os.path.lexists(dst) or not os.access(src, os.X_OK):
                continue
            os.symlink(src, dst)
    return d


class BenchPlot(kvc.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(BENCH, os.X_OK):
            raise RuntimeError("%s not found or not executable (set KVC_BIN_DIR)" % BENCH)

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="kvc-itest-plot-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        # the bench's temporary script and data go here: they must be gone afterwards
        self.tmp = os.path.join(self.dir, "tmp")
        os.mkdir(self.tmp)

    def env(self, **extra):
        e = dict(os.environ, KVC_BIN_DIR=kvc.BIN_DIR, TMPDIR=self.tmp)
        e.update(extra)
        return e

    def bench(self, args, env=None, timeout=240):
        return subprocess.run([BENCH] + args, capture_output=True, text=True,
                              env=env or self.env(), timeout=timeout)

    def need_gnuplot(self):
        if not shutil.which("gnuplot"):
            self.skipTest("gnuplot is not installed (tools/setup.sh installs gnuplot-nox)")

    def need_mounts(self):
        kvc.require_environment()

    def assertPlot(self, path, min_w=200, min_h=200):
        self.assertTrue(os.path.isfile(path), "%s was not written" % path)
        self.assertGreater(os.path.getsize(path), 2000, "%s is too small for a plot" % path)
        w, h = png_size(path)
        self.assertGreater(w, min_w, "width of %s" % path)
        self.assertGreater(h, min_h, "height of %s" % path)
        return w, h

    def assertNoTemp(self):
        self.assertEqual(os.listdir(self.tmp), [], "temporary plot files left behind")

    # ---- help ----

    def test_help_documents_plot(self):
        for cmd in COMMANDS:
            r = self.bench([cmd, "--help"], timeout=30)
            self.assertEqual(r.returncode, 0, cmd + ": " + r.stderr)
            self.assertIn("--plot FILE.png", r.stdout, cmd)
            self.assertIn("gnuplot-nox", r.stdout, cmd)
        r = self.bench(["--help"], timeout=30)
        self.assertIn("--plot FILE.png", r.stdout)

    def test_plot_needs_a_file(self):
        r = self.bench(["memory", "--plot"], timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)

    # ---- plots drawn ----

    def test_memory_plot_also_when_target_missed(self):
        self.need_gnuplot()
        self.need_mounts()
        out = os.path.join(self.dir, "memory.png")
        r = self.bench(MEMORY_ARGS + ["--plot", out])
        # 3: the bytes per block above the target, which a few thousand blocks may show
        self.assertIn(r.returncode, (0, 3), r.stderr)
        self.assertIn("bytes per block", r.stdout)
        self.assertPlot(out)
        self.assertNoTemp()

    def test_fs_plot_with_json_replaces_an_older_plot(self):
        self.need_gnuplot()
        self.need_mounts()
        out = os.path.join(self.dir, "fs.png")
        with open(out, "wb") as f:
            f.write(b"an older plot")
        r = self.bench(["fs", "--count", "16", "--sizes", "256K,64K", "--reps", "1", "--json",
                        "--plot", out])
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)  # the plot adds nothing to stdout
        self.assertEqual(doc["bench"], "fs")
        w, h = self.assertPlot(out)
        self.assertGreater(w, h, "four panels in two columns")
        self.assertNoTemp()

    def test_transfer_plot(self):
        self.need_gnuplot()
        if not shutil.which("iperf3"):
            self.skipTest("iperf3 is not installed (tools/setup.sh installs it)")
        if not os.access(os.path.join(kvc.BIN_DIR, "kvcache-xfer"), os.X_OK):
            self.skipTest("kvcache-xfer is not built")
        out = os.path.join(self.dir, "transfer.png")
        r = self.bench(["transfer", "--sizes", "64K,2M", "--batches", "1,8", "--seconds", "1",
                        "--reps", "1", "--plot", out])
        self.assertIn(r.returncode, (0, 3), r.stderr)
        self.assertIn("READ/iperf3", r.stdout)
        self.assertPlot(out)
        self.assertNoTemp()

    def test_transfer_tcp_congestion(self):
        """--tcp-congestion reaches both engines and iperf3, and is printed; one the host
        lacks is refused before anything starts."""
        for cmd in ("transfer", "cluster"):
            r = self.bench([cmd, "--tcp-congestion", "no_such_cc"], timeout=30)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("--tcp-congestion no_such_cc: not available on this host", r.stderr)
        if not shutil.which("iperf3"):
            self.skipTest("iperf3 is not installed (tools/setup.sh installs it)")
        r = self.bench(["transfer", "--sizes", "64K", "--batches", "1", "--seconds", "1",
                        "--reps", "1", "--tcp-congestion", "reno"])
        self.assertIn(r.returncode, (0, 3), r.stderr)
        self.assertIn("TCP congestion control: reno for both engines and iperf3", r.stdout)
        r = self.bench(["transfer", "--sizes", "64K", "--batches", "1", "--seconds", "1",
                        "--reps", "1", "--tcp-congestion", "reno", "--json"])
        self.assertIn(r.returncode, (0, 3), r.stderr)
        self.assertEqual(json.loads(r.stdout)["tcp_congestion"], "reno")

    # ---- errors ----

    def test_gnuplot_missing(self):
        # found before the run: nothing is mounted or measured for a plot that cannot be drawn
        d = path_without("gnuplot")
        self.addCleanup(shutil.rmtree, d, True)
        out = os.path.join(self.dir, "missing.png")
        r = self.bench(MEMORY_ARGS + ["--plot", out], env=self.env(PATH=d), timeout=60)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("gnuplot", r.stderr)
        self.assertIn("gnuplot-nox", r.stderr)
        self.assertNotIn("mounted on", r.stderr)
        self.assertFalse(os.path.exists(out))
        self.assertNoTemp()

    def test_unwritable_path(self):
        cases = (
            (os.path.join(self.dir, "no-such-dir", "x.png"), "No such file or directory"),
            (self.dir, "Is a directory"),
            ("/dev/null", "not a regular file"),
        )
        afile = os.path.join(self.dir, "a-file")
        open(afile, "w").close()
        cases += ((os.path.join(afile, "x.png"), "Not a directory"),)
        for path, why in cases:
            r = self.bench(MEMORY_ARGS + ["--plot", path], timeout=60)
            self.assertEqual(r.returncode, 1, path + ": " + r.stdout + r.stderr)
            self.assertIn("--plot " + path + ": " + why, r.stderr)
            self.assertNotIn("mounted on", r.stderr, path)
            self.assertEqual(r.stdout, "", path)
        self.assertEqual(sorted(os.listdir(self.dir)), ["a-file", "tmp"])

    def test_gnuplot_failing_keeps_figures_and_older_plot(self):
        # A gnuplot that is there before the run but fails at the end: the figures are
        # printed all the same, the error names gnuplot and shows its messages, exit status
        # 1, and the older plot is left as it was.
        self.need_mounts()
        bindir = os.path.join(self.dir, "bin")
        os.mkdir(bindir)
        fake = os.path.join(bindir, "gnuplot")
        with open(fake, "w") as f:
            f.write("#!/bin/sh\necho 'plot.gp line 7: something went wrong' >&2\nexit 4\n")
        os.chmod(fake, stat.S_IRWXU)
        out = os.path.join(self.dir, "kept.png")
        with open(out, "wb") as f:
            f.write(b"an older plot")
        env = self.env(PATH=bindir + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
        r = self.bench(MEMORY_ARGS + ["--plot", out], env=env)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("bytes per block", r.stdout)
        self.assertIn("gnuplot exited with status 4", r.stderr)
        self.assertIn("something went wrong", r.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"an older plot")
        self.assertNoTemp()


if __name__ == "__main__":
    kvc.main()
