//! The deployment files, checked without Docker or a cluster: `docker-compose.yml` (parsed,
//! with YAML merge keys resolved, as `docker compose config` would), the Dockerfile, the
//! Prometheus configuration and alert rules (`promtool check` and `promtool test rules`), the
//! Grafana dashboard, and the Kubernetes manifests. Every PromQL expression must parse and may
//! only name metrics of the catalogue; every abridge command line must parse with the real
//! binary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use abridge_telemetry::metrics::{Kind, Scope, def};
use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::bin;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Every document of a YAML file, as JSON values with `<<` merge keys applied.
fn yaml(path: &str) -> Vec<Value> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
        .iter()
        .map(to_json)
        .collect()
}

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Hash(h) => {
            let mut map = Map::new();
            // Merge keys first, so the mapping's own keys override what they bring.
            if let Some(merged) = h.get(&Yaml::String("<<".into())) {
                let sources = match merged {
                    Yaml::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for source in sources {
                    if let Value::Object(m) = to_json(source) {
                        map.extend(m);
                    }
                }
            }
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    other => panic!("unsupported key {other:?}"),
                };
                if key != "<<" {
                    map.insert(key, to_json(v));
                }
            }
            Value::Object(map)
        }
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => Value::from(r.parse::<f64>().unwrap()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Null => Value::Null,
        other => panic!("unsupported YAML node {other:?}"),
    }
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")))
        .collect()
}

/// Seconds in a compose duration such as `30s`, `1m30s`.
fn seconds(d: &str) -> u64 {
    let mut total = 0;
    let mut n = String::new();
    for c in d.chars() {
        match c {
            '0'..='9' => n.push(c),
            's' => total += n.parse::<u64>().unwrap(),
            'm' => total += 60 * n.parse::<u64>().unwrap(),
            'h' => total += 3600 * n.parse::<u64>().unwrap(),
            _ => panic!("bad duration {d}"),
        }
        if !c.is_ascii_digit() {
            n.clear();
        }
    }
    total
}

/// The port of a `--flag HOST:PORT` in an argument list.
fn listen_port(args: &[&str], flag: &str) -> u16 {
    let i = args
        .iter()
        .position(|a| *a == flag)
        .unwrap_or_else(|| panic!("{flag} missing from {args:?}"));
    args[i + 1].rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Whether `abridge args... --help` parses (the command exists and takes these arguments).
fn abridge_accepts(args: &[&str]) -> bool {
    Command::new(bin())
        .args(args)
        .arg("--help")
        .output()
        .expect("run abridge")
        .status
        .success()
}

fn has_subcommand(name: &str) -> bool {
    abridge_accepts(&[name])
}

/// Every `abridge_*` metric an expression names; each must be catalogued (histogram series
/// suffixes allowed).
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("abridge_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|b| def(b).is_some_and(|d| d.kind == Kind::Histogram))
            })
            .unwrap_or(name);
        assert!(
            def(base).is_some(),
            "{name} in `{expr}` is not a catalogued metric"
        );
        found.insert(base.to_owned());
        rest = &tail[end..];
    }
    found
}

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool (apt-get install prometheus; .ci/run installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_file_runs_a_scalable_observable_fleet() {
    let docs = yaml("docker-compose.yml");
    let compose = &docs[0];
    let services = compose["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "api",
            "exporter",
            "grafana",
            "migrate",
            "postgres",
            "prometheus",
            "redis",
            "worker"
        ])
    );
    // Healthchecks everywhere but the one-shot migration.
    for (name, s) in services {
        if name == "migrate" {
            assert_eq!(s["restart"], "no");
            assert_eq!(s["depends_on"]["postgres"]["condition"], "service_healthy");
            assert_eq!(strs(&s["command"]), ["migrate"]);
            continue;
        }
        let test = strs(&s["healthcheck"]["test"]);
        assert!(
            matches!(test[0], "CMD" | "CMD-SHELL") && test.len() > 1,
            "{name}: healthcheck {test:?}"
        );
    }
    // The abridge services: one image, built here, waiting for healthy servers and migrations.
    let shutdown_ms: u64 = services["worker"]["environment"]["ABRIDGE_SHUTDOWN_GRACE_MS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for name in ["api", "worker", "exporter", "migrate"] {
        let s = &services[name];
        assert_eq!(s["image"], "abridge:local", "{name}");
        assert_eq!(s["build"], ".", "{name}");
        assert!(
            s["environment"]["ABRIDGE_DATABASE_URL"].is_string(),
            "{name}"
        );
        assert!(s["environment"]["ABRIDGE_REDIS_URL"].is_string(), "{name}");
        if name != "migrate" {
            let d = &s["depends_on"];
            assert_eq!(d["redis"]["condition"], "service_healthy", "{name}");
            assert_eq!(d["postgres"]["condition"], "service_healthy", "{name}");
            assert_eq!(
                d["migrate"]["condition"], "service_completed_successfully",
                "{name}"
            );
            assert_eq!(s["restart"], "unless-stopped", "{name}");
        }
    }
    // Workers scale: no fixed name or host port; each serves metrics where its healthcheck
    // and Prometheus look.
    let worker = &services["worker"];
    assert!(worker.get("container_name").is_none() && worker.get("ports").is_none());
    let args = strs(&worker["command"]);
    assert_eq!(args[0], "worker");
    let port = listen_port(&args, "--metrics-listen");
    assert_eq!(
        strs(&worker["healthcheck"]["test"]),
        [
            "CMD",
            "abridge",
            "probe",
            &format!("http://127.0.0.1:{port}/healthz")
        ]
    );
    assert!(abridge_accepts(&args), "abridge {args:?} does not parse");
    // A graceful stop lets the worker's own grace run out and leaves time to hand back.
    let stop = seconds(worker["stop_grace_period"].as_str().unwrap());
    assert!(
        stop * 1000 >= shutdown_ms + 5000,
        "stop_grace_period {stop}s must exceed ABRIDGE_SHUTDOWN_GRACE_MS {shutdown_ms} by 5 s"
    );

    let exporter = &services["exporter"];
    let args = strs(&exporter["command"]);
    let exporter_port = listen_port(&args, "--listen");
    assert!(abridge_accepts(&args), "abridge {args:?} does not parse");
    assert!(
        exporter.get("deploy").is_none(),
        "one exporter, never scaled"
    );
    assert_eq!(
        strs(&exporter["healthcheck"]["test"])[3],
        format!("http://127.0.0.1:{exporter_port}/healthz")
    );
    let api = &services["api"];
    let args = strs(&api["command"]);
    let api_port = listen_port(&args, "--listen");
    assert_eq!(strs(&api["ports"]), [format!("{api_port}:{api_port}")]);
    // The API's metrics have a listener of their own: its published port faces tenants.
    let api_metrics_port = listen_port(&args, "--metrics-listen");
    assert_ne!(api_metrics_port, api_port);
    if has_subcommand("api") {
        assert!(abridge_accepts(&args), "abridge {args:?} does not parse");
    }

    // Prometheus scrapes every worker replica by DNS, the exporter and the API, on the ports
    // they listen on; its files come from deploy/.
    let prometheus = &services["prometheus"];
    for volume in strs(&prometheus["volumes"]) {
        if let Some(path) = volume.strip_prefix("./") {
            let path = path.split(':').next().unwrap();
            assert!(
                repo().join(path).exists(),
                "prometheus mounts missing {path}"
            );
        }
    }
    let config = &yaml("deploy/prometheus/prometheus.yml")[0];
    let jobs: Vec<&Value> = config["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let job = |name: &str| {
        *jobs
            .iter()
            .find(|j| j["job_name"] == name)
            .unwrap_or_else(|| panic!("no scrape job {name}"))
    };
    let dns = &job("abridge-worker")["dns_sd_configs"][0];
    assert_eq!(strs(&dns["names"]), ["worker"]);
    assert_eq!(dns["port"], port);
    assert_eq!(
        strs(&job("abridge-exporter")["static_configs"][0]["targets"]),
        [format!("exporter:{exporter_port}")]
    );
    assert_eq!(
        strs(&job("abridge-api")["static_configs"][0]["targets"]),
        [format!("api:{api_metrics_port}")]
    );

    // Grafana starts with the dashboard provisioned from deploy/.
    let grafana = &services["grafana"];
    let volumes = strs(&grafana["volumes"]);
    for (host, inside) in [
        ("./deploy/grafana/provisioning", "/etc/grafana/provisioning"),
        ("./deploy/grafana/dashboards", "/etc/grafana/dashboards"),
    ] {
        assert!(
            volumes
                .iter()
                .any(|v| v.starts_with(&format!("{host}:{inside}"))),
            "grafana must mount {host}"
        );
    }
    let provider = &yaml("deploy/grafana/provisioning/dashboards/abridge.yml")[0];
    assert_eq!(
        provider["providers"][0]["options"]["path"],
        "/etc/grafana/dashboards"
    );
    assert_eq!(
        grafana["depends_on"]["prometheus"]["condition"],
        "service_healthy"
    );
}

#[test]
fn the_dockerfile_builds_small_and_runs_as_a_non_root_user() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    assert!(stages[0].contains(" AS build"));
    assert!(
        stages.last().unwrap().contains("-slim"),
        "small runtime image: {stages:?}"
    );
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(user != "root" && user != "0", "runs as {user}");
    assert!(runtime.contains("ENTRYPOINT [\"abridge\"]"));
    assert!(runtime.contains("COPY --from=build"));
    assert!(dockerfile.contains("--locked"), "builds from Cargo.lock");
}

#[test]
fn prometheus_config_and_alerts_pass_promtool_and_use_catalogued_metrics() {
    let dir = repo().join("deploy/prometheus");
    promtool(&["check", "config", "prometheus.yml"], &dir);
    promtool(&["check", "rules", "alerts.yml"], &dir);
    promtool(&["test", "rules", "alerts.test.yml"], &dir);

    let rules = &yaml("deploy/prometheus/alerts.yml")[0];
    let mut used = BTreeSet::new();
    let mut alerts = BTreeSet::new();
    for rule in rules["groups"][0]["rules"].as_array().unwrap() {
        used.extend(metrics_in(rule["expr"].as_str().unwrap()));
        alerts.insert(rule["alert"].as_str().unwrap().to_owned());
        assert!(rule["annotations"]["summary"].is_string());
        assert!(rule["labels"]["severity"].is_string());
    }
    // Queue age, no live workers, drift, error rate: the alerts the issue asks for.
    for required in [
        "AbridgeQueueStalled",
        "AbridgeNoLiveWorkers",
        "AbridgeRedisPostgresDrift",
        "AbridgeHighFailureRate",
    ] {
        assert!(alerts.contains(required), "missing alert {required}");
    }
    for metric in [
        "abridge_oldest_item_age_seconds",
        "abridge_workers_alive",
        "abridge_redis_postgres_drift",
        "abridge_items_total",
    ] {
        assert!(used.contains(metric), "no alert uses {metric}");
    }
}

#[test]
fn the_grafana_dashboard_queries_parse_and_cover_the_fleet() {
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/abridge.json")).expect("JSON");
    let datasource =
        &yaml("deploy/grafana/provisioning/datasources/prometheus.yml")[0]["datasources"][0];
    let templating = dashboard["templating"]["list"].as_array().unwrap();
    assert_eq!(
        templating[0]["current"]["value"], datasource["uid"],
        "the dashboard defaults to the provisioned data source"
    );
    // Every query as a recording rule, so that promtool parses the PromQL.
    let mut exprs = Vec::new();
    let mut titles = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        titles.push(panel["title"].as_str().unwrap().to_lowercase());
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    let mut used = BTreeSet::new();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        used.extend(metrics_in(e));
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard_rules.yml"), rules).unwrap();
    promtool(&["check", "rules", "dashboard_rules.yml"], dir.path());

    // Depth, throughput, latency percentiles, reclaims, stale writes, summarizer errors and
    // tokens: what the issue asks the dashboard to show.
    for metric in [
        "abridge_queue_depth",
        "abridge_items_total",
        "abridge_item_duration_seconds",
        "abridge_enqueue_to_start_seconds",
        "abridge_reclaimed_total",
        "abridge_stale_writes_rejected_total",
        "abridge_summarizer_requests_total",
        "abridge_summarizer_tokens_total",
        "abridge_oldest_item_age_seconds",
        "abridge_workers_alive",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }
    assert!(exprs.iter().any(|e| e.contains("histogram_quantile(0.95")));
    assert!(titles.iter().any(|t| t.contains("summarizer errors")));
    assert!(titles.iter().any(|t| t.contains("tokens")));
}

#[test]
fn kubernetes_manifests_match_the_workers_shutdown_metrics_and_scaling() {
    let kustomization = &yaml("deploy/kubernetes/kustomization.yaml")[0];
    let files = strs(&kustomization["resources"]);
    let on_disk: BTreeSet<String> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "kustomization.yaml")
        .collect();
    assert_eq!(
        files
            .iter()
            .map(|f| (*f).to_owned())
            .collect::<BTreeSet<_>>(),
        on_disk,
        "kustomization lists every manifest"
    );
    let docs: Vec<Value> = files
        .iter()
        .flat_map(|f| yaml(&format!("deploy/kubernetes/{f}")))
        .collect();
    let find = |kind: &str, name: &str| -> &Value {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let config = &find("ConfigMap", "abridge-config")["data"];
    let shutdown_ms: u64 = config["ABRIDGE_SHUTDOWN_GRACE_MS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let secret = &find("Secret", "abridge-secrets")["stringData"];
    assert!(secret["ABRIDGE_DATABASE_URL"].is_string() && secret["ABRIDGE_REDIS_URL"].is_string());

    // Every pod: the abridge image, non-root, its settings from the ConfigMap and Secret, a
    // command line the binary accepts.
    let pod_specs: Vec<(&str, &Value)> = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "Job")
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap(),
                &d["spec"]["template"],
            )
        })
        .collect();
    assert_eq!(pod_specs.len(), 4);
    for (name, template) in &pod_specs {
        let spec = &template["spec"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}");
        let c = &spec["containers"][0];
        assert_eq!(c["image"], "abridge", "{name}");
        assert_eq!(
            c["securityContext"]["allowPrivilegeEscalation"], false,
            "{name}"
        );
        let sources: Vec<&str> = c["envFrom"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s["configMapRef"]["name"]
                    .as_str()
                    .or(s["secretRef"]["name"].as_str())
                    .unwrap()
            })
            .collect();
        assert_eq!(sources, ["abridge-config", "abridge-secrets"], "{name}");
        let args = strs(&c["args"]);
        if args[0] != "api" || has_subcommand("api") {
            assert!(
                abridge_accepts(&args),
                "{name}: abridge {args:?} does not parse"
            );
        }
    }
    for d in docs.iter().filter(|d| d["kind"] == "Deployment") {
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        for (k, v) in d["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "{} selector", d["metadata"]["name"]);
        }
    }
    for s in docs.iter().filter(|d| d["kind"] == "Service") {
        let target = s["spec"]["selector"]["app.kubernetes.io/name"]
            .as_str()
            .unwrap();
        find("Deployment", target);
    }

    assert_eq!(
        strs(&find("Job", "abridge-migrate")["spec"]["template"]["spec"]["containers"][0]["args"]),
        ["migrate"]
    );

    // Workers: metrics where Prometheus looks, and a termination grace that outlasts the
    // worker's own shutdown grace.
    let worker = find("Deployment", "abridge-worker");
    let pod = &worker["spec"]["template"];
    let c = &pod["spec"]["containers"][0];
    let args = strs(&c["args"]);
    assert_eq!(args[0], "worker");
    let port = listen_port(&args, "--metrics-listen");
    assert_eq!(c["ports"][0]["containerPort"], port);
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"],
        port.to_string()
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace * 1000 >= shutdown_ms + 5000,
        "terminationGracePeriodSeconds {grace} must exceed ABRIDGE_SHUTDOWN_GRACE_MS {shutdown_ms} by 5 s"
    );

    // One exporter, replaced rather than rolled (never two at once).
    let exporter = find("Deployment", "abridge-exporter");
    assert_eq!(exporter["spec"]["replicas"], 1);
    assert_eq!(exporter["spec"]["strategy"]["type"], "Recreate");

    // The API: a Service in front, and a preStop that outlasts endpoint removal.
    let api = find("Deployment", "abridge-api");
    let c = &api["spec"]["template"]["spec"]["containers"][0];
    let api_port = listen_port(&strs(&c["args"]), "--listen");
    assert_eq!(c["ports"][0]["containerPort"], api_port);
    let api_metrics_port = listen_port(&strs(&c["args"]), "--metrics-listen");
    assert_eq!(c["ports"][1]["containerPort"], api_metrics_port);
    assert_eq!(
        api["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
        api_metrics_port.to_string()
    );
    assert!(c["lifecycle"]["preStop"]["exec"]["command"].is_array());
    assert_eq!(
        find("Service", "abridge-api")["spec"]["ports"][0]["targetPort"],
        "http"
    );

    // KEDA scales the worker Deployment on fleet gauges, one concurrency's worth per replica.
    let scaled = find("ScaledObject", "abridge-worker");
    assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], "abridge-worker");
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "prometheus");
    let used = metrics_in(trigger["metadata"]["query"].as_str().unwrap());
    assert!(used.contains("abridge_queue_depth"));
    for m in &used {
        assert_eq!(
            def(m).unwrap().scope,
            Scope::Fleet,
            "{m}: scale on fleet gauges"
        );
    }
    assert_eq!(
        trigger["metadata"]["threshold"],
        config["ABRIDGE_CONCURRENCY"]
    );
}
