//! API tokens (stored as SHA-256 hashes) with their roles, and reads of the audit log.

use crate::sql::args;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Store;
use crate::error::StoreError;
use crate::record::now_ms;
use crate::write;

/// What a token may do. Each role includes `viewer`; `admin` includes every other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including tokens and the audit log.
    Admin,
    /// Publishes playbooks (and, later, installs plugins).
    Engineer,
    /// Starts, cancels and re-runs runs; decides approvals.
    Analyst,
    /// Reads.
    Viewer,
    /// Only sends events to the SIEM (`POST /api/v1/events`): the token of a log shipper, which reads nothing.
    Ingest,
}

impl Role {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Engineer => "engineer",
            Self::Analyst => "analyst",
            Self::Viewer => "viewer",
            Self::Ingest => "ingest",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "engineer" => Some(Self::Engineer),
            "analyst" => Some(Self::Analyst),
            "viewer" => Some(Self::Viewer),
            "ingest" => Some(Self::Ingest),
            _ => None,
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        if self == Self::Ingest {
            return needed == Self::Ingest;
        }
        self == needed || self == Self::Admin || (needed == Self::Viewer)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The public part of the token (`qila_<id>_...`).
    pub id: String,
    /// Who or what it is for; shown in the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Unix ms.
    pub created_at: i64,
    /// The name of the token (or `cli`) that created it.
    pub created_by: String,
    /// Unix ms, once revoked.
    pub revoked_at: Option<i64>,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Increases with every entry.
    pub seq: i64,
    /// Unix ms.
    pub at: i64,
    /// Who: a token's name, `system`, `schedule`, `hook:<playbook>`.
    pub actor: String,
    /// What: `playbook.publish`, `run.start`, `run.cancel`, `approval.approve`, `token.create`, ...
    pub action: String,
    /// On what.
    pub target: String,
    /// Details.
    pub detail: Option<Value>,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(bytes * 2);
    out
}

fn token_info(row: &crate::sql::RowRef<'_>) -> Result<TokenInfo, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(TokenInfo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt {
            table: "tokens",
            message: format!("unknown role `{role}`"),
        })?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl Store {
    /// Creates a token named `name` with `role`; returns it with its secret, `qila_<id>_<secret>`, which is shown
    /// this once (only its SHA-256 is stored). Audited as `token.create` by `created_by`.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        created_by: &str,
    ) -> Result<(TokenInfo, String), StoreError> {
        let id = random_hex(4);
        // 64 hex digits from two UUIDv4s: 244 random bits (each UUIDv4 fixes 6 of its 128).
        let token = format!("qila_{id}_{}", random_hex(32));
        let info = TokenInfo {
            id,
            name: name.to_owned(),
            role,
            created_at: now_ms(),
            created_by: created_by.to_owned(),
            revoked_at: None,
        };
        let (row, digest) = (info.clone(), hash(&token));
        self.journal()
            .write(move |tx| {
                tx.exec(
                    "INSERT INTO tokens (id, hash, name, role, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
                    args![row.id, digest, row.name, row.role.as_str(), row.created_at, row.created_by],
                )?;
                let detail = json!({ "name": row.name, "role": row.role.as_str() });
                write::audit(tx, &row.created_by, "token.create", &row.id, Some(&detail))
            })
            .await?;
        Ok((info, token))
    }

    /// The token `token` is, if it exists and is not revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Option<TokenInfo>, StoreError> {
        if !token.starts_with("qila_") || token.len() > 256 {
            return Ok(None);
        }
        let hash = hash(token);
        self.read(move |tx| {
            tx.row(
                "SELECT * FROM tokens WHERE hash = ? AND revoked_at IS NULL",
                args![hash],
                token_info,
            )
        })
        .await
    }

    /// Every token, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.read(|tx| {
            tx.rows(
                "SELECT * FROM tokens ORDER BY created_at DESC",
                args![],
                token_info,
            )
        })
        .await
    }

    /// Whether any token exists (revoked or not).
    pub async fn has_tokens(&self) -> Result<bool, StoreError> {
        let n: Option<i64> = self
            .read(|tx| tx.row("SELECT COUNT(*) FROM tokens", args![], |r| r.get(0)))
            .await?;
        Ok(n.unwrap_or(0) > 0)
    }

    /// Revokes token `id`; false if there is no such live token. Audited as `token.revoke` by `by`.
    pub async fn revoke_token(&self, id: &str, by: &str) -> Result<bool, StoreError> {
        let (id, by) = (id.to_owned(), by.to_owned());
        self.journal()
            .write(move |tx| {
                let revoked = tx.exec(
                    "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                    args![now_ms(), id],
                )? == 1;
                if revoked {
                    write::audit(tx, &by, "token.revoke", &id, None)?;
                }
                Ok(revoked)
            })
            .await
    }

    /// Audit entries after `after` (a `seq`), oldest first, at most `limit`.
    pub async fn audit_log(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = limit.clamp(1, 10_000);
        self.read(move |tx| {
            tx.rows(
                "SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
                args![after, limit],
                |r| {
                    Ok(AuditEntry {
                        seq: r.get("seq")?,
                        at: r.get("at")?,
                        actor: r.get("actor")?,
                        action: r.get("action")?,
                        target: r.get("target")?,
                        detail: crate::record::json_opt(r, "detail", "audit")?,
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

    #[test]
    fn roles_include_viewer_and_admin_includes_all() {
        assert!(Role::Admin.allows(Role::Engineer));
        assert!(Role::Analyst.allows(Role::Viewer));
        assert!(!Role::Analyst.allows(Role::Engineer));
        assert!(!Role::Viewer.allows(Role::Analyst));
    }

    #[tokio::test]
    async fn tokens_authenticate_by_hash_until_revoked_and_are_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        assert!(!store.has_tokens().await.unwrap());
        let (info, token) = store
            .create_token("ann", Role::Analyst, "cli")
            .await
            .unwrap();
        assert!(token.starts_with(&format!("qila_{}_", info.id)));
        let found = store.authenticate(&token).await.unwrap().expect("valid");
        assert_eq!((found.name.as_str(), found.role), ("ann", Role::Analyst));
        assert!(store.authenticate("qila_nope").await.unwrap().is_none());
        let stored: String = sqlx::query_scalar("SELECT hash FROM tokens")
            .fetch_one(store.pool().unwrap())
            .await
            .unwrap();
        assert!(!stored.contains(&token[10..]), "only the hash is stored");
        assert!(store.revoke_token(&info.id, "cli").await.unwrap());
        assert!(store.authenticate(&token).await.unwrap().is_none());
        let log = store.audit_log(0, 10).await.unwrap();
        let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["token.create", "token.revoke"]);
    }

    #[tokio::test]
    async fn the_audit_log_refuses_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store.create_token("a", Role::Admin, "cli").await.unwrap();
        let update = sqlx::query("UPDATE audit SET actor = 'mallory'")
            .execute(store.pool().unwrap())
            .await;
        assert!(update.unwrap_err().to_string().contains("append-only"));
        let delete = sqlx::query("DELETE FROM audit")
            .execute(store.pool().unwrap())
            .await;
        assert!(delete.unwrap_err().to_string().contains("append-only"));
    }
}
