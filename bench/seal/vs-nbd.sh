#!/usr/bin/env bash
# Does the device seal faster than its NBD server takes writes? The seal
# store's target is to be "never the bottleneck of the device": faster than
# the NBD bench's fio write figures. This script measures both in one go on
# this machine and prints their ratio:
#
#   1. bench/nbd/run.sh's two write workloads (fio's nbd engine against
#      `indelible serve` and `nbdkit file`, through the page cache, no flush);
#   2. BenchmarkDevicePass (bench/seal): sealing as the device does it when
#      the host writes faster than it seals, pass after pass (at most 4 MiB
#      of a file and 8 MiB in all, read from the image, sealed, durable
#      before the next), for one busy log and for sixteen;
#   3. the disk's own speed for durable writes (dd ... conv=fdatasync), the
#      ceiling of any durable sealing: the NBD writes above go to the page
#      cache and are never flushed, so they may run faster than the disk.
#
#   bench/seal/vs-nbd.sh [RUNTIME_SECONDS] [IMAGE_SIZE] [REPEATS]   (defaults: 10 1G 2)
#   PASSES=300 bench/seal/vs-nbd.sh ...   passes per sealing run (default 200)
#
# Both put their files under $TMPDIR (default /tmp): keep it on the
# filesystem a device directory would use, since durable sealing waits for
# that disk. A ratio under 1 means a host writing at the NBD server's full
# speed outruns sealing: the seal lag then grows while it writes.
set -euo pipefail
cd "$(dirname "$0")/../.."
runtime=${1:-10}
size=${2:-1G}
repeats=${3:-2}
passes=${PASSES:-200}
export TMPDIR=${TMPDIR:-/tmp}

# cpu_ticks -> "steal total": the machine's CPU time stolen by the hypervisor
# and all of it, in clock ticks (the first line of /proc/stat).
cpu_ticks() { awk '/^cpu /{t = 0; for (i = 2; i <= NF; i++) t += $i; print $9, t}' /proc/stat; }
read -r steal0 total0 < <(cpu_ticks)
echo "# $(date -u +%FT%TZ) $(go version) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc), TMPDIR=$TMPDIR on $(df --output=source "$TMPDIR" | tail -1)"
echo "# 1. NBD writes: bash bench/nbd/run.sh $runtime $size $repeats (ONLY=write)"
nbd_out=$(ONLY=write bash bench/nbd/run.sh "$runtime" "$size" "$repeats")
echo "$nbd_out"
echo "# 2. device passes: go test -run='^\$' -bench='^BenchmarkDevicePass\$' -benchtime=${passes}x -count=$repeats ./bench/seal/"
seal_out=$(go test -run='^$' -bench='^BenchmarkDevicePass$' -benchtime="${passes}x" -count="$repeats" ./bench/seal/)
grep -E '^(Benchmark|--- FAIL|FAIL|panic)' <<<"$seal_out"
grep -qE '^(--- FAIL|FAIL|panic)' <<<"$seal_out" && { echo "vs-nbd.sh: the sealing benchmark failed"; exit 1; }
# The disk's own ceiling for durable writes: no durable sealing can pass it.
echo "# 3. the disk: dd if=/dev/zero bs=4M count=256 conv=fdatasync into \$TMPDIR, $repeats times"
disk=()
for ((r = 0; r < repeats; r++)); do
	tmp=$(mktemp "$TMPDIR/vs-nbd-dd.XXXXXX")
	out=$(dd if=/dev/zero of="$tmp" bs=4M count=256 conv=fdatasync 2>&1 | tail -1)
	rm -f "$tmp"
	echo "$out"
	# "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 3.1 s, 346 MB/s": bytes / seconds
	disk+=("$(awk '{for (i = 1; i <= NF; i++) if ($i == "copied,") printf "%.1f", $1 / $(i + 1) / 1e6}' <<<"$out")")
done

read -r steal1 total1 < <(cpu_ticks)
# A virtual machine whose host is busy runs slower by the time stolen from it,
# and unevenly: compare runs taken at similar steal.
echo "# CPU time stolen by the hypervisor during the run: $(( 100 * (steal1 - steal0) / (total1 - total0 + 1) )) %"
python3 - "$nbd_out" "$seal_out" "${disk[*]}" <<'EOF'
import re, statistics, sys
nbd, seal = sys.argv[1], sys.argv[2]
disk = [float(x) for x in sys.argv[3].split()]
writes = {}  # workload -> indelible's MiB/s (the table's second column)
for line in nbd.splitlines():
    f = line.split()
    if f and re.match(r'(seq|rand)write', f[0]):
        writes[f[0]] = float(f[1]) * 1.048576  # MiB/s -> MB/s
passes = {}
for m in re.finditer(r'^BenchmarkDevicePass/(\w+)-\d+\s+\d+\s+\d+ ns/op\s+([\d.]+) MB/s', seal, re.M):
    passes.setdefault(m.group(1), []).append(float(m.group(2)))
if not writes or not passes:
    sys.exit("vs-nbd.sh: found no figures to compare")
shapes = sorted(passes, key=lambda s: int(re.match(r'\d+', s).group()))
print()
print("%-20s %12s" % ("NBD write workload", "MB/s") + "".join(" | %14s %6s" % ("sealing " + s, "ratio") for s in shapes))
for w, mbs in writes.items():
    row = "%-20s %12.1f" % (w, mbs)
    for s in shapes:
        med = statistics.median(passes[s])
        row += " | %14.1f %6.2f" % (med, med / mbs)
    print(row)
print("(sealing: median MB/s of the runs; ratio = sealing / NBD writes, the target is above 1)")
if disk:
    d = statistics.median(disk)
    print("the disk's durable writes (dd conv=fdatasync): %.1f MB/s; sealing at" % d,
          ", ".join("%.2f" % (statistics.median(passes[s]) / d) for s in shapes), "of it (%s)" % ", ".join(shapes))
EOF
