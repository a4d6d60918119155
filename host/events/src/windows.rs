//! Windows event log records as JSON, in the shape `evtx_dump -o json` and SigmaHQ's regression samples use
//! (`{"Event":{"System":{…},"EventData":{…}}}`, attributes under `#attributes`), or with attributes separated
//! (`Provider_attributes`, as Chainsaw prints them).

use serde_json::{Map, Value};

use crate::common::{
    ParseError, json_kind, meaningful, new_event, parse_datetime_us, parse_ip, value_text,
};
use crate::{Event, Outcome};

/// The dataset name of Windows events.
pub const DATASET: &str = "windows";

/// Whether a JSON value looks like a Windows event (`Event.System` is an object).
pub fn is_windows(value: &Value) -> bool {
    value
        .get("Event")
        .and_then(|e| e.get("System"))
        .is_some_and(Value::is_object)
}

/// Sigma service of a Windows channel (SigmaHQ's `tests/logsource.json` names), if Sigma has one.
pub fn service_of_channel(channel: &str) -> Option<&'static str> {
    const EXACT: &[(&str, &str)] = &[
        ("Security", "security"),
        ("System", "system"),
        ("Application", "application"),
        ("Microsoft-Windows-Sysmon/Operational", "sysmon"),
        ("Windows PowerShell", "powershell-classic"),
        ("Microsoft-Windows-PowerShell/Operational", "powershell"),
        ("PowerShellCore/Operational", "powershell"),
        (
            "Microsoft-Windows-TaskScheduler/Operational",
            "taskscheduler",
        ),
        (
            "Microsoft-Windows-Windows Defender/Operational",
            "windefend",
        ),
        (
            "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational",
            "terminalservices-localsessionmanager",
        ),
        ("Microsoft-Windows-WMI-Activity/Operational", "wmi"),
        ("DNS Server", "dns-server"),
        (
            "Microsoft-Windows-DNS-Server/Analytical",
            "dns-server-analytic",
        ),
        (
            "Microsoft-Windows-DNS Client Events/Operational",
            "dns-client",
        ),
        (
            "Microsoft-Windows-DriverFrameworks-UserMode/Operational",
            "driver-framework",
        ),
        ("Microsoft-Windows-Bits-Client/Operational", "bits-client"),
        (
            "Microsoft-Windows-CodeIntegrity/Operational",
            "codeintegrity-operational",
        ),
        (
            "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",
            "firewall-as",
        ),
        ("Microsoft-Windows-NTLM/Operational", "ntlm"),
        ("Microsoft-Windows-SmbClient/Security", "smbclient-security"),
        (
            "Microsoft-Windows-SmbClient/Connectivity",
            "smbclient-connectivity",
        ),
        (
            "Microsoft-Windows-SMBServer/Connectivity",
            "smbserver-connectivity",
        ),
        ("MSExchange Management", "msexchange-management"),
        ("Microsoft-Windows-PrintService/Admin", "printservice-admin"),
        (
            "Microsoft-Windows-PrintService/Operational",
            "printservice-operational",
        ),
        ("OpenSSH/Operational", "openssh"),
        ("Microsoft-Windows-LDAP-Client/Debug", "ldap"),
        (
            "Microsoft-Windows-Diagnosis-Scripted/Operational",
            "diagnosis-scripted",
        ),
        ("Microsoft-Windows-Shell-Core/Operational", "shell-core"),
        (
            "Microsoft-Windows-AppXDeploymentServer/Operational",
            "appxdeployment-server",
        ),
        (
            "Microsoft-Windows-AppxPackaging/Operational",
            "appxpackaging-om",
        ),
        ("Microsoft-Windows-CAPI2/Operational", "capi2"),
        (
            "Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational",
            "certificateservicesclient-lifecycle-system",
        ),
        (
            "Microsoft-Windows-AppModel-Runtime/Admin",
            "appmodel-runtime",
        ),
        ("Microsoft-Windows-LSA/Operational", "lsa-server"),
        ("Microsoft-Windows-VHDMP-Operational", "vhdmp"),
        (
            "Microsoft-Windows-BitLocker/BitLocker Management",
            "bitlocker",
        ),
        ("Microsoft-ServiceBus-Client", "microsoft-servicebus-client"),
        ("Microsoft-Windows-IIS-Logging/Logs", "iis"),
        (
            "Microsoft-IIS-Configuration/Operational",
            "iis-configuration",
        ),
    ];
    if let Some((_, s)) = EXACT.iter().find(|(c, _)| c.eq_ignore_ascii_case(channel)) {
        return Some(s);
    }
    let lower = channel.to_ascii_lowercase();
    if lower.starts_with("microsoft-windows-applocker/") {
        return Some("applocker");
    }
    if lower.starts_with("microsoft-windows-security-mitigations") {
        return Some("security-mitigations");
    }
    if let Some(rest) = lower.strip_prefix("microsoft-windows-terminalservices-") {
        // Sigma names only LocalSessionManager; keep the others' component name in the same style.
        return match rest.split('/').next() {
            Some("localsessionmanager") => Some("terminalservices-localsessionmanager"),
            Some("remoteconnectionmanager") => Some("terminalservices-remoteconnectionmanager"),
            _ => None,
        };
    }
    None
}

/// Sigma categories of an event by channel service and event ID.
pub fn categories(service: Option<&str>, event_id: i64) -> Vec<&'static str> {
    match (service, event_id) {
        (Some("sysmon"), id) => match id {
            1 => vec!["process_creation"],
            2 => vec!["file_change"],
            3 => vec!["network_connection"],
            5 => vec!["process_termination"],
            6 => vec!["driver_load"],
            7 => vec!["image_load"],
            8 => vec!["create_remote_thread"],
            9 => vec!["raw_access_thread"],
            10 => vec!["process_access"],
            11 => vec!["file_event"],
            12 => vec!["registry_add", "registry_delete", "registry_event"],
            13 => vec!["registry_set", "registry_event"],
            14 => vec!["registry_rename", "registry_event"],
            15 => vec!["create_stream_hash"],
            17 | 18 => vec!["pipe_created"],
            19..=21 => vec!["wmi_event"],
            22 => vec!["dns_query"],
            23 => vec!["file_delete"],
            24 => vec!["clipboard_change"],
            25 => vec!["process_tampering"],
            26 => vec!["file_delete_detected"],
            29 => vec!["file_executable_detected"],
            _ => vec![],
        },
        (Some("security"), 4688) => vec!["process_creation"],
        (Some("powershell"), 4104) => vec!["ps_script"],
        (Some("powershell"), 4103) => vec!["ps_module"],
        (Some("powershell-classic"), 400) => vec!["ps_classic_start"],
        _ => vec![],
    }
}

/// Parses a Windows event (`value` must hold `Event.System.EventID`). `raw` is kept as the record's text.
pub fn parse_value(value: &Value, raw: &str, received_us: i64) -> Result<Event, ParseError> {
    let root = value.as_object().ok_or(ParseError::NotAnObject {
        found: json_kind(value),
    })?;
    let event = root
        .get("Event")
        .and_then(Value::as_object)
        .ok_or(ParseError::MissingField("Event"))?;
    let system = event
        .get("System")
        .and_then(Value::as_object)
        .ok_or(ParseError::MissingField("Event.System"))?;

    let mut fields = Map::new();
    flatten_system(system, &mut fields);
    let event_id = match fields.get("EventID") {
        None => return Err(ParseError::MissingField("Event.System.EventID")),
        Some(Value::Number(n)) => n.as_i64(),
        Some(other) => value_text(other).and_then(|t| t.trim().parse::<i64>().ok()),
    }
    .ok_or_else(|| ParseError::InvalidField {
        field: "Event.System.EventID".into(),
        reason: "not an integer".into(),
    })?;
    fields.insert("EventID".into(), Value::from(event_id));

    if let Some(data) = event.get("EventData") {
        flatten_data(data, &mut fields);
    }
    if let Some(Value::Object(user_data)) = event.get("UserData") {
        for (k, inner) in user_data {
            if k == "#attributes" || k.ends_with("_attributes") {
                continue;
            }
            flatten_data(inner, &mut fields);
        }
    }

    let channel = fields
        .get("Channel")
        .and_then(value_text)
        .unwrap_or_default();
    let service = service_of_channel(&channel);
    let time_us = fields
        .get("TimeCreated_SystemTime")
        .and_then(value_text)
        .and_then(|t| parse_datetime_us(&t))
        .unwrap_or(received_us);

    let mut ev = new_event(DATASET, "windows", service, time_us, raw);
    ev.logsource.categories = categories(service, event_id)
        .into_iter()
        .map(str::to_string)
        .collect();

    if service == Some("security") && event_id == 4688 {
        for (alias, from) in [
            ("Image", "NewProcessName"),
            ("ParentImage", "ParentProcessName"),
            ("ProcessId", "NewProcessId"),
        ] {
            if let Some(v) = fields.get(from).cloned() {
                fields.entry(alias.to_string()).or_insert(v);
            }
        }
    }

    let text = |k: &str| meaningful(fields.get(k).and_then(value_text));
    ev.host = text("Computer");
    ev.user = text("TargetUserName")
        .or_else(|| text("SubjectUserName"))
        .or_else(|| text("User"));
    ev.source_ip = ["IpAddress", "SourceIp", "SourceAddress", "ClientAddress"]
        .iter()
        .find_map(|k| text(k).and_then(|t| parse_ip(&t)));
    ev.source_port = ["IpPort", "SourcePort"]
        .iter()
        .find_map(|k| text(k).and_then(|t| t.parse().ok()));
    ev.destination_ip = ["DestinationIp", "DestAddress"]
        .iter()
        .find_map(|k| text(k).and_then(|t| parse_ip(&t)));
    ev.destination_port = ["DestinationPort", "DestPort"]
        .iter()
        .find_map(|k| text(k).and_then(|t| t.parse().ok()));
    ev.process = text("Image")
        .or_else(|| text("NewProcessName"))
        .or_else(|| text("ProcessName"));
    let (action, outcome) = match (service, event_id) {
        (Some("security"), 4624) => ("logon".to_string(), Outcome::Success),
        (Some("security"), 4625) => ("logon-failed".to_string(), Outcome::Failure),
        (Some("security"), 4634 | 4647) => ("logoff".to_string(), Outcome::Success),
        (Some("security"), 4648) => ("explicit-logon".to_string(), Outcome::Success),
        (Some("security"), 4771 | 4776) if text("Status").is_some_and(|s| s != "0x0") => {
            ("credential-validation-failed".to_string(), Outcome::Failure)
        }
        (Some("security"), 4688) | (Some("sysmon"), 1) => {
            ("process-start".to_string(), Outcome::Success)
        }
        (Some("sysmon"), 5) => ("process-end".to_string(), Outcome::Success),
        (Some("sysmon"), 3) => ("network-connection".to_string(), Outcome::Unknown),
        (Some("sysmon"), 22) => ("dns-query".to_string(), Outcome::Unknown),
        _ => {
            let audit_failure = fields
                .get("Keywords")
                .and_then(value_text)
                .and_then(|k| u64::from_str_radix(k.trim_start_matches("0x"), 16).ok())
                .is_some_and(|k| k & 0x0010_0000_0000_0000 != 0);
            (
                format!("windows-{event_id}"),
                if audit_failure {
                    Outcome::Failure
                } else {
                    Outcome::Unknown
                },
            )
        }
    };
    ev.action = Some(action);
    ev.outcome = Some(outcome);
    ev.fields = fields;
    ev.sync_ecs_fields();
    Ok(ev)
}

/// Flattens `System` the way Sigma names its fields: `Provider_Name`, `Security_UserID`, `EventID`, `Channel`, ….
fn flatten_system(system: &Map<String, Value>, out: &mut Map<String, Value>) {
    for (key, value) in system {
        if let Some(base) = key.strip_suffix("_attributes") {
            // Separated shape: `Provider_attributes: {Name: …}`.
            if let Value::Object(attrs) = value {
                for (a, v) in attrs {
                    out.insert(format!("{base}_{a}"), v.clone());
                }
            }
            continue;
        }
        match value {
            Value::Object(obj) => {
                if let Some(Value::Object(attrs)) = obj.get("#attributes") {
                    for (a, v) in attrs {
                        out.insert(format!("{key}_{a}"), v.clone());
                    }
                }
                if let Some(text) = obj.get("#text") {
                    out.insert(key.clone(), text.clone());
                }
            }
            Value::Null => {}
            other => {
                out.insert(key.clone(), other.clone());
            }
        }
    }
}

/// Flattens `EventData` or the inner element of `UserData` to top-level fields (the `Data` array by `Name`).
fn flatten_data(data: &Value, out: &mut Map<String, Value>) {
    let Value::Object(obj) = data else { return };
    for (key, value) in obj {
        if key == "#attributes" || key.ends_with("_attributes") {
            continue;
        }
        if key == "Data" {
            let items: Vec<&Value> = match value {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            let mut unnamed = Vec::new();
            for item in items {
                let name = item
                    .get("#attributes")
                    .and_then(|a| a.get("Name"))
                    .and_then(Value::as_str);
                match name {
                    Some(name) => {
                        out.insert(
                            name.to_string(),
                            item.get("#text").cloned().unwrap_or(Value::Null),
                        );
                    }
                    None => {
                        unnamed.push(item.get("#text").cloned().unwrap_or_else(|| item.clone()))
                    }
                }
            }
            if !unnamed.is_empty() {
                let v = if unnamed.len() == 1 {
                    unnamed.remove(0)
                } else {
                    Value::Array(unnamed)
                };
                out.insert("Data".into(), v);
            }
            continue;
        }
        let v = match value {
            Value::Object(o) if o.contains_key("#text") => {
                o.get("#text").cloned().unwrap_or(Value::Null)
            }
            other => other.clone(),
        };
        out.insert(key.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sysmon_registry_set() {
        let v = json!({"Event":{"System":{"Provider":{"#attributes":{"Name":"Microsoft-Windows-Sysmon"}},
            "EventID":{"#attributes":{"Qualifiers":""},"#text":"13"},"Channel":"Microsoft-Windows-Sysmon/Operational",
            "Computer":"pc1","TimeCreated":{"#attributes":{"SystemTime":"2019-07-18T21:50:20.0494017Z"}},
            "EventRecordID":7,"Security":{"#attributes":{"UserID":"S-1-5-18"}}},
            "EventData":{"Image":"C:\\x.exe","TargetObject":"HKLM\\Run","User":"pc1\\bob"}}});
        let e = parse_value(&v, "raw", 5).expect("parses");
        assert_eq!(e.logsource.service.as_deref(), Some("sysmon"));
        assert_eq!(e.logsource.categories, ["registry_set", "registry_event"]);
        assert_eq!(e.fields["EventID"], json!(13));
        assert_eq!(e.fields["Provider_Name"], json!("Microsoft-Windows-Sysmon"));
        assert_eq!(e.fields["Security_UserID"], json!("S-1-5-18"));
        assert_eq!(e.fields["TargetObject"], json!("HKLM\\Run"));
        assert_eq!(e.fields["process.name"], json!("C:\\x.exe"));
        assert_eq!(e.user.as_deref(), Some("pc1\\bob"));
        assert_eq!(e.host.as_deref(), Some("pc1"));
        assert_eq!(e.fields["@timestamp"], json!("2019-07-18T21:50:20.049401Z"));
        assert_eq!(e.action.as_deref(), Some("windows-13"));
    }

    #[test]
    fn security_4688_aliases_and_data_array() {
        let v = json!({"Event":{"System":{"EventID":4688,"Channel":"Security","Computer":"dc"},
            "EventData":{"Data":[{"#attributes":{"Name":"NewProcessName"},"#text":"C:\\a.exe"},
                                  {"#attributes":{"Name":"ParentProcessName"},"#text":"C:\\p.exe"},
                                  {"#attributes":{"Name":"NewProcessId"},"#text":"0x10"}]}}});
        let e = parse_value(&v, "", 9).expect("parses");
        assert_eq!(e.time_us, 9);
        assert_eq!(e.logsource.categories, ["process_creation"]);
        assert_eq!(e.fields["Image"], json!("C:\\a.exe"));
        assert_eq!(e.fields["ParentImage"], json!("C:\\p.exe"));
        assert_eq!(e.fields["ProcessId"], json!("0x10"));
        assert_eq!(e.action.as_deref(), Some("process-start"));
    }

    #[test]
    fn logon_failure_and_ips() {
        let v = json!({"Event":{"System":{"EventID":4625,"Channel":"Security"},
            "EventData":{"TargetUserName":"admin","IpAddress":"10.1.2.3","IpPort":"4444"}}});
        let e = parse_value(&v, "", 0).expect("parses");
        assert_eq!(e.outcome, Some(Outcome::Failure));
        assert_eq!(e.source_ip, "10.1.2.3".parse().ok());
        assert_eq!(e.source_port, Some(4444));
        let v = json!({"Event":{"System":{"EventID":4624,"Channel":"Security"},"EventData":{"IpAddress":"-"}}});
        assert_eq!(parse_value(&v, "", 0).expect("parses").source_ip, None);
    }

    #[test]
    fn user_data_and_separated_attributes() {
        let v = json!({"Event":{"System":{"Provider_attributes":{"Name":"Microsoft-Windows-Eventlog"},
            "EventID":1102,"Channel":"Security","TimeCreated_attributes":{"SystemTime":"2019-04-30T18:08:22Z"}},
            "UserData":{"LogFileCleared":{"#attributes":{"xmlns":"x"},"SubjectUserName":"Sec504"}}}});
        let e = parse_value(&v, "", 0).expect("parses");
        assert_eq!(e.fields["SubjectUserName"], json!("Sec504"));
        assert_eq!(
            e.fields["Provider_Name"],
            json!("Microsoft-Windows-Eventlog")
        );
        assert!(!e.fields.contains_key("xmlns"));
        assert_eq!(e.time_us, 1_556_647_702_000_000);
    }

    #[test]
    fn missing_or_bad_event_id() {
        let v = json!({"Event":{"System":{"Channel":"Security"}}});
        assert_eq!(
            parse_value(&v, "", 0),
            Err(ParseError::MissingField("Event.System.EventID"))
        );
        let v = json!({"Event":{"System":{"EventID":"x"}}});
        assert!(matches!(
            parse_value(&v, "", 0),
            Err(ParseError::InvalidField { .. })
        ));
    }

    #[test]
    fn services() {
        assert_eq!(
            service_of_channel("Windows PowerShell"),
            Some("powershell-classic")
        );
        assert_eq!(
            service_of_channel(
                "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational"
            ),
            Some("terminalservices-localsessionmanager")
        );
        assert_eq!(categories(Some("powershell"), 4104), ["ps_script"]);
        assert_eq!(
            categories(Some("powershell-classic"), 400),
            ["ps_classic_start"]
        );
    }
}
