//! Group commit for signed heartbeats: at a city's scale they are most of the office's requests (20,000 gates at
//! the 5 s cadence are 4,000 a second), each a counter taken and a contact recorded. Each office process has one
//! committer thread: it takes every heartbeat waiting when it is free, commits them in one transaction
//! ([`OfficeDb::heartbeats_signed`](super::OfficeDb::heartbeats_signed)) and then answers each — so a heartbeat is
//! still answered only once it is durable, an idle office adds no delay (a lone heartbeat is committed at once), and
//! a busy one commits many per round trip and fsync.
//!
//! Invariant: no heartbeat is answered before its transaction committed, and a failed commit answers every heartbeat
//! in it with the error (the gates send again).

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::db::{Connector, SignedBeat, Taken};

/// At most this many heartbeats in one transaction.
const MOST: usize = 512;

type Waiting = (SignedBeat, oneshot::Sender<Result<Taken, String>>);

/// The queue to the committer thread (which ends when this is dropped).
pub struct Committer {
    queue: mpsc::Sender<Waiting>,
}

impl Committer {
    /// Start the committer thread on `pool`.
    pub fn start(pool: r2d2::Pool<Connector>, describe: String) -> std::io::Result<Committer> {
        let (tx, rx) = mpsc::channel::<Waiting>();
        std::thread::Builder::new().name("office-heartbeats".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut round = vec![first];
                let mut later = Vec::new();
                while round.len() < MOST {
                    match rx.try_recv() {
                        // A gate's second heartbeat in one round waits for the next (one row per signer a statement).
                        Ok(w) if round.iter().any(|(b, _)| b.signer == w.0.signer) => later.push(w),
                        Ok(w) => round.push(w),
                        Err(_) => break,
                    }
                }
                commit(&pool, &describe, round);
                for w in later {
                    commit(&pool, &describe, vec![w]);
                }
            }
        })?;
        Ok(Committer { queue: tx })
    }

    /// Commit `beat` with the others waiting; what became of it once its transaction committed.
    pub async fn heartbeat(&self, beat: SignedBeat) -> Result<Taken, String> {
        let (tx, rx) = oneshot::channel();
        self.queue.send((beat, tx)).map_err(|_| "the heartbeat committer has stopped".to_string())?;
        rx.await.map_err(|_| "the heartbeat committer has stopped".to_string())?
    }
}

fn commit(pool: &r2d2::Pool<Connector>, describe: &str, round: Vec<Waiting>) {
    let (beats, answers): (Vec<SignedBeat>, Vec<_>) = round.into_iter().unzip();
    let done = pool
        .get()
        .map_err(|e| format!("no database connection ({describe}): {e}"))
        .and_then(|mut db| db.heartbeats_signed(&beats, crate::hw::now()));
    match done {
        Ok(taken) => {
            for (answer, t) in answers.into_iter().zip(taken) {
                let _ = answer.send(Ok(t));
            }
        }
        Err(e) => {
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
    }
}
