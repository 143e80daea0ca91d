use super::*;

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_map(
        Service::Ticket,
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn prefixed_value_wins_over_shared() {
    let e = env(&[("AMQP_URL", "amqp://a"), ("TICKET_AMQP_URL", "amqp://b")]);
    assert_eq!(e.shared("AMQP_URL").as_deref(), Some("amqp://b"));
    assert_eq!(
        env(&[("AMQP_URL", "amqp://a")]).shared("AMQP_URL").as_deref(),
        Some("amqp://a")
    );
}

#[test]
fn database_url_is_never_shared_between_services() {
    let e = env(&[
        ("DATABASE_URL", "postgres://x/shared"),
        ("AUTH_DATABASE_URL", "postgres://x/auth"),
    ]);
    let cfg = InfraConfig::from_env(Service::Ticket, &e, "/tmp/d".into()).unwrap();
    assert_eq!(cfg.database_url, None);
    assert_eq!(cfg.resolved_database_url(), "sqlite:///tmp/d/ticket.db?mode=rwc");
}

#[test]
fn bad_numbers_name_the_variable() {
    let err = env(&[("TICKET_PORT", "eighty")])
        .parse_or("PORT", 1u16)
        .unwrap_err();
    assert!(err.to_string().starts_with("TICKET_PORT:"), "{err}");
}

#[test]
fn service_names_round_trip() {
    for svc in Service::ALL {
        assert_eq!(svc.name().parse::<Service>().unwrap(), svc);
    }
    assert!("billing".parse::<Service>().is_err());
}

#[test]
fn env_files() {
    let vars =
        parse_env_file("# comment\n\nexport AMQP_URL=amqp://x\nAUTH_PORT = \"4040\"\nX='a b'\n").unwrap();
    assert_eq!(vars["AMQP_URL"], "amqp://x");
    assert_eq!(vars["AUTH_PORT"], "4040");
    assert_eq!(vars["X"], "a b");
    assert!(parse_env_file("no equals sign").unwrap_err().contains("line 1"));
}

#[test]
fn flags_and_lists() {
    let e = env(&[("TICKET_X", "on"), ("TICKET_L", "a, b,,c")]);
    assert!(e.flag_or("X", false).unwrap());
    assert_eq!(e.list("L"), vec!["a", "b", "c"]);
    assert!(env(&[("TICKET_X", "maybe")]).flag_or("X", false).is_err());
}

#[test]
fn server_addresses() {
    assert_eq!(
        address_of("amqp://guest:guest@127.0.0.1:5672/%2f"),
        "127.0.0.1:5672"
    );
    assert_eq!(
        address_of("postgres://postgres@db:5432/postgres?sslmode=disable"),
        "db:5432"
    );
    assert_eq!(address_of("redis://127.0.0.1:6379"), "127.0.0.1:6379");
    assert_eq!(
        address_of("redis://user:p@ss@cache:6380/0"),
        "cache:6380",
        "an @ in the password"
    );
}
