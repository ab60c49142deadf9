#!/bin/bash
# Prints a free TCP port on this machine (optionally starting the search at $1).
# Kept at ${FOREVER_ROOT}/freeport.sh for service scripts written for the original forever-slurm.
start=${1:-$(( (RANDOM * 32768 + RANDOM) % 50000 + 10001 ))}
if command -v python3 >/dev/null 2>&1; then
  exec python3 - "$start" <<'PY'
import socket, sys
port = int(sys.argv[1])
while port < 65536:
    s = socket.socket()
    try:
        s.bind(("", port))
    except OSError:
        port += 1
        continue
    finally:
        s.close()
    print(port)
    sys.exit(0)
sys.exit(1)
PY
fi
port=$start
while ss -atwn 2>/dev/null | grep -q ":${port}\s"; do port=$((port + 1)); done
echo "$port"
