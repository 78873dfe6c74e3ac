//! The spill: clicks of redirects answered while the database was away,
//! kept on disk so that a crash does not lose them.
//!
//! One append-only file, `DATA_DIR/clicks.spill`, of JSON lines:
//!
//! - `{"batch":{"id":…,"clicks":[…]}}`: a batch of spilled clicks, written
//!   and fsynced before the redirects of those clicks are answered;
//! - `{"done":[id,…]}`: batches written back to the database.
//!
//! At start the file is read, the batches not marked done are kept (and
//! the file rewritten with only them), and they are written back like any
//! other spilled batch. A batch's id is recorded in the database in the
//! same transaction as its clicks ([`Store::record_spilled_clicks`]), so a
//! batch written back twice (a crash after the commit but before its `done`
//! line; a commit whose answer was lost) is recognised and skipped. The
//! `done` lines are therefore only an optimisation and are not fsynced.
//! Once every batch is written back, the file is truncated.
//!
//! The spill is bounded twice: `CLICK_SPILL_CAPACITY` clicks in memory and
//! `CLICK_SPILL_MAX_BYTES` on disk. When a batch would exceed either, it is
//! not kept: its clicks are counted in `shortener_clicks_dropped_total` and
//! logged; the redirects are answered regardless.
//!
//! [`Store::record_spilled_clicks`]: crate::store::Store::record_spilled_clicks

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::store::{BatchOrigin, Click, ClickBatch};

const FILE_NAME: &str = "clicks.spill";
/// Held (exclusively locked) while a process uses the spill file: two
/// processes must never share one.
const LOCK_NAME: &str = "clicks.spill.lock";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Record {
    Batch(ClickBatch),
    Done(Vec<i64>),
}

/// Why a batch was not kept.
#[derive(Debug, thiserror::Error)]
pub enum NotKept {
    #[error("spill full ({clicks} clicks, {bytes} bytes on disk)")]
    Full { clicks: usize, bytes: u64 },
}

pub struct Spill {
    pending: VecDeque<ClickBatch>,
    /// Clicks in `pending`.
    clicks: usize,
    capacity: usize,
    file: SpillFile,
}

struct SpillFile {
    path: PathBuf,
    /// Opened for appending; shared with the blocking tasks that write it.
    file: Arc<File>,
    /// The file's length as this process wrote it.
    bytes: u64,
    /// A write failed part-way: the file may end in a partial line, so it
    /// is rewritten from memory before the next append.
    damaged: bool,
    max_bytes: u64,
    /// Kept open for its lock.
    _lock: File,
}

impl Spill {
    /// Opens (creating) the spill file in `dir` and takes back the batches
    /// a previous process left in it. Fails when another process holds it
    /// or the directory is not writable.
    pub fn open(dir: &Path, capacity: usize, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_NAME))?;
        lock.try_lock().map_err(|err| {
            std::io::Error::other(format!(
                "{} is in use by another process ({err}); every replica needs a DATA_DIR of its own",
                dir.join(LOCK_NAME).display()
            ))
        })?;
        let path = dir.join(FILE_NAME);
        let pending = match File::open(&path) {
            Ok(file) => read_pending(&path, file)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => VecDeque::new(),
            Err(err) => return Err(err),
        };
        let bytes = rewrite(&path, &pending)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        let clicks = pending.iter().map(|b| b.clicks.len()).sum();
        if clicks > 0 {
            tracing::warn!(
                clicks,
                batches = pending.len(),
                path = %path.display(),
                "clicks spilled by a previous run; writing them back"
            );
        }
        Ok(Self {
            pending,
            clicks,
            capacity,
            file: SpillFile {
                path,
                file: Arc::new(file),
                bytes,
                max_bytes,
                damaged: false,
                _lock: lock,
            },
        })
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Clicks kept now.
    pub fn clicks(&self) -> usize {
        self.clicks
    }

    /// Keeps `clicks` as one batch, durably: returns once the batch is on
    /// disk (fsynced). Should the disk fail, the batch is kept in memory
    /// only (and the failure logged): the clicks are then lost only if the
    /// process dies before the database is back.
    /// `origin`: the direct write that failed before (it may have
    /// committed all the same; the write-back checks).
    pub async fn keep(
        &mut self,
        clicks: Vec<Click>,
        origin: Option<BatchOrigin>,
    ) -> Result<(), NotKept> {
        let batch = ClickBatch {
            id: rand::random::<i64>(),
            clicks,
            origin,
        };
        let line = encode(&Record::Batch(batch.clone()));
        let size = line.len() as u64;
        if self.file.damaged || self.file.bytes + size > self.file.max_bytes {
            // `done` lines and written-back batches may be taking the room,
            // or a failed write left a partial line.
            self.compact().await;
        }
        if self.clicks + batch.clicks.len() > self.capacity
            || self.file.bytes + size > self.file.max_bytes
        {
            return Err(NotKept::Full {
                clicks: self.clicks,
                bytes: self.file.bytes,
            });
        }
        match self.file.append(line, true).await {
            Ok(()) => self.file.bytes += size,
            Err(err) => {
                self.file.damaged = true;
                tracing::error!(
                error = %err,
                path = %self.file.path.display(),
                clicks = batch.clicks.len(),
                "could not write spilled clicks to disk; kept in memory only"
                );
            }
        }
        self.clicks += batch.clicks.len();
        self.pending.push_back(batch);
        Ok(())
    }

    /// The oldest batches, at least one and up to `max_clicks` clicks in
    /// all: the next chunk to write back.
    pub fn next_chunk(&self, max_clicks: usize) -> Vec<ClickBatch> {
        let mut chunk = Vec::new();
        let mut clicks = 0;
        for batch in &self.pending {
            if !chunk.is_empty() && clicks + batch.clicks.len() > max_clicks {
                break;
            }
            clicks += batch.clicks.len();
            chunk.push(batch.clone());
        }
        chunk
    }

    /// Forgets the oldest `count` batches, now in the database (the chunk
    /// [`Spill::next_chunk`] gave; nothing but this removes batches, so
    /// they are still the oldest).
    pub async fn written_back(&mut self, count: usize) {
        let done: Vec<i64> = self
            .pending
            .drain(..count.min(self.pending.len()))
            .map(|batch| {
                self.clicks -= batch.clicks.len();
                batch.id
            })
            .collect();
        let result = if self.pending.is_empty() {
            self.file.truncate().await
        } else {
            let line = encode(&Record::Done(done));
            let size = line.len() as u64;
            let appended = self.file.append(line, false).await;
            match appended {
                Ok(()) => self.file.bytes += size,
                Err(_) => self.file.damaged = true,
            }
            appended
        };
        if let Err(err) = result {
            // Harmless: a batch written back twice is skipped by its id.
            tracing::warn!(error = %err, "could not mark spilled clicks as written back");
        }
    }

    /// Rewrites the file with only the pending batches.
    async fn compact(&mut self) {
        let path = self.file.path.clone();
        let pending: Vec<ClickBatch> = self.pending.iter().cloned().collect();
        let rewritten = tokio::task::spawn_blocking(move || {
            let bytes = rewrite(&path, &pending)?;
            let file = OpenOptions::new().append(true).open(&path)?;
            Ok::<_, std::io::Error>((bytes, file))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|result| result);
        match rewritten {
            Ok((bytes, file)) => {
                self.file.bytes = bytes;
                self.file.file = Arc::new(file);
                self.file.damaged = false;
            }
            Err(err) => tracing::error!(error = %err, "could not compact the spill file"),
        }
    }
}

impl SpillFile {
    async fn append(&self, line: Vec<u8>, sync: bool) -> std::io::Result<()> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            (&*file).write_all(&line)?;
            if sync {
                file.sync_data()?;
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)?
    }

    async fn truncate(&mut self) -> std::io::Result<()> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            file.set_len(0)?;
            file.sync_data()
        })
        .await
        .map_err(std::io::Error::other)??;
        self.bytes = 0;
        self.damaged = false;
        Ok(())
    }
}

fn encode(record: &Record) -> Vec<u8> {
    // Serialising plain data into memory cannot fail.
    let mut line = serde_json::to_vec(record).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The batches of the file not marked done. A line that does not parse is
/// skipped and logged: the last one may have been cut short by a crash
/// (its redirects were then never answered, since the answer waits for
/// the fsync).
fn read_pending(path: &Path, file: File) -> std::io::Result<VecDeque<ClickBatch>> {
    let mut batches = Vec::new();
    let mut done = std::collections::HashSet::new();
    for (number, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(Record::Batch(batch)) => batches.push(batch),
            Ok(Record::Done(ids)) => done.extend(ids),
            Err(err) => tracing::warn!(
                path = %path.display(),
                line = number + 1,
                error = %err,
                "skipping an unreadable line of the spill file"
            ),
        }
    }
    Ok(batches
        .into_iter()
        .filter(|batch| !done.contains(&batch.id))
        .collect())
}

/// Replaces the file at `path` by one holding exactly `batches` (written
/// to a temporary file, fsynced, renamed over it, the directory fsynced);
/// returns its length.
fn rewrite<'a>(
    path: &Path,
    batches: impl IntoIterator<Item = &'a ClickBatch>,
) -> std::io::Result<u64> {
    let temporary = path.with_extension("spill.tmp");
    let mut bytes = 0;
    {
        let mut file = std::io::BufWriter::new(File::create(&temporary)?);
        for batch in batches {
            let line = encode(&Record::Batch(batch.clone()));
            bytes += line.len() as u64;
            file.write_all(&line)?;
        }
        file.into_inner()
            .map_err(|err| err.into_error())?
            .sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(n: i64) -> Click {
        Click {
            url_id: n,
            user_id: None,
            short_code: format!("c{n}"),
            at: crate::domain::now(),
            bot: false,
            agent: None,
            referrer: None,
            visitor: None,
        }
    }

    #[tokio::test]
    async fn kept_batches_survive_a_restart_until_written_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::open(dir.path(), 100, 1 << 20).unwrap();
        spill.keep(vec![click(1), click(2)], None).await.unwrap();
        spill.keep(vec![click(3)], None).await.unwrap();
        spill.keep(vec![click(4)], None).await.unwrap();
        let chunk = spill.next_chunk(3);
        assert_eq!(chunk.len(), 2, "whole batches, up to 3 clicks");
        spill.written_back(chunk.len()).await;
        let kept_id = spill.next_chunk(10)[0].id;
        drop(spill);

        let mut spill = Spill::open(dir.path(), 100, 1 << 20).unwrap();
        assert_eq!(spill.clicks(), 1);
        let chunk = spill.next_chunk(10);
        assert_eq!(chunk.len(), 1);
        assert_eq!(chunk[0].id, kept_id);
        assert_eq!(chunk[0].clicks[0].url_id, 4);
        spill.written_back(1).await;
        assert!(spill.is_empty());
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(),
            0
        );
    }

    /// A bot's visit stays one through the spill; a click spilled by a build that did not
    /// tell bots apart reads as a click, and a click of this build reads in that one's format.
    #[test]
    fn spilled_clicks_keep_whether_they_were_bots() {
        let bot = Click {
            bot: true,
            ..click(1)
        };
        let batch = ClickBatch {
            id: 7,
            clicks: vec![bot, click(2)],
            origin: None,
        };
        let line = encode(&Record::Batch(batch.clone()));
        let Ok(Record::Batch(read)) = serde_json::from_slice::<Record>(&line) else {
            panic!("the line reads back");
        };
        assert_eq!(read, batch);
        let plain = serde_json::to_value(click(2)).unwrap();
        assert!(plain.get("bot").is_none(), "{plain}");
        let old = r#"{"url_id":3,"user_id":null,"short_code":"c3","at":"2026-12-07T10:00:00"}"#;
        assert!(!serde_json::from_str::<Click>(old).unwrap().bot);
    }

    #[tokio::test]
    async fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::open(dir.path(), 100, 1 << 20).unwrap();
        spill.keep(vec![click(1)], None).await.unwrap();
        drop(spill);
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        file.write_all(b"{\"batch\":{\"id\":7,\"cli").unwrap();
        let spill = Spill::open(dir.path(), 100, 1 << 20).unwrap();
        assert_eq!(spill.clicks(), 1);
    }

    #[tokio::test]
    async fn a_full_spill_refuses_new_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::open(dir.path(), 3, 1 << 20).unwrap();
        spill.keep(vec![click(1), click(2)], None).await.unwrap();
        assert!(spill.keep(vec![click(3), click(4)], None).await.is_err());
        spill.keep(vec![click(5)], None).await.unwrap();
        assert_eq!(spill.clicks(), 3);

        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::open(dir.path(), 100, 200).unwrap();
        spill.keep(vec![click(1)], None).await.unwrap();
        assert!(spill.keep(vec![click(2), click(3)], None).await.is_err());
    }

    #[test]
    fn one_process_per_spill_file() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spill::open(dir.path(), 100, 1 << 20).unwrap();
        let second = Spill::open(dir.path(), 100, 1 << 20);
        assert!(second.is_err());
    }
}
