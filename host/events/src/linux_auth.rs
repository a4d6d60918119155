//! Linux authentication logs, above all OpenSSH's `sshd` lines (`Failed password for … from … port …`). The
//! failures fail2ban's `sshd` filter counts are `outcome: failure`.

use std::sync::LazyLock;

use regex::Regex;

use crate::common::{ParseError, new_event, parse_ip};
use crate::syslog::{self, Header, apply_header};
use crate::{Event, Outcome};

/// The dataset name of Linux authentication events.
pub const DATASET: &str = "linux.auth";

/// How a rule judges the line.
#[derive(Clone, Copy)]
enum Judge {
    /// Always a failure.
    Failure,
    /// Always a success.
    Success,
    /// Never says.
    Unknown,
    /// A failure when the line ends in `[preauth]` (the connection ended before authentication).
    PreauthFailure,
    /// A failed authentication: a failure, except a public key refused for a valid user (clients offer keys
    /// in turn; fail2ban's normal mode does not count those).
    AuthMethod,
    /// A `Received disconnect`: a failure for codes 3 (auth fail), 14 (no auth methods) and 11 in preauth.
    Disconnect,
}

struct Rule {
    re: Regex,
    kind: &'static str,
    action: &'static str,
    judge: Judge,
}

const RULES: &[(&str, &str, &str, Judge)] = &[
    (
        r"^(?:error: )?PAM: (?:[Aa]uthentication (?:failure|error)|User not known to the underlying authentication module) for (?:illegal user |invalid user )?(?P<user>.*?) from (?P<h>\S+?)(?: via \S+)?\s*$",
        "pam_failure",
        "ssh-auth-failed",
        Judge::Failure,
    ),
    (
        r"^Failed (?P<method>\S+) for (?P<invalid>invalid user |illegal user )?(?P<user>.*?) from (?P<h>\S+)(?: port (?P<port>\d+))?(?: ssh\d?)?(?::.*)?$",
        "failed_auth",
        "ssh-auth-failed",
        Judge::AuthMethod,
    ),
    (
        r"^(?:error: )?ROOT LOGIN REFUSED FROM (?P<h>\S+?)(?: port (?P<port>\d+))?(?: \[preauth\])?\s*$",
        "root_refused",
        "ssh-auth-failed",
        Judge::Failure,
    ),
    (
        r"^(?:[iI](?:llegal|nvalid) user (?P<user>.*?) from (?P<h>\S+?))(?: port (?P<port>\d+))?\s*(?:\[preauth\])?$",
        "invalid_user",
        "ssh-auth-failed",
        Judge::Failure,
    ),
    (
        r"^User (?P<user>.+?) from (?P<h>\S+) not allowed because .*$",
        "user_not_allowed",
        "ssh-auth-failed",
        Judge::Failure,
    ),
    (
        r"^refused connect from \S+ \((?P<h>[^)]+)\)",
        "refused_connect",
        "ssh-connect-refused",
        Judge::Failure,
    ),
    (
        r"^(?:error: )?Received disconnect from (?P<h>\S+?)(?: port (?P<port>\d+))?: ?(?P<code>\d+): .*$",
        "disconnect",
        "ssh-disconnect",
        Judge::Disconnect,
    ),
    (
        r"^(?:error: )?maximum authentication attempts exceeded for (?:invalid user )?(?P<user>.*?) from (?P<h>\S+?)(?: port (?P<port>\d+))?(?: ssh\d)?(?: \[preauth\])?$",
        "max_attempts",
        "ssh-auth-failed",
        Judge::Failure,
    ),
    (
        r"^Disconnecting(?: (?:invalid|authenticating) user (?P<user>.*) (?P<h>\S+) port (?P<port>\d+))?: (?:Too many authentication failures|Change of username or service not allowed).*$",
        "too_many_failures",
        "ssh-auth-failed",
        Judge::Failure,
    ),
    (
        r"^Connection (?:closed|reset) by (?:(?:authenticating|invalid) user (?P<user>.*?) )?(?P<h>[^\s\[]+)(?: port (?P<port>\d+))?\s*(?:\[preauth\])?$",
        "connection_closed",
        "ssh-disconnect",
        Judge::PreauthFailure,
    ),
    (
        r"^Disconnected from (?:(?:authenticating|invalid) user (?P<user>.*?) )?(?P<h>[^\s\[]+)(?: port (?P<port>\d+))?\s*(?:\[preauth\])?$",
        "disconnected",
        "ssh-disconnect",
        Judge::PreauthFailure,
    ),
    (
        r"^Did not receive identification string from (?P<h>\S+?)(?: port (?P<port>\d+))?\s*$",
        "no_identification",
        "ssh-connect-failed",
        Judge::Failure,
    ),
    (
        r"^Bad protocol version identification '.*' from (?P<h>\S+?)(?: port (?P<port>\d+))?\s*$",
        "bad_protocol",
        "ssh-connect-failed",
        Judge::Failure,
    ),
    (
        r"^(?:fatal: )?Unable to negotiate with (?P<h>\S+?)(?: port (?P<port>\d+))?: no matching .*$",
        "negotiation_failed",
        "ssh-connect-failed",
        Judge::Failure,
    ),
    (
        r"^(?:fatal: )?(?:Unable to negotiate a key exchange method|no matching (?:mac|cipher) found).*$",
        "negotiation_failed",
        "ssh-connect-failed",
        Judge::Failure,
    ),
    (
        r"^(?:banner exchange|ssh_dispatch_run_fatal): Connection from (?P<h>\S+?) port (?P<port>\d+): .*$",
        "protocol_error",
        "ssh-connect-failed",
        Judge::Failure,
    ),
    (
        r"^(?:fatal: )?Timeout before authentication for (?:connection from )?(?P<h>[^\s,]+?)(?: port (?P<port>\d+))?(?:[ ,].*)?$",
        "preauth_timeout",
        "ssh-connect-failed",
        Judge::Failure,
    ),
    (
        r"^(?:error: )?kex_exchange_identification: .*$",
        "kex_failed",
        "ssh-connect-failed",
        Judge::Failure,
    ),
    (
        r"^fatal: Read from socket failed: Connection reset by peer.*$",
        "connection_reset",
        "ssh-connect-failed",
        Judge::Failure,
    ),
    (
        r"^Accepted (?P<method>\S+) for (?P<user>.*?) from (?P<h>\S+) port (?P<port>\d+)(?: ssh\d)?(?::.*)?$",
        "accepted",
        "ssh-login",
        Judge::Success,
    ),
    (
        r"^pam_unix\([^:]+:auth\): authentication failure;.*?\bruser=(?P<ruser>\S*)\s+rhost=(?P<h>\S*)(?:\s+user=(?P<user>\S+))?",
        "pam_unix_failure",
        "auth-failed",
        Judge::Failure,
    ),
    (
        r"^pam_unix\([^:]+:session\): session opened for user (?P<user>\S+)",
        "session_opened",
        "session-start",
        Judge::Success,
    ),
    (
        r"^pam_unix\([^:]+:session\): session closed for user (?P<user>\S+)",
        "session_closed",
        "session-end",
        Judge::Success,
    ),
    (
        r"^Connection from (?P<h>\S+?)(?: port (?P<port>\d+)(?: on (?P<dh>\S+) port (?P<dport>\d+))?)?(?: .*)?$",
        "connection",
        "ssh-connect",
        Judge::Unknown,
    ),
];

static COMPILED: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    RULES
        .iter()
        .filter_map(|(re, kind, action, judge)| {
            Regex::new(re).ok().map(|re| Rule {
                re,
                kind,
                action,
                judge: *judge,
            })
        })
        .collect()
});

static SOLARIS_TAG: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^\[ID \d+ [\w.]+\] ").ok());

/// Parses a syslog line from `sshd` (or another auth program); lines without a syslog header are errors.
pub fn parse(line: &str, received_us: i64) -> Result<Event, ParseError> {
    if line.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let (header, msg) =
        syslog::split(line, received_us).ok_or_else(|| ParseError::unrecognised(line))?;
    Ok(from_syslog(&header, &msg, line, received_us))
}

/// Builds the event of an auth message whose syslog header is already split.
pub(crate) fn from_syslog(header: &Header, msg: &str, raw: &str, received_us: i64) -> Event {
    let program = header.program.as_deref().unwrap_or("").to_ascii_lowercase();
    let service = if program.starts_with("sshd") {
        "sshd"
    } else {
        "auth"
    };
    let mut ev = new_event(DATASET, "linux", Some(service), received_us, raw);
    apply_header(&mut ev, header, msg);
    let body = SOLARIS_TAG
        .as_ref()
        .map_or(msg, |re| re.find(msg).map_or(msg, |m| &msg[m.end()..]))
        .trim_end();
    ev.outcome = Some(Outcome::Unknown);
    if let Some((rule, caps)) = COMPILED
        .iter()
        .find_map(|r| r.re.captures(body).map(|c| (r, c)))
    {
        ev.set("sshd.event", rule.kind);
        ev.action = Some(rule.action.to_string());
        let get = |k: &str| caps.name(k).map(|m| m.as_str().to_string());
        // PAM names the account as `user=`, or only as the remote user `ruser=`.
        if let Some(user) = get("user").or_else(|| get("ruser").filter(|u| !u.is_empty())) {
            ev.set("sshd.user", user.clone());
            if !user.is_empty() {
                ev.user = Some(user);
            }
        }
        if let Some(method) = get("method") {
            ev.set("sshd.auth_method", method);
        }
        if let Some(h) = get("h").filter(|h| !h.is_empty()) {
            match parse_ip(&h) {
                Some(ip) => ev.source_ip = Some(ip),
                None => ev.set("sshd.host", h),
            }
        }
        ev.source_port = get("port").and_then(|p| p.parse().ok());
        ev.destination_ip = get("dh").and_then(|h| parse_ip(&h));
        ev.destination_port = get("dport").and_then(|p| p.parse().ok());
        let preauth = body.ends_with("[preauth]");
        let failure = match rule.judge {
            Judge::Failure => Some(true),
            Judge::Success => Some(false),
            Judge::Unknown => None,
            Judge::PreauthFailure => preauth.then_some(true),
            Judge::AuthMethod => {
                let key_for_valid_user =
                    get("method").as_deref() == Some("publickey") && get("invalid").is_none();
                (!key_for_valid_user).then_some(true)
            }
            Judge::Disconnect => match get("code").as_deref() {
                Some("3" | "14") => Some(true),
                Some("11") if preauth => Some(true),
                _ => None,
            },
        };
        ev.outcome = Some(match failure {
            Some(true) => Outcome::Failure,
            Some(false) => Outcome::Success,
            None => Outcome::Unknown,
        });
    }
    ev.sync_ecs_fields();
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const Y2005: i64 = 1_104_537_600_000_000;

    #[test]
    fn all_rules_compile() {
        assert_eq!(COMPILED.len(), RULES.len());
        assert!(SOLARIS_TAG.is_some());
    }

    #[test]
    fn failed_password() {
        let line = "Feb 25 14:34:10 belka sshd[31602]: Failed password for invalid user ROOT from 194.117.26.69 port 50273 ssh2";
        let e = parse(line, Y2005).expect("parses");
        assert_eq!(e.dataset, "linux.auth");
        assert_eq!(e.logsource.service.as_deref(), Some("sshd"));
        assert_eq!(e.outcome, Some(Outcome::Failure));
        assert_eq!(e.source_ip, "194.117.26.69".parse().ok());
        assert_eq!(e.source_port, Some(50273));
        assert_eq!(e.user.as_deref(), Some("ROOT"));
        assert_eq!(e.host.as_deref(), Some("belka"));
        assert_eq!(e.fields["@timestamp"], json!("2005-02-25T14:34:10Z"));
        assert_eq!(e.fields["event.outcome"], json!("failure"));
        assert_eq!(e.raw, line);
    }

    #[test]
    fn accepted_and_hostname() {
        let e = parse("Mar  7 18:53:20 bar sshd[1556]: Accepted password for rda from 192.0.2.113 port 52100 ssh2", 0)
            .expect("parses");
        assert_eq!(e.outcome, Some(Outcome::Success));
        assert_eq!(e.action.as_deref(), Some("ssh-login"));
        let e = parse("May 29 20:56:52 imago sshd[28732]: error: PAM: Authentication failure for stefanor from example.com", 0)
            .expect("parses");
        assert_eq!(e.source_ip, None);
        assert_eq!(e.fields["sshd.host"], json!("example.com"));
        assert_eq!(e.outcome, Some(Outcome::Failure));
    }

    #[test]
    fn not_recognised_is_still_an_event() {
        let e = parse("Nov 28 09:16:03 srv sshd[32307]: Postponed publickey for git from 192.0.2.1 port 57904 ssh2 [preauth]", 0)
            .expect("parses");
        assert_eq!(e.outcome, Some(Outcome::Unknown));
        assert!(parse("no header here", 0).is_err());
    }
}
