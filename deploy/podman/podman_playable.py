"""Turns the rendered podman overlay into what podman 4.3's `kube play` accepts.

Reads the YAML stream on stdin; writes to stdout the ConfigMap arbor-config, a
PersistentVolumeClaim per StatefulSet volume claim, and every Deployment and StatefulSet as a
Deployment (podman plays Pods, Deployments, PVCs and ConfigMaps only), Redis first, then the
kv-store, experts, routers and planners, so each finds what it needs already starting. The
secrets folder replaces ARBOR_SECRETS_DIR, and Redis's config from arbor-redis-config is
written into that folder (podman mounts no ConfigMap), bound to loopback.

    kubectl kustomize deploy/k8s/overlays/podman | /usr/bin/python3 podman_playable.py DIR

With `endpoints PLAYED.yaml` it prints, per Arbor workload of what it wrote, one line
`NAME ADDRESS METRICS HEALTH` (host:port each, `-` when unset), read from the containers'
flags, so the scripts that play and test it name no port of their own.
"""
import sys

import yaml

ORDER = ["state-store", "kvstore", "expert", "router", "planner"]


def flag(container, name):
    prefix = f"--{name}="
    return next((a[len(prefix):] for a in container.get("args", []) if a.startswith(prefix)), "-")


def endpoints(played):
    for d in yaml.safe_load_all(open(played)):
        if not d or d["kind"] != "Deployment":
            continue
        c = d["spec"]["template"]["spec"]["containers"][0]
        if flag(c, "address") == "-":
            continue  # not an Arbor service (Redis)
        print(d["metadata"]["name"], flag(c, "address"), flag(c, "metrics_address"),
              flag(c, "health_address"))


def main():
    if sys.argv[1] == "endpoints":
        return endpoints(sys.argv[2])
    secrets = sys.argv[1]
    text = sys.stdin.read().replace("ARBOR_SECRETS_DIR", secrets)
    docs = [d for d in yaml.safe_load_all(text) if d]
    out, workloads = [], []
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind == "ConfigMap" and name == "arbor-config":
            out.append(d)
        elif kind == "ConfigMap" and name == "arbor-redis-config":
            conf = d["data"]["redis.conf"]
            conf = conf.replace("bind 0.0.0.0", "bind 127.0.0.1")
            conf = conf.replace("protected-mode no", "protected-mode yes")
            with open(f"{secrets}/redis/redis.conf", "w") as f:
                f.write(conf)
        elif kind in ("Deployment", "StatefulSet"):
            workloads.append(d)
    for w in workloads:
        if w["kind"] != "StatefulSet":
            continue
        spec = w["spec"]
        for claim in spec.pop("volumeClaimTemplates", []):
            claim_name = f'{w["metadata"]["name"]}-{claim["metadata"]["name"]}'
            out.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": claim_name}, "spec": claim["spec"]})
            spec["template"]["spec"].setdefault("volumes", []).append(
                {"name": claim["metadata"]["name"],
                 "persistentVolumeClaim": {"claimName": claim_name}})
        for key in ("serviceName", "podManagementPolicy", "updateStrategy"):
            spec.pop(key, None)
        w["kind"] = "Deployment"
    component = lambda w: w["spec"]["template"]["metadata"]["labels"].get(
        "app.kubernetes.io/component", "")
    workloads.sort(key=lambda w: ORDER.index(component(w)) if component(w) in ORDER else 99)
    yaml.safe_dump_all(out + workloads, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
