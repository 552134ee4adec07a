#!/usr/bin/env bash
# CUDA compiler launcher of ssm::cuda (cuda/CMakeLists.txt): runs the compile command given as arguments
# (possibly through ccache, which replays a cached compile's output) and keeps ptxas's -v report of it next
# to the object, as <object>.ptxas, for tools/check_ptxas_budget.py. Everything else nvcc prints (warnings,
# errors) still goes to stderr; the exit status is the compiler's.
out=""
prev=""
for arg in "$@"; do
  if [ "$prev" = "-o" ]; then out="$arg"; fi
  prev="$arg"
done
# The old report goes first: a failed compile may leave the old object behind, and check_ptxas_budget.py trusts a
# report no older than its object, so a report kept from an earlier compile would pass for this one's.
if [ -n "$out" ]; then rm -f "$out.ptxas"; fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$@" 2>"$log"
rc=$?
# The report: "ptxas info : ..." lines and the indented "N bytes stack frame, ..." lines under them.
report='^ptxas info|^ +[0-9]+ bytes stack frame'
if [ -n "$out" ] && [ "$rc" -eq 0 ]; then
  grep -E "$report" "$log" >"$out.ptxas" || true
fi
grep -vE "$report" "$log" >&2
exit "$rc"
