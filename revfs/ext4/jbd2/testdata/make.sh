#!/bin/sh
# Regenerates the journal fixtures in this directory from the real kernel.
#
# Each NAME.jnl is the used prefix of the jbd2 journal of a fresh 128 MiB
# ext4 image (journal blocks 0..end of log), copied while the filesystem was
# still mounted, after three appends to /log.txt with a sync after each;
# NAME.json records what the kernel was asked to do (inode, inode-table
# block, data block, size) so TestFixtures can check a scan without root.
# The names say how: <data mode>-<block size>-<journal checksum version>.
#
# Needs root, e2fsprogs (mkfs.ext4, debugfs), util-linux (losetup, mount).
# The work is done by TestKernelJournal in ../kernel_linux_test.go.
set -eu
cd "$(dirname "$0")"
rm -f ./*.jnl ./*.json
JBD2_FIXTURES="$(pwd)" go test -count=1 -run '^TestKernelJournal$' ..
ls -l ./*.jnl
