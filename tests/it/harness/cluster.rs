//! A PostgreSQL cluster one test owns ([`PrivateCluster`]), so it can stop
//! and restart it (the shared cluster of [`super::db`] serves every test of
//! the process and must stay up).

use std::path::PathBuf;

use marquee::core::embedded::EmbeddedPostgres;
use tokio::sync::oneshot;

use super::db::{clean_stale, fresh_dir, throwaway_options, TestDb};
use super::prereq;

enum ClusterCmd {
    Start(oneshot::Sender<Result<String, String>>),
    Stop(oneshot::Sender<()>),
}

/// A throw-away PostgreSQL cluster the test can stop and start again on
/// the same data directory. The postmaster is started and stopped by one
/// dedicated thread that lives as long as this value, because the
/// parent-death signal that keeps it from outliving the test process is
/// tied to the thread that spawned it.
pub struct PrivateCluster {
    cmds: Option<std::sync::mpsc::Sender<ClusterCmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
    root: PathBuf,
    /// libpq connection string of the `postgres` database.
    admin: String,
}

impl PrivateCluster {
    /// initdb + start; `tag` names the data directory.
    pub async fn start(tag: &str) -> PrivateCluster {
        prereq::postgres_server();
        clean_stale();
        let root = fresh_dir(&format!("marquee-private-{}-{tag}", std::process::id()));
        // Prepared transactions: a lock that outlives its session (faults).
        let opts = throwaway_options(
            &root,
            &[
                ("max_connections", "100"),
                ("max_prepared_transactions", "4"),
            ],
        );
        let (tx, rx) = std::sync::mpsc::channel::<ClusterCmd>();
        let thread = std::thread::spawn(move || {
            let mut pg: Option<EmbeddedPostgres> = None;
            while let Ok(cmd) = rx.recv() {
                match cmd {
                    ClusterCmd::Start(reply) => {
                        let r = EmbeddedPostgres::start(&opts).map(|p| {
                            let admin = p.conn_string("postgres");
                            pg = Some(p);
                            admin
                        });
                        let _ = reply.send(r.map_err(|e| e.to_string()));
                    }
                    ClusterCmd::Stop(reply) => {
                        if let Some(mut p) = pg.take() {
                            p.stop();
                        }
                        let _ = reply.send(());
                    }
                }
            }
            // Dropping stops it (fast shutdown).
            drop(pg);
        });
        let mut c = PrivateCluster {
            cmds: Some(tx),
            thread: Some(thread),
            root,
            admin: String::new(),
        };
        c.admin = c.start_postgres().await;
        c
    }

    fn send(&self, cmd: ClusterCmd) {
        self.cmds
            .as_ref()
            .expect("cluster thread")
            .send(cmd)
            .expect("cluster thread alive");
    }

    /// Starts the postmaster (again) and waits until it accepts
    /// connections; returns the connection string of `postgres`.
    pub async fn start_postgres(&self) -> String {
        let (tx, rx) = oneshot::channel();
        self.send(ClusterCmd::Start(tx));
        rx.await
            .expect("cluster thread answers")
            .unwrap_or_else(|e| panic!("private cluster does not start: {e}"))
    }

    /// Fast shutdown (SIGINT to the postmaster), waiting until it exited.
    pub async fn stop_postgres(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(ClusterCmd::Stop(tx));
        rx.await.expect("cluster thread answers");
    }

    /// The connection string of a database of this cluster.
    pub fn conn_string(&self, db: &str) -> String {
        self.admin
            .replace("dbname=postgres", &format!("dbname={db}"))
    }

    /// Creates a database (empty: the server migrates it).
    pub async fn create_database(&self, name: &str) -> TestDb {
        TestDb::create_empty(&self.admin, name).await
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Closing the channel makes the thread stop PostgreSQL and return.
        self.cmds.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
