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
//! No write waits longer than `CLICK_WRITE_TIMEOUT_MS`. While the
//! database is unavailable (a transient error, or a write that timed out),
//! clicks go to the spill (`spill.rs`: a bounded file, fsynced before the
//! redirects are answered) and new clicks join it at once; the dispatcher
//! retries every second and writes the spill back in chunks of at most
//! `CLICK_BATCH_MAX` clicks, each exactly once. What a SIGKILL can lose is
//! therefore only what was in flight: clicks of redirects not yet answered
//! (see docs/failure-modes.md).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinError, JoinSet};

use super::spill::Spill;
use crate::config::ClickSettings;
use crate::metrics::Metrics;
use crate::store::{BatchOrigin, Click, DynStore, StoreError};

/// The dispatcher's share of [`ClickSettings`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_batch: usize,
    write_timeout: Duration,
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
    /// Capped visits ([`ClickRecorder::record_capped`]) are written here
    /// directly, into counter shard `visit_shard`, within `write_timeout`.
    store: DynStore,
    visit_shard: i16,
    write_timeout: Duration,
}

/// What became of a visit to a capped link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Taken and recorded: redirect.
    Recorded,
    /// None left: the link is used up.
    CapReached,
    /// The database did not answer in time: nothing is promised, no redirect.
    Unavailable,
}

/// Retry interval for the spill while the database is away.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Counter shards a process draws its writers' shards from. Writers of one
/// process always have distinct shards; a URL never has more counter rows
/// than this, however many replicas and restarts have counted it.
pub const COUNTER_SHARDS: usize = 64;

impl ClickRecorder {
    /// Opens the spill in `data_dir` (taking back what a previous run left
    /// there) and starts the writers. They run until the recorder is
    /// dropped, then write what is left and end: await the handle on
    /// shutdown.
    pub fn start(
        store: DynStore,
        settings: &ClickSettings,
        data_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, tokio::task::JoinHandle<()>)> {
        let spill = Spill::open(
            data_dir,
            settings.click_spill_capacity,
            settings.click_spill_max_bytes,
        )?;
        metrics.clicks_spilled.set(spill.clicks() as i64);
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
            .map(Writer::new)
            .collect();
        metrics.click_writers.set(writers as i64);
        let recorder = Self {
            queue,
            metrics: metrics.clone(),
            store: store.clone(),
            visit_shard: i16::try_from(first).unwrap_or(0),
            write_timeout: settings.click_write_timeout_ms,
        };
        let dispatcher = Dispatcher {
            store,
            limits: Limits {
                max_batch: settings.click_batch_max,
                write_timeout: settings.click_write_timeout_ms,
            },
            metrics: metrics.clone(),
            spill,
            idle,
            in_flight: JoinSet::new(),
            running: HashMap::new(),
            write_back: JoinSet::new(),
        };
        let handle = tokio::spawn(dispatcher.run(rx));
        Ok((recorder, handle))
    }

    /// Records a visit to a link with `max_visits` if one is left, taking
    /// it and writing the click in one transaction ([`crate::store::Store::record_visit`]):
    /// not batched, as its answer decides the response, and never spilled,
    /// as a visit the database has not taken cannot be promised. That makes
    /// the cap exact across replicas, and a capped link as available as
    /// its database.
    pub async fn record_capped(&self, click: Click) -> Visit {
        let attempt = self.store.record_visit(&click, self.visit_shard);
        match tokio::time::timeout(self.write_timeout, attempt).await {
            Ok(Ok(true)) => Visit::Recorded,
            Ok(Ok(false)) => Visit::CapReached,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, url_id = click.url_id, "capped visit not taken");
                Visit::Unavailable
            }
            Err(_) => {
                tracing::warn!(url_id = click.url_id, "capped visit not taken in time");
                Visit::Unavailable
            }
        }
    }

    /// Records one click: returns once it is written, or kept on disk
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

/// One click writer: its counter shard, and the name and count under which
/// it records its batches (`click_writers`), so that a batch whose write
/// failed without a clear answer can later be found to have committed.
#[derive(Debug, Clone, Copy)]
struct Writer {
    shard: i16,
    name: i64,
    /// The number of the writer's last batch (one write at a time).
    seq: i64,
}

impl Writer {
    fn new(shard: i16) -> Self {
        Self {
            shard,
            name: rand::random(),
            seq: 0,
        }
    }

    /// The origin of the writer's next batch.
    fn next(&mut self) -> BatchOrigin {
        self.seq += 1;
        BatchOrigin {
            writer: self.name,
            seq: self.seq,
        }
    }

    /// After a failed write: a new name, so that no later batch of this
    /// writer can record a number at or past the failed one's.
    fn renamed(self) -> Self {
        Self::new(self.shard)
    }
}

/// Owns the queue's receiving end, the idle writers and the spill;
/// writes run as tasks of `in_flight`, write-backs of the spill as the one
/// task of `write_back`.
struct Dispatcher {
    store: DynStore,
    limits: Limits,
    metrics: Arc<Metrics>,
    spill: Spill,
    /// The writers not writing now.
    idle: Vec<Writer>,
    in_flight: JoinSet<Written>,
    /// Writer and batch size of each running write, to recover the writer
    /// (and count the clicks) should a write task panic.
    running: HashMap<Id, (Writer, usize)>,
    /// At most one write-back of a spill chunk at a time: its batch count
    /// and outcome.
    write_back: JoinSet<(usize, Result<usize, WriteFailure>)>,
}

/// Why a batch was not written, when waiting may help.
#[derive(Debug, thiserror::Error)]
enum WriteFailure {
    #[error(transparent)]
    Unavailable(StoreError),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// What a finished write hands back to the dispatcher.
struct Written {
    writer: Writer,
    /// The batch and its origin, when the database was unavailable: to be
    /// spilled.
    unavailable: Option<(Vec<Pending>, BatchOrigin, WriteFailure)>,
}

impl Dispatcher {
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>) {
        // Clicks left by a previous run are written back at once.
        let mut next_retry = tokio::time::Instant::now();
        loop {
            // While clicks are spilled the database is presumed away: new
            // clicks join the spill at once (the redirect is not kept
            // waiting for a connection that will not come) and the spill is
            // written back, a chunk at a time, from once a second.
            // Otherwise a click is taken only when a writer is idle;
            // meanwhile the next batch queues up.
            let spilling = !self.spill.is_empty();
            let can_take = spilling || !self.idle.is_empty();
            let can_retry = spilling && self.write_back.is_empty();
            tokio::select! {
                Some(done) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    if self.finished(done).await && !spilling {
                        next_retry = tokio::time::Instant::now() + RETRY_EVERY;
                    }
                }
                Some(done) = self.write_back.join_next(), if !self.write_back.is_empty() => {
                    // Another chunk at once after a success; a second's
                    // pause after a failure.
                    next_retry = tokio::time::Instant::now();
                    if !self.written_back(done).await {
                        next_retry += RETRY_EVERY;
                    }
                }
                received = rx.recv(), if can_take => {
                    let Some(first) = received else { break };
                    let batch = self.take_batch(first, &mut rx);
                    if spilling {
                        self.spill_and_answer(batch, None).await;
                    } else {
                        self.start_write(batch);
                    }
                }
                () = tokio::time::sleep_until(next_retry), if can_retry => {
                    self.start_write_back();
                }
            }
        }
        // Every sender is gone: the server has stopped. Let the running
        // writes finish, then write back what the spill holds while that
        // succeeds. What is left stays on disk for the next start.
        while let Some(done) = self.in_flight.join_next_with_id().await {
            self.finished(done).await;
        }
        loop {
            if self.write_back.is_empty() {
                if self.spill.is_empty() {
                    break;
                }
                self.start_write_back();
            }
            let Some(done) = self.write_back.join_next().await else {
                break;
            };
            if !self.written_back(done).await {
                break;
            }
        }
        if !self.spill.is_empty() {
            tracing::warn!(
                kept = self.spill.clicks(),
                "database unavailable at shutdown; spilled clicks stay on disk for the next start"
            );
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
        let clicks = batch.iter().map(|p| &p.click).filter(|c| !c.bot);
        self.metrics
            .top_links
            .add(clicks.map(|c| c.short_code.as_str()));
        batch
    }

    /// Hands the batch to an idle writer (the caller checked there is one).
    fn start_write(&mut self, batch: Vec<Pending>) {
        let Some(mut writer) = self.idle.pop() else {
            // Unreachable by the loop's guard; keep the clicks regardless.
            tracing::error!("no idle click writer; spilling the batch");
            self.in_flight.spawn(async move {
                let mut writer = Writer::new(0);
                let origin = writer.next();
                Written {
                    writer,
                    unavailable: Some((batch, origin, WriteFailure::TimedOut(Duration::ZERO))),
                }
            });
            return;
        };
        let origin = writer.next();
        let size = batch.len();
        self.metrics.click_writes_in_flight.inc();
        let handle = self.in_flight.spawn(write(
            self.store.clone(),
            self.metrics.clone(),
            self.limits.write_timeout,
            writer,
            origin,
            batch,
        ));
        self.running.insert(handle.id(), (writer, size));
    }

    /// Takes back a finished write's writer; spills its batch if the
    /// database was unavailable. True when clicks were spilled.
    async fn finished(&mut self, done: Result<(Id, Written), JoinError>) -> bool {
        match done {
            Ok((id, written)) => {
                let ours = self.running.remove(&id).is_some();
                let Some((batch, origin, err)) = written.unavailable else {
                    if ours {
                        self.metrics.click_writes_in_flight.dec();
                        self.idle.push(written.writer);
                    }
                    return false;
                };
                if ours {
                    self.metrics.click_writes_in_flight.dec();
                    self.idle.push(written.writer.renamed());
                }
                if self.spill.is_empty() {
                    tracing::warn!(error = %err, "database unavailable; spilling clicks to disk");
                }
                self.spill_and_answer(batch, Some(origin)).await;
                true
            }
            Err(err) => {
                // A write task panicked: its redirects were answered with an
                // error when their reply channels dropped. The writer goes
                // back to the pool, renamed.
                self.metrics.click_writes_in_flight.dec();
                let (writer, size) = self
                    .running
                    .remove(&err.id())
                    .unwrap_or((Writer::new(0), 0));
                self.idle.push(writer.renamed());
                tracing::error!(error = %err, clicks = size, "click writer failed");
                self.metrics.clicks_dropped.inc_by(size as u64);
                false
            }
        }
    }

    /// Starts writing back the spill's oldest chunk (at most `max_batch`
    /// clicks, one transaction, bounded by the write timeout). It counts
    /// into the shard of any idle writer (the first one's when all are
    /// busy: a shared row only means waiting for its lock).
    fn start_write_back(&mut self) {
        let chunk = self.spill.next_chunk(self.limits.max_batch);
        if chunk.is_empty() {
            return;
        }
        let shard = self
            .idle
            .last()
            .or_else(|| self.running.values().map(|(writer, _)| writer).next())
            .map_or(0, |writer| writer.shard);
        let store = self.store.clone();
        let bound = self.limits.write_timeout;
        self.write_back.spawn(async move {
            let attempt = store.record_spilled_clicks(&chunk, shard);
            let outcome = match tokio::time::timeout(bound, attempt).await {
                Ok(Ok(written)) => Ok(written),
                Ok(Err(err)) => Err(WriteFailure::Unavailable(err)),
                Err(_) => Err(WriteFailure::TimedOut(bound)),
            };
            (chunk.len(), outcome)
        });
    }

    /// Takes a finished write-back's outcome; true when it succeeded.
    async fn written_back(
        &mut self,
        done: Result<(usize, Result<usize, WriteFailure>), JoinError>,
    ) -> bool {
        match done {
            Ok((batches, Ok(written))) => {
                self.spill.written_back(batches).await;
                self.metrics.click_batch_size.observe(written as f64);
                self.metrics.clicks_spilled.set(self.spill.clicks() as i64);
                if self.spill.is_empty() {
                    tracing::info!("spilled clicks written back");
                }
                true
            }
            Ok((_, Err(err @ WriteFailure::Unavailable(StoreError::Unavailable(_)))))
            | Ok((_, Err(err @ WriteFailure::TimedOut(_)))) => {
                tracing::debug!(error = %err, "database still unavailable");
                false
            }
            Ok((_, Err(err))) => {
                // Not a matter of waiting, yet the clicks were answered:
                // they stay in the spill, and the error is loud.
                tracing::error!(error = %err, "spilled clicks could not be written back");
                false
            }
            Err(err) => {
                tracing::error!(error = %err, "spilled clicks write-back failed");
                false
            }
        }
    }

    /// Keeps the batch's clicks in the spill (on disk) and answers them.
    /// `origin`: the direct write of the batch that failed, if any.
    async fn spill_and_answer(&mut self, batch: Vec<Pending>, origin: Option<BatchOrigin>) {
        let (clicks, done): (Vec<Click>, Vec<_>) =
            batch.into_iter().map(|p| (p.click, p.done)).unzip();
        let count = clicks.len();
        if let Err(err) = self.spill.keep(clicks, origin).await {
            self.metrics.clicks_dropped.inc_by(count as u64);
            tracing::error!(error = %err, clicks = count, "clicks not recorded: the spill is full");
        }
        self.metrics.clicks_spilled.set(self.spill.clicks() as i64);
        for done in done {
            let _ = done.send(());
        }
    }
}

/// Writes one batch as `writer`'s batch `origin`, waiting at most `bound`,
/// and answers each waiting redirect, unless the database is unavailable
/// (or did not answer in time): then the batch goes back to the dispatcher
/// to be spilled.
async fn write(
    store: DynStore,
    metrics: Arc<Metrics>,
    bound: Duration,
    writer: Writer,
    origin: BatchOrigin,
    batch: Vec<Pending>,
) -> Written {
    // Taken apart (not copied: a click holds a few strings), put back together if the batch
    // is to be spilled.
    let (clicks, done): (Vec<Click>, Vec<_>) = batch.into_iter().map(|p| (p.click, p.done)).unzip();
    let started = Instant::now();
    let attempt = store.record_clicks(&clicks, writer.shard, origin);
    let result = tokio::time::timeout(bound, attempt).await;
    metrics
        .click_flush_seconds
        .observe(started.elapsed().as_secs_f64());
    let failure = match result {
        Ok(Ok(())) => {
            metrics.click_batch_size.observe(clicks.len() as f64);
            None
        }
        Ok(Err(err @ StoreError::Unavailable(_))) => Some(WriteFailure::Unavailable(err)),
        Err(_) => Some(WriteFailure::TimedOut(bound)),
        Ok(Err(err)) => {
            // Not a matter of waiting: retrying would fail the same way.
            tracing::error!(error = %err, clicks = clicks.len(), "clicks could not be written");
            metrics.clicks_dropped.inc_by(clicks.len() as u64);
            None
        }
    };
    if let Some(failure) = failure {
        let batch = clicks
            .into_iter()
            .zip(done)
            .map(|(click, done)| Pending { click, done })
            .collect();
        return Written {
            writer,
            unavailable: Some((batch, origin, failure)),
        };
    }
    for done in done {
        // The redirect may have given up waiting (client gone): fine.
        let _ = done.send(());
    }
    Written {
        writer,
        unavailable: None,
    }
}
