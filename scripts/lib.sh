# Shared by the long-running scripts (sourced, not run). They keep at most JOBS (default
# 2) background jobs, as each training or evaluation process uses about one core:
#   slot; echo "starting X"; do_x & started $!   …   wait_all || exit 1
# Every job is waited for by its pid, exactly once, so a job that fails while another
# is being waited for still counts (a `jobs -r` count alone loses such exit codes).
pids=()
# slot: returns once fewer than JOBS background jobs run.
slot() {
  while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do sleep 1; done
}
# started PID: remembers a background job for wait_all.
started() { pids+=("$1"); }
# wait_all: waits for every job started since the last call; fails if any of them failed.
wait_all() {
  local p ok=0
  for p in "${pids[@]}"; do wait "$p" || ok=1; done
  pids=()
  return $ok
}
