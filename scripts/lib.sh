# Shared by the long-running scripts and the benchmarks (sourced, not run). The former
# keep at most JOBS (default 2) background jobs, as each training or evaluation process
# uses about one core:
#   spawn do_x ARGS…   …   wait_all || exit 1
# Every job is waited for by its pid, exactly once, so a job that fails while another
# is being waited for still counts (a `jobs -r` count alone loses such exit codes).
pids=()
# spawn CMD ARGS…: once fewer than JOBS background jobs run, starts CMD in the background
# and remembers it for wait_all.
spawn() {
  while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do sleep 1; done
  "$@" &
  pids+=("$!")
}
# wait_all: waits for every job spawned since the last call; fails if any of them failed.
wait_all() {
  local p ok=0
  for p in "${pids[@]}"; do wait "$p" || ok=1; done
  pids=()
  return $ok
}
# pause_background: stops (SIGSTOP) the background `hyperat tune`, `report` and `eval`
# runs (any binary named hyperat*) until this shell exits, when they are resumed, so
# benchmarks time idle cores.
pause_background() {
  paused=$(pgrep -f "hyperat[^ ]* (tune|report|eval) " || true)
  [ -z "$paused" ] && return
  trap 'kill -CONT $paused' EXIT
  kill -STOP $paused
}
