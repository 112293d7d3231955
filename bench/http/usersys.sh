#!/usr/bin/env bash
# usersys.sh RUNS OUT N BIN PHASES...: RUNS rounds of `BIN --phase P N` for each phase P (one
# process each, 2 s apart), each under /usr/bin/time; appends "ROUND PHASE <RESULT line> TIME
# user sys wall" to OUT. Summarise with usersys_summary.py OUT N. Example (BENCHMARKS.md,
# session 16):
#   bench/http/usersys.sh 10 /tmp/us.out 200000 target/release/examples/http_bench \
#     ceiling512 many same512 ceiling one
#   python3 bench/http/usersys_summary.py /tmp/us.out 200000
set -eu
runs=$1; out=$2; n=$3; bin=$4; shift 4
for r in $(seq 1 $runs); do
  for p in "$@"; do
    res=$( { /usr/bin/time -f "TIME %U %S %e" $bin --phase $p $n; } 2>&1 )
    echo "$r $p $(echo "$res" | grep RESULT) $(echo "$res" | grep TIME)" >> $out
    sleep 2
  done
done
echo DONE >> $out
