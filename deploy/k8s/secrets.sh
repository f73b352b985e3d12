#!/usr/bin/env bash
# Makes everything Arbor's manifests take from Secrets, into a new folder:
#   bash deploy/k8s/secrets.sh OUT_DIR [NAMESPACE] [PLANNER_NAME...]
# - a CA and one certificate per role (CN arbor-<role>; EC P-256; 1 year), each carrying the
#   name arbor-mesh (ARBOR_TLS_SERVER_NAME: pods are dialled by IP, so no certificate names an
#   address) and the planner's also every PLANNER_NAME given (the names clients outside dial,
#   e.g. arbor.example.com; default localhost and 127.0.0.1);
# - a bearer token for a first tenant ("default") and the planner's tokens file;
# - a Redis password (and the auth.conf Redis includes);
# and OUT_DIR/secrets.yaml, the Secrets for `kubectl apply -n NAMESPACE -f`. The same files lie
# in OUT_DIR in the layout the pods mount (tls/<role>/{tls.crt,tls.key,ca.crt}, tokens/tokens,
# redis/{password,auth.conf}), which deploy/podman/play.sh mounts directly; OUT_DIR/client holds
# what `arbor` needs (--tls_dir OUT_DIR/client, --token_file OUT_DIR/client/token).
# Nothing here is random but the keys, token and password; keep OUT_DIR private.
set -euo pipefail
out=${1:?usage: secrets.sh OUT_DIR [NAMESPACE] [PLANNER_NAME...]}
namespace=${2:-arbor}
shift $(($# >= 2 ? 2 : 1))
planner_names=("$@")
((${#planner_names[@]})) || planner_names=(localhost 127.0.0.1)
[[ -e $out ]] && { echo "secrets.sh: $out exists; give a new folder" >&2; exit 2; }
umask 077
mkdir -p "$out"/{ca,client,tokens,redis}
cd "$out"

openssl ecparam -name prime256v1 -genkey -noout -out ca/ca.key 2> /dev/null
openssl req -x509 -new -key ca/ca.key -sha256 -days 3650 -subj "/O=Arbor mesh/CN=arbor-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca/ca.crt 2> /dev/null

san_of() {
  local role=$1 san="DNS:arbor-mesh"
  if [[ $role == planner ]]; then
    for n in "${planner_names[@]}"; do
      if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+=",IP:$n"; else san+=",DNS:$n"; fi
    done
  fi
  echo "$san"
}

for role in kvstore router expert planner operator; do
  mkdir -p "tls/$role"
  openssl ecparam -name prime256v1 -genkey -noout -out "tls/$role/tls.key" 2> /dev/null
  openssl req -new -key "tls/$role/tls.key" -subj "/O=Arbor mesh/CN=arbor-$role" \
    -out "tls/$role/tls.csr" 2> /dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=$(san_of "$role")" > "tls/$role/ext.cnf"
  openssl x509 -req -in "tls/$role/tls.csr" -CA ca/ca.crt -CAkey ca/ca.key -CAcreateserial \
    -days 365 -sha256 -extfile "tls/$role/ext.cnf" -out "tls/$role/tls.crt" 2> /dev/null
  cp ca/ca.crt "tls/$role/ca.crt"
  rm "tls/$role/tls.csr" "tls/$role/ext.cnf"
done
cp ca/ca.crt client/ca.crt
cp tls/operator/tls.crt client/operator.crt
cp tls/operator/tls.key client/operator.key

token=$(openssl rand -hex 32)
printf '%s\n' "$token" > client/token
hash=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
printf '%s\n' "# Arbor planner tokens: sha256:<hash of a token> tenant=<name> [max_tasks=N] ..." \
  "sha256:$hash tenant=default" > tokens/tokens
password=$(openssl rand -hex 24)
printf '%s' "$password" > redis/password
printf 'requirepass %s\n' "$password" > redis/auth.conf

b64() { base64 -w0 < "$1"; }
{
  for role in kvstore router expert planner; do
    cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: arbor-tls-$role
  namespace: $namespace
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "tls/$role/tls.crt")
  tls.key: $(b64 "tls/$role/tls.key")
  ca.crt: $(b64 ca/ca.crt)
---
YAML
  done
  cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: arbor-planner-tokens
  namespace: $namespace
type: Opaque
data:
  tokens: $(b64 tokens/tokens)
---
apiVersion: v1
kind: Secret
metadata:
  name: arbor-redis
  namespace: $namespace
type: Opaque
data:
  password: $(b64 redis/password)
  auth.conf: $(b64 redis/auth.conf)
YAML
} > secrets.yaml
echo "secrets.sh: $out (CA key in $out/ca/ca.key: keep it offline; Secrets in $out/secrets.yaml)"
