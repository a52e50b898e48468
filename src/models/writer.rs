//! The seat writer: every hold, release, booking and cancellation of this
//! replica goes through one task, which runs the changes that arrived
//! together in one transaction (`api.seat_batch`, sql/47_seat_batch.sql).
//!
//! Why: a transaction that sends a NOTIFY holds PostgreSQL's instance-wide
//! notify lock until its commit is done, a booking's WAL flush included, so
//! in a rush the changes of every screening queued behind each durable
//! commit (docs/benchmarks.md). A batch pays that lock, its commit and its
//! round trip once for all its changes. Each change is still one call of its
//! api function in a subtransaction of its own: its answer, error, version
//! and notification are those of the call on its own.
//!
//! When the writer is idle (nothing queued, nothing running) a change runs
//! at once, alone, as the plain call, on its request's own task: batches
//! form only while a transaction is under way, so they cost no latency a
//! lone request would not have paid waiting for the notify lock, and a lone
//! change pays no hop through the writer task and a batch task (two task
//! switches and wake-ups off the path of most changes below a rush). The
//! writer counts such a change as a running batch.
//! A batch may hold several changes of one screening; SQL runs them in
//! screening order, which with the advisory lock every change takes first
//! keeps the lock order of single calls (sql/47_seat_batch.sql). A batch
//! still running after a stall time (20 ms: it waits for a lock, say a
//! DBA's transaction) lets the next one start beside it with the changes of
//! other screenings, so one stuck screening never holds up the rest of the
//! replica; the stuck screening's changes wait for it, in their order. A
//! change that waits more than the batch's lock timeout (100 ms), or that
//! PostgreSQL fails to break a lock cycle, comes back and runs again alone,
//! as the plain call, before the later changes of its screening.
//!
//! `SEAT_BATCH_MAX=1` turns batching off: each change then runs as its own
//! call on its request's task, as many at once as the pool allows.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::{self, JoinSet};
use tokio::time::Instant;
use tokio_postgres::Row;

use super::error::from_sql;
use super::seats::{self, Booking, Hold, Release};
use super::ModelError;
use crate::core::db::Db;
use crate::core::metrics::Metrics;
use crate::shared::ids::{BookingId, ScreeningId, SeatId, UserId};

/// Changes queued for the writer; a request beyond it waits to be queued
/// (backpressure on its connection, never an unbounded queue).
const QUEUE: usize = 1024;

/// How long a batch may run before the next may start beside it.
pub const SEAT_STALL: Duration = Duration::from_millis(20);

/// The most batches running at once (all but one of them stalled).
const RUNNING: usize = 8;

/// A seat change a request asks for.
#[derive(Debug, Clone)]
pub enum Change {
    Hold {
        user: UserId,
        screening: ScreeningId,
        seats: Vec<SeatId>,
    },
    Release {
        user: UserId,
        screening: ScreeningId,
        seats: Vec<SeatId>,
    },
    Book {
        user: UserId,
        screening: ScreeningId,
        seats: Vec<SeatId>,
    },
    Cancel {
        user: UserId,
        booking: BookingId,
    },
}

impl Change {
    /// `api.seat_batch`'s name of the change.
    fn op(&self) -> &'static str {
        match self {
            Change::Hold { .. } => "hold",
            Change::Release { .. } => "release",
            Change::Book { .. } => "book",
            Change::Cancel { .. } => "cancel",
        }
    }

    /// The screening it changes; `None` for a cancellation, which names its
    /// booking.
    fn screening(&self) -> Option<ScreeningId> {
        match self {
            Change::Hold { screening, .. }
            | Change::Release { screening, .. }
            | Change::Book { screening, .. } => Some(*screening),
            Change::Cancel { .. } => None,
        }
    }
}

/// What a change answered.
#[derive(Debug, Clone)]
pub enum Changed {
    Held(Hold),
    Released(Release),
    /// A booking made or cancelled, with the screening's version.
    Booking(Booking, i64),
}

type Reply = oneshot::Sender<Result<Changed, ModelError>>;

struct Job {
    change: Change,
    reply: Reply,
    /// Must run alone, as the plain call: it waited too long for a lock in a
    /// batch, or was failed there to break a lock cycle.
    solo: bool,
}

/// What the requests' tasks and the writer task share to tell whether the
/// writer is idle, so that a lone change may run on its request's task.
#[derive(Default)]
struct Lane {
    /// Changes handed to the writer task and not yet answered.
    queued: AtomicUsize,
    /// The change running on a request's task: when it started and its
    /// screening (`None` for a cancellation). The writer counts it as a
    /// running batch. A `std` mutex: held for a few instructions, never
    /// across an await.
    direct: Mutex<Option<(Instant, Option<ScreeningId>)>>,
    /// Wakes the writer when the direct change ends.
    ended: Notify,
}

impl Lane {
    fn direct(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Option<ScreeningId>)>> {
        // The guarded value is a plain Option; a panic elsewhere cannot leave it half-written.
        self.direct.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims the lane for a change on its caller's task when nothing is
    /// queued or running. A change handed to the writer at the same instant
    /// may still start beside it: two transactions at once, as two stalled
    /// batches would be, never a wrong order (neither was first).
    fn claim(self: &Arc<Self>, screening: Option<ScreeningId>) -> Option<Direct> {
        if self.queued.load(Acquire) != 0 {
            return None;
        }
        let mut direct = self.direct();
        if direct.is_some() {
            return None;
        }
        *direct = Some((Instant::now(), screening));
        Some(Direct(self.clone()))
    }
}

/// The lane claimed by a change running on its caller's task; frees it and
/// wakes the writer when the change ends, or when its request is dropped.
struct Direct(Arc<Lane>);

impl Drop for Direct {
    fn drop(&mut self) {
        *self.0.direct() = None;
        self.0.ended.notify_one();
    }
}

/// Counts a change as queued until its answer arrives or its request is
/// dropped.
struct Queued(Arc<Lane>);

impl Queued {
    fn new(lane: &Arc<Lane>) -> Self {
        lane.queued.fetch_add(1, AcqRel);
        Self(lane.clone())
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Release);
    }
}

/// The handle requests use; cheap to clone.
#[derive(Clone)]
pub struct SeatWriter {
    /// The writer task's queue; `None` when `max` is 1: each change then runs
    /// as its own call, concurrently, on the caller's task (a writer task
    /// would run them one after the other).
    tx: Option<mpsc::Sender<Job>>,
    lane: Arc<Lane>,
    db: Db,
    metrics: Arc<Metrics>,
}

impl SeatWriter {
    /// Starts the writer task; `max` (1 to 64) is the most changes one
    /// transaction carries, 1 meaning each in its own. `stall`: how long a
    /// batch may run before the next starts beside it ([`SEAT_STALL`]).
    pub fn spawn(db: Db, max: usize, stall: Duration, metrics: Arc<Metrics>) -> Self {
        let lane = Arc::new(Lane::default());
        let tx = (max > 1).then(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let writer = Writer {
                db: db.clone(),
                lane: lane.clone(),
                max: max.min(64),
                stall,
                metrics: metrics.clone(),
            };
            tokio::spawn(writer.work(rx));
            tx
        });
        Self {
            tx,
            lane,
            db,
            metrics,
        }
    }

    /// Runs one change and waits for its answer.
    pub async fn run(&self, change: Change) -> Result<Changed, ModelError> {
        let Some(tx) = &self.tx else {
            return self.alone(&change).await;
        };
        if let Some(_direct) = self.lane.claim(change.screening()) {
            return self.alone(&change).await;
        }
        let _queued = Queued::new(&self.lane);
        let (reply, answer) = oneshot::channel();
        tx.send(Job {
            change,
            reply,
            solo: false,
        })
        .await
        .map_err(|_| ModelError::Internal("the seat writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| ModelError::Internal("the seat writer dropped a change".into()))?
    }

    /// The change as the plain call, on the caller's task.
    async fn alone(&self, change: &Change) -> Result<Changed, ModelError> {
        self.metrics.seat_changes.fetch_add(1, Relaxed);
        self.metrics.seat_transactions.fetch_add(1, Relaxed);
        alone(&self.db, change).await
    }

    pub async fn hold(
        &self,
        user: UserId,
        screening: ScreeningId,
        seats: Vec<SeatId>,
    ) -> Result<Hold, ModelError> {
        match self
            .run(Change::Hold {
                user,
                screening,
                seats,
            })
            .await?
        {
            Changed::Held(h) => Ok(h),
            other => Err(mismatch("hold", &other)),
        }
    }

    pub async fn release(
        &self,
        user: UserId,
        screening: ScreeningId,
        seats: Vec<SeatId>,
    ) -> Result<Release, ModelError> {
        match self
            .run(Change::Release {
                user,
                screening,
                seats,
            })
            .await?
        {
            Changed::Released(r) => Ok(r),
            other => Err(mismatch("release", &other)),
        }
    }

    /// Books the user's held seats; the booking and the new version.
    pub async fn book(
        &self,
        user: UserId,
        screening: ScreeningId,
        seats: Vec<SeatId>,
    ) -> Result<(Booking, i64), ModelError> {
        match self
            .run(Change::Book {
                user,
                screening,
                seats,
            })
            .await?
        {
            Changed::Booking(b, v) => Ok((b, v)),
            other => Err(mismatch("book", &other)),
        }
    }

    /// Cancels one of the user's bookings; the booking and the version.
    pub async fn cancel(
        &self,
        user: UserId,
        booking: BookingId,
    ) -> Result<(Booking, i64), ModelError> {
        match self.run(Change::Cancel { user, booking }).await? {
            Changed::Booking(b, v) => Ok((b, v)),
            other => Err(mismatch("cancel", &other)),
        }
    }
}

fn mismatch(asked: &str, got: &Changed) -> ModelError {
    ModelError::Internal(format!("the seat writer answered a {asked} with {got:?}"))
}

/// The writer task's settings and what it shares with the requests.
struct Writer {
    db: Db,
    lane: Arc<Lane>,
    max: usize,
    stall: Duration,
    metrics: Arc<Metrics>,
}

impl Writer {
    /// The writer task: waits for a change, takes what else has arrived,
    /// runs one batch, and again. A batch that has not finished after
    /// `stall` (a lock wait: a DBA's transaction, say) no longer counts: the
    /// next one starts beside it with the changes of other screenings, so
    /// one stuck screening does not stop the others. At most [`RUNNING`]
    /// batches run at once, never two with a change of one screening. A
    /// change running on its request's task ([`Lane`]) counts as a batch.
    async fn work(self, mut rx: mpsc::Receiver<Job>) {
        let mut waiting: VecDeque<Job> = VecDeque::new();
        // Each batch answers the changes that must run again alone.
        let mut running: JoinSet<Vec<Job>> = JoinSet::new();
        // When each running batch started and its screenings: free again when it ends, however it ends.
        let mut busy: HashMap<task::Id, (Instant, Vec<ScreeningId>)> = HashMap::new();
        let mut open = true;
        loop {
            let direct = *self.lane.direct();
            // The latest start of a batch still running, if it is not yet stalled.
            let young = busy
                .values()
                .map(|(t, _)| *t)
                .chain(direct.map(|(t, _)| t))
                .max()
                .filter(|t| t.elapsed() < self.stall);
            let batches = running.len() + usize::from(direct.is_some());
            if young.is_none() && batches < RUNNING && !waiting.is_empty() {
                let taken: Vec<ScreeningId> = busy
                    .values()
                    .flat_map(|(_, s)| s)
                    .copied()
                    .chain(direct.and_then(|(_, s)| s))
                    .collect();
                let batch = take(&mut waiting, self.max, &taken);
                if !batch.is_empty() {
                    self.metrics
                        .seat_changes
                        .fetch_add(batch.len() as u64, Relaxed);
                    self.metrics.seat_transactions.fetch_add(1, Relaxed);
                    let keys = batch.iter().filter_map(|j| j.change.screening()).collect();
                    let db = self.db.clone();
                    let handle = running.spawn(async move { write(&db, batch).await });
                    busy.insert(handle.id(), (Instant::now(), keys));
                    continue;
                }
            }
            if !open && waiting.is_empty() && running.is_empty() {
                return;
            }
            // Wake when the young batch stalls, if changes wait for it.
            let wake = young
                .filter(|_| !waiting.is_empty())
                .map(|t| t + self.stall);
            tokio::select! {
                job = rx.recv(), if open && waiting.len() < QUEUE => match job {
                    Some(job) => {
                        waiting.push_back(job);
                        while waiting.len() < QUEUE {
                            match rx.try_recv() {
                                Ok(job) => waiting.push_back(job),
                                Err(_) => break,
                            }
                        }
                    }
                    None => open = false,
                },
                Some(done) = running.join_next_with_id() => {
                    let id = match done {
                        Ok((id, again)) => {
                            // First in line: they arrived before anything still waiting of their screening.
                            for job in again.into_iter().rev() {
                                waiting.push_front(job);
                            }
                            id
                        }
                        Err(e) => e.id(),
                    };
                    busy.remove(&id);
                }
                // The change on a request's task ended (a spurious wake only loops once more).
                _ = self.lane.ended.notified(), if direct.is_some() => {}
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
            }
        }
    }
}

/// The next batch: waiting changes in order of arrival, at most `max`, none
/// of a screening in `busy` (a running batch's) or of one whose earlier
/// change stays behind (so a screening's changes keep their order); a solo
/// change only as a batch of its own. The rest keep their order.
fn take(waiting: &mut VecDeque<Job>, max: usize, busy: &[ScreeningId]) -> Vec<Job> {
    let mut batch: Vec<Job> = Vec::with_capacity(max.min(waiting.len()));
    let mut blocked: Vec<ScreeningId> = busy.to_vec();
    let mut kept = VecDeque::with_capacity(waiting.len());
    while let Some(job) = waiting.pop_front() {
        let screening = job.change.screening();
        let free = screening.is_none_or(|s| !blocked.contains(&s));
        let solo_done = batch.first().is_some_and(|j| j.solo);
        if free && !solo_done && batch.len() < max && (!job.solo || batch.is_empty()) {
            batch.push(job);
        } else {
            if let Some(s) = screening {
                blocked.push(s);
            }
            kept.push_back(job);
        }
    }
    *waiting = kept;
    batch
}

/// Runs a batch and answers each of its changes.
/// Returns the changes that must run again alone.
async fn write(db: &Db, batch: Vec<Job>) -> Vec<Job> {
    let mut again = Vec::new();
    if let [_] = batch.as_slice() {
        for job in batch {
            let answer = alone(db, &job.change).await;
            let _ = job.reply.send(answer);
        }
        return again;
    }
    let rows = match together(db, &batch).await {
        Ok(rows) => rows,
        Err(e) => {
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
            return again;
        }
    };
    // One row per change, in the order SQL ran them; `ord` is the change's index in the batch.
    let mut by_ord: Vec<Option<Row>> = batch.iter().map(|_| None).collect();
    for row in rows {
        let slot = column::<i32>(&row, 0)
            .ok()
            .flatten()
            .and_then(|o| usize::try_from(o).ok())
            .and_then(|o| o.checked_sub(1))
            .and_then(|i| by_ord.get_mut(i));
        if let Some(slot) = slot {
            *slot = Some(row);
        }
    }
    for (job, row) in batch.into_iter().zip(by_ord) {
        let answer = match row {
            Some(row) => decode(&job.change, &row),
            None => Ok(Err(ModelError::Internal(
                "api.seat_batch answered no row for a change".into(),
            ))),
        };
        match answer {
            // It waited longer than a batch may for a lock, or closed a lock cycle only a batch could close
            // (sql/47_seat_batch.sql): the writer runs it again alone, as the plain call, which waits as long as
            // it must while the other screenings go on.
            Err(Retry) => again.push(Job { solo: true, ..job }),
            Ok(answer) => {
                let _ = job.reply.send(answer);
            }
        }
    }
    again
}

/// A change that must run again alone.
struct Retry;

/// One change as the plain call of its api function, in its own transaction.
async fn alone(db: &Db, change: &Change) -> Result<Changed, ModelError> {
    Ok(match change {
        Change::Hold {
            user,
            screening,
            seats,
        } => Changed::Held(seats::hold(db, *user, *screening, seats).await?),
        Change::Release {
            user,
            screening,
            seats,
        } => Changed::Released(seats::release(db, *user, *screening, seats).await?),
        Change::Book {
            user,
            screening,
            seats,
        } => {
            let (b, v) = seats::book(db, *user, *screening, seats).await?;
            Changed::Booking(b, v)
        }
        Change::Cancel { user, booking } => {
            let (b, v) = seats::cancel(db, *user, *booking).await?;
            Changed::Booking(b, v)
        }
    })
}

/// Several changes in one call of `api.seat_batch`: one row per change, in order.
async fn together(db: &Db, batch: &[Job]) -> Result<Vec<Row>, ModelError> {
    let mut ops = Vec::with_capacity(batch.len());
    let mut users = Vec::with_capacity(batch.len());
    let mut targets = Vec::with_capacity(batch.len());
    let mut counts = Vec::with_capacity(batch.len());
    let mut seat_ids: Vec<i64> = Vec::new();
    for job in batch {
        let c = &job.change;
        ops.push(c.op());
        let (user, target, seats) = match c {
            Change::Hold {
                user,
                screening,
                seats,
            }
            | Change::Release {
                user,
                screening,
                seats,
            }
            | Change::Book {
                user,
                screening,
                seats,
            } => (user.0, screening.0, seats.as_slice()),
            Change::Cancel { user, booking } => (user.0, booking.0, &[][..]),
        };
        users.push(user);
        targets.push(target);
        counts.push(i32::try_from(seats.len()).unwrap_or(i32::MAX));
        seat_ids.extend(seats.iter().map(|s| s.0));
    }
    let c = db.conn().await?;
    let st = c
        .prepare_cached(
            "SELECT ord, code, message, detail, expires_at, version, seat_ids, booking_id, screening_id, \
             total, currency, status, created_at \
             FROM api.seat_batch($1, $2, $3, $4, $5)",
        )
        .await?;
    Ok(c.query(&st, &[&ops, &users, &targets, &counts, &seat_ids])
        .await?)
}

/// A batch row as the answer of its change: the change's result, its error,
/// or `Retry` for a lock it could not have in a batch.
fn decode(change: &Change, row: &Row) -> Result<Result<Changed, ModelError>, Retry> {
    match column::<String>(row, 1) {
        // deadlock_detected, lock_not_available (the batch's lock_timeout)
        Ok(Some(code)) if code == "40P01" || code == "55P03" => Err(Retry),
        Ok(Some(code)) => {
            let message = column::<String>(row, 2).ok().flatten().unwrap_or_default();
            let detail = column::<String>(row, 3).ok().flatten();
            let detail = detail.as_deref().filter(|d| !d.is_empty());
            Ok(Err(from_sql(&code, &message, detail)))
        }
        Ok(None) => Ok(answer(change, row)),
        Err(e) => Ok(Err(e)),
    }
}

/// A successful change's answer from its row.
fn answer(change: &Change, row: &Row) -> Result<Changed, ModelError> {
    let version = required::<i64>(row, 5)?;
    Ok(match change {
        Change::Hold { .. } => Changed::Held(Hold {
            expires_at: required::<DateTime<Utc>>(row, 4)?,
            version,
        }),
        Change::Release { .. } => Changed::Released(Release {
            seats: ids(required(row, 6)?),
            version,
        }),
        Change::Book { .. } | Change::Cancel { .. } => Changed::Booking(
            Booking {
                id: BookingId(required(row, 7)?),
                screening: ScreeningId(required(row, 8)?),
                seats: ids(required(row, 6)?),
                total: required(row, 9)?,
                currency: required(row, 10)?,
                status: required(row, 11)?,
                created_at: required(row, 12)?,
            },
            version,
        ),
    })
}

fn ids(seats: Vec<i64>) -> Vec<SeatId> {
    seats.into_iter().map(SeatId).collect()
}

fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
) -> Result<Option<T>, ModelError> {
    row.try_get::<_, Option<T>>(i)
        .map_err(|e| ModelError::Internal(format!("api.seat_batch column {i}: {e}")))
}

fn required<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
) -> Result<T, ModelError> {
    column(row, i)?
        .ok_or_else(|| ModelError::Internal(format!("api.seat_batch column {i} is null")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(screening: Option<i64>, solo: bool) -> Job {
        let change = match screening {
            Some(s) => Change::Hold {
                user: UserId(1),
                screening: ScreeningId(s),
                seats: vec![SeatId(s * 10)],
            },
            None => Change::Cancel {
                user: UserId(1),
                booking: BookingId(7),
            },
        };
        Job {
            change,
            reply: oneshot::channel().0,
            solo,
        }
    }

    fn screenings(jobs: &[Job]) -> Vec<Option<i64>> {
        jobs.iter()
            .map(|j| j.change.screening().map(|s| s.0))
            .collect()
    }

    #[test]
    fn the_lane_runs_a_change_on_its_callers_task_only_when_the_writer_is_idle() {
        let lane = Arc::new(Lane::default());
        let direct = lane.claim(Some(ScreeningId(1))).expect("an idle writer");
        assert!(lane.claim(Some(ScreeningId(2))).is_none(), "one at a time");
        assert_eq!(lane.direct().map(|(_, s)| s), Some(Some(ScreeningId(1))));
        // However the change ends (its request dropped included), the lane is free again.
        drop(direct);
        assert!(lane.direct().is_none());
        let queued = Queued::new(&lane);
        assert!(
            lane.claim(None).is_none(),
            "a change handed to the writer goes first"
        );
        drop(queued);
        assert!(lane.claim(None).is_some());
    }

    #[test]
    fn a_batch_takes_the_waiting_changes_in_order_up_to_max() {
        let mut waiting: VecDeque<Job> = [Some(1), Some(2), Some(1), None, Some(3)]
            .into_iter()
            .map(|s| job(s, false))
            .collect();
        let batch = take(&mut waiting, 4, &[]);
        assert_eq!(screenings(&batch), [Some(1), Some(2), Some(1), None]);
        assert_eq!(screenings(&Vec::from(waiting)), [Some(3)]);
    }

    #[test]
    fn a_busy_screening_waits_and_keeps_its_order() {
        let mut waiting: VecDeque<Job> = [Some(1), Some(2), Some(1)]
            .into_iter()
            .map(|s| job(s, false))
            .collect();
        let batch = take(&mut waiting, 8, &[ScreeningId(1)]);
        assert_eq!(screenings(&batch), [Some(2)]);
        assert_eq!(screenings(&Vec::from(waiting)), [Some(1), Some(1)]);
    }

    #[test]
    fn a_solo_change_runs_alone_and_its_screening_waits_behind_it() {
        let mut waiting: VecDeque<Job> = VecDeque::from(vec![
            job(Some(1), true),
            job(Some(2), false),
            job(Some(1), false),
        ]);
        let batch = take(&mut waiting, 8, &[]);
        assert_eq!(screenings(&batch), [Some(1)]);
        assert!(batch[0].solo);
        // Later, with screening 1 busy (its solo change runs): only screening 2 goes.
        let batch = take(&mut waiting, 8, &[ScreeningId(1)]);
        assert_eq!(screenings(&batch), [Some(2)]);

        // A solo change behind others waits for a batch of its own, and so do its screening's later changes.
        let mut waiting = VecDeque::from(vec![
            job(Some(2), false),
            job(Some(1), true),
            job(Some(1), false),
            job(Some(3), false),
        ]);
        let batch = take(&mut waiting, 8, &[]);
        assert_eq!(screenings(&batch), [Some(2), Some(3)]);
        assert_eq!(screenings(&Vec::from(waiting)), [Some(1), Some(1)]);
    }
}
