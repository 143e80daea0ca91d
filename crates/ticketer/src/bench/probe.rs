//! What the bench reads from the servers it drives: their backend, and
//! every process's CPU time and peak memory (from /metrics and /proc).

use std::collections::HashMap;

use serde_json::Value;

/// `<kind of database>+<bus>+<cache>` as the booking service reports them.
pub(super) async fn backend(http: &reqwest::Client, services: &[(String, String)]) -> String {
    let url = services
        .iter()
        .find(|(name, _)| name == "booking")
        .map(|(_, url)| format!("{url}/health/ready"));
    let Some(url) = url else {
        return "unknown".into();
    };
    let Ok(resp) = http.get(&url).send().await else {
        return "unknown".into();
    };
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    let kind = |c: &str| v["components"][c]["kind"].as_str().unwrap_or("?").to_string();
    format!("{}+{}+{}", kind("database"), kind("bus"), kind("cache"))
}

/// The value of the unlabelled metric `name` on the server at `url`, from
/// its /metrics; None when it does not answer or has no such line.
/// `token` is for the gateway, which serves its /metrics only with its
/// scrape token; the services' own ports ignore it.
async fn metric(http: &reqwest::Client, url: &str, name: &str, token: Option<&str>) -> Option<f64> {
    let mut req = http.get(format!("{url}/metrics"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let text = req.send().await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU seconds used so far by every server process (from its /metrics)
/// and by the database, broker and cache if they run here. With the
/// in-process bus every service is one process: it is asked once.
pub(super) async fn cpu_used(
    http: &reqwest::Client,
    services: &[(String, String)],
    one_process: bool,
    token: Option<&str>,
) -> HashMap<String, f64> {
    let mut used = HashMap::new();
    let asked = if one_process {
        &services[..services.len().min(1)]
    } else {
        services
    };
    for (name, url) in asked {
        if let Some(cpu) = metric(http, url, "process_cpu_seconds_total", token).await {
            let name = if one_process {
                "ticketer dev"
            } else {
                name.as_str()
            };
            used.insert(name.to_string(), cpu);
        }
    }
    for (label, comm) in [
        ("bench", None),
        ("postgresql", Some("postgres")),
        ("rabbitmq", Some("beam.smp")),
        ("redis", Some("redis-server")),
    ] {
        let cpu = match comm {
            None => proc_cpu("/proc/self/stat"),
            Some(comm) => processes_named(comm)
                .iter()
                .filter_map(|p| proc_cpu(p))
                .reduce(|a, b| a + b),
        };
        if let Some(cpu) = cpu {
            used.insert(label.to_string(), cpu);
        }
    }
    used
}

/// The `stat` files of the processes on this machine whose command is `comm`.
fn processes_named(comm: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == comm))
        .map(|e| e.path().join("stat").to_string_lossy().into_owned())
        .collect()
}

/// User plus system CPU seconds of the process whose stat file this is.
fn proc_cpu(stat_path: &str) -> Option<f64> {
    ticketer_http::process::cpu_seconds(&std::fs::read_to_string(stat_path).ok()?)
}

/// The largest resident memory each process reached, in MB, from /metrics.
pub(super) async fn peak_memory(
    http: &reqwest::Client,
    services: &[(String, String)],
    token: Option<&str>,
) -> HashMap<String, f64> {
    let mut peaks = HashMap::new();
    for (name, url) in services {
        if let Some(bytes) = metric(http, url, "process_resident_memory_max_bytes", token).await {
            peaks.insert(name.clone(), (bytes / 1e6 * 10.0).round() / 10.0);
        }
    }
    peaks
}
