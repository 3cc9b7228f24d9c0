#!/bin/sh
# Seal and verify throughput of the sealed-log store (package seal).
# Usage: bench/seal/run.sh [extra go test flags]
# Verification stores (256 MiB of real log per append size; 16 MiB for 64 B)
# are built once and kept in $SEAL_BENCH_DIR (default /var/tmp/indelible-sealbench).
# The sealing benchmarks' stores go to the test's temporary directory ($TMPDIR,
# default /tmp). Large appends are then sealed once more with the stores on
# tmpfs (/dev/shm: no disk, the fdatasyncs cost nothing), to tell the store's
# own speed (MACs, copies) from the disk's. BenchmarkDevicePass seals the
# way the device does under a backlog; bench/seal/vs-nbd.sh holds it against
# the NBD server's write figures and the disk's, in one run.
set -eu
cd "$(dirname "$0")/../.."
export SEAL_BENCH_DIR="${SEAL_BENCH_DIR:-/var/tmp/indelible-sealbench}"
mkdir -p "$SEAL_BENCH_DIR"
echo "# $(date -u +%FT%TZ) $(go version) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "# SHA extensions: $(grep -qw sha_ni /proc/cpuinfo && echo sha_ni present || echo none)"
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc)"
go test -run='^$' -bench='^BenchmarkSHA256$' -benchtime=2s -count=3 "$@" ./bench/seal/ | grep -E '^(Benchmark|--- FAIL|FAIL|panic)'
go test -run='^$' -bench='^BenchmarkVerify$' -benchtime=10x -count=3 "$@" ./bench/seal/ | grep -E '^(Benchmark|--- FAIL|FAIL|panic)'
go test -run='^$' -bench='^BenchmarkAppend$/^(64B|4KiB)$/^sync$' -benchtime=2000x "$@" ./bench/seal/ | grep -E '^(Benchmark|--- FAIL|FAIL|panic)'
go test -run='^$' -bench='^BenchmarkAppend$/^(64B|4KiB)$/^group$' -benchtime=20000x "$@" ./bench/seal/ | grep -E '^(Benchmark|--- FAIL|FAIL|panic)'
go test -run='^$' -bench='^BenchmarkAppend$/^1MiB$' -benchtime=300x "$@" ./bench/seal/ | grep -E '^(Benchmark|--- FAIL|FAIL|panic)'
go test -run='^$' -bench='^BenchmarkAppendBatch$/^(64B|4KiB)$' -benchtime=32000x "$@" ./bench/seal/ | grep -E '^(Benchmark|--- FAIL|FAIL|panic)'
go test -run='^$' -bench='^BenchmarkAppendBatch$/^1MiB$' -benchtime=640x "$@" ./bench/seal/ | grep -E '^(Benchmark|--- FAIL|FAIL|panic)'
go test -run='^$' -bench='^BenchmarkAppendLarge$' -benchtime=10x -count=3 "$@" ./bench/seal/ | grep -E '^(Benchmark|--- FAIL|FAIL|panic)'
go test -run='^$' -bench='^BenchmarkDevicePass$' -benchtime=200x -count=2 "$@" ./bench/seal/ | grep -E '^(Benchmark|--- FAIL|FAIL|panic)'
if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
	echo "# the same large appends with the stores on tmpfs (/dev/shm: no disk)"
	TMPDIR=/dev/shm go test -run='^$' -bench='^BenchmarkAppendBatch$/^1MiB$' -benchtime=640x "$@" ./bench/seal/ | grep -E '^(Benchmark|--- FAIL|FAIL|panic)'
	TMPDIR=/dev/shm go test -run='^$' -bench='^BenchmarkAppendLarge$' -benchtime=10x -count=3 "$@" ./bench/seal/ | grep -E '^(Benchmark|--- FAIL|FAIL|panic)'
fi
