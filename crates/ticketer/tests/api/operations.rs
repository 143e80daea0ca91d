//! What an operator watches: every metric that the alert rules
//! (deploy/prometheus/rules.yml) and the Grafana dashboards
//! (deploy/grafana/dashboards) name is exported by a running stack after a
//! small sale, so no alert watches, and no panel draws, a series that never
//! exists. RabbitMQ's own figures (`rabbitmq_*`) and Prometheus's `up` come
//! from elsewhere; the recording rules' names (`ticketer:*`) must be defined.

use std::{collections::BTreeSet, path::PathBuf};

use reqwest::StatusCode;

use crate::{
    bookings::{book, event_on_sale_by},
    harness::TestStack,
};

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The PromQL expressions of the rule file: `expr:` values, one line or a
/// `|` block.
fn rule_expressions(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let key = line.trim_start();
        let Some(rest) = key.strip_prefix("- ").unwrap_or(key).strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest != "|" {
            out.push(rest.to_string());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = String::new();
        while i < lines.len()
            && (lines[i].trim().is_empty() || lines[i].len() - lines[i].trim_start().len() > indent)
        {
            block.push_str(lines[i].trim());
            block.push(' ');
            i += 1;
        }
        out.push(block);
    }
    out
}

/// The recording rules' names (`- record: name`).
fn recorded(yaml: &str) -> BTreeSet<String> {
    yaml.lines()
        .filter_map(|l| l.trim_start().strip_prefix("- record:"))
        .map(|n| n.trim().to_string())
        .collect()
}

/// The series a PromQL expression reads: identifiers that are not
/// functions, keywords, label names or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Label matchers, ranges and strings say nothing about names.
    let mut bare = String::new();
    let (mut depth, mut quoted) = (0, false);
    for c in expr.chars() {
        match c {
            '"' if depth == 0 => quoted = !quoted,
            _ if quoted => {}
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth == 0 => bare.push(c),
            _ => {}
        }
    }
    let chars: Vec<char> = bare.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut next = i;
        while next < chars.len() && chars[next] == ' ' {
            next += 1;
        }
        let call = chars.get(next) == Some(&'(');
        match word.as_str() {
            // Grouping clauses: skip the label list that follows.
            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right" if call => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
            }
            "and" | "or" | "unless" | "bool" | "offset" | "by" | "without" | "group_left" | "group_right" => {
            }
            // Aggregations, whose `by (...)` may come before the parenthesis.
            "sum" | "avg" | "min" | "max" | "count" | "group" | "stddev" | "stdvar" | "topk" | "bottomk"
            | "quantile" | "count_values" => {}
            _ if call => {}
            _ => {
                names.insert(word);
            }
        }
    }
    names
}

#[test]
fn names_are_read_from_promql() {
    let names = metric_names(
        r#"sum by (service, le) (rate(ticketer_http_requests_total{status=~"5.."}[5m])) / on (service) group_left max(up) > 0.5"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["ticketer_http_requests_total".into(), "up".into()])
    );
    let exprs =
        rule_expressions("  - expr: |\n      a_total\n        / b_total\n  - alert: X\n    expr: c > 1\n");
    assert_eq!(exprs.len(), 2);
    assert_eq!(
        metric_names(&exprs[0]),
        BTreeSet::from(["a_total".into(), "b_total".into()])
    );
}

async fn dashboards_and_alerts_name_only_exported_metrics(s: &TestStack) {
    // A small sale: a declined booking, then a confirmed one.
    let (event, _) = event_on_sale_by(s, 2).await;
    let (_, customer, _) = s.user("CUSTOMER").await;
    let declined = book(s, &customer, event, 1, "tok_chargeDeclined").await;
    assert_eq!(declined.text("status"), "FAILED", "{}", declined.body);
    let paid = book(s, &customer, event, 1, "tok_visa").await;
    assert_eq!(paid.text("status"), "CONFIRMED", "{}", paid.body);

    let rules = std::fs::read_to_string(deploy_dir().join("prometheus/rules.yml")).unwrap();
    let defined = recorded(&rules);
    let mut wanted: Vec<(String, String)> = Vec::new();
    for expr in rule_expressions(&rules) {
        wanted.extend(
            metric_names(&expr)
                .into_iter()
                .map(|n| (n, "rules.yml".to_string())),
        );
    }
    let dashboards = deploy_dir().join("grafana/dashboards");
    for entry in std::fs::read_dir(&dashboards).unwrap() {
        let path = entry.unwrap().path();
        let board: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for panel in board["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let place = format!("{}: {}", path.display(), panel["title"]);
                wanted.extend(metric_names(expr).into_iter().map(|n| (n, place.clone())));
            }
        }
    }
    assert!(wanted.len() >= 10, "read too few names: {wanted:?}");
    // Figures sampled every few seconds (the seats on sale) may not be
    // there at once: scrape until nothing is missing, for a while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let exported = loop {
        let exported = scrape_all(s).await;
        let missing = not_exported(&exported, &wanted, &defined);
        if missing.is_empty() {
            break exported;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: named but not exported: {missing:?}",
            s.label
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    // The saga's messages were counted as their consumers applied them:
    // the payment the ticket service sold on (the booking service had it in
    // the payment service's answer), by its type, and how long it waited.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let queue = "queue=\"ticket.commands\"";
        let paid = format!("{queue},kind=\"PaymentSucceeded\"");
        let payments = s
            .metric_sum("ticket", "ticketer_messages_consumed_total", &paid)
            .await;
        let aged = s
            .metric_sum("ticket", "ticketer_message_age_seconds_count", queue)
            .await;
        if payments >= 1.0 && aged >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: ticket.commands counted {payments} payments applied, {aged} messages aged",
            s.label
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The sagas counted the answers they took, however they came: both
    // payments' (declined, paid) and both holds'.
    let answers = |kind: &'static str| async move {
        let labels = format!("kind=\"{kind}\"");
        s.metric_sum("booking", "ticketer_saga_answers_total", &labels)
            .await
    };
    let taken = [
        answers("TicketsHeld").await,
        answers("PaymentFailed").await,
        answers("PaymentSucceeded").await,
    ];
    assert_eq!(taken, [2.0, 1.0, 1.0], "{}: answers counted", s.label);
    // The seats of the event on sale: one sold, one left (sampled every
    // few seconds, and the sale is recorded just after the confirmation).
    let ours = format!("event_id=\"{event}\",state=");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let mut seats = Vec::new();
        for state in ["sold", "available", "held"] {
            let labels = format!("{ours}\"{state}\"");
            seats.push(s.metric_sum("ticket", "ticketer_seats", &labels).await);
        }
        if seats == [1.0, 1.0, 0.0] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: seats (sold, available, held) stayed {seats:?}",
            s.label
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // The business of the sale shows: the bookings route was counted.
    assert!(
        exported.contains("route=\"/api/v1/bookings\""),
        "{}: no booking requests counted",
        s.label
    );
}

/// Every service's `/metrics`, one after the other.
async fn scrape_all(s: &TestStack) -> String {
    let mut exported = String::new();
    for (name, base) in &s.services {
        let mut req = s.http.get(format!("{base}/metrics"));
        if name == "gateway" {
            req = req.bearer_auth(SCRAPE_TOKEN);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        exported.push_str(&r.text().await.unwrap());
    }
    exported
}

/// The names in `wanted` that `exported` lacks (RabbitMQ's and
/// Prometheus's own aside; recording rules must be `defined`).
fn not_exported(exported: &str, wanted: &[(String, String)], defined: &BTreeSet<String>) -> Vec<String> {
    let series: BTreeSet<&str> = exported
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut missing = Vec::new();
    for (name, place) in wanted {
        let elsewhere = name.starts_with("rabbitmq_") || name == "up";
        let known = if name.contains(':') {
            defined.contains(name)
        } else {
            elsewhere || series.contains(name.as_str())
        };
        if !known {
            missing.push(format!("{name} ({place})"));
        }
    }
    missing
}

const SCRAPE_TOKEN: &str = "operations-scrape";

both_backends!(
    dashboards_and_alerts_name_only_exported_metrics,
    &[("GATEWAY_METRICS_TOKEN", SCRAPE_TOKEN)]
);
