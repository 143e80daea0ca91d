//! A throwaway RabbitMQ virtual host per test, so tests run in parallel
//! against one broker without seeing each other's queues.

use std::process::Command;

/// The broker tests may use, from `TICKETER_TEST_AMQP_URL`.
pub fn amqp_url() -> Option<String> {
    std::env::var("TICKETER_TEST_AMQP_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

/// A vhost that exists for one test; deleted on drop.
pub struct TestVhost {
    pub name: String,
    /// `amqp_url` pointing at the new vhost.
    pub url: String,
}

impl TestVhost {
    /// Creates the vhost with `rabbitmqctl` (the broker runs on this machine).
    pub fn create(amqp_url: &str) -> std::io::Result<Self> {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        ctl(&["add_vhost", &name])?;
        let user = amqp_url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['@', ':']).next())
            .filter(|u| !u.is_empty())
            .unwrap_or("guest")
            .to_string();
        ctl(&["set_permissions", "-p", &name, &user, ".*", ".*", ".*"])?;
        let base = amqp_url.trim_end_matches('/');
        let base = match base.rfind('/') {
            Some(i) if i > base.find("://").map(|s| s + 2).unwrap_or(0) => &base[..i],
            _ => base,
        };
        Ok(TestVhost {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

fn ctl(args: &[&str]) -> std::io::Result<()> {
    let out = Command::new("rabbitmqctl").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "rabbitmqctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = ctl(&["delete_vhost", &self.name]);
    }
}
