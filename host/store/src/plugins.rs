//! Installed plugin packages and their grants, trusted vendor keys, and secrets (sealed by the [`crate::Vault`]).

use std::collections::HashMap;

use crate::sql::args;
use serde::Serialize;
use serde_json::{Value, json};

use crate::record::now_ms;
use crate::{Store, StoreError, write};

/// A trusted vendor key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustedKeyRow {
    /// The key id.
    pub id: String,
    /// The public key file's line.
    pub public_key: String,
    /// The vendor it belongs to.
    pub vendor: String,
    /// Who trusted it.
    pub added_by: String,
    /// When, in ms since the epoch.
    pub added_at: i64,
}

/// One installed package version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstallRow {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// SHA-256 of what the package's signature covers.
    pub package_digest: String,
    /// SHA-256 of the component (what playbook versions pin).
    pub component_sha256: String,
    /// The package's manifest.
    pub manifest: Value,
    /// What the administrator granted.
    pub grants: Value,
    /// The key id that signed it; `None`: installed unsigned in development mode.
    pub signer: Option<String>,
    /// The package file, relative to the data directory.
    pub file: String,
    /// Who installed it.
    pub installed_by: String,
    /// When, in ms since the epoch.
    pub installed_at: i64,
    /// Whether this is the version in use.
    pub active: bool,
}

/// A secret's name and who set it last (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    /// The secret's name.
    pub name: String,
    /// Who set it last.
    pub updated_by: String,
    /// When, in ms since the epoch.
    pub updated_at: i64,
}

impl Store {
    /// Trusts a vendor key (replacing one with the same id). Audited as `plugin.trust`.
    pub async fn trust_key(&self, row: TrustedKeyRow) -> Result<(), StoreError> {
        self.journal()
            .write(move |tx| {
                tx.exec(
                    "INSERT INTO trusted_keys (id, public_key, vendor, added_by, added_at) VALUES (?, ?, ?, ?, ?) \
                     ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key, vendor = excluded.vendor, \
                     added_by = excluded.added_by, added_at = excluded.added_at",
                    args![row.id, row.public_key, row.vendor, row.added_by, row.added_at],
                )?;
                let detail = json!({"vendor": row.vendor});
                write::audit(tx, &row.added_by, "plugin.trust", &row.id, Some(&detail))
            })
            .await
    }

    /// Stops trusting key `id`; false if it was not trusted. Installed packages stay. Audited as `plugin.distrust`.
    pub async fn distrust_key(&self, id: &str, by: &str) -> Result<bool, StoreError> {
        let (id, by) = (id.to_owned(), by.to_owned());
        self.journal()
            .write(move |tx| {
                let gone = tx.exec("DELETE FROM trusted_keys WHERE id = ?", args![&id])? == 1;
                if gone {
                    write::audit(tx, &by, "plugin.distrust", &id, None)?;
                }
                Ok(gone)
            })
            .await
    }

    /// Every trusted key, oldest first.
    pub async fn trusted_keys(&self) -> Result<Vec<TrustedKeyRow>, StoreError> {
        self.read(|tx| {
            tx.rows(
                "SELECT * FROM trusted_keys ORDER BY added_at, id",
                args![],
                |r| {
                    Ok(TrustedKeyRow {
                        id: r.get("id")?,
                        public_key: r.get("public_key")?,
                        vendor: r.get("vendor")?,
                        added_by: r.get("added_by")?,
                        added_at: r.get("added_at")?,
                    })
                },
            )
        })
        .await
    }

    /// Records an installed package as the active version of its plugin (the previous active version stays
    /// recorded, inactive). Audited as `plugin.install` with the grants.
    pub async fn record_install(&self, row: InstallRow) -> Result<(), StoreError> {
        self.journal()
            .write(move |tx| {
                tx.exec("UPDATE plugin_installs SET active = FALSE WHERE name = ?", args![&row.name])?;
                tx.exec(
                    "INSERT INTO plugin_installs (name, version, package_digest, component_sha256, manifest, \
                     grants, signer, file, installed_by, installed_at, active) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, TRUE) \
                     ON CONFLICT (name, version) DO UPDATE SET package_digest = excluded.package_digest, \
                     component_sha256 = excluded.component_sha256, manifest = excluded.manifest, grants = excluded.grants, \
                     signer = excluded.signer, file = excluded.file, installed_by = excluded.installed_by, \
                     installed_at = excluded.installed_at, active = TRUE",
                    args![
                        row.name,
                        row.version,
                        row.package_digest,
                        row.component_sha256,
                        row.manifest.to_string(),
                        row.grants.to_string(),
                        row.signer,
                        row.file,
                        row.installed_by,
                        row.installed_at
                    ],
                )?;
                let detail = json!({
                    "version": row.version, "digest": row.package_digest, "signer": row.signer,
                    "grants": row.grants,
                });
                write::audit(tx, &row.installed_by, "plugin.install", &row.name, Some(&detail))
            })
            .await
    }

    /// Replaces the grants of the active version of `name`; false if it is not installed. Audited as
    /// `plugin.grant`.
    pub async fn set_grants(
        &self,
        name: &str,
        grants: Value,
        by: &str,
    ) -> Result<bool, StoreError> {
        let (name, by) = (name.to_owned(), by.to_owned());
        self.journal()
            .write(move |tx| {
                let changed = tx.exec(
                    "UPDATE plugin_installs SET grants = ? WHERE name = ? AND active",
                    args![grants.to_string(), name],
                )? == 1;
                if changed {
                    let detail = json!({"grants": grants});
                    write::audit(tx, &by, "plugin.grant", &name, Some(&detail))?;
                }
                Ok(changed)
            })
            .await
    }

    /// The installed packages: the active version of each plugin, or every version.
    pub async fn installs(&self, all_versions: bool) -> Result<Vec<InstallRow>, StoreError> {
        let sql = if all_versions {
            "SELECT * FROM plugin_installs ORDER BY name, installed_at"
        } else {
            "SELECT * FROM plugin_installs WHERE active ORDER BY name"
        };
        self.read(move |tx| {
            tx.rows(sql, args![], |r| {
                let json = |col: &str| -> Result<Value, StoreError> {
                    let text: String = r.try_get(col)?;
                    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                        table: "plugin_installs",
                        message: format!("{col}: {e}"),
                    })
                };
                Ok(InstallRow {
                    name: r.try_get("name")?,
                    version: r.try_get("version")?,
                    package_digest: r.try_get("package_digest")?,
                    component_sha256: r.try_get("component_sha256")?,
                    manifest: json("manifest")?,
                    grants: json("grants")?,
                    signer: r.try_get("signer")?,
                    file: r.try_get("file")?,
                    installed_by: r.try_get("installed_by")?,
                    installed_at: r.try_get("installed_at")?,
                    active: r.try_get::<bool>("active")?,
                })
            })
        })
        .await
    }

    /// Sets secret `name` to `value`, sealed. Audited as `secret.set` (the name only).
    pub async fn set_secret(&self, name: &str, value: &str, by: &str) -> Result<(), StoreError> {
        let sealed = self.vault().seal(name, value.as_bytes())?;
        let (name, by) = (name.to_owned(), by.to_owned());
        self.journal()
            .write(move |tx| {
                tx.exec(
                    "INSERT INTO secrets (name, sealed, updated_by, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (name) \
                     DO UPDATE SET sealed = excluded.sealed, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                    args![name, sealed, by, now_ms()],
                )?;
                write::audit(tx, &by, "secret.set", &name, None)
            })
            .await
    }

    /// Deletes secret `name`; false if there was none. Audited as `secret.delete`.
    pub async fn delete_secret(&self, name: &str, by: &str) -> Result<bool, StoreError> {
        let (name, by) = (name.to_owned(), by.to_owned());
        self.journal()
            .write(move |tx| {
                let gone = tx.exec("DELETE FROM secrets WHERE name = ?", args![&name])? == 1;
                if gone {
                    write::audit(tx, &by, "secret.delete", &name, None)?;
                }
                Ok(gone)
            })
            .await
    }

    /// The names of the stored secrets, without values.
    pub async fn secrets(&self) -> Result<Vec<SecretInfo>, StoreError> {
        self.read(|tx| {
            tx.rows(
                "SELECT name, updated_by, updated_at FROM secrets ORDER BY name",
                args![],
                |r| {
                    Ok(SecretInfo {
                        name: r.get("name")?,
                        updated_by: r.get("updated_by")?,
                        updated_at: r.get("updated_at")?,
                    })
                },
            )
        })
        .await
    }

    /// Every stored secret's value, opened: for the host's secret store, never for an API response.
    pub async fn secret_values(&self) -> Result<HashMap<String, String>, StoreError> {
        let rows: Vec<(String, Vec<u8>)> = self
            .read(|tx| {
                tx.rows("SELECT name, sealed FROM secrets", args![], |r| {
                    Ok((r.get("name")?, r.get("sealed")?))
                })
            })
            .await?;
        let mut out = HashMap::new();
        for (name, sealed) in rows {
            let plain = self.vault().open_sealed(&name, &sealed)?;
            let value = String::from_utf8(plain).map_err(|_| StoreError::Corrupt {
                table: "secrets",
                message: format!("the value of `{name}` is not UTF-8"),
            })?;
            out.insert(name, value);
        }
        Ok(out)
    }

    /// Records that a plugin read a secret's value (`secrets.reveal`), before the value is handed over.
    pub async fn audit_reveal(
        &self,
        plugin: &str,
        secret: &str,
        run: &str,
        step: &str,
    ) -> Result<(), StoreError> {
        let actor = format!("plugin:{plugin}");
        let detail = json!({"run": run, "step": step});
        let secret = secret.to_owned();
        self.journal()
            .write(move |tx| write::audit(tx, &actor, "secret.reveal", &secret, Some(&detail)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_are_sealed_at_rest_and_never_listed_with_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store
            .set_secret("misp_key", "very-secret-value", "admin")
            .await
            .unwrap();
        let names = store.secrets().await.unwrap();
        assert_eq!(names[0].name, "misp_key");
        assert_eq!(
            store.secret_values().await.unwrap()["misp_key"],
            "very-secret-value"
        );
        store.close().await;
        // Neither the database nor its WAL holds the plain value.
        for file in ["qila.db", "qila.db-wal"] {
            if let Ok(bytes) = std::fs::read(dir.path().join(file)) {
                assert!(
                    !bytes.windows(17).any(|w| w == b"very-secret-value"),
                    "{file}"
                );
            }
        }
        let store = Store::open(dir.path()).await.unwrap();
        assert!(store.delete_secret("misp_key", "admin").await.unwrap());
        assert!(store.secret_values().await.unwrap().is_empty());
        let log = store.audit_log(0, 100).await.unwrap();
        assert!(
            log.iter()
                .any(|e| e.action == "secret.set" && e.target == "misp_key")
        );
    }
}
