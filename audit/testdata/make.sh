#!/bin/sh
# make.sh builds the images the audit tests read: filesystems the real kernel
# left with a dirty journal, copied while still mounted right after a sync.
# The newest size (and, in data=journal, the data) of var/log/app.log then
# lives only in committed journal transactions that recovery would replay at
# the next mount; the home inode block still says what it said before.
# Each image is checked for that (debugfs, which does not replay, must see a
# shorter file) and committed gzip-compressed with the content it must show
# (NAME.want). Needs root, a loop device, mkfs.ext4 and debugfs.
# Run from this directory: ./make.sh
set -eu
export E2FSPROGS_FAKE_TIME=1700000000
tmp=$(mktemp -d)
mnt=$tmp/mnt
mkdir "$mnt"
cleanup() { umount "$mnt" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

# mk NAME DATA-MODE
mk() {
	name=$1 mode=$2
	for try in 1 2 3 4 5; do
		img=$tmp/$name.img
		rm -f "$img"
		truncate -s 8M "$img"
		mkfs.ext4 -q -F -b 1024 -U 6f3c1a52-5b7e-4d1e-9a55-0c1d2e3f4a5b -E hash_seed=11111111-2222-3333-4444-555555555555 "$img"
		debugfs -w -R "mkdir var" "$img" >/dev/null 2>&1
		debugfs -w -R "mkdir var/log" "$img" >/dev/null 2>&1
		: >"$tmp/empty"
		debugfs -w -R "write $tmp/empty var/log/app.log" "$img" >/dev/null 2>&1
		mount -o loop,data=$mode "$img" "$mnt"
		awk 'BEGIN { for (i = 0; i < 300; i++) printf "line %06d appended by the host\n", i }' | dd of="$mnt/var/log/app.log" oflag=append conv=notrunc,fsync status=none
		cp "$img" "$tmp/$name.snap"
		umount "$mnt"
		cp "$mnt/../$name.snap" "$tmp/check.img"
		size=$(debugfs -R "stat var/log/app.log" "$tmp/check.img" 2>/dev/null | sed -n 's/.*Size: \([0-9]*\).*/\1/p' | head -1)
		if [ "$size" = 0 ]; then
			awk 'BEGIN { for (i = 0; i < 300; i++) printf "line %06d appended by the host\n", i }' >"$name.want"
			gzip -9n <"$tmp/$name.snap" >"$name.img.gz"
			echo "$name: home inode says size $size; the journal holds the rest"
			return 0
		fi
		echo "$name: try $try: the home inode block was already written (size $size), retrying" >&2
	done
	echo "$name: could not catch a dirty journal" >&2
	exit 1
}

mk ordered-dirty ordered
mk journal-dirty journal
