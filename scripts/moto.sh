#!/usr/bin/env bash
# Start or stop a local moto server (SQS and S3 emulation) for the `aws`
# integration tests.
#
#   scripts/moto.sh start [STATE_DIR]   start on a free port of 127.0.0.1, wait
#                                       until it answers (at most 30 s), and
#                                       print its endpoint URL
#   scripts/moto.sh stop  [STATE_DIR]   stop the server this script started
#
# STATE_DIR (default: target/moto) receives `port`, `endpoint`, `pid` and
# `moto.log`. Install the server with: pip install 'moto[server]==5.2.5'
set -euo pipefail

cmd="${1:-}"
state="${2:-target/moto}"
wait_s=30

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
    if ! command -v moto_server >/dev/null 2>&1; then
        echo "moto.sh: moto_server not found; install it with: pip install 'moto[server]==5.2.5'" >&2
        exit 1
    fi
    mkdir -p "$state"
    if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
        cat "$state/endpoint"
        return 0
    fi
    local port
    port="$(free_port)"
    nohup moto_server -H 127.0.0.1 -p "$port" >"$state/moto.log" 2>&1 &
    echo $! >"$state/pid"
    echo "$port" >"$state/port"
    echo "http://127.0.0.1:$port" >"$state/endpoint"
    local deadline=$((SECONDS + wait_s))
    until curl -fsS -o /dev/null "http://127.0.0.1:$port/moto-api/" 2>/dev/null; do
        if ! kill -0 "$(cat "$state/pid")" 2>/dev/null; then
            echo "moto.sh: moto_server exited; see $state/moto.log" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "moto.sh: moto_server not ready after ${wait_s} s; see $state/moto.log" >&2
            stop
            exit 1
        fi
        sleep 0.2
    done
    cat "$state/endpoint"
}

stop() {
    if [ -f "$state/pid" ]; then
        local pid
        pid="$(cat "$state/pid")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$state/pid"
    fi
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *)
        echo "usage: scripts/moto.sh start|stop [STATE_DIR]" >&2
        exit 2
        ;;
esac
