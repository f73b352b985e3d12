# Sourced by scripts that need a mesh for a while: `arbor_up ARBOR_BINARY [arbor up flags...]`
# starts `arbor up` on free loopback ports in the background, waits (up to 90 s) until it has
# written its endpoints, and stops it (and removes its run folder) when the script exits.
# Then `arbor_endpoint NAME` prints a service's address (kvstore, router, planner), and
# ARBOR_TOKEN_FILE and ARBOR_TLS_DIR name the planner's bearer token and the mesh's certificates
# for `arbor` and examples/python.
arbor_up() {
  local arbor=$1
  shift
  ARBOR_UP_DIR=$(mktemp -d)
  "$arbor" up --ports=auto --ready_file "$ARBOR_UP_DIR/ready.json" --log_dir "$ARBOR_UP_DIR" \
    --data_dir "$ARBOR_UP_DIR" "$@" > "$ARBOR_UP_DIR/up.out" 2>&1 &
  ARBOR_UP_PID=$!
  trap 'kill -TERM $ARBOR_UP_PID 2>/dev/null; wait $ARBOR_UP_PID 2>/dev/null; rm -rf "$ARBOR_UP_DIR"' EXIT
  for _ in $(seq 1 900); do
    if [ -f "$ARBOR_UP_DIR/ready.json" ]; then
      # With --insecure there are neither, and clients use plaintext.
      export ARBOR_TLS_DIR=none
      if [ -f "$ARBOR_UP_DIR/tls/ca.crt" ]; then export ARBOR_TLS_DIR="$ARBOR_UP_DIR/tls"; fi
      if [ -f "$ARBOR_UP_DIR/token" ]; then export ARBOR_TOKEN_FILE="$ARBOR_UP_DIR/token"; fi
      return 0
    fi
    kill -0 "$ARBOR_UP_PID" 2>/dev/null || { cat "$ARBOR_UP_DIR/up.out"; return 1; }
    sleep 0.1
  done
  echo "arbor up did not start; see $ARBOR_UP_DIR" >&2
  return 1
}

arbor_endpoint() {
  sed -n "s/^  \"$1\": \"\(.*\)\",\{0,1\}$/\1/p" "$ARBOR_UP_DIR/ready.json"
}
