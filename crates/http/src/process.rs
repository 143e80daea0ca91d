//! The standard process metrics (`process_resident_memory_bytes`, open file
//! descriptors, threads, CPU), read from `/proc/self` when `/metrics` is
//! scraped. Elsewhere than Linux they are simply absent.

use std::fmt::Write;

/// Linux reports CPU times in clock ticks of 1/100 s (USER_HZ) on every
/// architecture Ticketer runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// Field `n` (numbered as in proc(5)) of a `/proc/<pid>/stat` file's text,
/// as a number. The fields are counted after the command name, which is in
/// parentheses and may itself contain spaces.
fn stat_field(stat: &str, n: usize) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // The state field, 3rd in proc(5), comes first after the name.
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// User plus system CPU seconds from a `/proc/<pid>/stat` file's text.
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    Some((stat_field(stat, 14)? + stat_field(stat, 15)?) / TICKS_PER_SECOND)
}

/// The process figures, as Prometheus text lines.
pub fn render() -> String {
    let mut out = String::new();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // "VmRSS:   1234 kB", "Threads:  9": the number after the key.
    let number = |key: &str| -> Option<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    let kib = |key: &str| number(key).map(|n| n * 1024.0);
    let mut gauge = |name: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
    };
    gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        kib("VmRSS:"),
    );
    gauge(
        "process_resident_memory_max_bytes",
        "The largest resident memory size since the process started, in bytes.",
        kib("VmHWM:"),
    );
    gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        kib("VmSize:"),
    );
    gauge(
        "process_threads",
        "Number of OS threads in the process.",
        number("Threads:"),
    );
    let fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
    gauge("process_open_fds", "Number of open file descriptors.", fds);
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| {
        l.lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|n| n.parse::<f64>().ok())
    });
    gauge(
        "process_max_fds",
        "Maximum number of open file descriptors.",
        max_fds,
    );

    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    if let Some(cpu) = cpu_seconds(&stat) {
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total {cpu}"
        );
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|n| n.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, stat_field(&stat, 22)) {
        let _ = writeln!(
            out,
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
             # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}",
            boot + start / TICKS_PER_SECOND
        );
    }
    out
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn reports_this_process() {
        let text = super::render();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
                .parse()
                .unwrap()
        };
        let rss = value("process_resident_memory_bytes");
        assert!(rss > 1e6, "a running test binary uses more than 1 MB: {rss}");
        assert!(value("process_resident_memory_max_bytes") >= rss);
        assert!(value("process_threads") >= 1.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_start_time_seconds") > 1.6e9);
    }
}
