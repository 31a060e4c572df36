"""deploy/monitoring: the rules pass promtool's unit tests, the routing and dashboard are
consistent with them, and a real Prometheus scraping the gateway fires an alert on a fault."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time

import httpx
import pytest
import yaml

from llama_assets.serving.routing import RouteState
from tests.serving.conftest import VARIANT, backend_thread, start_gateway
from tests.serving.servers import ROOT, free_port, wait_ready, wait_until

MONITORING = ROOT / "deploy" / "monitoring"
RULES = sorted((MONITORING / "rules").glob("*.yml"))
DASHBOARD = MONITORING / "grafana" / "llama-serving.json"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: `make monitoring-tools` (Debian's prometheus)")
    return path


def alert_rules() -> list[dict]:
    return [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_promtool_checks_and_unit_tests_the_rules():
    promtool = tool("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", *map(str, RULES)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "tests/llama-rules.test.yml"],
        cwd=MONITORING, capture_output=True, text=True,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_routed_severity_and_a_runbook_section():
    routes = yaml.safe_load((MONITORING / "alertmanager.yml").read_text())["route"]
    receivers = {r["name"] for r in yaml.safe_load((MONITORING / "alertmanager.yml").read_text())[
        "receivers"]}  # fmt: skip
    routed = {m.split("=")[1].strip('"'): r["receiver"] for r in routes["routes"]
              for m in r["matchers"]}  # fmt: skip
    assert routed == {"page": "pager", "ticket": "tickets"} and set(routed.values()) <= receivers
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^## (.+)$", runbook, re.M)}  # fmt: skip
    rules = alert_rules()
    assert len(rules) >= 15
    for rule in rules:
        assert rule["labels"]["severity"] in routed, rule["alert"]
        assert rule["annotations"]["runbook_url"].split("#")[1] in anchors, rule["alert"]


def test_the_dashboard_reads_only_recorded_or_exported_series():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    recorded = {
        rule["record"]
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?=\{|\s*\)|\s*$|\s*/|\[)", " ".join(exprs)))
    exported = {n for n in names if n.startswith(("llama_", "vllm:", "ALERTS"))}
    assert {n for n in names if ":" in n and not n.startswith("vllm:")} <= recorded
    assert exported  # raw metrics used directly (route weights, queue, batch size)
    titles = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert [t.split(":")[0] for t in titles] == ["Executive", "On-call", "Debug"]


def test_a_real_prometheus_scrapes_the_gateway_and_pages_on_injected_errors(
    tmp_path, model_root, versions
):
    prometheus = tool("prometheus")
    faulty = backend_thread(model_root, versions[0], inject_error_rate=1.0)
    gateway = start_gateway(
        tmp_path, {versions[0]: faulty.url}, RouteState(VARIANT, stable=versions[0])
    )
    # The shipped rules with test-sized clocks: 1 s evaluation, `for` of 1 s.
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for path in RULES:
        text = re.sub(r"^(\s+)for: \S+$", r"\1for: 1s", path.read_text(), flags=re.M)
        (rules_dir / path.name).write_text(text.replace("interval: 15s", "interval: 1s"))
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(p) for p in sorted(rules_dir.glob("*.yml"))]
    config.pop("alerting")
    config["scrape_configs"] = [
        {"job_name": "llama-gateway", "static_configs": [{"targets": [gateway.url[7:]]}]},
        {"job_name": "llama-backend", "static_configs": [{"targets": [faulty.url[7:]]}]},
    ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1"
    stop = threading.Event()

    def traffic() -> None:
        body = {"model": VARIANT, "prompt": "x", "max_tokens": 2}
        while not stop.is_set():
            httpx.post(gateway.url + "/v1/completions", json=body, timeout=30)
            time.sleep(0.1)

    sender = threading.Thread(target=traffic, daemon=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}/-/ready", 60)
        sender.start()

        def firing() -> list[dict]:
            alerts = httpx.get(api + "/alerts").json()["data"]["alerts"]
            return [a for a in alerts if a["state"] == "firing"]

        wait_until(
            lambda: any(a["labels"]["alertname"] == "LlamaErrorRateHigh" for a in firing()),
            90, "LlamaErrorRateHigh never fired", every=0.5,
        )  # fmt: skip
        alert = next(a for a in firing() if a["labels"]["alertname"] == "LlamaErrorRateHigh")
        assert alert["labels"]["severity"] == "page" and alert["labels"]["variant"] == VARIANT
        print("\nfired:", json.dumps({k: alert[k] for k in ("labels", "annotations", "activeAt")}))
        up = httpx.get(api + "/query", params={"query": 'up{job="llama-gateway"}'}).json()
        assert up["data"]["result"][0]["value"][1] == "1"
        # Every dashboard query is valid PromQL on this Prometheus.
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$variant", ".*")
                answer = httpx.get(api + "/query", params={"query": expr}).json()
                assert answer["status"] == "success", (panel["title"], answer)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(20)
        gateway.stop()
        faulty.stop()
