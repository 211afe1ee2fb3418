#!/usr/bin/env bash
# Set up, build and run every test: the regular build, then the same suite under
# AddressSanitizer + UndefinedBehaviorSanitizer. Exits non-zero if any test fails.
#
#   tools/test.sh            (as root: the integration tests mount FUSE filesystems)
set -euo pipefail

cd "$(dirname "$0")/.."
tools/setup.sh --sanitize

jobs=$(nproc 2>/dev/null || echo 2)
status=0

echo "== tests: regular build =="
ctest --test-dir build --output-on-failure -j"$jobs" || status=1

echo "== tests: AddressSanitizer + UndefinedBehaviorSanitizer build =="
# Daemons run detached with stderr on /dev/null: sanitizer reports go to files, and any
# report fails the run.
logs=$(mktemp -d /tmp/kvcachefs-sanitizers.XXXXXX)
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$logs/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan"
ctest --test-dir build-asan --output-on-failure -j"$jobs" || status=1
if compgen -G "$logs/*" >/dev/null; then
	echo "== sanitizer reports =="
	cat "$logs"/*
	status=1
fi
rm -rf "$logs"

# --- fuzz: engine/wire.c under libFuzzer (tests/fuzz/fuzz_wire.c) ---------------------------
# KVC_FUZZ_SECONDS (default 30) and KVC_FUZZ_SEED (default: a new one each run) tune it. A
# failure keeps its directory: replay the reproducer with build/fuzz_wire <file>.
if command -v clang >/dev/null 2>&1; then
	fuzz_secs=${KVC_FUZZ_SECONDS:-30}
	fuzz_seed=${KVC_FUZZ_SEED:-$((RANDOM + 1))}
	fuzz_bin=$PWD/build/fuzz_wire
	echo "== fuzz: wire decoder, libFuzzer + ASan + UBSan, ${fuzz_secs}s, seed $fuzz_seed =="
	fuzz_dir=$(mktemp -d /tmp/kvcachefs-fuzz.XXXXXX)
	if ! clang -std=c17 -O1 -g -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=undefined -D_GNU_SOURCE -I. tests/fuzz/fuzz_wire.c \
		engine/wire.c -o "$fuzz_bin"; then
		echo "fuzz: building $fuzz_bin failed"
		status=1
	elif ! (cd "$fuzz_dir" && ASAN_OPTIONS=detect_leaks=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$fuzz_bin" -seed="$fuzz_seed" \
		-max_total_time="$fuzz_secs" -rss_limit_mb=1024 -artifact_prefix="$fuzz_dir/" \
		>"$fuzz_dir/fuzz.log" 2>&1); then
		echo "== fuzz: FAILED (log: $fuzz_dir/fuzz.log) =="
		for f in "$fuzz_dir"/crash-* "$fuzz_dir"/leak-* "$fuzz_dir"/oom-* \
			"$fuzz_dir"/timeout-*; do
			if [ -e "$f" ]; then
				echo "reproducer: $f (replay: $fuzz_bin $f)"
			fi
		done
		# the report, from its first line (libFuzzer's progress lines come before it)
		first=$(grep -n -m1 -E 'ERROR:|check failed|runtime error|deadly signal' \
			"$fuzz_dir/fuzz.log" | cut -d: -f1 || true)
		tail -n +"${first:-1}" "$fuzz_dir/fuzz.log" | head -n 40 || true
		status=1
	else
		grep -E '^Done [0-9]+ runs' "$fuzz_dir/fuzz.log" || true
		rm -rf "$fuzz_dir"
	fi
else
	echo "== fuzz: skipped: clang not found (tools/setup.sh installs it) =="
fi
# --- end fuzz -------------------------------------------------------------------------------

exit $status
