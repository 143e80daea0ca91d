//! The seven `ticketer serve` processes of a chaos run, kept running the way
//! an orchestrator would: one the nemesis did not take down that exits on
//! its own (a service cannot start while PostgreSQL restarts) is started
//! again a moment later.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context;
use ticketer_config::Service;
use tokio::{process::Child, sync::Mutex};

pub struct Processes {
    bin: PathBuf,
    env: HashMap<String, String>,
    logs: PathBuf,
    state: Mutex<State>,
    /// Processes that exited by themselves and were started again.
    pub restarts: AtomicUsize,
}

#[derive(Default)]
struct State {
    running: HashMap<Service, Child>,
    /// Taken down on purpose; not to be restarted by the watch.
    down: HashSet<Service>,
}

impl Processes {
    pub fn new(bin: PathBuf, env: HashMap<String, String>, logs: PathBuf) -> Arc<Self> {
        Arc::new(Processes {
            bin,
            env,
            logs,
            state: Mutex::new(State::default()),
            restarts: AtomicUsize::new(0),
        })
    }

    fn spawn(&self, svc: Service) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{svc}.log")))?;
        tokio::process::Command::new(&self.bin)
            .arg("serve")
            .arg(svc.name())
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {svc}"))
    }

    /// Starts the service, ending first any process of it still there (one
    /// restarted by the watch just as the nemesis took it down).
    pub async fn start(&self, svc: Service) -> anyhow::Result<()> {
        let mut state = self.state.lock().await;
        if let Some(mut old) = state.running.remove(&svc) {
            let _ = old.start_kill();
            let _ = old.wait().await;
        }
        let child = self.spawn(svc)?;
        state.down.remove(&svc);
        state.running.insert(svc, child);
        Ok(())
    }

    /// SIGKILL, and waits until it is gone.
    pub async fn kill(&self, svc: Service) {
        let child = {
            let mut state = self.state.lock().await;
            state.down.insert(svc);
            state.running.remove(&svc)
        };
        if let Some(mut child) = child {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Sends `signal` (STOP, CONT) to the service's process.
    pub async fn signal(&self, svc: Service, signal: &str) -> anyhow::Result<()> {
        let pid = {
            let state = self.state.lock().await;
            state.running.get(&svc).and_then(|c| c.id())
        };
        let Some(pid) = pid else {
            return Ok(());
        };
        anyhow::ensure!(send(pid, signal), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Starts again, every half second, any process that exited without
    /// being taken down; until the task is dropped.
    pub async fn watch(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut exited = Vec::new();
            {
                let mut state = self.state.lock().await;
                for (svc, child) in state.running.iter_mut() {
                    if let Ok(Some(_)) = child.try_wait() {
                        exited.push(*svc);
                    }
                }
                for svc in &exited {
                    state.running.remove(svc);
                }
            }
            for svc in exited {
                self.restarts.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.start(svc).await {
                    eprintln!("chaos: could not restart {svc}: {e:#}");
                }
            }
        }
    }

    /// SIGCONT to all (none stays stopped), then SIGTERM and a wait.
    pub async fn stop_all(&self) {
        let mut state = self.state.lock().await;
        for (_, mut child) in state.running.drain() {
            if let Some(pid) = child.id() {
                send(pid, "CONT");
                send(pid, "TERM");
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}

/// `kill -<signal> <pid>`; whether it was delivered.
fn send(pid: u32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}
