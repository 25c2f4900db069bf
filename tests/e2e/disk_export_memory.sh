#!/usr/bin/env bash
# e2e: the real `romulus disk-export` holds no more memory after writing 220
# times its log budget than after writing 22 times it (docs/DISK.md §9: every
# buffer is bounded and reused, so memory rises to a high water and stays).
# A client writes 3 MiB per epoch (256 writes of 4 KiB, the rest 1 MiB) and
# seals each epoch, reading every record, then acks it; every 25th epoch
# writes twice the budget, so the export drops that epoch and the next PAUSE
# is a full copy (the resync path). The export's VmRSS after 50 epochs and
# after 500 must differ by less than 4 MiB: a leak of one small allocation
# per request (about 116 000 requests lie between the two samples) or of 10 KiB
# per epoch shows here, which LeakSanitizer cannot see while the memory is
# still reachable.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

store=$T/disk.img
truncate -s 2M "$store"
nbd=$T/x.nbd
tapsock=$T/x.tap
bg exp "$T/export.log" "$ROMULUS" disk-export --store "$store" --name xvda --nbd-socket "$nbd" \
  --tap-socket "$tapsock" --budget 8M
wait_until 20 "export ready" grep -q "ready" "$T/export.log"

# The export's threads say what they are (ps -L, top -H).
# (A thread names itself when it starts: wait for it rather than race it.)
wait_until 10 "the export's accept thread named" grep -qx export-accept /proc/"$exp"/task/*/comm

python3 "$E2E_LIB/disk_export_client.py" load "$nbd" xvda "$tapsock" "$exp" 500 3 >"$T/load.log" 2>&1 ||
  fail "load client: $(cat "$T/load.log")"
cat "$T/load.log"
read -r sealed dropped warm end hwm < <(python3 - "$T/load.log" <<'PY'
import re, sys
m = re.search(r"sealed=(\d+) dropped=(\d+) rss_warm_kib=(\d+) rss_end_kib=(\d+) hwm_kib=(\d+)", open(sys.argv[1]).read())
print(*m.groups())
PY
)
# 500 epochs: 19 over the budget are dropped when sealed (the 20th, the last, is never sealed).
[[ $dropped -eq 19 && $sealed -eq 481 ]] || check_fail "sealed $sealed and dropped $dropped epochs, expected 481 and 19"
grow=$((end - warm))
log "export VmRSS after 50 epochs ${warm} KiB, after 500 ${end} KiB (${grow} KiB more), VmHWM ${hwm} KiB"
((grow < 4096)) || check_fail "the export's memory grew by ${grow} KiB between epoch 50 and 500 (a leak?)"

kill -TERM "$exp"
wait_exit "$exp" 20
[[ $EXIT_CODE -eq 0 ]] || check_fail "SIGTERM: export exited $EXIT_CODE"
assert_no_crash "$T/export.log"
finish
