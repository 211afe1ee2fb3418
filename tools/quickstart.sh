#!/usr/bin/env bash
# The main job on a fresh machine: set up and build, mount a single-node kvcachefs at
# /mnt/kvcache (or $1), save a block with plain shell commands, load it back, show status.
#
#   tools/quickstart.sh [MOUNTPOINT]          (as root)
set -euo pipefail

cd "$(dirname "$0")/.."
mnt=${1:-/mnt/kvcache}
tools/setup.sh

if grep -q " $mnt fuse.kvcachefs " /proc/mounts; then
	echo "quickstart: $mnt is already a kvcachefs mount; using it"
else
	mkdir -p "$mnt"
	build/bin/kvcachefs --pool-size 1G "$mnt"
	echo "quickstart: mounted kvcachefs on $mnt"
fi

dir="$mnt/llama-3-8b/rank_0"
mkdir -p "$dir"
block="$dir/$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n').bin"

echo "quickstart: saving a 2 MiB block as $block"
head -c 2M /dev/urandom >/tmp/kvcache-quickstart.bin
cp /tmp/kvcache-quickstart.bin "$block"
echo "quickstart: loading it back"
if ! cmp "$block" /tmp/kvcache-quickstart.bin; then
	echo "quickstart: the block read back differs from what was saved" >&2
	exit 1
fi
echo "quickstart: the block reads back byte for byte"
rm -f /tmp/kvcache-quickstart.bin
ls -l "$dir"
getfattr -d -m user.kvcachefs "$block" 2>/dev/null || true
build/bin/kvcachectl status "$mnt"
echo
echo "quickstart: done. Unmount with:  fusermount3 -u $mnt"
