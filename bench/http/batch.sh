#!/usr/bin/env bash
# batch.sh RUNS PHASES OUT N BIN...: RUNS rounds; in each, every http_bench binary BIN runs
# `HTTP_BENCH_PHASES=PHASES BIN N` (each phase in its own child process), 3 s apart, all output
# appended to OUT. Several binaries alternate, so an A/B comparison sees the same machine.
# Example (BENCHMARKS.md, session 15):
#   bench/http/batch.sh 10 ceiling,one,ceiling512,many,same,same512 /tmp/ab.out 200000 \
#     target/release/examples/http_bench
#   python3 bench/http/batch_summary.py /tmp/ab.out
set -eu
runs=$1; phases=$2; out=$3; n=$4; shift 4
for r in $(seq 1 $runs); do
  for b in "$@"; do
    echo "=== run $r bin $b" >> $out
    HTTP_BENCH_PHASES=$phases $b $n >> $out 2>&1
    sleep 3
  done
done
echo DONE >> $out
