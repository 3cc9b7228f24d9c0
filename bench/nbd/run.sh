#!/usr/bin/env bash
# Compares `indelible serve` with `nbdkit file` on the same image, driving
# both with fio's nbd engine over a Unix socket. Not a test: it prints a
# table of throughput (MiB/s) and IOPS for each workload and the ratio
# indelible/nbdkit.
#
#   bench/nbd/run.sh [RUNTIME_SECONDS] [IMAGE_SIZE]     (defaults: 15 1G)
#
# Like with like: one fio job (one NBD connection) per run against each
# server; both servers run requests of that connection concurrently
# (nbdkit's file plugin with its default --threads 16 and the parallel
# thread model; indelible with one worker goroutine per outstanding
# request), both read and write the same file through the page cache, and
# neither flushes unless fio asks (it does not here). Each workload runs
# against indelible first, then nbdkit, on an image written in full first
# so that no run pays for allocating blocks.
set -euo pipefail
cd "$(dirname "$0")/../.."
runtime=${1:-15}
size=${2:-1G}
for t in fio nbdkit go; do
	command -v "$t" >/dev/null || { echo "run.sh: $t is not installed (scripts/install-deps --test)"; exit 1; }
done

work=$(mktemp -d /tmp/indelible-bench.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/indelible" ./cmd/indelible
img="$work/disk.img"
# A fully written image: blocks allocated, same layout for both servers.
dd if=/dev/zero of="$img" bs=1M count=$(( $(numfmt --from=iec "$size") >> 20 )) status=none
sync

"$work/indelible" serve --listen "unix:$work/indelible.sock" "$img" >"$work/indelible.log" 2>&1 &
pids+=($!)
nbdkit -f --unix "$work/nbdkit.sock" file "$img" >"$work/nbdkit.log" 2>&1 &
pids+=($!)
for s in indelible nbdkit; do
	for _ in $(seq 100); do [[ -S "$work/$s.sock" ]] && break; sleep 0.1; done
	[[ -S "$work/$s.sock" ]] || { echo "run.sh: $s did not start"; cat "$work/$s.log"; exit 1; }
done

# name rw bs iodepth
workloads=(
	"seqwrite-64k-qd4 write 64k 4"
	"randwrite-4k-qd16 randwrite 4k 16"
	"seqread-64k-qd4 read 64k 4"
	"randread-4k-qd16 randread 4k 16"
)

# fio_run SOCKET RW BS QD -> prints "MiB/s IOPS"
fio_run() {
	local out
	out=$(fio --name=bench --ioengine=nbd --uri="nbd+unix:///?socket=$1" \
		--rw="$2" --bs="$3" --iodepth="$4" --size="$size" \
		--time_based --runtime="$runtime" --ramp_time=2 --numjobs=1 \
		--group_reporting --output-format=json)
	python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
d = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
print("%.1f %.0f" % (d["bw_bytes"] / 1048576, d["iops"]))' <<<"$out"
}

printf '%-20s %14s %14s %14s %14s %7s\n' workload "indelible MiB/s" "indelible IOPS" "nbdkit MiB/s" "nbdkit IOPS" ratio
for w in "${workloads[@]}"; do
	read -r name rw bs qd <<<"$w"
	read -r ibw iiops < <(fio_run "$work/indelible.sock" "$rw" "$bs" "$qd")
	read -r kbw kiops < <(fio_run "$work/nbdkit.sock" "$rw" "$bs" "$qd")
	ratio=$(python3 -c "print('%.2f' % ($ibw / $kbw))")
	printf '%-20s %14s %14s %14s %14s %7s\n' "$name" "$ibw" "$iiops" "$kbw" "$kiops" "$ratio"
done
