#!/usr/bin/env bash
# CI: build the image from a Debian-made base and smoke-test it (.ci/run calls this).
#
# No container registry is reachable from CI, so the base is made from Debian's
# packages (mmdebstrap, then podman import) and the Containerfile is built with
# --pull=never. Then, all in containers of that image on the host network: two
# example model servers, the router with a read-only root filesystem; a POST
# must be answered by each arm, `routerctl status` run inside the router's
# container must show the compiled data plane, and `podman stop` must end it
# with exit code 0. Prints the build time and the image size.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$0")/.."

need=()
for tool in podman buildah mmdebstrap runc; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

BASE=localhost/deploy-router-base:bookworm
IMAGE=localhost/deploy-router:ci
# this machine's cgroups need runc; the router's tests open many sockets
RUN=(podman run --runtime runc --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 --network host)
work=$(mktemp -d)
containers=()
cleanup() {
  for c in "${containers[@]}"; do podman rm -f "$c" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

started=$SECONDS
if ! podman image exists "$BASE"; then
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$work/base.tar"
  podman import --quiet "$work/base.tar" "$BASE" >/dev/null
  rm -f "$work/base.tar"
fi
based=$SECONDS
# the host's CA bundle: this machine reaches the package registries through a proxy
# whose certificate only the host trusts (pip in the build stage reads this path)
ca=/etc/ssl/certs/ca-certificates.crt
make --no-print-directory image BASE="$BASE" IMAGE="$IMAGE" \
  IMAGE_BUILD="buildah bud --quiet --pull=never --isolation chroot --network host -v $ca:$ca:ro"
built=$SECONDS
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "image: base $((based - started)) s, build $((built - based)) s, size $((size / 1000000)) MB"

port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
M1=$(port) M2=$(port) DATA=$(port) ADMIN=$(port) PROBES=$(port)
mkdir -p "$work/etc"
cat >"$work/etc/config.yaml" <<YAML
listen: 127.0.0.1:$DATA
admin: {listen: 127.0.0.1:$ADMIN}
probes: {listen: 127.0.0.1:$PROBES}
shutdown: {delay: 1s}
backends:
  model-v1: {url: "http://127.0.0.1:$M1", timeout: 5s}
  model-v2: {url: "http://127.0.0.1:$M2", timeout: 5s}
routes:
  - name: predict
    match: {path_prefix: /}
    sticky: {header: X-User-Id}
    strategy: {split: {weights: {model-v1: 50, model-v2: 50}}}
YAML
chmod -R a+rX "$work/etc"

tag=ci-$$
for model in "v1 $M1" "v2 $M2"; do
  set -- $model
  containers+=("$tag-model-$1")
  "${RUN[@]}" -d --name "$tag-model-$1" -v "$PWD/examples:/app/examples:ro" -w /app \
    --entrypoint python "$IMAGE" -m examples.model_server --port "$2" --version "$1" >/dev/null
done
containers+=("$tag-router")
"${RUN[@]}" -d --name "$tag-router" --read-only --tmpfs /tmp -v "$work/etc:/etc/router:ro" \
  -e ROUTER_ADMIN_TOKEN=ci-token "$IMAGE" >/dev/null

wait_ok() {  # URL: until it answers 200, for up to 30 s
  for _ in $(seq 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
    sleep 0.2
  done
  echo "no 200 from $1"; podman logs "$tag-router" | tail -20; return 1
}
wait_ok "http://127.0.0.1:$M1/health"
wait_ok "http://127.0.0.1:$M2/health"
wait_ok "http://127.0.0.1:$PROBES/readyz"

declare -A arms=()
for user in $(seq 1 40); do
  arm=$(curl -s -o /dev/null -D - -X POST "http://127.0.0.1:$DATA/predict" \
    -H 'Content-Type: application/json' -H "X-User-Id: user-$user" \
    -d '{"features":[0.1,0.2,0.3,0.4]}' | tr -d '\r' | sed -n 's/^x-router-backend: //Ip')
  [ -n "$arm" ] && arms[$arm]=1
done
echo "answered by: ${!arms[*]}"
[ -n "${arms[model-v1]:-}" ] && [ -n "${arms[model-v2]:-}" ] || { echo "not answered by both arms"; exit 1; }

status=$(podman exec "$tag-router" routerctl --admin "http://127.0.0.1:$ADMIN" status)
echo "$status" | head -3
grep -q "data plane compiled" <<<"$status" || { echo "routerctl status: not compiled"; exit 1; }

podman stop -t 20 "$tag-router" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$tag-router")
[ "$code" = 0 ] || { echo "router exited $code"; podman logs "$tag-router" | tail -20; exit 1; }
echo "image smoke test passed (router stopped with exit code 0)"
