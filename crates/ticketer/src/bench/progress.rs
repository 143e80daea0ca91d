//! What the bench shows while it runs.

use std::{
    io::IsTerminal,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

/// Live progress on stderr: a bar on a terminal, a line a second otherwise.
pub(super) fn progress(
    total: usize,
    done: Arc<AtomicUsize>,
    confirmed: Arc<AtomicUsize>,
    errors: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let tty = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let every = if tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        };
        loop {
            tokio::time::sleep(every).await;
            let d = done.load(Ordering::Relaxed);
            let width = 30;
            let filled = (d * width).checked_div(total).unwrap_or(width);
            let line = format!(
                "bench: [{}{}] {d}/{total} answered, {} confirmed, {} errors",
                "#".repeat(filled),
                " ".repeat(width - filled),
                confirmed.load(Ordering::Relaxed),
                errors.load(Ordering::Relaxed)
            );
            if tty {
                eprint!("\r{line}");
            } else {
                eprintln!("{line}");
            }
            if d >= total {
                if tty {
                    eprintln!();
                }
                return;
            }
        }
    })
}
