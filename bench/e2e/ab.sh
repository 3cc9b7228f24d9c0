#!/usr/bin/env bash
# A/B comparison of two trees with the end-to-end bench, in alternating
# rounds: on two shared cores a single run says little, and alternating
# spreads the machine's drift over both sides.
#
#   bench/e2e/ab.sh [-r ROUNDS] A B      # A, B: git revisions, or directories
#                                        # holding a tree (a scratch copy)
#
# Each round runs `bench/e2e/run.sh` with REPEATS=1 from each tree in turn
# (indelible and nbdkit, each mode), and prints one line per run and server;
# at the end, for each tree and mode, the ratio of every round and their
# median, then the medians of the device's own counters (server CPU,
# voluntary context switches, seal lag p99), which the machine's drift
# moves less than the ratio. Revisions are exported with `git archive`
# into a temporary directory, removed on exit. Settings of run.sh pass
# through the environment (default here: PER_WRITER=64M MODES="ordered
# journal" BIG=0 PROFILE=0; run.sh's WARMUP=1 adds one uncounted device run
# per mode and round); OUT_BASE (default /var/tmp/e2e-ab) holds each
# run's output, removed after the run unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds=4
if [[ "${1:-}" == "-r" ]]; then
	rounds=$2
	shift 2
fi
if (($# != 2)); then
	sed -n '2,19p' "$0"
	exit 2
fi

work=$(mktemp -d /tmp/e2e-ab.XXXXXX)
trap 'rm -rf "$work"' EXIT
trees=()
names=()
for side in "$1" "$2"; do
	if [[ -d "$side" ]]; then
		trees+=("$(cd "$side" && pwd)")
	else
		dir="$work/$(git rev-parse --short "$side")"
		mkdir -p "$dir"
		git archive "$side" | tar -x -C "$dir"
		trees+=("$dir")
	fi
	names+=("$side")
done

export PER_WRITER=${PER_WRITER:-64M} MODES=${MODES:-ordered journal} BIG=${BIG:-0} PROFILE=${PROFILE:-0} REPEATS=1
out_base=${OUT_BASE:-/var/tmp/e2e-ab}
results="$work/results"
: >"$results"
for r in $(seq 1 "$rounds"); do
	for i in 0 1; do
		out="$out_base-$i-$r"
		rm -rf "$out"
		log="$work/run-$i-$r.log"
		if ! (cd "${trees[$i]}" && OUT=$out bash bench/e2e/run.sh >"$log" 2>&1); then
			echo "ab: round $r of ${names[$i]} failed; its output:" >&2
			tail -20 "$log" >&2
			exit 1
		fi
		# "  MODE run 1 SERVER: bytes=… mbps=X … lag_p99_ms=… srv_cpu_s=… srv_vcs=… …"
		awk -v side="$i" -v round="$r" -v name="${names[$i]}" '
			$2 == "run" && ($4 == "indelible:" || $4 == "nbdkit:") {
				mbps = cpu = vcs = "-"; p99 = "-"
				for (f = 5; f <= NF; f++) {
					split($f, kv, "=")
					if (kv[1] == "mbps") mbps = kv[2]
					if (kv[1] == "srv_cpu_s") cpu = kv[2]
					if (kv[1] == "srv_vcs") vcs = kv[2]
					if (kv[1] == "lag_p99_ms") p99 = kv[2]
				}
				printf "%s round %s %-8s %-10s %s\n", name, round, $1, $4, mbps > "/dev/stderr"
				print side, round, $1, substr($4, 1, length($4) - 1), mbps, cpu, vcs, p99
			}' "$log" >>"$results"
		[[ "${KEEP:-0}" == 1 ]] || rm -rf "$out"
	done
done

# median(a, m): the median of a[1..m] (sorts a in place), for both summaries.
awk_median='
	function median(a, m,    x, y, t) {
		for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
		return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
	}'

echo
echo "ratio indelible/nbdkit per round, then the median:"
for i in 0 1; do
	for mode in $MODES; do
		awk -v side="$i" -v mode="$mode" "$awk_median"'
			$1 == side && $3 == mode { v[$2 " " $4] = $5; if ($2 > n) n = $2 }
			END {
				m = 0; line = ""
				for (r = 1; r <= n; r++) if (v[r " nbdkit"] > 0) {
					q[++m] = v[r " indelible"] / v[r " nbdkit"]
					line = line sprintf(" %.3f", q[m])
				}
				if (m == 0) { printf "%-10s no complete round\n", mode; exit }
				printf "%-10s%s  median %.3f\n", mode, line, median(q, m)
			}' "$results" | sed "s/^/${names[$i]//\//\\/}  /"
	done
done

# The ratio moves with the machine; the device's own counters move less and
# tell where a change acted: the median per tree and mode of the server's
# CPU seconds, its voluntary context switches and the seal lag's p99.
echo
echo "the device's runs, median per tree: server CPU s, voluntary switches, seal lag p99 ms"
for i in 0 1; do
	for mode in $MODES; do
		awk -v side="$i" -v mode="$mode" "$awk_median"'
			$1 == side && $3 == mode && $4 == "indelible" && $6 != "-" { m++; c[m] = $6; v[m] = $7; p[m] = $8 }
			END {
				if (m == 0) { printf "%-10s no run\n", mode; exit }
				printf "%-10s cpu %.2f  vcs %d  lag p99 %.1f  (%d runs)\n", mode, median(c, m), median(v, m), median(p, m), m
			}' "$results" | sed "s/^/${names[$i]//\//\\/}  /"
	done
done
