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

# --- fuzz: the decoders of peer bytes under libFuzzer (tests/fuzz/) ---------------------------
# Two targets, one after the other: fuzz_wire (engine/wire.c, frames between daemons) and
# fuzz_mrpc (meta/mrpc.c, metadata messages), each for half of KVC_FUZZ_SECONDS (default 30,
# at least 1 s each). KVC_FUZZ_SEED (default: a new one each run) seeds both. A failure keeps
# its directory: replay the reproducer with build/fuzz_<target> <file>.

# fuzz_run TARGET WHAT SOURCE...: build tests/fuzz/fuzz_TARGET.c with the sources it tests and
# run it for $fuzz_secs; 1 (with the reproducers and the report) if either fails.
fuzz_run() {
	local target=$1 what=$2 bin dir first
	shift 2
	bin=$PWD/build/fuzz_$target
	echo "== fuzz: $what ($target), libFuzzer + ASan + UBSan, ${fuzz_secs}s, seed $fuzz_seed =="
	dir=$(mktemp -d "/tmp/kvcachefs-fuzz-$target.XXXXXX")
	if ! clang -std=c17 -O1 -g -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=undefined -D_GNU_SOURCE -I. "tests/fuzz/fuzz_$target.c" \
		"$@" -o "$bin"; then
		echo "== fuzz: $target: building $bin failed =="
		rm -rf "$dir"
		return 1
	fi
	if ! (cd "$dir" && ASAN_OPTIONS=detect_leaks=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$bin" -seed="$fuzz_seed" \
		-max_total_time="$fuzz_secs" -rss_limit_mb=1024 -artifact_prefix="$dir/" \
		>"$dir/fuzz.log" 2>&1); then
		echo "== fuzz: $target FAILED (log: $dir/fuzz.log) =="
		for f in "$dir"/crash-* "$dir"/leak-* "$dir"/oom-* "$dir"/timeout-*; do
			if [ -e "$f" ]; then
				echo "reproducer: $f (replay: $bin $f)"
			fi
		done
		# the report, from its first line (libFuzzer's progress lines come before it)
		first=$(grep -n -m1 -E 'ERROR:|check failed|runtime error|deadly signal' \
			"$dir/fuzz.log" | cut -d: -f1 || true)
		tail -n +"${first:-1}" "$dir/fuzz.log" | head -n 40 || true
		return 1
	fi
	grep -E '^Done [0-9]+ runs' "$dir/fuzz.log" || true
	rm -rf "$dir"
}

if ! command -v clang >/dev/null 2>&1; then
	echo "== fuzz: skipped: clang not found (tools/setup.sh installs it) =="
elif ! [[ ${KVC_FUZZ_SECONDS:-30} =~ ^[0-9]+$ ]]; then
	echo "== fuzz: FAILED: KVC_FUZZ_SECONDS=$KVC_FUZZ_SECONDS is not a number of seconds =="
	status=1
else
	fuzz_secs=$((10#${KVC_FUZZ_SECONDS:-30} / 2))
	if [ "$fuzz_secs" -lt 1 ]; then
		fuzz_secs=1
	fi
	fuzz_seed=${KVC_FUZZ_SEED:-$((RANDOM + 1))}
	fuzz_run wire "wire decoder" engine/wire.c || status=1
	fuzz_run mrpc "metadata message codec" meta/mrpc.c || status=1
fi
# --- end fuzz -------------------------------------------------------------------------------

exit $status
