//! A component's imports against its manifest: capability = import.
//!
//! A component can only call what it imports, so the host refuses a component that imports an interface its
//! manifest does not ask for: a plugin cannot ask for nothing and then reach the network.

use crate::Capabilities;

/// An import the manifest does not account for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the component imports `{import}` but {reason}")]
pub struct ImportProblem {
    /// The interface, as the component names it (`qila:plugin/http@0.1.0`).
    pub import: String,
    /// What the manifest lacks.
    pub reason: String,
}

/// Checks every import of a component against the capabilities of its manifest.
///
/// - `wasi:*` interfaces are always allowed: the host gives them no environment, files, sockets or arguments;
/// - `qila:plugin/types`, `qila:plugin/detection` (types only: no function a component could call) and
///   `qila:plugin/log` are always allowed;
/// - `qila:plugin/http` needs at least one `egress` pattern;
/// - `qila:plugin/secrets` (which reveals values) needs at least one `reveal` name;
/// - `qila:plugin/kv` needs the `kv` pack; any other `qila:<pack>/<interface>` needs the pack `<pack>.<interface>`;
/// - anything else is refused.
pub fn check_imports<S: AsRef<str>>(
    caps: &Capabilities,
    imports: &[S],
) -> Result<(), Vec<ImportProblem>> {
    let problems: Vec<ImportProblem> = imports
        .iter()
        .filter_map(|import| {
            let import = import.as_ref();
            let bare = import.split('@').next().unwrap_or(import);
            let reason = match bare {
                b if b.starts_with("wasi:") => None,
                "qila:plugin/types" | "qila:plugin/detection" | "qila:plugin/log" => None,
                "qila:plugin/http" => caps
                    .egress
                    .is_empty()
                    .then(|| "its manifest asks for no egress (capabilities.egress)".to_string()),
                "qila:plugin/secrets" => caps.reveal.is_empty().then(|| {
                    "its manifest asks to reveal no secret (capabilities.reveal)".to_string()
                }),
                "qila:plugin/kv" => (!caps.packs.iter().any(|p| p == "kv"))
                    .then(|| "its manifest does not ask for the `kv` pack (capabilities.packs)".to_string()),
                other => match other.strip_prefix("qila:").and_then(|r| r.split_once('/')) {
                    Some((pack, iface)) if pack != "plugin" => {
                        let name = format!("{pack}.{iface}");
                        (!caps.packs.contains(&name)).then(|| {
                            format!("its manifest does not ask for the `{name}` pack (capabilities.packs)")
                        })
                    }
                    _ => Some("it is not an interface of the Qila plugin contract".to_string()),
                },
            };
            reason.map(|reason| ImportProblem {
                import: import.to_string(),
                reason,
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_must_be_declared() {
        let pure = Capabilities::default();
        let imports = [
            "wasi:io/streams@0.2.3",
            "qila:plugin/types@0.1.0",
            "qila:plugin/detection@0.1.0",
            "qila:plugin/log@0.1.0",
        ];
        assert!(check_imports(&pure, &imports).is_ok());
        let sneaky = [
            "qila:plugin/log@0.1.0",
            "qila:plugin/http@0.1.0",
            "qila:plugin/kv@0.1.0",
        ];
        let problems = check_imports(&pure, &sneaky).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert!(
            problems[0].to_string().contains("capabilities.egress"),
            "{}",
            problems[0]
        );
        let declared = Capabilities {
            egress: vec!["api.example.com".into()],
            packs: vec!["kv".into(), "intel.read".into()],
            ..Capabilities::default()
        };
        assert!(check_imports(&declared, &sneaky).is_ok());
        assert!(check_imports(&declared, &["qila:intel/read@0.1.0"]).is_ok());
        let e = check_imports(&declared, &["qila:cases/write@0.1.0", "evil:net/raw"]).unwrap_err();
        assert!(e[0].reason.contains("cases.write") && e[1].reason.contains("not an interface"));
        let e = check_imports(&declared, &["qila:plugin/secrets@0.1.0"]).unwrap_err();
        assert!(e[0].reason.contains("capabilities.reveal"));
    }
}
