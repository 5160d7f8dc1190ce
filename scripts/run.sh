#!/usr/bin/env bash
# Sets up, builds and runs the daemon on an example script (examples/hello.lua by
# default) on 127.0.0.1:8080. Arguments after the script go to `luahook run`.
#   scripts/run.sh [SCRIPT] [options]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build.sh"
script=${1:-$ROOT/examples/hello.lua}
[[ $# -gt 0 ]] && shift
listen=${LUAHOOK_LISTEN:-127.0.0.1:8080}
cat >&2 <<MSG
luahook: running $script on http://$listen/api/events (Ctrl-C stops it)
Send it an event from another terminal:
  $ROOT/build/luahook send http://$listen/api/events --sample connected
or with curl:
  curl -i -H 'Content-Type: application/json' -H 'aeg-event-type: Notification' \\
       --data-binary @$ROOT/examples/events/connected.json http://$listen/api/events
MSG
exec "$ROOT/build/luahook" run "$script" --listen "$listen" "$@"
