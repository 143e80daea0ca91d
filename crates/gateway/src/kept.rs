//! One answer shared by every caller for a short while: `/health` and
//! `/openapi.json` ask every service, and anonymous callers must not be able
//! to multiply that work by asking often.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

pub struct Kept<T> {
    ttl: Duration,
    cell: Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Kept<T> {
    pub fn new(ttl: Duration) -> Self {
        Kept {
            ttl,
            cell: Mutex::new(None),
        }
    }

    /// The kept answer if it is younger than the TTL; otherwise `fetch`'s,
    /// kept for the next callers. Callers arriving while one fetches wait
    /// for that fetch instead of starting their own.
    pub async fn get_or<F: Future<Output = T>>(&self, fetch: impl FnOnce() -> F) -> T {
        let mut cell = self.cell.lock().await;
        if let Some((at, answer)) = &*cell {
            if at.elapsed() < self.ttl {
                return answer.clone();
            }
        }
        let answer = fetch().await;
        *cell = Some((Instant::now(), answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use super::*;

    #[tokio::test]
    async fn callers_together_share_one_fetch_and_a_stale_answer_is_fetched_again() {
        let kept = Arc::new(Kept::new(Duration::from_millis(200)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let ask = |kept: Arc<Kept<usize>>, fetches: Arc<AtomicUsize>| async move {
            kept.get_or(|| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                fetches.fetch_add(1, Ordering::SeqCst) + 1
            })
            .await
        };
        let together: Vec<_> = (0..50)
            .map(|_| tokio::spawn(ask(kept.clone(), fetches.clone())))
            .collect();
        for t in together {
            assert_eq!(t.await.unwrap(), 1);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(ask(kept.clone(), fetches.clone()).await, 2);
    }
}
