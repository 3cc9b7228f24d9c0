#!/bin/sh
# make-images.sh builds the small ext4 images the revfs/ext4 tests read.
# Each image is named by what it shows and committed gzip-compressed
# (tests decompress them into a temporary directory). Run it from this
# directory after changing it: ./make-images.sh
# Needs mkfs.ext4 and debugfs (e2fsprogs). The contents are deterministic:
# fixed UUIDs, hash seeds and timestamps (E2FSPROGS_FAKE_TIME).
set -eu
export E2FSPROGS_FAKE_TIME=1700000000
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# seq_file NAME BYTES: a file of printable, position-dependent lines.
seq_file() {
	awk -v n="$2" 'BEGIN { s = ""; i = 0; while (length(s) < n) { s = s sprintf("line %06d of the protected log\n", i++) } printf "%s", substr(s, 1, n) }' >"$1"
}

# fragmented NAME: 12 runs of 3 KiB with 5 KiB holes, so the file needs
# more than the 4 extents i_block holds (a depth-1 tree).
fragmented() {
	: >"$1"
	i=0
	while [ $i -lt 12 ]; do
		seq_file "$tmp/chunk" 3072
		dd if="$tmp/chunk" of="$1" bs=1024 seek=$((i * 8)) conv=notrunc status=none
		i=$((i + 1))
	done
}

seq_file "$tmp/app.log" 5000
seq_file "$tmp/big.log" 70000
fragmented "$tmp/frag.log"
: >"$tmp/empty"

# populate IMG: the tree every image carries.
populate() {
	debugfs -w "$1" >/dev/null 2>&1 <<CMDS
mkdir var
mkdir var/log
write $tmp/app.log var/log/app.log
write $tmp/big.log var/log/big.log
write $tmp/frag.log var/log/frag.log
write $tmp/empty var/log/empty.log
CMDS
}

# mk NAME SIZE MKFS-OPTIONS...
mk() {
	name=$1 size=$2
	shift 2
	rm -f "$tmp/$name"
	truncate -s "$size" "$tmp/$name"
	mkfs.ext4 -q -F -U 6b1d2c4e-0000-4000-8000-00000000ab01 -E hash_seed=6b1d2c4e-0000-4000-8000-00000000ab02,lazy_itable_init=0,nodiscard "$@" "$tmp/$name"
	populate "$tmp/$name"
	gzip -9n -c "$tmp/$name" >"$name.gz"
}

mk b1k-journal.img 8M -b 1024 -J size=1
mk b4k-journal.img 16M -b 4096 -J size=4
mk b4k-nojournal.img 16M -b 4096 -O ^has_journal
mk b1k-nojournal.img 8M -b 1024 -O ^has_journal
mk b4k-journal-data.img 16M -b 4096 -J size=4
# The last one also sets journal_data as the default mount option.
gunzip -c b4k-journal-data.img.gz >"$tmp/jd.img"
tune2fs -o journal_data "$tmp/jd.img" >/dev/null 2>&1
gzip -9n -c "$tmp/jd.img" >b4k-journal-data.img.gz

# Unsupported features, refused with a reason.
mk unsupported-inline-data.img 4M -b 1024 -O inline_data
mk unsupported-bigalloc.img 16M -b 1024 -O bigalloc -C 4096
