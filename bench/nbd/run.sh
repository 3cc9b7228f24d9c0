#!/usr/bin/env bash
# Compares `indelible serve` with `nbdkit file` on the same image, driving
# both with fio's nbd engine over a Unix socket. Not a test: it prints a
# table of throughput (MiB/s) and IOPS for each workload and the ratio
# indelible/nbdkit.
#
#   bench/nbd/run.sh [RUNTIME_SECONDS] [IMAGE_SIZE] [REPEATS]   (defaults: 15 1G 2)
#   ONLY=seqwrite bench/nbd/run.sh ...   runs only the workloads whose name matches
#
# Like with like: one fio job (one NBD connection) per run against each
# server; both servers run requests of that connection concurrently
# (nbdkit's file plugin with its default --threads 16 and the parallel
# thread model; indelible with one worker goroutine per outstanding
# request), both read and write the same file through the page cache, and
# neither flushes unless fio asks (it does not here). Each workload runs
# REPEATS times against each server, alternating which goes first, with a
# `sync` before every run so that no run pays for another's dirty pages; the
# table shows the mean. The image is written in full first so that no run
# pays for allocating blocks.
set -euo pipefail
cd "$(dirname "$0")/../.."
runtime=${1:-15}
size=${2:-1G}
repeats=${3:-2}
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
declare -A pid_of
pid_of[indelible]=$!
nbdkit -f --unix "$work/nbdkit.sock" file "$img" >"$work/nbdkit.log" 2>&1 &
pids+=($!)
pid_of[nbdkit]=$!
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

# cpu_ticks PID -> user+system CPU time of the process, in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick_us=$((1000000 / $(getconf CLK_TCK)))

# fio_run SOCKET RW BS QD -> prints "MiB/s IOPS IOS"
fio_run() {
	local out
	out=$(fio --name=bench --ioengine=nbd --uri="nbd+unix:///?socket=$1" \
		--rw="$2" --bs="$3" --iodepth="$4" --size="$size" \
		--time_based --runtime="$runtime" --ramp_time=2 --numjobs=1 \
		--group_reporting --output-format=json)
	python3 -c '
import json, sys
s = sys.stdin.read()
j = json.loads(s[s.index("{"):])["jobs"][0]  # fio prints a line before the JSON
d = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
print("%.1f %.0f %d" % (d["bw_bytes"] / 1048576, d["iops"], d["total_ios"]))' <<<"$out"
}

# The machine may be busy with other work, which moves throughput a lot;
# the servers' own CPU time per request (cpu us/IO) moves much less and is
# the fairer measure of efficiency.
printf '%-18s %10s %8s %7s | %10s %8s %7s | %6s %6s\n' workload "indelible" "IOPS" "cpu/IO" "nbdkit" "IOPS" "cpu/IO" "ratio" "cpu"
printf '%-18s %10s %8s %7s | %10s %8s %7s | %6s %6s\n' "" "MiB/s" "" "us" "MiB/s" "" "us" "MiB/s" "ratio"
for w in "${workloads[@]}"; do
	[[ "${w%% *}" =~ ${ONLY:-.} ]] || continue   # ONLY=regex picks workloads
	read -r name rw bs qd <<<"$w"
	declare -A bw_sum=() iops_sum=() ios_sum=() ticks_sum=()
	for ((r = 0; r < repeats; r++)); do
		order=(indelible nbdkit)
		((r % 2 == 1)) && order=(nbdkit indelible)
		for s in "${order[@]}"; do
			sync
			t0=$(cpu_ticks "${pid_of[$s]}")
			read -r bw iops ios < <(fio_run "$work/$s.sock" "$rw" "$bs" "$qd")
			t1=$(cpu_ticks "${pid_of[$s]}")
			echo "  run $((r + 1)) $name $s: $bw MiB/s, $iops IOPS, $(( (t1 - t0) * tick_us / ios )) us CPU per IO" >&2
			bw_sum[$s]=$(python3 -c "print(${bw_sum[$s]:-0} + $bw)")
			iops_sum[$s]=$(python3 -c "print(${iops_sum[$s]:-0} + $iops)")
			ios_sum[$s]=$(( ${ios_sum[$s]:-0} + ios ))
			ticks_sum[$s]=$(( ${ticks_sum[$s]:-0} + t1 - t0 ))
		done
	done
	python3 -c "
r, us = $repeats, $tick_us
ib, ii, ic = ${bw_sum[indelible]} / r, ${iops_sum[indelible]} / r, ${ticks_sum[indelible]} * us / ${ios_sum[indelible]}
kb, ki, kc = ${bw_sum[nbdkit]} / r, ${iops_sum[nbdkit]} / r, ${ticks_sum[nbdkit]} * us / ${ios_sum[nbdkit]}
print('%-18s %10.1f %8.0f %7.1f | %10.1f %8.0f %7.1f | %6.2f %6.2f' % ('$name', ib, ii, ic, kb, ki, kc, ib / kb, ic / kc))"
done
