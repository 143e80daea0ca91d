//! Requests that arrive together, handled together. Most of a flash sale's
//! requests do the same small database work (look up a key, insert a
//! booking); one at a time, each pays a round trip and a commit. A
//! [`Batcher`] runs one task that takes every request queued while the
//! previous batch ran and handles them in one go. Nothing waits on purpose:
//! a lone request goes at once, so batches grow only with the load.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// Requests queued at most; more wait to be queued.
const QUEUED: usize = 4096;

/// A handle on a batching task; cheap to clone. The task ends when the
/// last handle is dropped.
pub struct Batcher<I, O> {
    asks: mpsc::Sender<(I, oneshot::Sender<O>)>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Batcher {
            asks: self.asks.clone(),
        }
    }
}

/// The batching task is gone (the runtime is shutting down).
#[derive(Debug)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the batching task has stopped")
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the task on the current runtime. `run` gets up to
    /// `per_batch` requests and answers each, in the same order.
    pub fn start<F, Fut>(per_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<O>> + Send,
    {
        let (asks, mut queue) = mpsc::channel::<(I, oneshot::Sender<O>)>(QUEUED);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(per_batch);
            while queue.recv_many(&mut batch, per_batch.max(1)).await > 0 {
                let (inputs, answers): (Vec<I>, Vec<oneshot::Sender<O>>) = batch.drain(..).unzip();
                let outputs = run(inputs).await;
                debug_assert_eq!(outputs.len(), answers.len(), "one answer per request");
                for (answer, output) in answers.into_iter().zip(outputs) {
                    // The asker may have gone (client disconnected).
                    let _ = answer.send(output);
                }
            }
        });
        Batcher { asks }
    }

    /// Handles `input` with whatever else is queued, and gives its answer.
    pub async fn ask(&self, input: I) -> Result<O, Stopped> {
        let (answer, answered) = oneshot::channel();
        self.asks.send((input, answer)).await.map_err(|_| Stopped)?;
        answered.await.map_err(|_| Stopped)
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Queues every input at once (they may share a batch), then gives
    /// their answers in the same order.
    pub async fn ask_all(&self, inputs: Vec<I>) -> Result<Vec<O>, Stopped> {
        let mut answers = Vec::with_capacity(inputs.len());
        for input in inputs {
            let (answer, answered) = oneshot::channel();
            self.asks.send((input, answer)).await.map_err(|_| Stopped)?;
            answers.push(answered);
        }
        let mut outputs = Vec::with_capacity(answers.len());
        for answered in answers {
            outputs.push(answered.await.map_err(|_| Stopped)?);
        }
        Ok(outputs)
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, Result<O, String>> {
    /// [`Self::ask`] for work that can fail: either failure as a message.
    pub async fn try_ask(&self, input: I) -> Result<O, String> {
        self.ask(input).await.map_err(|e| e.to_string())?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn answers_go_to_their_askers_and_requests_arriving_together_share_a_batch() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let double = Batcher::start(8, move |xs: Vec<u32>| {
            seen.lock().unwrap().push(xs.len());
            async move {
                // Slow enough that the others queue up meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                xs.into_iter().map(|x| x * 2).collect()
            }
        });
        let asked: Vec<_> = (0..40)
            .map(|n| {
                let double = double.clone();
                tokio::spawn(async move { (n, double.ask(n).await.unwrap()) })
            })
            .collect();
        for a in asked {
            let (n, doubled) = a.await.unwrap();
            assert_eq!(doubled, n * 2);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().all(|n| *n <= 8), "{sizes:?}");
        assert!(sizes.len() < 40, "some requests were handled together: {sizes:?}");
    }

    #[tokio::test]
    async fn inputs_asked_together_share_a_batch_and_answer_in_order() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let double = Batcher::start(100, move |xs: Vec<u32>| {
            seen.lock().unwrap().push(xs.len());
            async move { xs.into_iter().map(|x| x * 2).collect() }
        });
        let answers = double.ask_all((0..30).collect()).await.unwrap();
        assert_eq!(answers, (0..30).map(|x| x * 2).collect::<Vec<u32>>());
        // Queued before the task woke: at most the first went alone.
        assert!(sizes.lock().unwrap().len() <= 2, "{:?}", sizes.lock().unwrap());
    }
}
