#!/usr/bin/env bash
# SIGKILL/restart loop against the tickwire server: runs gateway/tests/e2e_crash.rs with N kills
# (default 100) on one data directory, in release mode. Every kill is followed by a restart,
# re-logon of every session (gapless replay checked), resend of unacknowledged orders; at the end
# the final state hash must equal a replay of the journal from scratch.
#
#   scripts/crash_loop.sh            # 100 kills
#   scripts/crash_loop.sh 20         # 20 kills
#   TICKWIRE_E2E_SEED=123 scripts/crash_loop.sh   # replay one schedule
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS="${1:-100}"
export TICKWIRE_E2E_ROUNDS="$KILLS"
exec timeout "$((KILLS * 30 + 600))" cargo test --release -p tickwire-gateway --test e2e_crash -- --nocapture
