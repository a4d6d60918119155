//! One way to run a statement on either database: arguments ([`Arg`]) and row values ([`Val`]) that both
//! drivers take and give, rows read by column index or name ([`RowRef`]), and the statement text, written once
//! with `?` placeholders, turned into PostgreSQL's `$1, $2, ...` (and cached as a prepared statement) when it
//! runs there. A statement whose text must differ between the databases asks [`Dialect`] which it is.
//!
//! Nothing here leaves the store: the engine sees commands and rows, never a connection.

use std::collections::HashMap;

use postgres::types::{FromSql, IsNull, ToSql, Type};

use crate::error::StoreError;

/// Which database a statement runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded SQLite database of a data directory.
    Sqlite,
    /// A PostgreSQL server, shared by several workers.
    Postgres,
}

/// An argument of a statement, borrowed from the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Arg<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// What can be an argument of a statement.
pub(crate) trait ToArg {
    fn to_arg(&self) -> Arg<'_>;
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl ToArg for $t {
            fn to_arg(&self) -> Arg<'_> {
                Arg::Int(i64::from(*self))
            }
        }
    )*};
}
int_arg!(i64, i32, u32, u16, u8, bool);

impl ToArg for f64 {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Real(*self)
    }
}
impl ToArg for str {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Text(self)
    }
}
impl ToArg for String {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Text(self)
    }
}
impl ToArg for [u8] {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Blob(self)
    }
}
impl ToArg for Vec<u8> {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Blob(self)
    }
}
impl<T: ToArg + ?Sized> ToArg for &T {
    fn to_arg(&self) -> Arg<'_> {
        (**self).to_arg()
    }
}
impl<T: ToArg> ToArg for Option<T> {
    fn to_arg(&self) -> Arg<'_> {
        match self {
            Some(v) => v.to_arg(),
            None => Arg::Null,
        }
    }
}

/// The arguments of a statement: `args![a, b, c]` borrows each.
macro_rules! args {
    () => { &[] as &[$crate::sql::Arg<'_>] };
    ($($x:expr),+ $(,)?) => { &[$($crate::sql::ToArg::to_arg(&$x)),+] as &[$crate::sql::Arg<'_>] };
}
pub(crate) use args;

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Arg::Null => ValueRef::Null,
            Arg::Int(v) => ValueRef::Integer(v),
            Arg::Real(v) => ValueRef::Real(v),
            Arg::Text(s) => ValueRef::Text(s.as_bytes()),
            Arg::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// A value's PostgreSQL type did not fit the column's.
#[derive(Debug, thiserror::Error)]
#[error("a {value} cannot be stored in a column of type {column}")]
struct Mismatch {
    value: &'static str,
    column: String,
}

fn mismatch(value: &'static str, ty: &Type) -> Box<dyn std::error::Error + Sync + Send> {
    Box::new(Mismatch {
        value,
        column: ty.name().to_owned(),
    })
}

/// An argument takes the type PostgreSQL inferred for its placeholder: an integer fills `bigint`, `integer`,
/// `smallint`, `boolean` (0 is false) or `double precision`; a text fills `text`, `json` or `jsonb`; bytes fill
/// `bytea`. So one statement text binds the same arguments on both databases.
impl ToSql for Arg<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use bytes::BufMut;
        match *self {
            Arg::Null => return Ok(IsNull::Yes),
            Arg::Int(v) => match *ty {
                Type::INT8 => out.put_i64(v),
                Type::INT4 => out.put_i32(i32::try_from(v)?),
                Type::INT2 => out.put_i16(i16::try_from(v)?),
                Type::BOOL => out.put_u8(u8::from(v != 0)),
                Type::FLOAT8 => out.put_f64(v as f64),
                _ => return Err(mismatch("integer", ty)),
            },
            Arg::Real(v) => match *ty {
                Type::FLOAT8 => out.put_f64(v),
                Type::FLOAT4 => out.put_f32(v as f32),
                _ => return Err(mismatch("number", ty)),
            },
            Arg::Text(s) => match *ty {
                // PostgreSQL's text cannot hold NUL (SQLite's can): it is stored as U+FFFD. JSON never holds one
                // raw (serde_json escapes it as \u0000).
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
                    if s.contains('\0') =>
                {
                    out.put_slice(s.replace('\0', "\u{fffd}").as_bytes())
                }
                Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
                | Type::JSON
                | Type::UNKNOWN => out.put_slice(s.as_bytes()),
                Type::JSONB => {
                    out.put_u8(1);
                    out.put_slice(s.as_bytes());
                }
                _ => return Err(mismatch("text", ty)),
            },
            Arg::Blob(b) => match *ty {
                Type::BYTEA => out.put_slice(b),
                _ => return Err(mismatch("byte string", ty)),
            },
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "NULL",
            Self::Int(_) => "an integer",
            Self::Real(_) => "a number",
            Self::Text(_) => "a text",
            Self::Blob(_) => "bytes",
        }
    }
}

impl<'a> FromSql<'a> for Val {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => Val::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Val::Int(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => Val::Int(i64::from(i16::from_sql(ty, raw)?)),
            Type::BOOL => Val::Int(i64::from(bool::from_sql(ty, raw)?)),
            Type::FLOAT8 => Val::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Val::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::NUMERIC => Val::Real(numeric(raw)?),
            Type::BYTEA => Val::Blob(raw.to_vec()),
            Type::JSONB => match raw.split_first() {
                Some((1, text)) => Val::Text(std::str::from_utf8(text)?.to_owned()),
                _ => return Err("jsonb in an unknown format".into()),
            },
            _ => Val::Text(std::str::from_utf8(raw)?.to_owned()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Val::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A `numeric` in PostgreSQL's binary format, as a float (what `SUM` of bigints answers).
fn numeric(raw: &[u8]) -> Result<f64, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> Result<i16, Box<dyn std::error::Error + Sync + Send>> {
        let b = raw.get(i * 2..i * 2 + 2).ok_or("numeric too short")?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    };
    let digits = word(0)?;
    let weight = word(1)?;
    let sign = word(2)? as u16;
    let mut value = 0f64;
    for i in 0..digits.max(0) as usize {
        let d = f64::from(word(4 + i)?);
        value += d * 10_000f64.powi(i32::from(weight) - i as i32);
    }
    Ok(if sign == 0x4000 { -value } else { value })
}

impl rusqlite::types::FromSql for Val {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        use rusqlite::types::ValueRef;
        Ok(match value {
            ValueRef::Null => Val::Null,
            ValueRef::Integer(v) => Val::Int(v),
            ValueRef::Real(v) => Val::Real(v),
            ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Val::Blob(b.to_vec()),
        })
    }
}

/// What a column can be read as.
pub(crate) trait FromVal: Sized {
    fn from_val(v: Val) -> Result<Self, Val>;
}

impl FromVal for i64 {
    fn from_val(v: Val) -> Result<Self, Val> {
        match v {
            Val::Int(i) => Ok(i),
            v => Err(v),
        }
    }
}
impl FromVal for bool {
    fn from_val(v: Val) -> Result<Self, Val> {
        match v {
            Val::Int(i) => Ok(i != 0),
            v => Err(v),
        }
    }
}
impl FromVal for f64 {
    fn from_val(v: Val) -> Result<Self, Val> {
        match v {
            Val::Real(f) => Ok(f),
            Val::Int(i) => Ok(i as f64),
            v => Err(v),
        }
    }
}
impl FromVal for String {
    fn from_val(v: Val) -> Result<Self, Val> {
        match v {
            Val::Text(s) => Ok(s),
            v => Err(v),
        }
    }
}
impl FromVal for Vec<u8> {
    fn from_val(v: Val) -> Result<Self, Val> {
        match v {
            Val::Blob(b) => Ok(b),
            Val::Text(s) => Ok(s.into_bytes()),
            v => Err(v),
        }
    }
}
impl<T: FromVal> FromVal for Option<T> {
    fn from_val(v: Val) -> Result<Self, Val> {
        match v {
            Val::Null => Ok(None),
            v => T::from_val(v).map(Some),
        }
    }
}

/// Which column of a row: its index or its name (both drivers look either up).
pub(crate) trait ColumnIndex:
    rusqlite::RowIndex + postgres::row::RowIndex + std::fmt::Display + Copy
{
}
impl<I: rusqlite::RowIndex + postgres::row::RowIndex + std::fmt::Display + Copy> ColumnIndex for I {}

/// A row of either database, read by column index or name.
pub(crate) enum RowRef<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl RowRef<'_> {
    /// Column `col`, as `T`.
    pub(crate) fn get<T: FromVal>(&self, col: impl ColumnIndex) -> Result<T, StoreError> {
        let val: Val = match self {
            Self::Sqlite(row) => row.get(col)?,
            Self::Postgres(row) => row.try_get(col).map_err(StoreError::from)?,
        };
        T::from_val(val).map_err(|v| StoreError::Corrupt {
            table: "row",
            message: format!("column {col} is {}, not of the type expected", v.kind()),
        })
    }

    /// An alias of [`RowRef::get`] with the name sqlx gave it, for reads ported from it.
    pub(crate) fn try_get<T: FromVal>(&self, col: impl ColumnIndex) -> Result<T, StoreError> {
        self.get(col)
    }
}

/// `sql` with its `?` placeholders numbered for PostgreSQL (`$1`, `$2`, ...); a `?` inside a quoted string or
/// identifier is left alone.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (None, '?') => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    // `?NNN`: SQLite's numbered placeholder is PostgreSQL's `$NNN`.
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                } else {
                    n += 1;
                    out.push_str(&n.to_string());
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// A PostgreSQL connection with its prepared statements.
///
/// The synchronous client runs a small runtime of its own, which must not be dropped on an async thread: the
/// connection is closed on a thread of its own when dropped.
pub(crate) struct PgConn {
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = std::thread::Builder::new()
                .name("qila-pg-close".into())
                .spawn(move || drop(client));
        }
    }
}

impl PgConn {
    /// Connects to `url` (on a blocking thread: the client waits for the server).
    pub(crate) fn connect(url: &str) -> Result<Self, StoreError> {
        let client = postgres::Client::connect(url, postgres::NoTls)?;
        Ok(Self {
            client: Some(client),
            statements: HashMap::new(),
        })
    }

    fn client(&mut self) -> Result<&mut postgres::Client, StoreError> {
        self.client.as_mut().ok_or(StoreError::WriterGone)
    }

    fn prepared(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let statement = self.client()?.prepare(&numbered(sql))?;
        if self.statements.len() >= 256 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn params<'a>(args: &'a [Arg<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
        args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
    }

    pub(crate) fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<usize, StoreError> {
        let statement = self.prepared(sql)?;
        let n = self.client()?.execute(&statement, &Self::params(args))?;
        Ok(n as usize)
    }

    pub(crate) fn query(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Vec<postgres::Row>, StoreError> {
        let statement = self.prepared(sql)?;
        Ok(self.client()?.query(&statement, &Self::params(args))?)
    }

    /// Runs `sql` (no arguments, possibly several statements) as it is.
    pub(crate) fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.client()?.batch_execute(sql)?)
    }
}

/// A connection to either database.
pub(crate) enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<PgConn>),
}

impl Conn {
    /// Runs `sql` as it is (transaction control: `BEGIN`, `SAVEPOINT x`, `COMMIT`, ...).
    pub(crate) fn control(&mut self, sql: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(c) => {
                c.prepare_cached(sql)?.execute([])?;
                Ok(())
            }
            Self::Postgres(c) => c.batch(sql),
        }
    }

    /// A handle to run statements on, inside the transaction the caller began.
    pub(crate) fn tx(&mut self) -> Tx<'_> {
        match self {
            Self::Sqlite(c) => Tx(TxOn::Sqlite(c)),
            Self::Postgres(c) => Tx(TxOn::Postgres(std::cell::RefCell::new(c))),
        }
    }
}

/// Statements run on a connection inside a transaction. Opaque outside the store.
pub struct Tx<'c>(TxOn<'c>);

enum TxOn<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres(std::cell::RefCell<&'c mut Box<PgConn>>),
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("dialect", &self.dialect())
            .finish_non_exhaustive()
    }
}

impl Tx<'_> {
    /// Which database this is.
    pub(crate) fn dialect(&self) -> Dialect {
        match &self.0 {
            TxOn::Sqlite(_) => Dialect::Sqlite,
            TxOn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs `sql` (prepared once per connection) with `args`; how many rows it changed.
    pub(crate) fn exec(&self, sql: &str, args: &[Arg<'_>]) -> Result<usize, StoreError> {
        match &self.0 {
            TxOn::Sqlite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(args))?),
            TxOn::Postgres(c) => c.borrow_mut().exec(sql, args),
        }
    }

    /// The first row `sql` returns, mapped by `f`.
    pub(crate) fn row<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        f: impl FnOnce(&RowRef<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        match &self.0 {
            TxOn::Sqlite(c) => {
                let mut statement = c.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(args))?;
                match rows.next()? {
                    Some(row) => Ok(Some(f(&RowRef::Sqlite(row))?)),
                    None => Ok(None),
                }
            }
            TxOn::Postgres(c) => {
                let rows = c.borrow_mut().query(sql, args)?;
                rows.first().map(|r| f(&RowRef::Postgres(r))).transpose()
            }
        }
    }

    /// Every row `sql` returns, mapped by `f`.
    pub(crate) fn rows<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        mut f: impl FnMut(&RowRef<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        match &self.0 {
            TxOn::Sqlite(c) => {
                let mut statement = c.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(args))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(f(&RowRef::Sqlite(row))?);
                }
                Ok(out)
            }
            TxOn::Postgres(c) => {
                let rows = c.borrow_mut().query(sql, args)?;
                rows.iter().map(|r| f(&RowRef::Postgres(r))).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            numbered("SELECT a FROM t WHERE b = ? AND c = '?' AND d IN (?, ?)"),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND d IN ($2, $3)"
        );
        assert_eq!(numbered("SELECT \"a?\" FROM t"), "SELECT \"a?\" FROM t");
        assert_eq!(numbered("VALUES (?1, ?12, ?1)"), "VALUES ($1, $12, $1)");
    }

    #[test]
    fn numeric_decodes() {
        // 12345678 = 1234 * 10^4 + 5678: weight 1, two digits.
        let raw = [0, 2, 0, 1, 0, 0, 0, 0, 0x04, 0xd2, 0x16, 0x2e];
        assert_eq!(numeric(&raw).unwrap(), 12_345_678.0);
    }
}
