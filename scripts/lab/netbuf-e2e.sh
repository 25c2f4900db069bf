#!/bin/sh
# Runs inside the netbuf lab VM (scripts/netbuf-lab), only when the staged
# romulus has `replicate --netbuf-dev`. Placeholder until then.
echo "E2E-RESULT skipped (not implemented yet)"
