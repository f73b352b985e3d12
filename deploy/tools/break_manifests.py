"""Breaks a rendered overlay in ways check.mjs must report (its own test, tools/deploy_test.sh).

    break_manifests.py IN.yaml OUT.yaml EXPECTED.txt

Writes OUT.yaml with one defect of each kind check.mjs looks for, and EXPECTED.txt with the
text each must produce, one per line.
"""
import sys

import yaml


def main():
    src, out, expected = sys.argv[1:4]
    docs = [d for d in yaml.safe_load_all(open(src)) if d]
    want = []
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind == "Deployment" and name == "arbor-router":
            pod = d["spec"]["template"]["spec"]
            c = pod["containers"][0]
            c["readinessProbe"]["grpc"]["port"] = 9999
            want.append("readinessProbe probes port 9999, --health_address is on 8083")
            c["livenessPorbe"] = c.pop("livenessProbe")
            want.append('unknown field "livenessPorbe"')
            want.append("no livenessProbe")
            pod["terminationGracePeriodSeconds"] = 12
            want.append("terminationGracePeriodSeconds 12 < preStop 5 s")
        elif kind == "Service" and name == "arbor-planner":
            d["spec"]["selector"] = {"app.kubernetes.io/name": "arbor-plannr"}
            want.append("Service/arbor-planner: selects no pods")
        elif kind == "ScaledObject" and name == "arbor-router":
            t = d["spec"]["triggers"][0]
            t["metdata"] = t.pop("metadata")
            want.append('unknown field "metdata"')
            want.append("must have required property metadata")
        elif kind == "ServiceMonitor" and name == "arbor-kvstore":
            d["spec"]["endpoints"][0]["port"] = "metric"
            want.append("port metric is not a port of its Service")
        elif kind == "StatefulSet" and name == "arbor-kvstore":
            d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
            want.append("containerPort must be integer")
        elif kind == "StatefulSet" and name == "arbor-expert-0":
            d["spec"]["template"]["spec"]["containers"][0]["securityContext"][
                "allowPrivilegeEscalation"] = True
            want.append("allowPrivilegeEscalation is not false")
        elif kind == "NetworkPolicy" and name == "arbor-kvstore":
            d["spec"]["ingress"][0]["ports"][0]["port"] = "grcp"
            want.append("port grcp is not a port of every pod it selects")
    yaml.safe_dump_all(docs, open(out, "w"), sort_keys=False)
    open(expected, "w").write("\n".join(want) + "\n")


if __name__ == "__main__":
    main()
