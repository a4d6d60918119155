//! Plugin key-value data.

use crate::sql::args;

use crate::Store;
use crate::error::StoreError;
use crate::record::now_ms;

impl Store {
    /// The value under `key` in `namespace`.
    pub async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (namespace, key) = (namespace.to_owned(), key.to_owned());
        self.read(move |tx| {
            tx.row(
                "SELECT value FROM plugin_kv WHERE namespace = ? AND key = ?",
                args![namespace, key],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Stores `value` under `key` in `namespace` (through the journal: committed when this returns).
    pub async fn kv_set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (namespace, key, value) = (namespace.to_owned(), key.to_owned(), value.to_vec());
        self.journal()
            .write(move |tx| {
                tx.exec(
                    "INSERT INTO plugin_kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    args![namespace, key, value, now_ms()],
                )
            })
            .await?;
        Ok(())
    }

    /// Removes `key` from `namespace`.
    pub async fn kv_delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        let (namespace, key) = (namespace.to_owned(), key.to_owned());
        self.journal()
            .write(move |tx| {
                tx.exec(
                    "DELETE FROM plugin_kv WHERE namespace = ? AND key = ?",
                    args![namespace, key],
                )
            })
            .await?;
        Ok(())
    }
}
