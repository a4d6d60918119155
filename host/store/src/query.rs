//! The event search language (see `docs/search.md`): parsed into an [`Expr`] and compiled into a SQL `WHERE`
//! fragment over the `events` table with its bind values ([`Sql`]). Pure: no database access here.
//!
//! ```text
//! query      := or
//! or         := and ("or" and)*
//! and        := unary (["and"] unary)*          -- adjacent terms are joined by "and"
//! unary      := "not" unary | "(" query ")" | comparison | term
//! comparison := FIELD OP VALUE                  -- OP: = != > >= < <=
//! term       := WORD | "quoted"                 -- full text: the raw record contains it
//! ```

use std::fmt;
use std::net::IpAddr;

use crate::record::now_us;

/// The longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 4096;
/// How deep `not` and parentheses may nest.
pub const MAX_DEPTH: usize = 64;
/// How many comparisons and search terms a query may hold.
pub const MAX_TERMS: usize = 256;

/// Why a query was refused: where (a character offset from 0) and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// The character offset in the query where the problem is.
    pub position: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.position, self.message)
    }
}

impl std::error::Error for QueryError {}

/// A column of the `events` table that the language names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// `time`, `@timestamp`.
    Time,
    /// `dataset`, `event.dataset`.
    Dataset,
    /// `host`, `host.name`.
    Host,
    /// `source.ip`, `src`, `src_ip`.
    SourceIp,
    /// `source.port`, `src_port`.
    SourcePort,
    /// `destination.ip`, `dst`, `dst_ip`.
    DestinationIp,
    /// `destination.port`, `dst_port`.
    DestinationPort,
    /// `user`, `user.name`.
    User,
    /// `process`, `process.name`.
    Process,
    /// `action`, `event.action`.
    Action,
    /// `outcome`, `event.outcome`.
    Outcome,
    /// `raw`, `message`.
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Time,
    Text,
    Ip,
    Port,
}

impl Column {
    /// The column a field name (case-insensitive) or one of its aliases stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "time" | "@timestamp" => Self::Time,
            "dataset" | "event.dataset" => Self::Dataset,
            "host" | "host.name" => Self::Host,
            "source.ip" | "src" | "src_ip" => Self::SourceIp,
            "source.port" | "src_port" => Self::SourcePort,
            "destination.ip" | "dst" | "dst_ip" => Self::DestinationIp,
            "destination.port" | "dst_port" => Self::DestinationPort,
            "user" | "user.name" => Self::User,
            "process" | "process.name" => Self::Process,
            "action" | "event.action" => Self::Action,
            "outcome" | "event.outcome" => Self::Outcome,
            "raw" | "message" => Self::Raw,
            _ => return None,
        })
    }

    /// The SQL column.
    pub fn sql(self) -> &'static str {
        match self {
            Self::Time => "time_us",
            Self::Dataset => "dataset",
            Self::Host => "host",
            Self::SourceIp => "source_ip_bin",
            Self::SourcePort => "source_port",
            Self::DestinationIp => "destination_ip_bin",
            Self::DestinationPort => "destination_port",
            Self::User => "user",
            Self::Process => "process",
            Self::Action => "action",
            Self::Outcome => "outcome",
            Self::Raw => "raw",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Self::Time => Kind::Time,
            Self::SourceIp | Self::DestinationIp => Kind::Ip,
            Self::SourcePort | Self::DestinationPort => Kind::Port,
            _ => Kind::Text,
        }
    }
}

/// What a comparison compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A column of its own.
    Column(Column),
    /// A key of the event's `fields` JSON object (case-sensitive).
    Json(String),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
        }
    }
}

/// A comparison's value, checked against its field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Unix microseconds (time fields; relative times are resolved at parse time).
    Time(i64),
    /// A port.
    Port(u16),
    /// An address range in 16-byte form (IPv4 as IPv4-mapped IPv6), both ends included; equal for one address.
    Ip {
        /// The first address.
        low: [u8; 16],
        /// The last address.
        high: [u8; 16],
    },
    /// Text, where `*` and `?` are wildcards.
    Text(String),
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Every part matches.
    And(Vec<Expr>),
    /// Some part matches.
    Or(Vec<Expr>),
    /// The part does not match (an event without the field matches `not field = x`).
    Not(Box<Expr>),
    /// The raw record contains this text (case-insensitive).
    Contains(String),
    /// `field op value`.
    Compare {
        /// The field.
        field: Field,
        /// The operator.
        op: Op,
        /// The value.
        value: Value,
    },
}

/// Parses a query, resolving relative times against the current time.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    parse_at(query, now_us())
}

/// Parses a query, resolving relative times (`-15m`, `now`) against `now_us`.
pub fn parse_at(query: &str, now_us: i64) -> Result<Expr, QueryError> {
    let chars: Vec<char> = query.chars().collect();
    if chars.len() > MAX_QUERY_CHARS {
        return Err(QueryError {
            position: MAX_QUERY_CHARS,
            message: format!("the query is longer than {MAX_QUERY_CHARS} characters; shorten it"),
        });
    }
    // SQLite's LIKE and NOCASE comparisons read text up to its first NUL, so a term holding one would be cut
    // there (`%\0%` is `%`: every event). No value with a NUL reaches the database: the query is refused.
    if let Some(at) = chars.iter().position(|&c| c == '\0') {
        return Err(QueryError {
            position: at,
            message:
                "the query holds a NUL character (U+0000), which cannot be searched for; remove it"
                    .into(),
        });
    }
    let mut p = Parser {
        chars,
        pos: 0,
        depth: 0,
        terms: 0,
        now_us,
    };
    p.skip_ws();
    if p.at_end() {
        return Err(p.error(
            0,
            "the query is empty; type a search term or a comparison like user = alice",
        ));
    }
    let expr = p.parse_or()?;
    p.skip_ws();
    match p.peek() {
        None => Ok(expr),
        Some(')') => Err(p.error(
            p.pos,
            "unexpected ')' without a matching '('; remove it or add a '(' before",
        )),
        Some(c) => Err(p.error(p.pos, format!("unexpected '{c}'"))),
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    terms: usize,
    now_us: i64,
}

fn is_op_char(c: char) -> bool {
    matches!(c, '=' | '!' | '<' | '>')
}

fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '"')
}

impl Parser {
    fn error(&self, position: usize, message: impl Into<String>) -> QueryError {
        QueryError {
            position,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Whether the keyword (case-insensitive) stands at the current position as a whole word.
    fn at_keyword(&self, keyword: &str) -> bool {
        let n = keyword.len();
        let Some(word) = self.chars.get(self.pos..self.pos + n) else {
            return false;
        };
        word.iter()
            .zip(keyword.chars())
            .all(|(a, b)| a.eq_ignore_ascii_case(&b))
            && self.chars.get(self.pos + n).is_none_or(|&c| ends_word(c))
    }

    fn enter(&mut self, at: usize) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(
                at,
                format!(
                    "'not' and parentheses nest deeper than {MAX_DEPTH} levels; simplify the query"
                ),
            ));
        }
        Ok(())
    }

    fn count_term(&mut self, at: usize) -> Result<(), QueryError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(self.error(
                at,
                format!(
                    "the query has more than {MAX_TERMS} search terms and comparisons; split it"
                ),
            ));
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Expr, QueryError> {
        let mut parts = vec![self.parse_and(None)?];
        loop {
            self.skip_ws();
            if !self.at_keyword("or") {
                break;
            }
            self.pos += 2;
            parts.push(self.parse_and(Some("or"))?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Expr::Or(parts)
        })
    }

    fn parse_and(&mut self, after: Option<&str>) -> Result<Expr, QueryError> {
        let mut parts = vec![self.parse_unary(after)?];
        loop {
            self.skip_ws();
            if self.at_end() || self.peek() == Some(')') || self.at_keyword("or") {
                break;
            }
            let after = if self.at_keyword("and") {
                self.pos += 3;
                Some("and")
            } else {
                None
            };
            parts.push(self.parse_unary(after)?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Expr::And(parts)
        })
    }

    fn parse_unary(&mut self, after: Option<&str>) -> Result<Expr, QueryError> {
        self.skip_ws();
        let start = self.pos;
        let after_text = after.map(|a| format!(" after '{a}'")).unwrap_or_default();
        let Some(c) = self.peek() else {
            return Err(self.error(
                start,
                format!(
                    "expected a search term, a comparison or '('{after_text}, but the query ends"
                ),
            ));
        };
        if self.at_keyword("not") {
            self.pos += 3;
            self.enter(start)?;
            let inner = self.parse_unary(Some("not"))?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if self.at_keyword("and") || self.at_keyword("or") {
            let word: String = self.chars[start..]
                .iter()
                .take_while(|c| !ends_word(**c))
                .collect();
            return Err(self.error(
                start,
                format!(
                    "expected a search term{after_text}, found '{word}': 'and' and 'or' need a search term on \
                     each side (quote the word to search for it)"
                ),
            ));
        }
        match c {
            '(' => {
                self.enter(start)?;
                self.pos += 1;
                let inner = self.parse_or_in_parens(start)?;
                self.depth -= 1;
                Ok(inner)
            }
            ')' => Err(self.error(
                start,
                format!("expected a search term, a comparison or '('{after_text}, found ')'"),
            )),
            '"' => {
                let text = self.quoted()?;
                self.after_name(start, text)
            }
            c if is_op_char(c) => Err(self.error(
                start,
                format!("expected a field name before '{c}' (like user = alice), or quote the text to search for it"),
            )),
            _ => {
                let word: String = self.chars[start..]
                    .iter()
                    .take_while(|c| !ends_word(**c) && !is_op_char(**c))
                    .collect();
                self.pos += word.chars().count();
                self.after_name(start, word)
            }
        }
    }

    fn parse_or_in_parens(&mut self, open: usize) -> Result<Expr, QueryError> {
        self.skip_ws();
        if self.peek() == Some(')') {
            return Err(self.error(
                self.pos,
                "empty parentheses: put a search term or a comparison inside",
            ));
        }
        let inner = self.parse_or()?;
        self.skip_ws();
        if self.peek() == Some(')') {
            self.pos += 1;
            Ok(inner)
        } else {
            Err(self.error(self.pos, format!("expected ')' to close the '(' at {open}")))
        }
    }

    /// After a word or a quoted string: a comparison if an operator follows, else a search term.
    fn after_name(&mut self, start: usize, name: String) -> Result<Expr, QueryError> {
        self.count_term(start)?;
        let save = self.pos;
        self.skip_ws();
        let op_at = self.pos;
        let op = match (self.peek(), self.chars.get(self.pos + 1).copied()) {
            (Some('='), _) => Some((Op::Eq, 1)),
            (Some('!'), Some('=')) => Some((Op::Ne, 2)),
            (Some('>'), Some('=')) => Some((Op::Ge, 2)),
            (Some('<'), Some('=')) => Some((Op::Le, 2)),
            (Some('>'), _) => Some((Op::Gt, 1)),
            (Some('<'), _) => Some((Op::Lt, 1)),
            (Some(c), _) if is_op_char(c) => {
                return Err(self.error(
                    op_at,
                    format!("unknown operator '{c}': use =, !=, >, >=, < or <= (quote text that holds '{c}')"),
                ));
            }
            _ => None,
        };
        let Some((op, len)) = op else {
            self.pos = save;
            if name.is_empty() {
                return Err(self.error(
                    start,
                    "empty search term: remove the \"\" or put text inside",
                ));
            }
            return Ok(Expr::Contains(name));
        };
        self.pos += len;
        self.skip_ws();
        let value_at = self.pos;
        let value = match self.peek() {
            None | Some('(') | Some(')') => {
                return Err(self.error(
                    value_at,
                    format!("expected a value after '{}'", op.as_str()),
                ));
            }
            Some('"') => self.quoted()?,
            Some(_) => {
                let word: String = self.chars[value_at..]
                    .iter()
                    .take_while(|c| !ends_word(**c))
                    .collect();
                self.pos += word.chars().count();
                word
            }
        };
        let field = resolve_field(&name).map_err(|m| self.error(start, m))?;
        let value = self.resolve_value(&field, &name, op, op_at, value, value_at)?;
        Ok(Expr::Compare { field, op, value })
    }

    /// A quoted string at the current position (on its opening quote), with `\"` and `\\` escapes.
    fn quoted(&mut self) -> Result<String, QueryError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(self.error(open, "unterminated quoted string: add a closing '\"'"));
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => match self.chars.get(self.pos + 1) {
                    Some(&c @ ('"' | '\\')) => {
                        out.push(c);
                        self.pos += 2;
                    }
                    Some(c) => {
                        return Err(self.error(
                            self.pos,
                            format!("unknown escape '\\{c}' in a quoted string: only \\\" and \\\\ are escapes (write \\\\ for a backslash)"),
                        ));
                    }
                    None => {
                        return Err(
                            self.error(open, "unterminated quoted string: add a closing '\"'")
                        );
                    }
                },
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn resolve_value(
        &self,
        field: &Field,
        name: &str,
        op: Op,
        op_at: usize,
        value: String,
        at: usize,
    ) -> Result<Value, QueryError> {
        let kind = match field {
            Field::Column(c) => c.kind(),
            Field::Json(_) => Kind::Text,
        };
        match kind {
            Kind::Text => Ok(Value::Text(value)),
            Kind::Port => value.parse::<u16>().map(Value::Port).map_err(|_| {
                self.error(at, format!("'{value}' is not a port number for '{name}': use a number from 0 to 65535"))
            }),
            Kind::Time => parse_time(&value, self.now_us).map(Value::Time).ok_or_else(|| {
                self.error(
                    at,
                    format!(
                        "'{value}' is not a time for '{name}': use RFC 3339 (2024-05-01T13:00:00Z), a date \
                         (2024-05-01), a time relative to now (-30s, -15m, -2h, -7d, -1w) or now"
                    ),
                )
            }),
            Kind::Ip => {
                if !matches!(op, Op::Eq | Op::Ne) {
                    return Err(self.error(
                        op_at,
                        format!(
                            "'{}' does not apply to the IP field '{name}': use = or != with an address or a CIDR \
                             range like 10.0.0.0/8",
                            op.as_str()
                        ),
                    ));
                }
                let (low, high) = parse_ip_range(&value).ok_or_else(|| {
                    self.error(
                        at,
                        format!(
                            "'{value}' is not an IP address or CIDR range for '{name}': write 10.1.2.3, \
                             10.0.0.0/8, 2001:db8::1 or 2001:db8::/32"
                        ),
                    )
                })?;
                Ok(Value::Ip { low, high })
            }
        }
    }
}

fn resolve_field(name: &str) -> Result<Field, String> {
    if let Some(column) = Column::from_name(name) {
        return Ok(Field::Column(column));
    }
    if name.is_empty() {
        return Err("empty field name: write the field's name before the operator".into());
    }
    if name.contains('"') || name.chars().any(char::is_control) {
        return Err(format!(
            "the field name {name:?} cannot hold '\"' or control characters; such fields cannot be searched by name"
        ));
    }
    Ok(Field::Json(name.to_owned()))
}

/// A time value: RFC 3339, a date (midnight UTC), `now`, or `-<n><s|m|h|d|w>` before `now_us`.
pub fn parse_time(value: &str, now_us: i64) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    if value.eq_ignore_ascii_case("now") {
        return Some(now_us);
    }
    if let Some(rest) = value.strip_prefix('-') {
        let unit = rest.chars().last()?;
        let digits = &rest[..rest.len() - unit.len_utf8()];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: i64 = digits.parse().ok()?;
        let unit_us: i64 = match unit.to_ascii_lowercase() {
            's' => 1_000_000,
            'm' => 60_000_000,
            'h' => 3_600_000_000,
            'd' => 86_400_000_000,
            'w' => 7 * 86_400_000_000,
            _ => return None,
        };
        return now_us.checked_sub(n.checked_mul(unit_us)?);
    }
    if let Ok(t) = time::OffsetDateTime::parse(value, &Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1000).ok();
    }
    let mut parts = value.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    let date = time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() * 1_000_000)
}

/// Why one end of a search's time range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundError {
    /// Both the time and the microseconds were given.
    #[error("give `{name}` or `{name}_us`, not both")]
    Both {
        /// `from` or `to`.
        name: &'static str,
    },
    /// The time does not read as one.
    #[error(
        "`{name}` must be an RFC 3339 time, a date, `now` or a relative time like `-1h`, not `{text}` \
         (or give `{name}_us` in unix microseconds)"
    )]
    NotATime {
        /// `from` or `to`.
        name: &'static str,
        /// What was given.
        text: String,
    },
}

/// One end (`name`: `from` or `to`) of a search's time range, given as a time ([`parse_time`], against
/// `now_us`) or in unix microseconds (`from_us`, like the `_us` fields of events and alerts): either, or neither.
pub fn time_bound(
    name: &'static str,
    text: Option<&str>,
    us: Option<i64>,
    now_us: i64,
) -> Result<Option<i64>, BoundError> {
    match (text, us) {
        (Some(_), Some(_)) => Err(BoundError::Both { name }),
        (Some(text), None) => {
            parse_time(text, now_us)
                .map(Some)
                .ok_or_else(|| BoundError::NotATime {
                    name,
                    text: text.to_owned(),
                })
        }
        (None, us) => Ok(us),
    }
}

/// The 16-byte form of an address: IPv6 as is, IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
pub fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// An address (`10.1.2.3`) or CIDR range (`10.0.0.0/8`, `2001:db8::/32`) as its first and last 16-byte address.
pub fn parse_ip_range(value: &str) -> Option<([u8; 16], [u8; 16])> {
    let (addr, prefix) = match value.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (value, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let bits = match (ip, prefix) {
        (_, None) => 128,
        (IpAddr::V4(_), Some(p)) => {
            let p: u32 = p.parse().ok().filter(|p| *p <= 32)?;
            96 + p
        }
        (IpAddr::V6(_), Some(p)) => p.parse().ok().filter(|p| *p <= 128)?,
    };
    let n = u128::from_be_bytes(ip_bytes(ip));
    let host_mask = if bits == 128 { 0 } else { u128::MAX >> bits };
    Some((
        (n & !host_mask).to_be_bytes(),
        (n | host_mask).to_be_bytes(),
    ))
}

/// A value bound to a placeholder of [`Sql::text`].
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    /// An integer.
    Int(i64),
    /// A real number.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// A SQL boolean expression over the `events` table with the placeholders of its dialect (`?`, or `$n` in
/// PostgreSQL), and their values in order. It never evaluates to NULL, so `NOT` of it is exact.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sql {
    /// The expression.
    pub text: String,
    /// The values of its placeholders, in order.
    pub binds: Vec<Bind>,
}

/// The SQL dialect a query compiles to: the store's two databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// SQLite (the embedded store): `?` placeholders, `COLLATE NOCASE`, `json_extract` over a JSON text column.
    Sqlite,
    /// PostgreSQL: `$n` placeholders, `lower(... COLLATE "C")` and `ILIKE`, `->`/`->>` over a `jsonb` column
    /// (`migrations/postgres`).
    Postgres,
}

/// Compiles a parsed query into a SQLite expression (the same as [`compile_for`] with [`Dialect::Sqlite`]).
pub fn compile(expr: &Expr) -> Sql {
    compile_for(expr, Dialect::Sqlite, 0)
}

/// Compiles a parsed query into an expression of `dialect` over the `events` table. `bound` is how many values
/// the statement binds before this fragment: PostgreSQL's placeholders are numbered from `$<bound + 1>` (SQLite's
/// `?` are positional, and ignore it). Both dialects select the same events (see "Dialects" in `docs/search.md`).
pub fn compile_for(expr: &Expr, dialect: Dialect, bound: usize) -> Sql {
    let mut sql = Sql::default();
    match dialect {
        Dialect::Sqlite => emit(expr, &mut sql),
        Dialect::Postgres => pg::emit(
            expr,
            &mut pg::Out {
                sql: &mut sql,
                bound,
            },
        ),
    }
    sql
}

/// Escapes LIKE's own wildcards (`%`, `_`, and the escape `\`), turning `*` and `?` into LIKE's when `wildcards`.
pub fn like_pattern(text: &str, wildcards: bool) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        match c {
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '*' if wildcards => out.push('%'),
            '?' if wildcards => out.push('_'),
            c => out.push(c),
        }
    }
    out
}

fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?'])
}

fn emit(expr: &Expr, sql: &mut Sql) {
    match expr {
        Expr::And(parts) | Expr::Or(parts) => {
            let joiner = if matches!(expr, Expr::And(_)) {
                " AND "
            } else {
                " OR "
            };
            sql.text.push('(');
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    sql.text.push_str(joiner);
                }
                emit(part, sql);
            }
            sql.text.push(')');
        }
        Expr::Not(inner) => {
            sql.text.push_str("(NOT ");
            emit(inner, sql);
            sql.text.push(')');
        }
        Expr::Contains(text) => {
            sql.text.push_str("(raw LIKE ? ESCAPE '\\')");
            sql.binds
                .push(Bind::Text(format!("%{}%", like_pattern(text, false))));
        }
        Expr::Compare { field, op, value } => emit_compare(field, *op, value, sql),
    }
}

fn emit_compare(field: &Field, op: Op, value: &Value, sql: &mut Sql) {
    let o = op.as_str();
    match (field, value) {
        (Field::Column(c), Value::Time(t)) => {
            sql.text.push_str(&format!("({} {o} ?)", c.sql()));
            sql.binds.push(Bind::Int(*t));
        }
        (Field::Column(c), Value::Port(p)) => {
            let col = c.sql();
            sql.text
                .push_str(&format!("({col} IS NOT NULL AND {col} {o} ?)"));
            sql.binds.push(Bind::Int(i64::from(*p)));
        }
        (Field::Column(c), Value::Ip { low, high }) => {
            let col = c.sql();
            let not = if op == Op::Ne { "NOT " } else { "" };
            if low == high {
                sql.text
                    .push_str(&format!("({col} IS NOT NULL AND {not}({col} = ?))"));
                sql.binds.push(Bind::Blob(low.to_vec()));
            } else {
                sql.text.push_str(&format!(
                    "({col} IS NOT NULL AND {not}({col} BETWEEN ? AND ?))"
                ));
                sql.binds.push(Bind::Blob(low.to_vec()));
                sql.binds.push(Bind::Blob(high.to_vec()));
            }
        }
        (Field::Column(c), Value::Text(text)) => {
            let col = c.sql();
            emit_text(col, &[], op, text, sql);
        }
        (Field::Json(key), Value::Text(text)) => {
            let path = json_path(key);
            emit_json(&path, op, text, sql);
        }
        // The parser gives JSON fields text values only.
        (Field::Json(key), other) => {
            let text = match other {
                Value::Time(t) => t.to_string(),
                Value::Port(p) => p.to_string(),
                _ => String::new(),
            };
            emit_json(&json_path(key), op, &text, sql);
        }
    }
}

/// The JSON path of a top-level key, quoted (keys hold no '"': the parser refuses them).
fn json_path(key: &str) -> String {
    format!("$.\"{key}\"")
}

/// A text comparison on `expr`, whose own placeholders take `prefix` (repeated each time `expr` appears).
fn emit_text(expr: &str, prefix: &[Bind], op: Op, text: &str, sql: &mut Sql) {
    let push_expr = |sql: &mut Sql| {
        sql.text.push_str(expr);
        sql.binds.extend_from_slice(prefix);
    };
    sql.text.push('(');
    push_expr(sql);
    sql.text.push_str(" IS NOT NULL AND ");
    push_expr(sql);
    match op {
        Op::Eq | Op::Ne if has_wildcard(text) => {
            let not = if op == Op::Ne { " NOT" } else { "" };
            sql.text.push_str(&format!("{not} LIKE ? ESCAPE '\\')"));
            sql.binds.push(Bind::Text(like_pattern(text, true)));
        }
        _ => {
            sql.text
                .push_str(&format!(" {} ? COLLATE NOCASE)", op.as_str()));
            sql.binds.push(Bind::Text(text.to_owned()));
        }
    }
}

fn number(text: &str) -> Option<Bind> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Bind::Int(i));
    }
    text.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Bind::Real)
}

fn emit_json(path: &str, op: Op, text: &str, sql: &mut Sql) {
    let path_bind = Bind::Text(path.to_owned());
    let j = "json_extract(fields, ?)";
    let num = number(text);
    match (op, num) {
        (_, _) if matches!(op, Op::Eq | Op::Ne) && has_wildcard(text) => {
            emit_text(j, std::slice::from_ref(&path_bind), op, text, sql);
        }
        (Op::Eq | Op::Ne, Some(n)) => {
            // A JSON number equals the number, a JSON string its text.
            let not = if op == Op::Ne { "NOT " } else { "" };
            sql.text.push_str(&format!(
                "({j} IS NOT NULL AND {not}({j} = ? OR {j} = ? COLLATE NOCASE))"
            ));
            sql.binds.extend([
                path_bind.clone(),
                path_bind.clone(),
                n,
                path_bind,
                Bind::Text(text.to_owned()),
            ]);
        }
        (Op::Eq | Op::Ne, None)
            if text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false") =>
        {
            // JSON true/false, or the string.
            let not = if op == Op::Ne { "NOT " } else { "" };
            sql.text.push_str(&format!(
                "({j} IS NOT NULL AND {not}(json_type(fields, ?) = ? OR {j} = ? COLLATE NOCASE))"
            ));
            sql.binds.extend([
                path_bind.clone(),
                path_bind.clone(),
                Bind::Text(text.to_ascii_lowercase()),
                path_bind,
                Bind::Text(text.to_owned()),
            ]);
        }
        (Op::Eq | Op::Ne, None) => emit_text(j, std::slice::from_ref(&path_bind), op, text, sql),
        (_, Some(n)) => {
            // Numerically: JSON numbers, and strings that read as numbers.
            sql.text.push_str(&format!(
                "IFNULL((CASE WHEN typeof({j}) IN ('integer', 'real') THEN {j} \
                 WHEN typeof({j}) = 'text' AND trim({j}) GLOB '[-+.0-9]*' THEN CAST(trim({j}) AS REAL) END) {} ?, 0)",
                op.as_str()
            ));
            sql.binds.extend(std::iter::repeat_n(path_bind, 5));
            sql.binds.push(n);
        }
        (_, None) => {
            sql.text.push_str(&format!(
                "(typeof({j}) = 'text' AND {j} {} ? COLLATE NOCASE)",
                op.as_str()
            ));
            sql.binds
                .extend([path_bind.clone(), path_bind, Bind::Text(text.to_owned())]);
        }
    }
}

/// The PostgreSQL dialect. Each construct mirrors the SQLite one above, including SQLite's typing of
/// `json_extract` (a JSON boolean is the integer 1 or 0, an object or array its JSON text), so that both select
/// the same events; where they cannot agree is listed in `docs/search.md` ("Dialects").
mod pg {
    use super::{Bind, Column, Expr, Field, Op, Sql, Value, has_wildcard, like_pattern, number};

    /// A fragment being written, and how many values come before it in its statement.
    pub(super) struct Out<'a> {
        pub(super) sql: &'a mut Sql,
        pub(super) bound: usize,
    }

    impl Out<'_> {
        /// Adds a value; returns its placeholder.
        fn param(&mut self, bind: Bind) -> String {
            self.sql.binds.push(bind);
            format!("${}", self.bound + self.sql.binds.len())
        }

        fn push(&mut self, text: &str) {
            self.sql.text.push_str(text);
        }
    }

    /// `user` is a reserved word in PostgreSQL: the column is quoted.
    fn column(c: Column) -> &'static str {
        match c {
            Column::User => "\"user\"",
            c => c.sql(),
        }
    }

    pub(super) fn emit(expr: &Expr, out: &mut Out<'_>) {
        match expr {
            Expr::And(parts) | Expr::Or(parts) => {
                let joiner = if matches!(expr, Expr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                out.push("(");
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        out.push(joiner);
                    }
                    emit(part, out);
                }
                out.push(")");
            }
            Expr::Not(inner) => {
                out.push("(NOT ");
                emit(inner, out);
                out.push(")");
            }
            Expr::Contains(text) => {
                let p = out.param(Bind::Text(format!("%{}%", like_pattern(text, false))));
                out.push(&format!("(raw COLLATE \"C\" ILIKE {p} ESCAPE '\\')"));
            }
            Expr::Compare { field, op, value } => compare(field, *op, value, out),
        }
    }

    fn compare(field: &Field, op: Op, value: &Value, out: &mut Out<'_>) {
        let o = op.as_str();
        match (field, value) {
            (Field::Column(c), Value::Time(t)) => {
                let p = out.param(Bind::Int(*t));
                out.push(&format!("({} {o} {p})", column(*c)));
            }
            (Field::Column(c), Value::Port(port)) => {
                let col = column(*c);
                let p = out.param(Bind::Int(i64::from(*port)));
                out.push(&format!("({col} IS NOT NULL AND {col} {o} {p})"));
            }
            (Field::Column(c), Value::Ip { low, high }) => {
                let col = column(*c);
                let not = if op == Op::Ne { "NOT " } else { "" };
                let lo = out.param(Bind::Blob(low.to_vec()));
                if low == high {
                    out.push(&format!("({col} IS NOT NULL AND {not}({col} = {lo}))"));
                } else {
                    let hi = out.param(Bind::Blob(high.to_vec()));
                    out.push(&format!(
                        "({col} IS NOT NULL AND {not}({col} BETWEEN {lo} AND {hi}))"
                    ));
                }
            }
            (Field::Column(c), Value::Text(text)) => {
                let col = column(*c);
                if matches!(op, Op::Eq | Op::Ne) && has_wildcard(text) {
                    let not = if op == Op::Ne { " NOT" } else { "" };
                    let p = out.param(Bind::Text(like_pattern(text, true)));
                    out.push(&format!(
                        "({col} IS NOT NULL AND {col} COLLATE \"C\"{not} ILIKE {p} ESCAPE '\\')"
                    ));
                } else {
                    let p = out.param(Bind::Text(text.clone()));
                    out.push(&format!(
                        "({col} IS NOT NULL AND lower({col} COLLATE \"C\") {o} lower({p} COLLATE \"C\"))"
                    ));
                }
            }
            (Field::Json(key), value) => {
                // The parser gives JSON fields text values only.
                let text = match value {
                    Value::Text(t) => t.clone(),
                    Value::Time(t) => t.to_string(),
                    Value::Port(p) => p.to_string(),
                    Value::Ip { .. } => String::new(),
                };
                json(key, op, &text, out);
            }
        }
    }

    /// The number a bound value stands for: an integer as it is, a real by its shortest decimal (so that it
    /// compares exactly with `numeric`).
    fn number_param(n: Bind, out: &mut Out<'_>) -> String {
        match n {
            Bind::Real(f) => {
                let p = out.param(Bind::Text(f.to_string()));
                format!("CAST({p} AS numeric)")
            }
            other => out.param(other),
        }
    }

    fn json(key: &str, op: Op, text: &str, out: &mut Out<'_>) {
        let k = out.param(Bind::Text(key.to_owned()));
        let ty = format!("jsonb_typeof(fields -> {k})");
        let t = format!("(fields ->> {k})");
        // `json_extract(...) IS NOT NULL`: present and not JSON null.
        let present = format!("COALESCE({ty} <> 'null', false)");
        // What SQLite sees as TEXT: strings, and objects and arrays as their JSON text.
        let text_value = format!("(CASE WHEN {ty} IN ('string', 'object', 'array') THEN {t} END)");
        // What SQLite's LIKE sees: also numbers as their digits and booleans as 1 or 0.
        let like_value = format!(
            "(CASE WHEN {ty} = 'boolean' THEN (CASE WHEN {t} = 'true' THEN '1' ELSE '0' END) ELSE {t} END)"
        );
        // What SQLite sees as a number: numbers, and booleans as 1 or 0.
        let number_value = format!(
            "(CASE {ty} WHEN 'number' THEN CAST({t} AS numeric) WHEN 'boolean' THEN (CASE WHEN {t} = 'true' THEN 1 ELSE 0 END) END)"
        );
        let num = number(text);
        let o = op.as_str();
        let not = if op == Op::Ne { "NOT " } else { "" };
        match (op, num) {
            (Op::Eq | Op::Ne, _) if has_wildcard(text) => {
                let p = out.param(Bind::Text(like_pattern(text, true)));
                let not = if op == Op::Ne { " NOT" } else { "" };
                out.push(&format!(
                    "({present} AND {like_value} COLLATE \"C\"{not} ILIKE {p} ESCAPE '\\')"
                ));
            }
            (Op::Eq | Op::Ne, Some(n)) => {
                // A JSON number equals the number, a JSON string its text.
                let n = number_param(n, out);
                let p = out.param(Bind::Text(text.to_owned()));
                out.push(&format!(
                    "({present} AND {not}(COALESCE({number_value} = {n}, false) OR \
                     COALESCE(lower({text_value} COLLATE \"C\") = lower({p} COLLATE \"C\"), false)))"
                ));
            }
            (Op::Eq | Op::Ne, None)
                if text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false") =>
            {
                // JSON true/false, or the string.
                let b = out.param(Bind::Text(text.to_ascii_lowercase()));
                let p = out.param(Bind::Text(text.to_owned()));
                out.push(&format!(
                    "({present} AND {not}(COALESCE({ty} = 'boolean' AND {t} = {b}, false) OR \
                     COALESCE(lower({text_value} COLLATE \"C\") = lower({p} COLLATE \"C\"), false)))"
                ));
            }
            (Op::Eq | Op::Ne, None) => {
                let p = out.param(Bind::Text(text.to_owned()));
                out.push(&format!(
                    "({present} AND {not}COALESCE(lower({text_value} COLLATE \"C\") = lower({p} COLLATE \"C\"), false))"
                ));
            }
            (_, Some(n)) => {
                // Numerically: JSON numbers (booleans as 1 or 0), and strings that start like a number, read as
                // SQLite's CAST(... AS REAL) reads them (the longest prefix that is a number, else 0). The
                // exponent is cut at four digits, where numeric's range ends; far beyond any bound value.
                let n = number_param(n, out);
                out.push(&format!(
                    "COALESCE((CASE {ty} WHEN 'number' THEN CAST({t} AS numeric) \
                     WHEN 'boolean' THEN (CASE WHEN {t} = 'true' THEN 1 ELSE 0 END) \
                     WHEN 'string' THEN (CASE WHEN trim({t}) ~ '^[-+.0-9]' THEN CAST(COALESCE(substring(trim({t}) \
                     FROM '^[-+]?(?:[0-9]+\\.?[0-9]*|\\.[0-9]+)(?:[eE][-+]?[0-9]{{1,4}})?'), '0') AS numeric) END) \
                     END) {o} {n}, false)"
                ));
            }
            (_, None) => {
                let p = out.param(Bind::Text(text.to_owned()));
                out.push(&format!(
                    "COALESCE(lower({text_value} COLLATE \"C\") {o} lower({p} COLLATE \"C\"), false)"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000;

    fn err(q: &str) -> String {
        parse_at(q, NOW).expect_err(q).to_string()
    }

    #[test]
    fn precedence_and_implicit_and() {
        let e = parse_at("a b or c and not d", NOW).unwrap();
        assert_eq!(
            e,
            Expr::Or(vec![
                Expr::And(vec![Expr::Contains("a".into()), Expr::Contains("b".into())]),
                Expr::And(vec![
                    Expr::Contains("c".into()),
                    Expr::Not(Box::new(Expr::Contains("d".into())))
                ]),
            ])
        );
        let e = parse_at("NOT (a OR b) AND user=alice", NOW).unwrap();
        assert!(matches!(&e, Expr::And(p) if p.len() == 2));
    }

    #[test]
    fn fields_and_values() {
        let e = parse_at("src = 10.0.0.0/8", NOW).unwrap();
        let Expr::Compare {
            field,
            value: Value::Ip { low, high },
            ..
        } = e
        else {
            panic!()
        };
        assert_eq!(field, Field::Column(Column::SourceIp));
        assert_eq!(low[10..], [0xff, 0xff, 10, 0, 0, 0]);
        assert_eq!(high[10..], [0xff, 0xff, 10, 255, 255, 255]);
        assert_eq!(
            parse_at("time >= -15m", NOW).unwrap(),
            Expr::Compare {
                field: Field::Column(Column::Time),
                op: Op::Ge,
                value: Value::Time(NOW - 15 * 60_000_000)
            }
        );
        assert_eq!(
            parse_at("@timestamp < 2023-11-14T22:13:20Z", NOW).unwrap(),
            Expr::Compare {
                field: Field::Column(Column::Time),
                op: Op::Lt,
                value: Value::Time(NOW)
            }
        );
        assert_eq!(parse_time("1970-01-02", 0), Some(86_400_000_000));
        assert_eq!(
            parse_at(r#""Event ID"="a\"b\\c""#, NOW).unwrap(),
            Expr::Compare {
                field: Field::Json("Event ID".into()),
                op: Op::Eq,
                value: Value::Text(r#"a"b\c"#.into())
            }
        );
        assert_eq!(
            parse_at("CommandLine=a=b", NOW).unwrap(),
            Expr::Compare {
                field: Field::Json("CommandLine".into()),
                op: Op::Eq,
                value: Value::Text("a=b".into())
            }
        );
    }

    #[test]
    fn errors_say_where_and_what() {
        let cases = [
            ("user =", "at 6: expected a value after '='"),
            ("user = (x)", "at 7: expected a value after '='"),
            ("", "at 0: the query is empty"),
            (
                "a and",
                "at 5: expected a search term, a comparison or '(' after 'and', but the query ends",
            ),
            (
                "a or or b",
                "at 5: expected a search term after 'or', found 'or'",
            ),
            ("and a", "at 0: expected a search term, found 'and'"),
            (
                "not",
                "at 3: expected a search term, a comparison or '(' after 'not', but the query ends",
            ),
            ("(a or b", "at 7: expected ')' to close the '(' at 0"),
            ("a)", "at 1: unexpected ')' without a matching '('"),
            ("()", "at 1: empty parentheses"),
            ("= 5", "at 0: expected a field name before '='"),
            ("user ! alice", "at 5: unknown operator '!'"),
            (
                "\"abc",
                "at 0: unterminated quoted string: add a closing '\"'",
            ),
            (
                r#"x = "a\nb""#,
                "at 6: unknown escape '\\n' in a quoted string",
            ),
            (
                "src = 10.0.0.300",
                "at 6: '10.0.0.300' is not an IP address or CIDR range for 'src'",
            ),
            (
                "dst = 10.0.0.0/33",
                "at 6: '10.0.0.0/33' is not an IP address or CIDR range",
            ),
            (
                "source.ip = 2001:db8::/129",
                "at 12: '2001:db8::/129' is not an IP address",
            ),
            (
                "src > 10.0.0.1",
                "at 4: '>' does not apply to the IP field 'src'",
            ),
            (
                "source.port = http",
                "at 14: 'http' is not a port number for 'source.port'",
            ),
            (
                "destination.port = 70000",
                "at 19: '70000' is not a port number",
            ),
            (
                "time > yesterday",
                "at 7: 'yesterday' is not a time for 'time': use RFC 3339",
            ),
            ("time > -15x", "at 7: '-15x' is not a time"),
            ("\"a\\\"b\" = 1", "at 0: the field name"),
            ("a \"\"", "at 2: empty search term"),
        ];
        for (q, want) in cases {
            let got = err(q);
            assert!(got.starts_with(want), "{q:?}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn limits() {
        let deep = format!("{}a{}", "(".repeat(65), ")".repeat(65));
        assert!(err(&deep).contains("nest deeper than 64"), "{}", err(&deep));
        assert!(parse_at(&format!("{}a{}", "(".repeat(64), ")".repeat(64)), NOW).is_ok());
        let nots = format!("{}a", "not ".repeat(100));
        assert!(err(&nots).contains("nest deeper"));
        let long = "a ".repeat(3000);
        assert!(err(&long).starts_with("at 4096: the query is longer than 4096 characters"));
        let many = "a ".repeat(300);
        assert!(err(&many).contains("more than 256 search terms"));
        // A hostile nesting far beyond the limit is refused, not a stack overflow.
        assert!(err(&"(".repeat(4000)).contains("nest deeper"));
    }

    #[test]
    fn a_nul_is_refused_where_it_is() {
        for (q, at) in [
            ("\0", 0),
            ("abc\0", 3),
            ("\"a\0\"", 2),
            ("x = \"*\0*\"", 6),
            ("\"k\0\" = 1", 2),
        ] {
            let got = err(q);
            assert_eq!(
                got,
                format!(
                    "at {at}: the query holds a NUL character (U+0000), which cannot be searched for; remove it"
                ),
                "{q:?}"
            );
        }
        // Other control characters are text like any other.
        assert_eq!(
            parse_at("a\u{1}b", NOW).unwrap(),
            Expr::Contains("a\u{1}b".into())
        );
    }

    #[test]
    fn a_time_bound_is_a_time_or_microseconds_not_both() {
        assert_eq!(time_bound("from", None, None, NOW), Ok(None));
        assert_eq!(time_bound("from", None, Some(5), NOW), Ok(Some(5)));
        assert_eq!(
            time_bound("to", Some("-1s"), None, NOW),
            Ok(Some(NOW - 1_000_000))
        );
        assert_eq!(
            time_bound("from", Some("now"), Some(5), NOW),
            Err(BoundError::Both { name: "from" })
        );
        let e = time_bound("to", Some("soon"), None, NOW).unwrap_err();
        assert!(
            e.to_string().starts_with("`to` must be an RFC 3339 time"),
            "{e}"
        );
    }

    #[test]
    fn compiles_with_binds_only() {
        let e = parse_at(
            "user = \"x' OR 1=1 --\" and CommandLine = \"*who_ami*\"",
            NOW,
        )
        .unwrap();
        let sql = compile(&e);
        assert!(!sql.text.contains("OR 1=1"));
        assert_eq!(sql.text.matches('?').count(), sql.binds.len());
        assert!(sql.binds.contains(&Bind::Text("%who\\_ami%".into())));
        assert_eq!(like_pattern("a%b_c\\d*e?", true), "a\\%b\\_c\\\\d%e_");
    }
}
