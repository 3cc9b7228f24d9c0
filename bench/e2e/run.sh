#!/usr/bin/env bash
# End-to-end benchmark of the WORM device. Not a test: it prints a table and
# ratios (see bench/e2e/RESULTS.md for what was measured and how to read it).
#
#   sudo bench/e2e/run.sh
#
# Settings (environment):
#   REPEATS=3          runs per mode and server; the table shows the median
#   WRITERS=16         appending processes' threads, one protected file each
#   PER_WRITER=16M     bytes each writer appends (16 x 16M = 256 MiB per run)
#   APPEND=4096        bytes per append
#   FSYNC_EVERY=16     appends between fsyncs
#   MODES="ordered journal"
#   IMAGE_SIZE=2G      image of the throughput runs
#   BIG=1              also time a 1 TiB sparse device: start-up and RSS (BIG=0 skips it)
#   BIG_SIZE=1T
#   EXTRA=             more servers run after each repeat's pair: "plain" is
#                      `indelible serve IMAGE` (the NBD server alone, no WORM device);
#                      "shaped" is the same server slowed down by $SHAPE (below)
#   SHAPE=             profserve flags for the "shaped" server, which make the plain
#                      image answer more slowly in one way at a time: -delay-write D,
#                      -delay-small-write D, -delay-flush D (a wait after each such
#                      request), -flush-sync @RUNDIR@/side (one more 4 KiB write and
#                      fdatasync after each flush, as the device's written-block map;
#                      @RUNDIR@ is the run's directory, on the image's filesystem). What
#                      was added per kind of request is in $OUT/shaped-MODE-REP.latency
#   PROFILE=1          one more indelible run per mode under a CPU profile (bench/e2e/profserve),
#                      which also times every request the device serves, per kind
#                      ($OUT/serve-MODE.latency: count, mean, p50, p90, p99, total)
#   BLOCKPROFILE_RATE=0  with PROFILE=1: also block and mutex profiles (ns, see runtime.SetBlockProfileRate)
#   TRACE=0            with PROFILE=1: the profiled run also records the host's requests
#                      ($OUT/MODE.trace, about the appended volume) and keeps the device
#                      directory it started from ($OUT/tpl-MODE), for bench/replay
#   STATS=0            1: nbdkit runs with its stats filter, which writes the total time it took
#                      per kind of request to $OUT/nbdkit-stats-MODE-REP.txt: the anchor's side
#                      of the profiled run's per-request table (PROFILE=1)
#   PERF=0             1: every run's workload is recorded machine-wide by `perf record -a -g`
#                      ($OUT/perf-SERVER-MODE-REP.data; `perf report -i FILE --sort comm`
#                      shows where the whole machine's CPU went: server, host kernel, writeback)
#   WARMUP=1           one indelible run per mode before the measured ones, not counted:
#                      on a VM that hands free memory back to its host, the first run after
#                      the machine idled touches memory the host must fault in again, and
#                      the device, which touches more of it (real logs), paid up to twice
#                      its usual CPU there (bench/e2e/RESULTS.md, 2026-12-01); every measured
#                      run then follows another run. WARMUP=0 skips it
#   SWITCHES=0         1: every run's workload also records each time the server's threads
#                      leave a CPU, with kernel and user stacks (`perf record -e
#                      sched:sched_switch -g -p PID`; $OUT/switches-SERVER-MODE-REP.data;
#                      `perf report -i FILE --no-children --sort sym -g caller --stdio` shows
#                      why they blocked: disk, socket, Go's scheduler). PERF=1 takes precedence
#   PIN=0              1: the server (indelible or nbdkit) runs on CPU 1 only and the host's
#                      processes (nbdfuse, the appender) on CPU 0 (taskset), as when the
#                      device is a board of its own; the host's kernel threads still run
#                      anywhere. Not the issue's measurement (shared cores): a second figure
#   OUT=/var/tmp/indelible-e2e-out   where profiles and logs are kept
#   SRC=.              source tree the binaries are built from (a snapshot, while
#                      the working tree is mid-edit)
#
# What one run is: a fresh copy of a freshly initialised device directory,
# served by `indelible serve DIR` (sealing on) or its image by `nbdkit file`;
# the same client path for both: nbdfuse (multi-conn, 4 connections) → a loop
# device (--direct-io=off) → the kernel's ext4 driver with the image's default
# mount options (data=MODE,errors=remount-ro); then bench/e2e/appender: W
# writers appending A bytes with O_APPEND to their own file, fsync every N
# appends. Throughput is bytes appended / wall time from the first append
# to the last fsync's return. Seal lag is measured against the real logs
# (DIR/store/<path>), watched with inotify. indelible and nbdkit alternate which
# goes first; every run starts after a `sync`. Each result line also
# carries srv_cpu_s, the server process's user+system CPU seconds over the
# workload (steadier than wall time on a shared machine), srv_vcs and
# srv_ivcs, its threads' voluntary and involuntary context switches over the
# same span (how often it waited and was woken), app_cpu_s, the
# appender's own (its writers' paths through ext4, loop and FUSE, and in
# the device's runs the lag tracker), busy_cpu_s,
# the whole machine's non-idle CPU seconds over the same span, and the
# disk's writes and flushes over it with the milliseconds it spent on each
# (disk_writes, disk_write_ms, disk_flushes, disk_flush_ms). These counters
# span the appender's whole run: in the device's runs that includes waiting
# for the last fsyncs to be sealed and the -verify pass, which reads every
# real log (from the disk: the device keeps none cached) and every file, so
# busy_cpu_s and a PERF=1 recording of the appender are larger there for
# work that is not the workload's; the server's own counters are not.
#
# Everything the script starts (servers, nbdfuse, loop devices, mounts) is
# undone on exit, by PID and by name of the exact loop device and mount point.
set -euo pipefail
cd "$(dirname "$0")/../.."

REPEATS=${REPEATS:-3}
WRITERS=${WRITERS:-16}
PER_WRITER=${PER_WRITER:-16M}
APPEND=${APPEND:-4096}
FSYNC_EVERY=${FSYNC_EVERY:-16}
MODES=${MODES:-ordered journal}
IMAGE_SIZE=${IMAGE_SIZE:-2G}
BIG=${BIG:-1}
BIG_SIZE=${BIG_SIZE:-1T}
PROFILE=${PROFILE:-1}
EXTRA=${EXTRA:-}
OUT=${OUT:-/var/tmp/indelible-e2e-out}
SRC=${SRC:-.}

[[ $EUID -eq 0 ]] || { echo "run.sh: needs root (losetup, mount)"; exit 1; }
for t in go nbdkit nbdfuse nbdinfo losetup mount fusermount3 python3; do
	command -v "$t" >/dev/null || { echo "run.sh: $t is not installed (scripts/install-deps --test installs it)"; exit 1; }
done
if [[ ${PERF:-0} == 1 || ${SWITCHES:-0} == 1 ]]; then
	command -v perf >/dev/null || { echo "run.sh: PERF=1 and SWITCHES=1 need perf (Debian: apt-get install linux-perf)"; exit 1; }
fi

work=$(mktemp -d /var/tmp/indelible-e2e.XXXXXX)
mkdir -p "$OUT"

# undo is a stack of shell commands that tear down what is attached; the
# EXIT trap runs what is left of it, newest first.
undo=()
push_undo() { undo+=("$1"); }
run_undo() {
	local i
	for ((i = ${#undo[@]} - 1; i >= 0; i--)); do
		eval "${undo[i]}" || true
	done
	undo=()
}
cleanup() {
	run_undo
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "# building from $SRC" >&2
(cd "$SRC" && go build -o "$work/indelible" ./cmd/indelible &&
	go build -o "$work/appender" ./bench/e2e/appender &&
	go build -o "$work/profserve" ./bench/e2e/profserve)

per_writer_bytes=$(numfmt --from=iec "$PER_WRITER")
logs=()
files=""
for ((i = 0; i < WRITERS; i++)); do
	logs+=(--log "$(printf 'log/w%02d.log' "$i")")
	files+="${files:+,}$(printf 'log/w%02d.log' "$i")"
done

# stop_pid PID: SIGTERM and wait (servers flush and exit), SIGKILL after 60 s.
stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 600; i++)); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# wait_nbd URI: until the server answers (at most 30 s).
wait_nbd() {
	local i
	for ((i = 0; i < 3000; i++)); do
		nbdinfo --size "$1" >/dev/null 2>&1 && return 0
		sleep 0.01
	done
	echo "run.sh: no NBD server answering at $1" >&2
	return 1
}

# attach URI DIR: nbdfuse DIR/fuse → loop → mount on DIR/mnt. Sets $mnt.
attach() {
	local uri=$1 d=$2 i loop fpid
	mkdir -p "$d/fuse" "$d/mnt"
	"${hostpin[@]}" nbdfuse "$d/fuse" "$uri" >"$d/nbdfuse.log" 2>&1 &
	fpid=$!
	push_undo "fusermount3 -u '$d/fuse' 2>/dev/null; for i in \$(seq 100); do kill -0 $fpid 2>/dev/null || break; sleep 0.1; done; kill $fpid 2>/dev/null; wait $fpid 2>/dev/null"
	for ((i = 0; i < 1000; i++)); do
		[[ -s "$d/fuse/nbd" ]] && break
		sleep 0.01
	done
	[[ -s "$d/fuse/nbd" ]] || { echo "run.sh: nbdfuse did not expose $d/fuse/nbd" >&2; cat "$d/nbdfuse.log" >&2; return 1; }
	loop=$(losetup --find --show --direct-io=off "$d/fuse/nbd")
	push_undo "losetup -d '$loop' 2>/dev/null"
	mount "$loop" "$d/mnt"
	push_undo "umount '$d/mnt'"
	mnt=$d/mnt
}

# proc_cpu PID: user + system CPU time of a process, in clock ticks.
proc_cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# proc_minflt PID: the process's minor page faults so far (pages it touched
# for the first time, or again after giving them back).
proc_minflt() { awk '{print $10}' "/proc/$1/stat"; }
# reported_kib: how much free memory the guest has handed back to its
# hypervisor so far (virtio-balloon free page reporting; empty when the
# kernel does not report). A page handed back costs a fault on the host
# when it is used again, so a run whose memory churns pays more on such a
# VM than on hardware: srv_minflt and reported_mib show it.
reported_kib() { cat /sys/module/page_reporting/parameters/reported_kib 2>/dev/null || true; }
# proc_switches PID: the context switches of all of a process's threads so far,
# voluntary and involuntary (a thread that exited is no longer counted; Go
# and nbdkit keep theirs).
proc_switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches:/ {v += $2} /^nonvoluntary_ctxt_switches:/ {n += $2} END {print v + 0, n + 0}'; }
# cpu_busy: non-idle CPU time of the whole machine (all cores), in clock ticks.
cpu_busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# The disk under the device directory and the image: its I/O counters
# (/sys/class/block/DEV/stat) tell how many writes and flushes a run cost
# the disk and how long the disk took over them. Empty when not found.
disk_stat_file() {
	local dev
	dev=$(df --output=source "$1" 2>/dev/null | tail -n 1)
	dev=${dev#/dev/}
	[[ -n $dev && -r /sys/class/block/$dev/stat ]] && echo "/sys/class/block/$dev/stat"
}
# disk_delta BEFORE AFTER: disk_writes, disk_write_ms, disk_flushes, disk_flush_ms.
disk_delta() {
	python3 -c 'import sys
a = [int(x) for x in sys.argv[1].split()]; b = [int(x) for x in sys.argv[2].split()]
if len(a) < 17 or len(b) < 17: sys.exit()
print("disk_writes=%d disk_write_ms=%d disk_flushes=%d disk_flush_ms=%d" % (b[4] - a[4], b[7] - a[7], b[15] - a[15], b[16] - a[16]))' "$1" "$2"
}
dstat=$(disk_stat_file "$work" || true)

# PIN=1: the server on CPU 1, the host's processes on CPU 0 (see the header).
srvpin=() hostpin=()
if [[ ${PIN:-0} == 1 ]]; then
	(($(nproc) >= 2)) || { echo "run.sh: PIN=1 needs two CPUs, this machine has $(nproc)" >&2; exit 2; }
	command -v taskset >/dev/null || { echo "run.sh: PIN=1 needs taskset (util-linux)" >&2; exit 2; }
	srvpin=(taskset -c 1) hostpin=(taskset -c 0)
fi

# kv KEY LINE: the value of KEY=... in a key=value line.
kv() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }

# init_device DIR JOURNAL SIZE
init_device() {
	"$work/indelible" init "$1" --journal "$2" --size "$3" "${logs[@]}" \
		--auditor-key "$1.auditor.key" >/dev/null
}

# serve_device DIR SOCK [PROFILE_PREFIX]: starts indelible serve, sets $spid.
serve_device() {
	local dir=$1 sock=$2 prof=${3:-}
	if [[ -n $prof ]]; then
		local record=()
		[[ ${TRACE:-0} == 1 ]] && record=(-record "$prof.trace")
		"${srvpin[@]}" "$work/profserve" -cpuprofile "$prof.cpu.pprof" -memprofile "$prof.heap.pprof" "${record[@]}" -latency "$prof.latency" \
			-blockprofile-rate "${BLOCKPROFILE_RATE:-0}" -- serve "$dir" --listen "unix:$sock" >"$dir.serve.log" 2>&1 &
	else
		"${srvpin[@]}" "$work/indelible" serve "$dir" --listen "unix:$sock" >"$dir.serve.log" 2>&1 &
	fi
	spid=$!
	push_undo "stop_pid $spid"
	wait_nbd "nbd+unix:///?socket=$sock"
}

# one_run SERVER MODE REP [PROFILE_PREFIX]: one measured run; sets $result
# to the appender's key=value line, plus hwm_kb= for indelible. Not to be
# called in a subshell: the undo stack must stay this shell's.
one_run() {
	local server=$1 mode=$2 rep=$3 prof=${4:-}
	local d="$work/run-$server-$mode-$rep" sock line hwm=""
	mkdir -p "$d"
	sock="$d/sock"
	sync
	if [[ $server == indelible ]]; then
		cp -a --sparse=always "$work/tpl-$mode" "$d/dev"
		serve_device "$d/dev" "$sock" "$prof"
		local pid=$spid
	elif [[ $server == plain || $server == shaped ]]; then
		# indelible's NBD server over the bare image: no WORM device;
		# shaped, slowed down by $SHAPE (see the header).
		cp --sparse=always "$work/tpl-$mode/image.ext4" "$d/image.ext4"
		local cmd=("$work/indelible")
		if [[ $server == shaped ]]; then
			local shape=()
			read -r -a shape <<<"${SHAPE//@RUNDIR@/$d}"
			cmd=("$work/profserve" "${shape[@]}" -latency "$OUT/shaped-$mode-$rep.latency" --)
		fi
		"${srvpin[@]}" "${cmd[@]}" serve "$d/image.ext4" --listen "unix:$sock" >"$d/$server.log" 2>&1 &
		local pid=$!
		push_undo "stop_pid $pid"
		wait_nbd "nbd+unix:///?socket=$sock"
	else
		cp --sparse=always "$work/tpl-$mode/image.ext4" "$d/image.ext4"
		local stats=()
		if [[ ${STATS:-0} == 1 ]]; then
			stats=(--filter=stats file "$d/image.ext4" statsfile="$OUT/nbdkit-stats-$mode-$rep.txt")
		else
			stats=(file "$d/image.ext4")
		fi
		"${srvpin[@]}" nbdkit -f --unix "$sock" "${stats[@]}" >"$d/nbdkit.log" 2>&1 &
		local pid=$!
		push_undo "stop_pid $pid"
		wait_nbd "nbd+unix:///?socket=$sock"
	fi
	attach "nbd+unix:///?socket=$sock" "$d"
	local args=(-mount "$mnt" -files "$files" -append "$APPEND" -fsync-every "$FSYNC_EVERY" -per-writer "$per_writer_bytes")
	if [[ $server == indelible ]]; then
		args+=(-store "$d/dev/store" -verify)
	fi
	sync
	local busy0 cpu0
	busy0=$(cpu_busy)
	local dstat0=""
	[[ -n $dstat ]] && dstat0=$(cat "$dstat")
	cpu0=$(proc_cpu "$pid")
	local flt0 rep0
	flt0=$(proc_minflt "$pid")
	rep0=$(reported_kib)
	local sw0 sw1
	sw0=($(proc_switches "$pid"))
	local perf=()
	if [[ ${PERF:-0} == 1 ]]; then
		perf=(perf record -q -a -g -o "$OUT/perf-$server-$mode-$rep.data" --)
	elif [[ ${SWITCHES:-0} == 1 ]]; then
		perf=(perf record -q -e sched:sched_switch -g -p "$pid" -o "$OUT/switches-$server-$mode-$rep.data" --)
	fi
	line=$("${perf[@]}" "${hostpin[@]}" "$work/appender" "${args[@]}")
	line+=" srv_cpu_s=$(python3 -c "print('%.2f' % (($(proc_cpu "$pid") - $cpu0) / $(getconf CLK_TCK)))")"
	sw1=($(proc_switches "$pid"))
	line+=" srv_vcs=$((sw1[0] - sw0[0])) srv_ivcs=$((sw1[1] - sw0[1]))"
	line+=" srv_minflt=$(($(proc_minflt "$pid") - flt0))"
	local rep1
	rep1=$(reported_kib)
	[[ -n $rep0 && -n $rep1 ]] && line+=" reported_mib=$(((rep1 - rep0) / 1024))"
	line+=" busy_cpu_s=$(python3 -c "print('%.2f' % (($(cpu_busy) - $busy0) / $(getconf CLK_TCK)))")"
	[[ -n $dstat ]] && line+=" $(disk_delta "$dstat0" "$(cat "$dstat")")"
	if [[ $server == indelible ]]; then
		hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
		line+=" hwm_kb=$hwm"
	fi
	run_undo
	if [[ $server == indelible ]]; then
		cp "$d/dev.serve.log" "$OUT/serve-$mode-$rep.log"
		if grep -q 'level=ERROR' "$d/dev.serve.log"; then
			echo "run.sh: the server logged errors (see $OUT/serve-$mode-$rep.log)" >&2
		fi
	fi
	rm -rf "$d"
	result=$line
}

{
	echo "# $(date -u +%FT%TZ) indelible end-to-end benchmark"
	echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -r), $(go version | cut -d' ' -f3)"
	echo "# load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# up $(awk '{print int($1 / 60)}' /proc/uptime) min"
	echo "# nbdkit $(nbdkit --version | cut -d' ' -f2), nbdfuse $(nbdfuse --version | head -1 | cut -d' ' -f2)"
	echo "# workload: $WRITERS writers x $PER_WRITER, $APPEND B appends, fsync every $FSYNC_EVERY; image $IMAGE_SIZE; $REPEATS repeats, median shown"
	if ((${#srvpin[@]})); then
		echo "# PIN=1: servers on CPU 1, nbdfuse and the appender on CPU 0"
	fi
} | tee "$OUT/summary.txt"

declare -A res
for mode in $MODES; do
	echo "# initialising a $IMAGE_SIZE data=$mode device" >&2
	init_device "$work/tpl-$mode" "$mode" "$IMAGE_SIZE"
	if [[ ${WARMUP:-1} == 1 ]]; then
		one_run indelible "$mode" warmup
		echo "  $mode warm-up run (not counted) indelible: $result" | tee -a "$OUT/summary.txt" >&2
	fi
	for ((r = 1; r <= REPEATS; r++)); do
		order=(indelible nbdkit)
		((r % 2 == 0)) && order=(nbdkit indelible)
		for s in "${order[@]}" $EXTRA; do
			one_run "$s" "$mode" "$r"
			echo "  $mode run $r $s: $result" | tee -a "$OUT/summary.txt" >&2
			res[$s-$mode-$r]=$result
		done
	done
	if [[ $PROFILE == 1 ]]; then
		one_run indelible "$mode" prof "$OUT/serve-$mode"
		echo "  $mode profiled indelible run: $result (profiles: $OUT/serve-$mode.cpu.pprof, .heap.pprof)" | tee -a "$OUT/summary.txt" >&2
		if [[ -s "$OUT/serve-$mode.latency" ]]; then
			echo "  $mode profiled run, time the device took per request ($OUT/serve-$mode.latency):" | tee -a "$OUT/summary.txt" >&2
			sed 's/^/    /' "$OUT/serve-$mode.latency" | tee -a "$OUT/summary.txt" >&2
		fi
		if [[ ${STATS:-0} == 1 && -s "$OUT/nbdkit-stats-$mode-1.txt" ]]; then
			echo "  $mode nbdkit run 1, time nbdkit took per kind of request (its stats filter):" | tee -a "$OUT/summary.txt" >&2
			grep -E '^(read|write|flush|trim|zero):' "$OUT/nbdkit-stats-$mode-1.txt" | cut -d, -f1-2 | sed 's/^/    /' | tee -a "$OUT/summary.txt" >&2
		fi
		if [[ ${TRACE:-0} == 1 ]]; then
			rm -rf "$OUT/tpl-$mode"
			cp -a --sparse=always "$work/tpl-$mode" "$OUT/tpl-$mode"
			echo "  $mode trace: go run ./bench/replay -dir $OUT/tpl-$mode -trace $OUT/serve-$mode.trace" | tee -a "$OUT/summary.txt" >&2
		fi
	fi
	rm -rf "$work/tpl-$mode" "$work/tpl-$mode.auditor.key"
done

# median of the values on stdin
median() { python3 -c 'import sys, statistics; v = [float(x) for x in sys.stdin.read().split()]; print("%.2f" % statistics.median(v) if v else "-")'; }

{
	echo
	printf '%-8s | %14s %14s %6s | %9s %9s %9s %8s | %8s | %9s %9s\n' mode "indelible" "nbdkit" ratio "lag p50" "lag p99" "lag max" unsealed "VmHWM" "srv CPU" "srv CPU"
	printf '%-8s | %14s %14s %6s | %9s %9s %9s %8s | %8s | %9s %9s\n' "" "MB/s" "MB/s" "" ms ms ms "" MiB "indel. s" "nbdkit s"
	for mode in $MODES; do
		ib=$(for ((r = 1; r <= REPEATS; r++)); do kv mbps "${res[indelible-$mode-$r]}"; done | median)
		kb=$(for ((r = 1; r <= REPEATS; r++)); do kv mbps "${res[nbdkit-$mode-$r]}"; done | median)
		p50=$(for ((r = 1; r <= REPEATS; r++)); do kv lag_p50_ms "${res[indelible-$mode-$r]}"; done | median)
		p99=$(for ((r = 1; r <= REPEATS; r++)); do kv lag_p99_ms "${res[indelible-$mode-$r]}"; done | median)
		pmax=$(for ((r = 1; r <= REPEATS; r++)); do kv lag_max_ms "${res[indelible-$mode-$r]}"; done | python3 -c 'import sys; print(max(float(x) for x in sys.stdin.read().split()))')
		uns=$(for ((r = 1; r <= REPEATS; r++)); do kv unsealed "${res[indelible-$mode-$r]}"; done | python3 -c 'import sys; print(sum(int(x) for x in sys.stdin.read().split()))')
		hwm=$(for ((r = 1; r <= REPEATS; r++)); do kv hwm_kb "${res[indelible-$mode-$r]}"; done | python3 -c 'import sys; print("%.1f" % (max(float(x) for x in sys.stdin.read().split()) / 1024))')
		icpu=$(for ((r = 1; r <= REPEATS; r++)); do kv srv_cpu_s "${res[indelible-$mode-$r]}"; done | median)
		kcpu=$(for ((r = 1; r <= REPEATS; r++)); do kv srv_cpu_s "${res[nbdkit-$mode-$r]}"; done | median)
		ratio=$(python3 -c "print('%.2f' % ($ib / $kb))")
		printf '%-8s | %14s %14s %6s | %9s %9s %9s %8s | %8s | %9s %9s\n' "$mode" "$ib" "$kb" "$ratio" "$p50" "$p99" "$pmax" "$uns" "$hwm" "$icpu" "$kcpu"
	done
	echo "(MB = 10^6 bytes; lag p50/p99: median over runs; lag max and VmHWM: worst run; unsealed: fsyncs not sealed within 30 s, all runs;"
	echo " srv CPU: the server process's user+system CPU seconds during the workload, median)"
	# The extra servers: medians, and each one's ratio to nbdkit run by run.
	for s in $EXTRA; do
		for mode in $MODES; do
			xb=$(for ((r = 1; r <= REPEATS; r++)); do kv mbps "${res[$s-$mode-$r]}"; done | median)
			xcpu=$(for ((r = 1; r <= REPEATS; r++)); do kv srv_cpu_s "${res[$s-$mode-$r]}"; done | median)
			rounds=$(for ((r = 1; r <= REPEATS; r++)); do
				python3 -c "print('%.2f' % ($(kv mbps "${res[$s-$mode-$r]}") / $(kv mbps "${res[nbdkit-$mode-$r]}")))"
			done | tr '\n' ' ')
			echo "$s $mode: median $xb MB/s, srv CPU $xcpu s; against nbdkit's run of the same round: $rounds"
			if [[ $s == shaped && -s "$OUT/shaped-$mode-1.latency" ]]; then
				echo "  time the shaped server took per request in round 1 (SHAPE=\"$SHAPE\"):"
				sed 's/^/    /' "$OUT/shaped-$mode-1.latency"
			fi
		done
	done
} | tee -a "$OUT/summary.txt"

if [[ $BIG == 1 ]]; then
	echo "# initialising a $BIG_SIZE sparse data=ordered device" >&2
	big="$work/big"
	t0=$(date +%s%N)
	init_device "$big" ordered "$BIG_SIZE"
	t1=$(date +%s%N)
	starts=()
	for ((r = 1; r <= 3; r++)); do
		sock="$work/big-$r.sock"
		t0s=$(date +%s%N)
		serve_device "$big" "$sock"
		t1s=$(date +%s%N)
		starts+=($(((t1s - t0s) / 1000000)))
		run_undo
	done
	# RSS after a workload of appends (a quarter of the throughput runs' volume).
	sock="$work/big-w.sock"
	serve_device "$big" "$sock"
	bpid=$spid
	attach "nbd+unix:///?socket=$sock" "$work/big-w"
	line=$("$work/appender" -mount "$mnt" -files "$files" -append "$APPEND" -fsync-every "$FSYNC_EVERY" \
		-per-writer $((per_writer_bytes / 4)) -store "$big/store" -verify)
	hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$bpid/status")
	run_undo
	{
		echo
		echo "$BIG_SIZE sparse device (data=ordered): init $(((t1 - t0) / 1000000)) ms, apparent $(du -h --apparent-size "$big/image.ext4" | cut -f1), allocated $(du -h "$big/image.ext4" | cut -f1) image + $(du -h "$big/device.key" | cut -f1) device key"
		echo "  start to nbdinfo answering: ${starts[*]} ms (3 starts; target < 2000 ms)"
		echo "  after $WRITERS x $((per_writer_bytes / 4 >> 20)) MiB of appends: $line"
		echo "  server VmHWM: $((hwm / 1024)) MiB (target < 128 MiB)"
	} | tee -a "$OUT/summary.txt"
fi
echo "# summary kept in $OUT/summary.txt" >&2
