//! Hall subscribers: anonymous sockets that `subscribe_hall` once and then
//! only read pushes, noting for each `hall_update` its `version` and when
//! it arrived (nanoseconds since the run's base instant). Matching those to
//! the driver's requests happens after the run, so the per-push work here
//! is one small JSON parse and one `Vec` push.
//!
//! With `track` on, a subscriber also keeps the seat map (snapshot plus
//! updates) so the run can compare every subscriber's view with the
//! database at the end.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Result};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{id_string, Conn};

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct SubResult {
    /// Index of the screening in the run's list.
    pub screening: u32,
    /// (version, arrival ns) of every `hall_update`.
    pub recs: Vec<(i64, u64)>,
    pub updates: u64,
    pub snapshots: u64,
    /// Updates whose version was not the previous one + 1.
    pub gaps: u64,
    /// Version of the subscribe answer.
    pub start_version: i64,
    /// Last version applied.
    pub version: i64,
    /// Why the socket ended before it was stopped, if it did.
    pub closed: Option<String>,
    /// seat id → status, when tracking.
    pub view: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Lite<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    data: Option<LiteData>,
}

#[derive(Deserialize)]
struct LiteData {
    #[serde(default)]
    version: Option<i64>,
}

#[derive(Deserialize)]
struct Full<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    data: Option<FullData>,
}

#[derive(Deserialize)]
struct FullData {
    #[serde(default)]
    version: Option<i64>,
    #[serde(default)]
    seats: Vec<SeatState>,
}

#[derive(Deserialize)]
struct SeatState {
    id: Value,
    status: String,
}

/// Open subscribers: their tasks and each one's last version (for waiting
/// until all caught up).
pub struct Subscribers {
    pub tasks: Vec<JoinHandle<SubResult>>,
    pub progress: Vec<(u32, Arc<AtomicI64>)>,
    stop: watch::Sender<bool>,
}

impl Subscribers {
    /// Opens `per_screening` subscribers on each screening.
    pub async fn open(
        url: &str,
        screenings: &[String],
        per_screening: usize,
        parallel: usize,
        track: bool,
        base: Instant,
    ) -> Result<Subscribers> {
        let (stop, stop_rx) = watch::channel(false);
        let sem = Arc::new(Semaphore::new(parallel.max(1)));
        let mut opening = Vec::new();
        for _ in 0..per_screening {
            for (i, s) in screenings.iter().enumerate() {
                let (url, s, sem, stop_rx) =
                    (url.to_owned(), s.clone(), sem.clone(), stop_rx.clone());
                opening.push(tokio::spawn(async move {
                    let permit = sem.acquire_owned().await?;
                    let mut conn = Conn::connect(&url, None).await?;
                    let snap = conn
                        .request("subscribe_hall", json!({"screening_id": s}))
                        .await?
                        .ok("subscribe_hall")?;
                    drop(permit);
                    let version = snap["version"]
                        .as_i64()
                        .ok_or_else(|| anyhow!("subscribe answer without version"))?;
                    let mut res = SubResult {
                        screening: i as u32,
                        start_version: version,
                        version,
                        ..Default::default()
                    };
                    if track {
                        apply_seats(&mut res.view, snap["seats"].as_array());
                    }
                    let progress = Arc::new(AtomicI64::new(version));
                    let p = progress.clone();
                    let task = tokio::spawn(read_pushes(conn, res, track, base, stop_rx, p));
                    anyhow::Ok((i as u32, task, progress))
                }));
            }
        }
        let mut tasks = Vec::new();
        let mut progress = Vec::new();
        for o in opening {
            let (i, task, p) = o.await??;
            tasks.push(task);
            progress.push((i, p));
        }
        Ok(Subscribers {
            tasks,
            progress,
            stop,
        })
    }

    /// Waits until every subscriber of screening `i` reached `versions[i]`
    /// (or `wait` passed); returns how many had not.
    pub async fn wait_for(&self, versions: &[i64], wait: std::time::Duration) -> usize {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let behind = self
                .progress
                .iter()
                .filter(|(i, p)| p.load(Ordering::Relaxed) < versions[*i as usize])
                .count();
            if behind == 0 || tokio::time::Instant::now() >= deadline {
                return behind;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops every subscriber and returns what each saw.
    pub async fn finish(self) -> Vec<SubResult> {
        let _ = self.stop.send(true);
        let mut out = Vec::new();
        for t in self.tasks {
            if let Ok(r) = t.await {
                out.push(r);
            }
        }
        out
    }
}

fn apply_seats(view: &mut HashMap<String, String>, seats: Option<&Vec<Value>>) {
    for s in seats.into_iter().flatten() {
        view.insert(
            id_string(&s["id"]),
            s["status"].as_str().unwrap_or("").to_owned(),
        );
    }
}

async fn read_pushes(
    mut conn: Conn,
    mut res: SubResult,
    track: bool,
    base: Instant,
    mut stop: watch::Receiver<bool>,
    progress: Arc<AtomicI64>,
) -> SubResult {
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = conn.ws.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(c))) => {
                res.closed = Some(format!("closed by server: {c:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                res.closed = Some(e.to_string());
                break;
            }
            None => {
                res.closed = Some("connection ended".into());
                break;
            }
        };
        let at = base.elapsed().as_nanos() as u64;
        if track {
            let Ok(f) = serde_json::from_str::<Full>(text.as_str()) else {
                continue;
            };
            let Some(d) = f.data else { continue };
            let Some(v) = d.version else { continue };
            match f.kind.as_ref() {
                "hall_update" => {
                    note_update(&mut res, v, at);
                    for s in d.seats {
                        res.view.insert(id_string(&s.id), s.status);
                    }
                }
                "hall_snapshot" => {
                    res.snapshots += 1;
                    res.version = v;
                    res.view.clear();
                    for s in d.seats {
                        res.view.insert(id_string(&s.id), s.status);
                    }
                }
                _ => continue,
            }
        } else {
            let Ok(f) = serde_json::from_str::<Lite>(text.as_str()) else {
                continue;
            };
            let Some(v) = f.data.and_then(|d| d.version) else {
                continue;
            };
            match f.kind.as_ref() {
                "hall_update" => note_update(&mut res, v, at),
                "hall_snapshot" => {
                    res.snapshots += 1;
                    res.version = v;
                }
                _ => continue,
            }
        }
        progress.store(res.version, Ordering::Relaxed);
    }
    let _ = conn.ws.close(None).await;
    res
}

fn note_update(res: &mut SubResult, v: i64, at: u64) {
    if v != res.version + 1 {
        res.gaps += 1;
    }
    res.version = res.version.max(v);
    res.updates += 1;
    res.recs.push((v, at));
}
