//! Group commit for clicks: redirects hand their click to one writer task,
//! which writes everything that queued up while the previous batch was
//! being written as one multi-row INSERT, then answers every waiting
//! redirect at once. Under load, batches grow by themselves; when idle, a
//! click is written alone, immediately. No timer adds latency.
//!
//! While the database is unreachable, clicks go to a bounded spill buffer
//! and the redirects are answered anyway; the writer retries the buffer
//! every second and drains it first when the database is back. What a
//! SIGKILL can lose is therefore exactly the spill buffer: clicks of
//! redirects answered during an outage (see docs/failure-modes.md).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::{ClickLost, ClickRecorder, Recorded};
use crate::metrics::Metrics;
use crate::store::{Click, DynStore, StoreError};

#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Most clicks in one INSERT.
    pub max_batch: usize,
    /// Clicks that may wait for the writer; beyond this, redirects wait
    /// for room (backpressure) rather than use unbounded memory.
    pub queue_capacity: usize,
    /// Clicks kept while the database is away; beyond this the oldest are
    /// dropped and counted.
    pub spill_capacity: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            queue_capacity: 10_000,
            spill_capacity: 100_000,
        }
    }
}

/// How a click ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    Spilled,
    Dropped,
}

struct Pending {
    click: Click,
    done: oneshot::Sender<Outcome>,
}

pub struct BatchRecorder {
    queue: mpsc::Sender<Pending>,
    metrics: Arc<Metrics>,
}

/// Retry interval for the spill buffer while the database is away.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Longest one retry may hold up the writer.
const RETRY_BOUND: Duration = Duration::from_millis(500);

impl BatchRecorder {
    /// Starts the writer. It runs until every `BatchRecorder` clone is
    /// dropped, then writes what is left and ends: await the handle on
    /// shutdown.
    pub fn start(
        store: DynStore,
        config: BatchConfig,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(config.queue_capacity.max(1));
        let writer = Writer {
            store,
            config,
            metrics: metrics.clone(),
            spill: VecDeque::new(),
        };
        let handle = tokio::spawn(writer.run(rx));
        (Self { queue, metrics }, handle)
    }
}

#[async_trait]
impl ClickRecorder for BatchRecorder {
    async fn record(&self, click: Click) -> Result<Recorded, ClickLost> {
        let (done, outcome) = oneshot::channel();
        self.metrics.click_queue.inc();
        if self.queue.send(Pending { click, done }).await.is_err() {
            self.metrics.click_queue.dec();
            return Err(ClickLost::Stopped);
        }
        match outcome.await {
            Ok(Outcome::Committed) => Ok(Recorded::Committed),
            Ok(Outcome::Spilled) => Ok(Recorded::Spilled),
            Ok(Outcome::Dropped) => Err(ClickLost::Dropped),
            Err(_) => Err(ClickLost::Stopped),
        }
    }
}

struct Writer {
    store: DynStore,
    config: BatchConfig,
    metrics: Arc<Metrics>,
    spill: VecDeque<Click>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>) {
        let mut batch: Vec<Pending> = Vec::with_capacity(self.config.max_batch);
        let mut next_retry = tokio::time::Instant::now();
        loop {
            // While clicks are spilled the database is presumed away: new
            // clicks join the spill at once (the redirect is not kept
            // waiting for a connection that will not come) and the database
            // is retried once a second.
            let first = if self.spill.is_empty() {
                rx.recv().await
            } else {
                match tokio::time::timeout_at(next_retry, rx.recv()).await {
                    Ok(received) => received,
                    Err(_) => {
                        self.retry_spill().await;
                        next_retry = tokio::time::Instant::now() + RETRY_EVERY;
                        continue;
                    }
                }
            };
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < self.config.max_batch {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let batch = std::mem::take(&mut batch);
            if self.spill.is_empty() {
                self.write(batch).await;
                next_retry = tokio::time::Instant::now() + RETRY_EVERY;
            } else {
                self.metrics.click_queue.sub(batch.len() as i64);
                self.spill_and_answer(batch);
            }
        }
        // Every sender is gone: the server has stopped. Last try for the
        // spill buffer.
        if !self.spill.is_empty() {
            self.retry_spill().await;
            if !self.spill.is_empty() {
                tracing::error!(
                    lost = self.spill.len(),
                    "database still unavailable at shutdown; spilled clicks lost"
                );
                self.metrics.clicks_dropped.inc_by(self.spill.len() as u64);
            }
        }
    }

    /// One attempt to write the spill buffer, bounded so that clicks
    /// arriving meanwhile wait at most `RETRY_BOUND`.
    async fn retry_spill(&mut self) {
        let clicks: Vec<Click> = self.spill.iter().cloned().collect();
        match tokio::time::timeout(RETRY_BOUND, self.store.record_clicks(&clicks)).await {
            Ok(Ok(())) => {
                tracing::info!(written = clicks.len(), "spilled clicks written");
                self.metrics.click_batch_size.observe(clicks.len() as f64);
                self.spill.clear();
                self.metrics.clicks_spilled.set(0);
            }
            Ok(Err(err)) => tracing::debug!(error = %err, "database still unavailable"),
            Err(_) => tracing::debug!("database still unavailable (retry timed out)"),
        }
    }

    /// Adds the batch's clicks to the spill buffer and answers them.
    fn spill_and_answer(&mut self, batch: Vec<Pending>) {
        for pending in &batch {
            if self.spill.len() >= self.config.spill_capacity {
                self.spill.pop_front();
                self.metrics.clicks_dropped.inc();
            }
            self.spill.push_back(pending.click.clone());
        }
        self.metrics.clicks_spilled.set(self.spill.len() as i64);
        for pending in batch {
            let _ = pending.done.send(Outcome::Spilled);
        }
    }

    /// Writes a batch (the spill buffer is empty) and answers each waiting
    /// redirect.
    async fn write(&mut self, batch: Vec<Pending>) {
        self.metrics.click_queue.sub(batch.len() as i64);
        let clicks: Vec<Click> = batch.iter().map(|p| p.click.clone()).collect();
        let started = Instant::now();
        let result = self.store.record_clicks(&clicks).await;
        self.metrics
            .click_flush_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = match result {
            Ok(()) => {
                self.metrics.click_batch_size.observe(clicks.len() as f64);
                Outcome::Committed
            }
            Err(StoreError::Unavailable(err)) => {
                tracing::warn!(error = %err, "database unavailable; spilling clicks to memory");
                self.spill_and_answer(batch);
                return;
            }
            Err(err) => {
                // Not a matter of waiting: retrying would fail the same way.
                tracing::error!(error = %err, clicks = batch.len(), "clicks could not be written");
                self.metrics.clicks_dropped.inc_by(batch.len() as u64);
                Outcome::Dropped
            }
        };
        for pending in batch {
            // The redirect may have given up waiting (client gone): fine.
            let _ = pending.done.send(outcome);
        }
    }
}
