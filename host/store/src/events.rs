//! SIEM data: normalised events (bulk inserts, search in the [`crate::query`] language, retention), dead letters
//! (records that could not be parsed, kept verbatim) and alerts (deduplicated per rule and group key).
//!
//! These writes go through the SIEM's own writer connection (not the journal), each call in its own transaction
//! (WAL and the busy timeout arbitrate with the journal's writer); only the audited change of an alert's status
//! goes through the journal. Like the journal's, that connection heals: see `writer.rs`.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::sql::args;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use crate::query::{self, Bind, ip_bytes};
use crate::record::now_us;
use crate::{Store, StoreError, write};

/// Rows per multi-row INSERT (16 values each, well under SQLite's 32,766 placeholders).
const INSERT_CHUNK: usize = 500;
/// Rows deleted per transaction by retention.
const DELETE_CHUNK: i64 = 10_000;
/// How many event ids an alert keeps (the first ones).
pub const ALERT_EVENT_IDS_CAP: usize = 100;
/// The most rows one page returns.
pub const MAX_PAGE: u32 = 1000;

/// An event to store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// When it happened, unix µs.
    pub time_us: i64,
    /// When Qila received it, unix µs.
    pub received_us: i64,
    /// Where it comes from (`windows.security`, `syslog`, ...).
    pub dataset: String,
    /// The host it is about.
    pub host: Option<String>,
    /// Source address.
    pub source_ip: Option<IpAddr>,
    /// Source port.
    pub source_port: Option<u16>,
    /// Destination address.
    pub destination_ip: Option<IpAddr>,
    /// Destination port.
    pub destination_port: Option<u16>,
    /// The user.
    pub user: Option<String>,
    /// The process.
    pub process: Option<String>,
    /// What happened.
    pub action: Option<String>,
    /// `success`, `failure`, ...
    pub outcome: Option<String>,
    /// Every other field: the text of a JSON object (an empty string is stored as `{}`). Serialised by the
    /// caller, so that the work is done where it can run in parallel, not in the one writer.
    pub fields: String,
    /// The record as received.
    pub raw: String,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    /// Its id (increases with insertion).
    pub id: i64,
    /// When it happened, unix µs.
    pub time_us: i64,
    /// When Qila received it, unix µs.
    pub received_us: i64,
    /// Where it comes from.
    pub dataset: String,
    /// The host.
    pub host: Option<String>,
    /// Source address, as text.
    pub source_ip: Option<String>,
    /// Source port.
    pub source_port: Option<u16>,
    /// Destination address, as text.
    pub destination_ip: Option<String>,
    /// Destination port.
    pub destination_port: Option<u16>,
    /// The user.
    pub user: Option<String>,
    /// The process.
    pub process: Option<String>,
    /// What happened.
    pub action: Option<String>,
    /// The outcome.
    pub outcome: Option<String>,
    /// Every other field.
    pub fields: Value,
    /// The record as received.
    pub raw: String,
}

/// A record that could not be turned into an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When it was received, unix µs.
    pub received_us: i64,
    /// The input: `http`, `syslog-udp`, `file:NAME`, ...
    pub source: String,
    /// Where in the input: `line 12`, ...
    pub location: String,
    /// Why it was refused.
    pub reason: String,
    /// The record as received.
    pub raw: String,
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRow {
    /// Its id (increases with insertion).
    pub id: i64,
    /// When it was received, unix µs.
    pub received_us: i64,
    /// The input.
    pub source: String,
    /// Where in the input.
    pub location: String,
    /// Why it was refused.
    pub reason: String,
    /// The record as received.
    pub raw: String,
}

/// A search of events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventQuery {
    /// The query (see `docs/search.md`); none or blank: every event.
    #[serde(default)]
    pub query: Option<String>,
    /// Events at or after, unix µs.
    #[serde(default)]
    pub from_us: Option<i64>,
    /// Events before, unix µs.
    #[serde(default)]
    pub to_us: Option<i64>,
    /// The most events to return; clamped to 1..=1000.
    #[serde(default)]
    pub limit: u32,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A page of events, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    /// The events.
    pub events: Vec<EventRow>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// New, or merged into since.
    Open,
    /// Someone is on it.
    Acknowledged,
    /// Done; a new match raises a new alert.
    Closed,
}

impl AlertStatus {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Closed => "closed",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "acknowledged" => Some(Self::Acknowledged),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// A detection to record as an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAlert {
    /// The rule's id.
    pub rule_id: String,
    /// The rule's title.
    pub rule_title: String,
    /// The rule's level (`low`, `high`, ...).
    pub level: String,
    /// The rule's tags (ATT&CK).
    pub tags: Vec<String>,
    /// What alerts of the rule are deduplicated on (`""` for all together).
    pub group_key: String,
    /// When the matching event(s) happened, unix µs.
    pub time_us: i64,
    /// The matching events.
    pub event_ids: Vec<i64>,
    /// How many findings this alert stands for (at least 1): a caller may merge the findings of one batch into
    /// one raise.
    pub findings: i64,
    /// Anything else (kept from the first detection).
    pub details: Value,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRow {
    /// UUIDv7.
    pub id: String,
    /// The rule's id.
    pub rule_id: String,
    /// The rule's title.
    pub rule_title: String,
    /// The rule's level.
    pub level: String,
    /// The rule's tags.
    pub tags: Vec<String>,
    /// The deduplication key.
    pub group_key: String,
    /// The earliest detection's time, unix µs.
    pub first_us: i64,
    /// The latest detection's time, unix µs.
    pub last_us: i64,
    /// How many detections were merged into it.
    pub count: i64,
    /// The first [`ALERT_EVENT_IDS_CAP`] matching events.
    pub event_ids: Vec<i64>,
    /// The first detection's details.
    pub details: Value,
    /// Its state.
    pub status: AlertStatus,
    /// When it was created, unix µs.
    pub created_us: i64,
    /// When it last changed, unix µs.
    pub updated_us: i64,
}

/// What [`Store::raise_alert`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertUpsert {
    /// A new alert.
    Created(AlertRow),
    /// The detection was merged into an open alert of the same rule and group key.
    Merged(AlertRow),
}

impl AlertUpsert {
    /// The alert, either way.
    pub fn alert(&self) -> &AlertRow {
        match self {
            Self::Created(a) | Self::Merged(a) => a,
        }
    }
}

/// Which alerts to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertFilter {
    /// Only in this state.
    #[serde(default)]
    pub status: Option<AlertStatus>,
    /// Only of this rule.
    #[serde(default)]
    pub rule_id: Option<String>,
    /// Only of this level.
    #[serde(default)]
    pub level: Option<String>,
    /// The most to return; clamped to 1..=1000.
    #[serde(default)]
    pub limit: u32,
    /// Only alerts created before this one (its id), for paging.
    #[serde(default)]
    pub before: Option<String>,
}

fn ip_columns(ip: Option<IpAddr>) -> (Option<String>, Option<Vec<u8>>) {
    match ip {
        Some(ip) => (Some(ip.to_string()), Some(ip_bytes(ip).to_vec())),
        None => (None, None),
    }
}

fn corrupt(table: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        message: message.into(),
    }
}

fn json_column<T: serde::de::DeserializeOwned>(
    table: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(table, e.to_string()))
}

fn port(r: &SqliteRow, column: &str) -> Result<Option<u16>, StoreError> {
    let p: Option<i64> = r.try_get(column)?;
    p.map(|p| {
        u16::try_from(p).map_err(|_| corrupt("events", format!("{column} {p} is not a port")))
    })
    .transpose()
}

fn event_row(r: &SqliteRow) -> Result<EventRow, StoreError> {
    let fields: String = r.try_get("fields")?;
    Ok(EventRow {
        id: r.try_get("id")?,
        time_us: r.try_get("time_us")?,
        received_us: r.try_get("received_us")?,
        dataset: r.try_get("dataset")?,
        host: r.try_get("host")?,
        source_ip: r.try_get("source_ip")?,
        source_port: port(r, "source_port")?,
        destination_ip: r.try_get("destination_ip")?,
        destination_port: port(r, "destination_port")?,
        user: r.try_get("user")?,
        process: r.try_get("process")?,
        action: r.try_get("action")?,
        outcome: r.try_get("outcome")?,
        fields: json_column("events", &fields)?,
        raw: r.try_get("raw")?,
    })
}

fn dead_letter_row(r: &SqliteRow) -> Result<DeadLetterRow, StoreError> {
    Ok(DeadLetterRow {
        id: r.try_get("id")?,
        received_us: r.try_get("received_us")?,
        source: r.try_get("source")?,
        location: r.try_get("location")?,
        reason: r.try_get("reason")?,
        raw: r.try_get("raw")?,
    })
}

fn alert_row(r: &SqliteRow) -> Result<AlertRow, StoreError> {
    let tags: String = r.try_get("tags")?;
    let event_ids: String = r.try_get("event_ids")?;
    let details: String = r.try_get("details")?;
    let status: String = r.try_get("status")?;
    Ok(AlertRow {
        id: r.try_get("id")?,
        rule_id: r.try_get("rule_id")?,
        rule_title: r.try_get("rule_title")?,
        level: r.try_get("level")?,
        tags: json_column("alerts", &tags)?,
        group_key: r.try_get("group_key")?,
        first_us: r.try_get("first_us")?,
        last_us: r.try_get("last_us")?,
        count: r.try_get("count")?,
        event_ids: json_column("alerts", &event_ids)?,
        details: json_column("alerts", &details)?,
        status: AlertStatus::parse(&status)
            .ok_or_else(|| corrupt("alerts", format!("status {status:?}")))?,
        created_us: r.try_get("created_us")?,
        updated_us: r.try_get("updated_us")?,
    })
}

/// The opaque cursor after the event at (`time_us`, `id`).
fn encode_cursor(time_us: i64, id: i64) -> String {
    hex::encode(format!("{time_us}:{id}"))
}

fn decode_cursor(cursor: &str) -> Result<(i64, i64), StoreError> {
    let bad = || {
        StoreError::BadCursor(
            "it is not a next_cursor this server returned; repeat the search without a cursor"
                .into(),
        )
    };
    let text = String::from_utf8(hex::decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    let (t, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((
        t.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

fn bind_all<'q>(mut q: SqliteQuery<'q>, binds: Vec<Bind>) -> SqliteQuery<'q> {
    for b in binds {
        q = match b {
            Bind::Int(i) => q.bind(i),
            Bind::Real(f) => q.bind(f),
            Bind::Text(t) => q.bind(t),
            Bind::Blob(b) => q.bind(b),
        };
    }
    q
}

/// Inserts events on `c` (inside its caller's transaction); returns their ids, in order.
async fn insert_events_on(
    c: &mut SqliteConnection,
    events: &[NewEvent],
) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(events.len());
    for chunk in events.chunks(INSERT_CHUNK) {
        let mut sql = String::with_capacity(200 + chunk.len() * 36);
        sql.push_str(
            "INSERT INTO events (time_us, received_us, dataset, host, source_ip, source_ip_bin, source_port, \
             destination_ip, destination_ip_bin, destination_port, user, process, action, outcome, fields, raw) \
             VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
        }
        sql.push_str(" RETURNING id");
        let mut q = sqlx::query_scalar::<_, i64>(&sql);
        for e in chunk {
            let (src, src_bin) = ip_columns(e.source_ip);
            let (dst, dst_bin) = ip_columns(e.destination_ip);
            let fields = if e.fields.is_empty() {
                "{}"
            } else {
                e.fields.as_str()
            };
            q = q
                .bind(e.time_us)
                .bind(e.received_us)
                .bind(&e.dataset)
                .bind(&e.host)
                .bind(src)
                .bind(src_bin)
                .bind(e.source_port.map(i64::from))
                .bind(dst)
                .bind(dst_bin)
                .bind(e.destination_port.map(i64::from))
                .bind(&e.user)
                .bind(&e.process)
                .bind(&e.action)
                .bind(&e.outcome)
                .bind(fields)
                .bind(&e.raw);
        }
        let mut chunk_ids = q.fetch_all(&mut *c).await?;
        if chunk_ids.len() != chunk.len() {
            return Err(StoreError::Commit(format!(
                "inserted {} events of {}",
                chunk_ids.len(),
                chunk.len()
            )));
        }
        // Rowids are assigned increasing in the order of the VALUES; RETURNING's order is not promised.
        chunk_ids.sort_unstable();
        ids.extend(chunk_ids);
    }
    Ok(ids)
}

/// Inserts dead letters on `c` (inside its caller's transaction); returns their ids, in order.
async fn insert_dead_letters_on(
    c: &mut SqliteConnection,
    letters: &[DeadLetter],
) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(letters.len());
    for d in letters {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO dead_letters (received_us, source, location, reason, raw) VALUES (?, ?, ?, ?, ?) \
             RETURNING id",
        )
        .bind(d.received_us)
        .bind(&d.source)
        .bind(&d.location)
        .bind(&d.reason)
        .bind(&d.raw)
        .fetch_one(&mut *c)
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Records a detection on `tx` (see [`Store::raise_alert`]).
async fn raise_alert_on(
    tx: &mut SqliteConnection,
    alert: &NewAlert,
    dedup_window_us: i64,
) -> Result<AlertUpsert, StoreError> {
    let now = now_us();
    let existing = sqlx::query(
            "SELECT * FROM alerts WHERE rule_id = ? AND group_key = ? AND last_us >= ? AND status != 'closed' \
             ORDER BY last_us DESC LIMIT 1",
        )
        .bind(&alert.rule_id)
        .bind(&alert.group_key)
        .bind(alert.time_us.saturating_sub(dedup_window_us.max(0)))
        .fetch_optional(&mut *tx)
        .await?;
    let upsert = if let Some(r) = existing {
        let mut row = alert_row(&r)?;
        row.count += alert.findings.max(1);
        row.first_us = row.first_us.min(alert.time_us);
        row.last_us = row.last_us.max(alert.time_us);
        for id in &alert.event_ids {
            if row.event_ids.len() >= ALERT_EVENT_IDS_CAP {
                break;
            }
            if !row.event_ids.contains(id) {
                row.event_ids.push(*id);
            }
        }
        row.updated_us = now;
        sqlx::query(
                "UPDATE alerts SET count = ?, first_us = ?, last_us = ?, event_ids = ?, updated_us = ? WHERE id = ?",
            )
            .bind(row.count)
            .bind(row.first_us)
            .bind(row.last_us)
            .bind(json!(row.event_ids).to_string())
            .bind(row.updated_us)
            .bind(&row.id)
            .execute(&mut *tx)
            .await?;
        AlertUpsert::Merged(row)
    } else {
        let mut event_ids = Vec::new();
        for id in &alert.event_ids {
            if event_ids.len() < ALERT_EVENT_IDS_CAP && !event_ids.contains(id) {
                event_ids.push(*id);
            }
        }
        let row = AlertRow {
            id: uuid::Uuid::now_v7().to_string(),
            rule_id: alert.rule_id.clone(),
            rule_title: alert.rule_title.clone(),
            level: alert.level.clone(),
            tags: alert.tags.clone(),
            group_key: alert.group_key.clone(),
            first_us: alert.time_us,
            last_us: alert.time_us,
            count: alert.findings.max(1),
            event_ids,
            details: alert.details.clone(),
            status: AlertStatus::Open,
            created_us: now,
            updated_us: now,
        };
        sqlx::query(
                "INSERT INTO alerts (id, rule_id, rule_title, level, tags, group_key, first_us, last_us, count, \
                 event_ids, details, status, created_us, updated_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&row.id)
            .bind(&row.rule_id)
            .bind(&row.rule_title)
            .bind(&row.level)
            .bind(json!(row.tags).to_string())
            .bind(&row.group_key)
            .bind(row.first_us)
            .bind(row.last_us)
            .bind(row.count)
            .bind(json!(row.event_ids).to_string())
            .bind(row.details.to_string())
            .bind(row.status.as_str())
            .bind(row.created_us)
            .bind(row.updated_us)
            .execute(&mut *tx)
            .await?;
        AlertUpsert::Created(row)
    };
    Ok(upsert)
}

impl Store {
    /// Stores events in one transaction; returns their ids, in order.
    pub async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<i64>, StoreError> {
        self.store_events(&[], events).await
    }

    /// Stores dead letters and events in one transaction (so a write that failed and is sent again stores
    /// neither twice); returns the events' ids, in order.
    pub async fn store_events(
        &self,
        dead: &[DeadLetter],
        events: &[NewEvent],
    ) -> Result<Vec<i64>, StoreError> {
        if events.is_empty() && dead.is_empty() {
            return Ok(Vec::new());
        }
        let (dead, events) = (dead.to_vec(), events.to_vec());
        self.bulk_write(move |c| {
            Box::pin(async move {
                insert_dead_letters_on(c, &dead).await?;
                insert_events_on(c, &events).await
            })
        })
        .await
    }

    /// The event `id`.
    pub async fn event(&self, id: i64) -> Result<Option<EventRow>, StoreError> {
        sqlx::query("SELECT * FROM events WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool()?)
            .await?
            .as_ref()
            .map(event_row)
            .transpose()
    }

    /// The events of `ids` that exist, in the order of `ids`.
    pub async fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<EventRow>, StoreError> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!("SELECT * FROM events WHERE id IN ({marks})");
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(self.pool()?).await? {
                let row = event_row(&r)?;
                found.insert(row.id, row);
            }
        }
        Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
    }

    /// Searches events, newest first (by time, then id), one page at a time.
    pub async fn search_events(&self, q: &EventQuery) -> Result<EventPage, StoreError> {
        let limit = q.limit.clamp(1, MAX_PAGE);
        let mut sql = String::from("SELECT * FROM events WHERE 1");
        let mut binds = Vec::new();
        if let Some(from) = q.from_us {
            sql.push_str(" AND time_us >= ?");
            binds.push(Bind::Int(from));
        }
        if let Some(to) = q.to_us {
            sql.push_str(" AND time_us < ?");
            binds.push(Bind::Int(to));
        }
        if let Some(cursor) = q.cursor.as_deref() {
            let (t, id) = decode_cursor(cursor)?;
            sql.push_str(" AND (time_us, id) < (?, ?)");
            binds.extend([Bind::Int(t), Bind::Int(id)]);
        }
        if let Some(text) = q.query.as_deref().filter(|t| !t.trim().is_empty()) {
            let filter = query::compile(&query::parse(text)?);
            sql.push_str(" AND ");
            sql.push_str(&filter.text);
            binds.extend(filter.binds);
        }
        sql.push_str(" ORDER BY time_us DESC, id DESC LIMIT ?");
        binds.push(Bind::Int(i64::from(limit) + 1));
        let rows = bind_all(sqlx::query(&sql), binds)
            .fetch_all(self.pool()?)
            .await?;
        let mut events = rows.iter().map(event_row).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if events.len() > limit as usize {
            events.truncate(limit as usize);
            events.last().map(|e| encode_cursor(e.time_us, e.id))
        } else {
            None
        };
        Ok(EventPage {
            events,
            next_cursor,
        })
    }

    /// Deletes events that happened before `time_us` and dead letters received before it, a chunk per transaction
    /// (so writers wait little); returns how many events were deleted.
    pub async fn delete_events_before(&self, time_us: i64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for (table, column) in [("events", "time_us"), ("dead_letters", "received_us")] {
            let sql = format!(
                "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {column} < ? LIMIT {DELETE_CHUNK})"
            );
            loop {
                let statement = sql.clone();
                let n = self
                    .bulk_write(move |c| {
                        Box::pin(async move {
                            Ok(sqlx::query(&statement)
                                .bind(time_us)
                                .execute(&mut *c)
                                .await?
                                .rows_affected())
                        })
                    })
                    .await?;
                if table == "events" {
                    deleted += n;
                }
                if n < DELETE_CHUNK as u64 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(deleted)
    }

    /// Stores records that could not be parsed, in one transaction; returns their ids, in order.
    pub async fn insert_dead_letters(
        &self,
        letters: &[DeadLetter],
    ) -> Result<Vec<i64>, StoreError> {
        let letters = letters.to_vec();
        self.bulk_write(move |c| Box::pin(async move { insert_dead_letters_on(c, &letters).await }))
            .await
    }

    /// Dead letters, newest first: at most `limit` (clamped to 1..=1000), with ids below `before_id` if given.
    pub async fn dead_letters(
        &self,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        sqlx::query("SELECT * FROM dead_letters WHERE id < ? ORDER BY id DESC LIMIT ?")
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(i64::from(limit.clamp(1, MAX_PAGE)))
            .fetch_all(self.pool()?)
            .await?
            .iter()
            .map(dead_letter_row)
            .collect()
    }

    /// How many dead letters are kept.
    pub async fn dead_letter_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters")
            .fetch_one(self.pool()?)
            .await?)
    }

    /// Records a detection: merges it into the latest alert of the same rule and group key that is not closed and
    /// whose last detection is at most `dedup_window_us` before `alert.time_us`, or creates an alert. Atomic: of
    /// concurrent raises, one creates and the others merge.
    pub async fn raise_alert(
        &self,
        alert: &NewAlert,
        dedup_window_us: i64,
    ) -> Result<AlertUpsert, StoreError> {
        // The writer's BEGIN IMMEDIATE takes the write lock before reading, so no two raises both see no alert.
        let alert = alert.clone();
        self.bulk_write(move |c| {
            Box::pin(async move { raise_alert_on(c, &alert, dedup_window_us).await })
        })
        .await
    }

    /// Alerts matching `filter`, newest first (by id).
    pub async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRow>, StoreError> {
        let mut sql = String::from("SELECT * FROM alerts WHERE 1");
        let mut binds = Vec::new();
        if let Some(status) = filter.status {
            sql.push_str(" AND status = ?");
            binds.push(Bind::Text(status.as_str().into()));
        }
        if let Some(rule) = &filter.rule_id {
            sql.push_str(" AND rule_id = ?");
            binds.push(Bind::Text(rule.clone()));
        }
        if let Some(level) = &filter.level {
            sql.push_str(" AND level = ?");
            binds.push(Bind::Text(level.clone()));
        }
        if let Some(before) = &filter.before {
            sql.push_str(" AND id < ?");
            binds.push(Bind::Text(before.clone()));
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        binds.push(Bind::Int(i64::from(filter.limit.clamp(1, MAX_PAGE))));
        bind_all(sqlx::query(&sql), binds)
            .fetch_all(self.pool()?)
            .await?
            .iter()
            .map(alert_row)
            .collect()
    }

    /// The alert `id`.
    pub async fn alert(&self, id: &str) -> Result<Option<AlertRow>, StoreError> {
        sqlx::query("SELECT * FROM alerts WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool()?)
            .await?
            .as_ref()
            .map(alert_row)
            .transpose()
    }

    /// Sets alert `id`'s status; `None` if there is no such alert. A change is audited as `alert.status` by
    /// `actor`, with the former and new status.
    pub async fn set_alert_status(
        &self,
        id: &str,
        status: AlertStatus,
        actor: &str,
    ) -> Result<Option<AlertRow>, StoreError> {
        let (id, actor) = (id.to_owned(), actor.to_owned());
        let changed = self
            .journal()
            .write(move |tx| {
                let Some((from, rule_id)) = tx.row(
                    "SELECT status, rule_id FROM alerts WHERE id = ?",
                    args![&id],
                    |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
                )?
                else {
                    return Ok(None);
                };
                if from == status.as_str() {
                    return Ok(Some(id));
                }
                tx.exec(
                    "UPDATE alerts SET status = ?, updated_us = ? WHERE id = ?",
                    args![status.as_str(), now_us(), id],
                )?;
                let detail = json!({"from": from, "to": status.as_str(), "rule_id": rule_id});
                write::audit(tx, &actor, "alert.status", &id, Some(&detail))?;
                Ok(Some(id))
            })
            .await?;
        match changed {
            Some(id) => self.alert(&id).await,
            None => Ok(None),
        }
    }
}
