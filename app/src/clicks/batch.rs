//! Group commit for clicks: redirects hand their click to a dispatcher
//! task, which gives everything that queued up while the writers were busy
//! to the next idle writer as one batch (one multi-row INSERT and one
//! counter upsert, one commit); the writer then answers every waiting
//! redirect at once. Under load, batches grow by themselves; when idle, a
//! click is written alone, immediately. No timer adds latency.
//!
//! Up to `writers` batches are written at once, so one batch's commit
//! (a WAL flush) overlaps the next batch's statements instead of every
//! redirect waiting for commits in single file. Each writer counts into
//! its own shard of the redirect counters, so concurrent writers never
//! queue on a hot URL's counter row.
//!
//! While the database is unreachable, clicks go to a bounded spill buffer
//! and the redirects are answered anyway; the writer retries the buffer
//! every second and drains it first when the database is back. What a
//! SIGKILL can lose is therefore exactly the spill buffer: clicks of
//! redirects answered during an outage (see docs/failure-modes.md).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinError, JoinSet};

use crate::config::ClickSettings;
use crate::metrics::Metrics;
use crate::store::{Click, DynStore, StoreError};

/// The dispatcher's share of [`ClickSettings`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_batch: usize,
    spill_capacity: usize,
}

struct Pending {
    click: Click,
    /// Answered once the click is written, held, or lost (and counted);
    /// dropped unanswered only if its writer panics.
    done: oneshot::Sender<()>,
}

pub struct ClickRecorder {
    queue: mpsc::Sender<Pending>,
    metrics: Arc<Metrics>,
}

/// Retry interval for the spill buffer while the database is away.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Longest one retry may hold up the dispatcher.
const RETRY_BOUND: Duration = Duration::from_millis(500);
/// Counter shards a process draws its writers' shards from. Writers of one
/// process always have distinct shards; a URL never has more counter rows
/// than this, however many replicas and restarts have counted it.
pub const COUNTER_SHARDS: usize = 64;

impl ClickRecorder {
    /// Starts the writers. They run until the recorder is dropped, then
    /// write what is left and end: await the handle on shutdown.
    pub fn start(
        store: DynStore,
        settings: &ClickSettings,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(settings.click_queue_capacity.max(1));
        let writers = settings
            .click_writers
            .min(store.click_writers_limit())
            .clamp(1, COUNTER_SHARDS);
        // A random first shard, so that replicas mostly count into
        // different rows too.
        let first = rand::random_range(0..COUNTER_SHARDS);
        let idle = (0..writers)
            .filter_map(|i| i16::try_from((first + i) % COUNTER_SHARDS).ok())
            .collect();
        metrics.click_writers.set(writers as i64);
        let dispatcher = Dispatcher {
            store,
            limits: Limits {
                max_batch: settings.click_batch_max,
                spill_capacity: settings.click_spill_capacity,
            },
            metrics: metrics.clone(),
            spill: VecDeque::new(),
            idle,
            in_flight: JoinSet::new(),
            running: HashMap::new(),
        };
        let handle = tokio::spawn(dispatcher.run(rx));
        (Self { queue, metrics }, handle)
    }

    /// Records one click: returns once it is written, or held in memory
    /// while the database is away. A click that is lost instead is logged
    /// and counted in `shortener_clicks_dropped_total`, here or by the
    /// writer that lost it; the visitor gets their redirect either way.
    pub async fn record(&self, click: Click) {
        let url_id = click.url_id;
        let (done, outcome) = oneshot::channel();
        self.metrics.click_queue.inc();
        if self.queue.send(Pending { click, done }).await.is_err() {
            self.metrics.click_queue.dec();
            self.metrics.clicks_dropped.inc();
            tracing::error!(url_id, "click not recorded: recorder stopped");
            return;
        }
        if outcome.await.is_err() {
            // The writer holding it is gone (it panicked, and counted it).
            tracing::error!(url_id, "click not recorded: its writer failed");
        }
    }
}

/// Owns the queue's receiving end, the idle writers' shards and the spill
/// buffer; writes run as tasks of `in_flight`.
struct Dispatcher {
    store: DynStore,
    limits: Limits,
    metrics: Arc<Metrics>,
    spill: VecDeque<Click>,
    /// Shards of the writers not writing now.
    idle: Vec<i16>,
    in_flight: JoinSet<Written>,
    /// Shard and batch size of each running write, to recover the shard
    /// (and count the clicks) should a write task panic.
    running: HashMap<Id, (i16, usize)>,
}

/// What a finished write hands back to the dispatcher.
struct Written {
    shard: i16,
    /// The batch, when the database was unavailable: to be spilled.
    unavailable: Option<(Vec<Pending>, StoreError)>,
}

impl Dispatcher {
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>) {
        let mut next_retry = tokio::time::Instant::now();
        loop {
            // While clicks are spilled the database is presumed away: new
            // clicks join the spill at once (the redirect is not kept
            // waiting for a connection that will not come) and the database
            // is retried once a second. Otherwise a click is taken only when
            // a writer is idle; meanwhile the next batch queues up.
            let spilling = !self.spill.is_empty();
            let can_take = spilling || !self.idle.is_empty();
            tokio::select! {
                Some(done) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    if self.finished(done) && !spilling {
                        next_retry = tokio::time::Instant::now() + RETRY_EVERY;
                    }
                }
                received = rx.recv(), if can_take => {
                    let Some(first) = received else { break };
                    let batch = self.take_batch(first, &mut rx);
                    if spilling {
                        self.spill_and_answer(batch);
                    } else {
                        self.start_write(batch);
                    }
                }
                () = tokio::time::sleep_until(next_retry), if spilling => {
                    self.retry_spill().await;
                    next_retry = tokio::time::Instant::now() + RETRY_EVERY;
                }
            }
        }
        // Every sender is gone: the server has stopped. Let the running
        // writes finish, then a last try for the spill buffer.
        while let Some(done) = self.in_flight.join_next_with_id().await {
            self.finished(done);
        }
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

    /// `first` and whatever else is queued, up to `max_batch`.
    fn take_batch(&self, first: Pending, rx: &mut mpsc::Receiver<Pending>) -> Vec<Pending> {
        let mut batch = Vec::with_capacity(rx.len().min(self.limits.max_batch) + 1);
        batch.push(first);
        while batch.len() < self.limits.max_batch {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        self.metrics.click_queue.sub(batch.len() as i64);
        batch
    }

    /// Hands the batch to an idle writer (the caller checked there is one).
    fn start_write(&mut self, batch: Vec<Pending>) {
        let Some(shard) = self.idle.pop() else {
            // Unreachable by the loop's guard; keep the clicks regardless.
            self.spill_and_answer(batch);
            return;
        };
        let size = batch.len();
        self.metrics.click_writes_in_flight.inc();
        let handle = self.in_flight.spawn(write(
            self.store.clone(),
            self.metrics.clone(),
            shard,
            batch,
        ));
        self.running.insert(handle.id(), (shard, size));
    }

    /// Takes back a finished write's writer; spills its batch if the
    /// database was unavailable. True when clicks were spilled.
    fn finished(&mut self, done: Result<(Id, Written), JoinError>) -> bool {
        self.metrics.click_writes_in_flight.dec();
        match done {
            Ok((id, written)) => {
                self.running.remove(&id);
                self.idle.push(written.shard);
                let Some((batch, err)) = written.unavailable else {
                    return false;
                };
                if self.spill.is_empty() {
                    tracing::warn!(error = %err, "database unavailable; spilling clicks to memory");
                }
                self.spill_and_answer(batch);
                true
            }
            Err(err) => {
                // A write task panicked: its redirects were answered with an
                // error when their reply channels dropped. The writer's shard
                // goes back to the pool.
                let (shard, size) = self.running.remove(&err.id()).unwrap_or((0, 0));
                self.idle.push(shard);
                tracing::error!(error = %err, clicks = size, "click writer failed");
                self.metrics.clicks_dropped.inc_by(size as u64);
                false
            }
        }
    }

    /// One attempt to write the spill buffer, bounded so that clicks
    /// arriving meanwhile wait at most `RETRY_BOUND`. It counts into the
    /// shard of any idle writer (the first one's when all are busy: a
    /// shared row only means waiting for its lock).
    async fn retry_spill(&mut self) {
        let clicks: Vec<Click> = self.spill.iter().cloned().collect();
        let shard = self
            .idle
            .last()
            .or_else(|| self.running.values().map(|(shard, _)| shard).next())
            .copied()
            .unwrap_or(0);
        let attempt = self.store.record_clicks(&clicks, shard);
        match tokio::time::timeout(RETRY_BOUND, attempt).await {
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
            if self.spill.len() >= self.limits.spill_capacity {
                self.spill.pop_front();
                self.metrics.clicks_dropped.inc();
            }
            self.spill.push_back(pending.click.clone());
        }
        self.metrics.clicks_spilled.set(self.spill.len() as i64);
        for pending in batch {
            let _ = pending.done.send(());
        }
    }
}

/// Writes one batch under `shard` and answers each waiting redirect, unless
/// the database is unavailable: then the batch goes back to the dispatcher
/// to be spilled.
async fn write(store: DynStore, metrics: Arc<Metrics>, shard: i16, batch: Vec<Pending>) -> Written {
    let clicks: Vec<Click> = batch.iter().map(|p| p.click.clone()).collect();
    let started = Instant::now();
    let result = store.record_clicks(&clicks, shard).await;
    metrics
        .click_flush_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => metrics.click_batch_size.observe(clicks.len() as f64),
        Err(err @ StoreError::Unavailable(_)) => {
            return Written {
                shard,
                unavailable: Some((batch, err)),
            };
        }
        Err(err) => {
            // Not a matter of waiting: retrying would fail the same way.
            tracing::error!(error = %err, clicks = batch.len(), "clicks could not be written");
            metrics.clicks_dropped.inc_by(batch.len() as u64);
        }
    }
    for pending in batch {
        // The redirect may have given up waiting (client gone): fine.
        let _ = pending.done.send(());
    }
    Written {
        shard,
        unavailable: None,
    }
}
