"""Checks of a played mesh's metrics and of a real Prometheus scraping it (tools/deploy_test.sh).

    prom_check.py metrics ADDRESS...          every required family, with its type, on the
                                              services' /metrics (each ADDRESS host:port)
    prom_check.py up PROM JOB...              `up` is 1 for every job
    prom_check.py panels PROM DASHBOARD       every query of every panel returns data
    prom_check.py alert PROM ALERT KEY=VALUE  the alert fires with that label (alerts API)
    prom_check.py rules PROMETHEUSRULE OUT [--for SECONDS]
                                              the PrometheusRule's groups as a rules file;
                                              --for shortens every `for` (the live test)

Waits are bounded (PROM_CHECK_WAIT_S, default 60 s); exits 1 naming what is missing.
"""
import json
import os
import sys
import time
import urllib.parse
import urllib.request

import yaml

WAIT_S = float(os.environ.get("PROM_CHECK_WAIT_S", "60"))

# What operators need from each service (issue: metrics operators expect), name -> type.
REQUIRED = {
    "router": {
        "arbor_router_time_to_first_token_seconds": "histogram",
        "arbor_router_inter_token_latency_seconds": "histogram",
        "arbor_router_waiting_extends": "gauge",
        "arbor_router_running_extends": "gauge",
        "arbor_router_extends_finished_total": "counter",
        "arbor_router_expert_tokens_total": "counter",
        "arbor_router_expert_worker_up": "gauge",
        "arbor_router_tokens_total": "counter",
        "arbor_router_kv_usage": "gauge",
        "arbor_router_requests_total": "counter",
        "arbor_router_request_duration_seconds": "histogram",
    },
    "planner": {
        "arbor_planner_solve_duration_seconds": "histogram",
        "arbor_planner_running_tasks": "gauge",
        "arbor_planner_task_slots": "gauge",
        "arbor_planner_extends_in_flight": "gauge",
        "arbor_planner_tasks_total": "counter",
        "arbor_planner_nodes_total": "counter",
        "arbor_planner_tokens_total": "counter",
        "arbor_planner_requests_total": "counter",
        "arbor_planner_request_duration_seconds": "histogram",
    },
    "kvstore": {
        "arbor_kvstore_kv_usage": "gauge",
        "arbor_kvstore_forks_total": "counter",
        "arbor_kvstore_prefix_reused_tokens_total": "counter",
        "arbor_kvstore_live_sequences": "gauge",
        "arbor_kvstore_requests_total": "counter",
        "arbor_kvstore_request_duration_seconds": "histogram",
    },
    "expert": {
        "arbor_expert_tokens_total": "counter",
        "arbor_expert_waiting_calls": "gauge",
        "arbor_expert_running_calls": "gauge",
        "arbor_expert_requests_total": "counter",
        "arbor_expert_request_duration_seconds": "histogram",
    },
}


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def query(prom, expr):
    url = f"http://{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(get(url))
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def until(what, check):
    deadline = time.monotonic() + WAIT_S
    last = None
    while time.monotonic() < deadline:
        try:
            ok, last = check()
            if ok:
                return last
        except (OSError, RuntimeError, ValueError) as e:
            last = str(e)
        time.sleep(1)
    sys.exit(f"prom_check: {what} (after {WAIT_S:.0f} s; last: {last})")


def cmd_metrics(addresses):
    for address in addresses:
        text = get(f"http://{address}/metrics")
        types = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                types[name] = kind
        service = next((s for s in REQUIRED if f"arbor_{s}_" in text), None)
        if service is None:
            sys.exit(f"prom_check: {address} exports no arbor_<service>_ family")
        for name, kind in REQUIRED[service].items():
            if types.get(name) != kind:
                sys.exit(f"prom_check: {address} ({service}): {name} is "
                         f"{types.get(name, 'missing')}, not {kind}")
            if not any(line.startswith(name) for line in text.splitlines()):
                sys.exit(f"prom_check: {address} ({service}): {name} has no series")
        print(f"prom_check: {address}: the {len(REQUIRED[service])} {service} families")


def cmd_up(prom, jobs):
    for job in jobs:
        def all_up(job=job):
            r = query(prom, f'up{{job="{job}"}}')
            return bool(r) and all(s["value"][1] == "1" for s in r), r
        until(f"up{{job=\"{job}\"}} is not 1", all_up)
    print(f"prom_check: up is 1 for {', '.join(jobs)}")


def cmd_panels(prom, dashboard):
    panels = json.load(open(dashboard))["panels"]
    n = 0
    for p in panels:
        for t in p["targets"]:
            def has_data(expr=t["expr"]):
                r = query(prom, expr)
                return len(r) > 0, r
            until(f"panel \"{p['title']}\": {t['expr']} returns no data", has_data)
            n += 1
    print(f"prom_check: all {n} queries of the {len(panels)} panels return data")


def cmd_alert(prom, alert, label):
    key, value = label.split("=", 1)

    def firing():
        body = json.loads(get(f"http://{prom}/api/v1/alerts"))
        alerts = body["data"]["alerts"]
        hit = [a for a in alerts if a["labels"].get("alertname") == alert
               and a["labels"].get(key) == value and a["state"] == "firing"]
        return bool(hit), [(a["labels"].get("alertname"), a["state"]) for a in alerts]

    until(f"{alert} with {label} does not fire", firing)
    print(f"prom_check: {alert} fires for {label}")


def cmd_rules(rule_file, out, args):
    doc = yaml.safe_load(open(rule_file))
    groups = doc["spec"]["groups"]
    if args[:1] == ["--for"]:
        for g in groups:
            for r in g["rules"]:
                if "for" in r:
                    r["for"] = f"{int(args[1])}s"
    yaml.safe_dump({"groups": groups}, open(out, "w"), sort_keys=False)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "metrics":
        cmd_metrics(args)
    elif cmd == "up":
        cmd_up(args[0], args[1:])
    elif cmd == "panels":
        cmd_panels(args[0], args[1])
    elif cmd == "alert":
        cmd_alert(args[0], args[1], args[2])
    elif cmd == "rules":
        cmd_rules(args[0], args[1], args[2:])
    else:
        sys.exit(f"prom_check: unknown command {cmd}")


if __name__ == "__main__":
    main()
