#!/usr/bin/env bash
# Runs every benchmark, one after another (each holds /tmp/pgshift-bench.lock while it measures), with
# the defaults that bench/RESULTS.md reports. Pass e.g. SCALE=10 to run smaller. Output: bench/out/*.log.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p out
for b in assess copy follow verify proxy; do
	echo "== $b (log: bench/out/$b.log)"
	bash "./$b.sh" 2>&1 | tee "out/$b.log"
done
