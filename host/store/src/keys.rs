//! Run keys: a key under which at most one run is started while it lives — a webhook's delivery id, or a client's
//! `Idempotency-Key`. The key is claimed in the transaction that creates the run ([`claim_run_key`]), so a
//! duplicate sent at the same moment, or after a restart, finds the first run instead of starting another.

use crate::sql::args;

use crate::Store;
use crate::error::StoreError;
use crate::journal::Tx;
use crate::record::now_ms;

/// How many expired keys one claim deletes at most (pruning is spread over the claims).
const PRUNE_BATCH: i64 = 64;

/// A key to claim for a new run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKey {
    /// Whose keys these are: `hook:<playbook>` for webhook deliveries, `token:<token id>` for idempotency keys.
    pub scope: String,
    /// The key as the client sent it.
    pub key: String,
    /// SHA-256 (hex) of the request, to tell a repeat from a different request under the same key.
    pub fingerprint: String,
    /// Unix ms after which the key is forgotten.
    pub expires_at: i64,
}

/// A live key that was already claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKey {
    /// The run it started.
    pub run_id: String,
    /// Whether the request claiming it again is the same as the first (same fingerprint).
    pub same_request: bool,
    /// Unix ms when it was first claimed.
    pub created_at: i64,
}

/// Claims `key` for the run `run_id` inside the transaction creating that run; `false` when a live claim holds it
/// (read it with [`Store::run_key`]). An expired claim is replaced. Prunes a few expired keys on the way.
pub(crate) fn claim_run_key(tx: &Tx<'_>, key: &RunKey, run_id: &str) -> Result<bool, StoreError> {
    let now = now_ms();
    tx.exec(
        "DELETE FROM run_keys WHERE (scope, key) IN \
         (SELECT scope, key FROM run_keys WHERE expires_at <= ? LIMIT ?)",
        args![now, PRUNE_BATCH],
    )?;
    let claimed = tx.exec(
        "INSERT INTO run_keys (scope, key, fingerprint, run_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint, run_id = excluded.run_id, \
         created_at = excluded.created_at, expires_at = excluded.expires_at WHERE run_keys.expires_at <= ?",
        args![key.scope, key.key, key.fingerprint, run_id, now, key.expires_at, now],
    )?;
    Ok(claimed == 1)
}

impl Store {
    /// The live claim of `key`, if any, compared with `key`'s fingerprint.
    pub async fn run_key(&self, key: &RunKey) -> Result<Option<ClaimedKey>, StoreError> {
        let key = key.clone();
        self.read(move |tx| {
            tx.row(
                "SELECT fingerprint, run_id, created_at FROM run_keys WHERE scope = ? AND key = ? AND expires_at > ?",
                args![key.scope, key.key, now_ms()],
                |r| {
                    let fingerprint: String = r.get("fingerprint")?;
                    Ok(ClaimedKey {
                        run_id: r.get("run_id")?,
                        same_request: fingerprint == key.fingerprint,
                        created_at: r.get("created_at")?,
                    })
                },
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str, fingerprint: &str, expires_at: i64) -> RunKey {
        RunKey {
            scope: "hook:x".into(),
            key: k.into(),
            fingerprint: fingerprint.into(),
            expires_at,
        }
    }

    async fn claim(store: &Store, key: RunKey, run: &'static str) -> bool {
        store
            .journal()
            .write(move |tx| claim_run_key(tx, &key, run))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_key_is_claimed_once_while_it_lives_and_again_once_it_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let later = now_ms() + 60_000;
        assert!(claim(&store, key("a", "f1", later), "run-1").await);
        assert!(!claim(&store, key("a", "f2", later), "run-2").await);
        let held = store
            .run_key(&key("a", "f1", later))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held.run_id, "run-1");
        assert!(held.same_request);
        let other = store
            .run_key(&key("a", "f2", later))
            .await
            .unwrap()
            .unwrap();
        assert!(!other.same_request);
        // Another scope is another key.
        let mut elsewhere = key("a", "f1", later);
        elsewhere.scope = "token:t".into();
        assert!(claim(&store, elsewhere, "run-3").await);
        // An expired claim no longer holds its key, and is replaced by the next claim.
        assert!(claim(&store, key("old", "f", now_ms() - 1), "run-4").await);
        assert_eq!(store.run_key(&key("old", "f", later)).await.unwrap(), None);
        assert!(claim(&store, key("old", "g", later), "run-5").await);
        let renewed = store
            .run_key(&key("old", "g", later))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renewed.run_id, "run-5");
        // The claims survive a restart.
        store.close().await;
        let store = Store::open(dir.path()).await.unwrap();
        assert!(!claim(&store, key("a", "f1", later), "run-6").await);
        store.close().await;
    }
}
