//! Signed plugin packages as an administrator meets them: a vendor packs and signs, the administrator trusts the
//! vendor's key, installs with trimmed grants, and every limit holds at run time; forged, altered, unsigned and
//! over-reaching packages are refused; secrets go by name and are sealed at rest.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::support::{Api, Server, code, qila, run, write};

/// A loopback HTTP server that answers `200 ok` and records each request's head.
struct Origin {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Origin {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                log.lock().unwrap().push(head);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            }
        });
        Self { port, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A `qila` command that talks to `server` as admin.
fn admin(data: &Path, server: &Server) -> std::process::Command {
    let mut cmd = qila(data);
    cmd.env("QILA_SERVER", &server.base)
        .env("QILA_TOKEN", server.admin.as_deref().unwrap());
    cmd
}

/// `qila plugin keygen` into `dir`; the secret and public key files.
fn keygen(dir: &Path, vendor: &str, prefix: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(prefix);
    let (o, stdout, stderr) = run(qila(dir)
        .args(["plugin", "keygen", "--vendor", vendor, "--out"])
        .arg(&out));
    assert_eq!(code(&o), 0, "{stdout}{stderr}");
    assert!(stdout.contains("key id:"), "{stdout}");
    (out.with_extension("key"), out.with_extension("pub"))
}

/// `qila plugin pack` of `component` with the capabilities `caps` (YAML), signed with `key` if given.
fn pack(dir: &Path, component: &str, caps: &str, name: &str, key: Option<&Path>) -> PathBuf {
    let caps_file = write(dir, &format!("{name}.plugin.yaml"), caps);
    let out = dir.join(format!("{name}.qpkg"));
    let mut cmd = qila(dir);
    cmd.args(["plugin", "pack", component, "--capabilities"])
        .arg(&caps_file)
        .arg("--out")
        .arg(&out);
    if let Some(key) = key {
        cmd.arg("--key").arg(key);
    }
    let (o, stdout, stderr) = run(&mut cmd);
    assert_eq!(code(&o), 0, "{stdout}{stderr}");
    out
}

fn plugin<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name} in {list}"))
}

fn start_run(api: &Api, playbook: &str, inputs: Value, tlp: Value) -> Value {
    let (status, run) = api.call(
        "POST",
        "/api/v1/runs",
        Some(json!({"playbook": playbook, "inputs": inputs, "tlp": tlp})),
    );
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    api.wait_for(&id, "its end", |r| {
        matches!(r["run"]["status"].as_str(), Some("succeeded" | "failed"))
    })
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {run}"))
}

#[test]
fn an_administrator_installs_a_signed_plugin_trims_its_grants_and_each_limit_holds() {
    let origin = Origin::start();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let (key, public) = keygen(work.path(), "Acme Corp", "acme");
    let caps = format!(
        "egress: [\"127.0.0.1:{}\", \"api.example.org:443\"]\ntlp: amber\nlimits: {{ memory: 32MiB, timeout: 10s }}\n",
        origin.port
    );
    let package = pack(
        work.path(),
        qila_e2e::HOSTILE_EGRESS,
        &caps,
        "egress",
        Some(&key),
    );

    let (o, stdout, _) = run(qila(&data)
        .args(["plugin", "verify"])
        .arg(&package)
        .arg("--key")
        .arg(&public));
    assert_eq!(code(&o), 0, "{stdout}");
    assert!(
        stdout.contains("signature: good") && stdout.contains("(Acme Corp)"),
        "{stdout}"
    );
    assert!(stdout.contains("api.example.org:443"), "{stdout}");

    let mut server = Server::start(&data);
    let token = server.admin.clone().unwrap();
    let api = Api::new(&server.base, &token);

    // Not trusted yet: refused, and the message says what to do.
    let (o, stdout, stderr) = run(admin(&data, &server)
        .args(["plugin", "install"])
        .arg(&package)
        .args(["--grant", "all"]));
    assert_eq!(code(&o), 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("not a trusted vendor key") && stderr.contains("qila plugin trust"),
        "{stderr}"
    );
    // The capabilities asked for are shown before anything is sent.
    assert!(
        stdout.contains("asks for:") && stdout.contains("api.example.org:443"),
        "{stdout}"
    );

    let (o, stdout, stderr) = run(admin(&data, &server).args(["plugin", "trust"]).arg(&public));
    assert_eq!(code(&o), 0, "{stdout}{stderr}");
    // Trimmed: loopback origin only, data up to TLP:GREEN.
    let granted = format!("127.0.0.1:{}", origin.port);
    let (o, stdout, stderr) = run(admin(&data, &server)
        .args(["plugin", "install"])
        .arg(&package)
        .args(["--egress", &granted, "--tlp", "green"]));
    assert_eq!(code(&o), 0, "{stdout}{stderr}");
    assert!(stdout.contains("installed egress"), "{stdout}");

    let (status, list) = api.call("GET", "/api/v1/plugins", None);
    assert_eq!(status, 200);
    let egress = plugin(&list, "egress");
    assert_eq!(egress["grants"]["egress"], json!([granted]));
    assert_eq!(egress["grants"]["tlp"], "green");
    assert_eq!(egress["max_tlp"], "green");
    assert_eq!(egress["origin"], "package");
    assert!(
        egress["signer"].as_str().is_some_and(|s| s.len() == 16),
        "{egress}"
    );

    let (status, body) = api.send(
        "POST",
        "/api/v1/playbooks",
        Some((
            b"name: fetcher\nversion: 1\ninputs:\n  url: { type: string }\nsteps:\n  get:\n    uses: egress.fetch\n    with: { url: \"${{ inputs.url }}\" }\noutputs:\n  status: \"${{ steps.get.output.status }}\"\n".to_vec(),
            "application/yaml",
        )),
        &[],
    );
    assert!(status == 201 || status == 200, "{status} {body}");

    let ok = start_run(
        &api,
        "fetcher",
        json!({"url": format!("http://127.0.0.1:{}/ok", origin.port)}),
        json!({}),
    );
    assert_eq!(ok["run"]["status"], "succeeded", "{ok}");
    assert_eq!(ok["run"]["outputs"]["status"], 200);
    assert_eq!(origin.requests().len(), 1);

    // Asked for, but trimmed away at install: denied by the host, nothing sent.
    let trimmed = start_run(
        &api,
        "fetcher",
        json!({"url": "https://api.example.org/v1"}),
        json!({}),
    );
    assert_eq!(trimmed["run"]["status"], "failed", "{trimmed}");
    assert_eq!(step(&trimmed, "get")["error_kind"], "denied", "{trimmed}");

    // TLP:AMBER data to a plugin granted up to GREEN: refused before the sandbox starts.
    let amber = start_run(
        &api,
        "fetcher",
        json!({"url": format!("http://127.0.0.1:{}/leak", origin.port)}),
        json!({"url": "amber"}),
    );
    let get = step(&amber, "get");
    assert_eq!(get["error_kind"], "denied", "{amber}");
    let message = get["error"].as_str().unwrap();
    assert!(
        message.contains("TLP:AMBER")
            && message.contains("up to TLP:GREEN")
            && message.contains("inputs.url"),
        "{message}"
    );
    assert_eq!(
        origin.requests().len(),
        1,
        "nothing left for the TLP:AMBER run"
    );

    // Regrant: widen to everything it asks for; the next step runs under the new grants.
    let (o, stdout, stderr) =
        run(admin(&data, &server).args(["plugin", "grant", "egress", "--grant", "all"]));
    assert_eq!(code(&o), 0, "{stdout}{stderr}");
    let again = start_run(
        &api,
        "fetcher",
        json!({"url": format!("http://127.0.0.1:{}/leak", origin.port)}),
        json!({"url": "amber"}),
    );
    assert_eq!(again["run"]["status"], "succeeded", "{again}");

    // After a restart the package is verified and loaded again, with its grants.
    server.kill();
    let server = Server::start(&data);
    let api = Api::new(&server.base, &token);
    let (_, list) = api.call("GET", "/api/v1/plugins", None);
    assert_eq!(plugin(&list, "egress")["grants"]["tlp"], "amber", "{list}");
    assert_eq!(list["failed"], json!([]), "{list}");
    let audit = api.call("GET", "/api/v1/audit", None).1;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in ["plugin.trust", "plugin.install", "plugin.grant"] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
}

#[test]
fn forged_altered_unsigned_and_overreaching_packages_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let (key, public) = keygen(work.path(), "Acme Corp", "acme");
    let (stranger, _) = keygen(work.path(), "Mallory", "mallory");
    let server = Server::start(&data);
    let api = Api::new(&server.base, server.admin.as_deref().unwrap());
    let (o, _, stderr) = run(admin(&data, &server).args(["plugin", "trust"]).arg(&public));
    assert_eq!(code(&o), 0, "{stderr}");
    let install = |bytes: Vec<u8>, grants: &str| {
        api.send(
            "POST",
            "/api/v1/plugins",
            Some((bytes, "application/octet-stream")),
            &[("X-Qila-Grants", grants)],
        )
    };
    let refused = |bytes: Vec<u8>, expect: &str| {
        let (status, body) = install(bytes, "all");
        assert_eq!(status, 422, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(expect),
            "expected {expect:?} in: {message}"
        );
    };
    let caps = "egress: [\"api.example.org:443\"]\n";
    let signed = pack(
        work.path(),
        qila_e2e::HOSTILE_EGRESS,
        caps,
        "signed",
        Some(&key),
    );
    let bytes = std::fs::read(&signed).unwrap();

    let unsigned = pack(
        work.path(),
        qila_e2e::HOSTILE_EGRESS,
        caps,
        "unsigned",
        None,
    );
    refused(std::fs::read(&unsigned).unwrap(), "not signed");
    let by_stranger = pack(
        work.path(),
        qila_e2e::HOSTILE_EGRESS,
        caps,
        "stranger",
        Some(&stranger),
    );
    refused(
        std::fs::read(&by_stranger).unwrap(),
        "not a trusted vendor key",
    );

    // One byte of the component changed after signing.
    let mut altered = bytes.clone();
    let at = altered.len() - 200;
    altered[at] ^= 0x20;
    refused(altered, "altered");
    // The manifest changed after signing (its vendor name), signature kept.
    let mut relabelled = bytes.clone();
    let name_at = relabelled
        .windows(10)
        .position(|w| w == b"Qila tests")
        .unwrap();
    relabelled[name_at] = b'q';
    refused(relabelled, "does not match the package");
    // Garbage and a bare component are not packages.
    refused(b"not a package".to_vec(), "not a valid Qila plugin package");
    refused(
        std::fs::read(qila_e2e::HOSTILE_EGRESS).unwrap(),
        "qila plugin pack",
    );

    // A manifest that asks for nothing, over a component that imports `http`, signed by the trusted key: `pack`
    // refuses to make it, so forge it with the library, as an attacker would.
    let component = std::fs::read(qila_e2e::HOSTILE_EGRESS).unwrap();
    let honest = qila_package::Package::parse(&bytes).unwrap();
    let mut manifest = honest.manifest().clone();
    manifest.capabilities = qila_package::Capabilities::default();
    let mut forged = qila_package::Package::new(manifest, component).unwrap();
    let signing = qila_package::SigningKey::parse(&std::fs::read_to_string(&key).unwrap()).unwrap();
    forged.sign(&signing);
    refused(forged.to_bytes(), "imports more than its manifest declares");
    let (_, body) = install(forged.to_bytes(), "all");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("qila:plugin/http"),
        "{body}"
    );
    // `pack` itself refuses too, naming the capability to declare.
    let caps_file = write(work.path(), "none.yaml", "egress: []\n");
    let (o, _, stderr) = run(qila(work.path())
        .args(["plugin", "pack", qila_e2e::HOSTILE_EGRESS, "--capabilities"])
        .arg(&caps_file)
        .args(["--out", "/dev/null"]));
    assert_eq!(code(&o), 1);
    assert!(stderr.contains("capabilities.egress"), "{stderr}");

    // Grants beyond what it asks for.
    let (status, body) = install(bytes.clone(), r#"{"egress": ["evil.example.com"]}"#);
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not ask for it"),
        "{body}"
    );
    let (status, body) = install(bytes.clone(), "");
    assert_eq!(status, 400, "{body}");
    // Nothing of the refused packages was installed; the honest one installs.
    let (_, list) = api.call("GET", "/api/v1/plugins", None);
    assert!(
        list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "egress"),
        "{list}"
    );
    let (status, body) = install(bytes, "none");
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["grants"]["egress"], json!([]));
    // Another trusted vendor may not take over the name.
    let (o, _, stderr) = run(admin(&data, &server)
        .args(["plugin", "trust"])
        .arg(work.path().join("mallory.pub")));
    assert_eq!(code(&o), 0, "{stderr}");
    let (status, body) = install(std::fs::read(&by_stranger).unwrap(), "all");
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another vendor may not take over"),
        "{body}"
    );

    // A development server takes the unsigned package, and says so.
    drop(server);
    let dev_data = work.path().join("dev");
    let dev = Server::start_with(&dev_data, &["--dev"]);
    let dev_api = Api::new(&dev.base, dev.admin.as_deref().unwrap());
    let (status, body) = dev_api.send(
        "POST",
        "/api/v1/plugins",
        Some((
            std::fs::read(&unsigned).unwrap(),
            "application/octet-stream",
        )),
        &[("X-Qila-Grants", "all")],
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["signer"], Value::Null);
    assert_eq!(body["origin"], "package (unsigned, dev)");
}

#[test]
fn secrets_go_by_name_are_sealed_at_rest_and_reveals_are_audited() {
    let origin = Origin::start();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let (key, public) = keygen(work.path(), "Acme Corp", "acme");
    let mut server = Server::start(&data);
    let api = Api::new(&server.base, server.admin.as_deref().unwrap());
    let (o, _, stderr) = run(admin(&data, &server).args(["plugin", "trust"]).arg(&public));
    assert_eq!(code(&o), 0, "{stderr}");

    let value = "s3cr3t-value-4a7b";
    for (name, secret) in [("api_key", value), ("other_key", "other-value-9c1d")] {
        let mut child = admin(&data, &server)
            .args(["secret", "set", name])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{secret}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (o, stdout, _) = run(admin(&data, &server).args(["secret", "list"]));
    assert_eq!(code(&o), 0);
    assert!(
        stdout.contains("api_key") && !stdout.contains(value),
        "{stdout}"
    );
    let (_, listed) = api.call("GET", "/api/v1/secrets", None);
    assert!(!listed.to_string().contains(value), "{listed}");

    // Injected by name: the plugin asks for `api_key` on its request and never holds the value.
    let egress = pack(
        work.path(),
        qila_e2e::HOSTILE_EGRESS,
        &format!(
            "egress: [\"127.0.0.1:{}\"]\nsecrets: [api_key]\n",
            origin.port
        ),
        "egress",
        Some(&key),
    );
    let (o, stdout, stderr) = run(admin(&data, &server)
        .args(["plugin", "install"])
        .arg(&egress)
        .args(["--grant", "all"]));
    assert_eq!(code(&o), 0, "{stdout}{stderr}");
    // Revealing is a separate grant: `snoop` asks to reveal `api_key` only.
    let snoop = pack(
        work.path(),
        qila_e2e::HOSTILE_SNOOP,
        "reveal: [api_key]\npacks: [kv]\n",
        "snoop",
        Some(&key),
    );
    let (o, stdout, stderr) = run(admin(&data, &server)
        .args(["plugin", "install"])
        .arg(&snoop)
        .args(["--grant", "all"]));
    assert_eq!(code(&o), 0, "{stdout}{stderr}");
    let (status, body) = api.send(
        "POST",
        "/api/v1/playbooks",
        Some((
            format!(
                "name: secrets\nversion: 1\ninputs:\n  reveal: {{ type: string, default: api_key }}\nsteps:\n  call:\n    uses: egress.fetch\n    with: {{ url: \"http://127.0.0.1:{}/\", bearer_secret: api_key }}\n  peek:\n    uses: snoop.reveal\n    with: {{ name: \"${{{{ inputs.reveal }}}}\" }}\n",
                origin.port
            )
            .into_bytes(),
            "application/yaml",
        )),
        &[],
    );
    assert!(status == 201 || status == 200, "{body}");
    let done = start_run(&api, "secrets", json!({}), json!({}));
    assert_eq!(done["run"]["status"], "succeeded", "{done}");
    let head = origin.requests().pop().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("authorization: bearer {value}")),
        "{head}"
    );
    assert!(
        !step(&done, "call").to_string().contains(value),
        "the value is in no run record: {done}"
    );
    // The revealing plugin returned the value; the host kept it out of the run record.
    assert_eq!(
        step(&done, "peek")["output"]["value"],
        "[secret api_key]",
        "{done}"
    );
    let denied = start_run(&api, "secrets", json!({"reveal": "other_key"}), json!({}));
    let peek = step(&denied, "peek");
    assert_eq!(peek["error_kind"], "denied", "{denied}");
    assert!(!denied.to_string().contains("other-value-9c1d"));
    let audit = api.call("GET", "/api/v1/audit", None).1;
    let reveals: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "secret.reveal")
        .collect();
    assert_eq!(reveals.len(), 1, "{audit}");
    assert_eq!(reveals[0]["target"], "api_key");
    assert_eq!(reveals[0]["actor"], "plugin:snoop");
    assert_eq!(reveals[0]["detail"]["run"], done["run"]["id"]);

    // At rest: neither the database nor its log holds a value; the key file is apart, mode 0600.
    server.kill();
    for file in ["qila.db", "qila.db-wal"] {
        if let Ok(bytes) = std::fs::read(data.join(file)) {
            for secret in [value, "other-value-9c1d"] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} in {file}"
                );
            }
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("secret.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn the_bundled_plugins_pass_the_conformance_kit_and_a_memory_bomb_does_not() {
    let work = tempfile::tempdir().unwrap();
    for component in [
        qila_e2e::BUNDLED_CORE,
        qila_e2e::BUNDLED_ENRICH,
        qila_e2e::BUNDLED_NOTIFY,
    ] {
        super::support::bundled(component);
        let (o, stdout, stderr) =
            run(qila(work.path()).args(["plugin", "test", component, "--json"]));
        assert_eq!(code(&o), 0, "{component}: {stdout}{stderr}");
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["failed"], 0, "{report}");
        assert!(report["passed"].as_u64().unwrap() >= 5, "{report}");
    }
    let (o, stdout, _) = run(qila(work.path()).args(["plugin", "test", qila_e2e::HOSTILE_BALLOON]));
    assert_eq!(code(&o), 1, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("memory-limit")),
        "{stdout}"
    );
}
