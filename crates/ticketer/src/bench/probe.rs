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
) -> CpuSnapshot {
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
            used.insert((name.to_string(), None), cpu);
        }
    }
    if let Some(cpu) = proc_cpu("/proc/self/stat") {
        used.insert(("bench".to_string(), None), cpu);
    }
    for (label, comm) in [
        ("postgresql", "postgres"),
        ("rabbitmq", "beam.smp"),
        ("redis", "redis-server"),
    ] {
        for (pid, stat) in processes_named(comm) {
            if let Some(cpu) = proc_cpu(&stat) {
                used.insert((label.to_string(), Some(pid)), cpu);
            }
        }
    }
    used
}

/// CPU seconds so far, by process: a server, the bench (no pid), or each
/// process of a server found by its command (PostgreSQL's backends come
/// and go; `rabbitmqctl` runs a `beam.smp` of its own for a moment).
pub(super) type CpuSnapshot = HashMap<(String, Option<u32>), f64>;

/// CPU seconds each labelled process used between two snapshots: a
/// process that started in between counts whole, one that ended in
/// between is not seen (what it used is lost, never subtracted).
pub(super) fn cpu_between(before: &CpuSnapshot, after: &CpuSnapshot) -> HashMap<String, f64> {
    let mut during: HashMap<String, f64> = HashMap::new();
    for ((label, pid), now) in after {
        let then = match (before.get(&(label.clone(), *pid)), pid) {
            (Some(then), _) => *then,
            (None, Some(_)) => 0.0,
            // A server not seen before the sale: nothing to compare with.
            (None, None) => continue,
        };
        *during.entry(label.clone()).or_default() += (now - then).max(0.0);
    }
    during
        .into_iter()
        .map(|(label, s)| (label, (s * 100.0).round() / 100.0))
        .collect()
}

/// The pids and `stat` files of the processes on this machine whose
/// command is `comm`.
fn processes_named(comm: &str) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e)))
        .filter(|(_, e)| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == comm))
        .map(|(pid, e)| (pid, e.path().join("stat").to_string_lossy().into_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_counted_per_process_and_never_negative() {
        let snap = |entries: &[(&str, Option<u32>, f64)]| -> CpuSnapshot {
            entries
                .iter()
                .map(|(label, pid, s)| ((label.to_string(), *pid), *s))
                .collect()
        };
        let before = snap(&[
            ("booking", None, 10.0),
            ("postgresql", Some(1), 5.0),
            ("postgresql", Some(2), 7.0),
            // rabbitmqctl's VM, gone by the end of the sale.
            ("rabbitmq", Some(9), 3.0),
            ("rabbitmq", Some(10), 20.0),
        ]);
        let after = snap(&[
            ("booking", None, 12.5),
            ("postgresql", Some(1), 6.0),
            // A backend that connected during the sale.
            ("postgresql", Some(3), 0.5),
            ("rabbitmq", Some(10), 20.25),
            ("gateway", None, 4.0),
        ]);
        let during = cpu_between(&before, &after);
        assert_eq!(during.get("booking"), Some(&2.5));
        assert_eq!(during.get("postgresql"), Some(&1.5));
        assert_eq!(during.get("rabbitmq"), Some(&0.25));
        assert_eq!(during.get("gateway"), None);
    }
}
