//! The plugins this host runs, and how they get there: bundled in the binary, installed from signed packages
//! (with the grants an administrator recorded), or — in development mode only — loose components from the
//! plugins directory. Installing swaps in a new set at once; steps already running keep the plugin they started
//! with.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use qila_model::{ActionCatalog, Tlp, did_you_mean};
use qila_package::{Grants, Package, PackageError, PublicKey, TrustedKeys, check_imports};
use qila_sandbox::{HostPattern, Limits, Plugin, PluginPolicy, Sandbox, SecretStore};
use qila_server::{AdminFuture, ApiError, GrantChoice, PluginAdmin};
use qila_store::{InstallRow, Store, StoreError, now_ms};
use serde_json::{Value, json};

use crate::config::Config;

/// Where a plugin came from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Embedded in the binary; grants from the configuration file.
    Bundled,
    /// Installed from a package; grants recorded at install.
    Package {
        /// The package file in the data directory.
        file: PathBuf,
        /// The key that signed it; `None`: installed unsigned in development mode.
        signer: Option<String>,
        /// The grants recorded.
        grants: Grants,
    },
    /// A loose component file, loaded in development mode only; grants from the configuration file.
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Bundled => f.write_str("bundled"),
            Origin::Package {
                signer: Some(_), ..
            } => f.write_str("package"),
            Origin::Package { signer: None, .. } => f.write_str("package (unsigned, dev)"),
            Origin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A plugin in use.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// The plugin, with its policy.
    pub plugin: Plugin,
    /// Where it came from.
    pub origin: Origin,
    /// The highest TLP of data it may receive.
    pub max_tlp: Tlp,
}

/// A plugin file that could not be loaded, and why.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    /// Where it was.
    pub origin: String,
    /// Why it was not loaded.
    pub error: String,
}

/// One consistent set of plugins.
#[derive(Clone, Default)]
pub struct Plugins {
    /// By name.
    pub loaded: BTreeMap<String, LoadedPlugin>,
    /// Files that failed.
    pub failures: Vec<LoadFailure>,
}

/// Why a package was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The package, its signature or its component was refused.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The package asks for something malformed, or the grants go beyond what it asks for.
    #[error("{0}")]
    Refused(String),
    /// Another plugin owns the name.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The package could not be written to the data directory.
    #[error("cannot write {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

impl From<InstallError> for ApiError {
    fn from(e: InstallError) -> Self {
        match e {
            InstallError::Package(_) | InstallError::Refused(_) => {
                ApiError::unprocessable(e.to_string())
            }
            InstallError::Conflict(m) => ApiError::conflict(m),
            InstallError::Store(_) | InstallError::Io(..) => ApiError::internal(e),
        }
    }
}

/// Where [`Registry::open`] finds plugins and their grants.
pub struct Sources<'a> {
    /// The data directory (installed packages live in `packages/`).
    pub data_dir: &'a Path,
    /// Loose components, loaded in development mode only.
    pub plugins_dir: &'a Path,
    /// Grants for bundled plugins and loose components.
    pub config: &'a Config,
    /// The plugins embedded in the binary, by file name.
    pub bundled: &'a [(&'a str, &'a [u8])],
    /// Development mode.
    pub dev: bool,
}

/// The plugins in use, and how to change them.
pub struct Registry {
    sandbox: Sandbox,
    store: Store,
    data_dir: PathBuf,
    dev: bool,
    secrets: Arc<HostSecrets>,
    current: RwLock<Arc<Plugins>>,
    changes: tokio::sync::Mutex<()>,
}

impl Registry {
    /// The sandbox plugins run in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The store (for the host's own packs, such as `siem`).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Loads the bundled plugins (under the configuration's grants), the installed packages (under their
    /// recorded grants, each verified again against the trusted keys) and, in development mode, the loose
    /// components of `plugins_dir`. What does not load is a [`LoadFailure`], not an error.
    pub async fn open(
        sandbox: Sandbox,
        store: Store,
        secrets: Arc<HostSecrets>,
        sources: Sources<'_>,
    ) -> anyhow::Result<Self> {
        let Sources {
            data_dir,
            plugins_dir,
            config,
            bundled,
            dev,
        } = sources;
        let mut plugins = Plugins::default();
        for (name, bytes) in bundled {
            match sandbox.load(bytes, PluginPolicy::default()).await {
                Ok(plugin) => {
                    let policy = config.policy_for(plugin.name())?;
                    let max_tlp = config.max_tlp_for(plugin.name(), &policy)?;
                    let plugin = plugin.with_policy(policy);
                    plugins.insert(plugin, Origin::Bundled, max_tlp);
                }
                Err(e) => plugins.failures.push(LoadFailure {
                    origin: format!("bundled {name}"),
                    error: e.to_string(),
                }),
            }
        }
        let trusted = trusted_keys(&store).await?;
        for row in store.installs(false).await? {
            let file = data_dir.join(&row.file);
            match load_installed(&sandbox, &file, &row, &trusted, dev).await {
                Ok((plugin, grants, max_tlp)) => {
                    if let Some(existing) = plugins.loaded.get(plugin.name()) {
                        plugins.failures.push(LoadFailure {
                            origin: file.display().to_string(),
                            error: format!(
                                "a plugin named `{}` is already loaded ({})",
                                plugin.name(),
                                existing.origin
                            ),
                        });
                        continue;
                    }
                    let origin = Origin::Package {
                        file,
                        signer: row.signer.clone(),
                        grants,
                    };
                    plugins.insert(plugin, origin, max_tlp);
                }
                Err(error) => plugins.failures.push(LoadFailure {
                    origin: file.display().to_string(),
                    error,
                }),
            }
        }
        for path in component_files(plugins_dir)? {
            let origin = path.display().to_string();
            if !dev {
                plugins.failures.push(LoadFailure {
                    origin,
                    error: "a loose component is unsigned: pack and sign it (`qila plugin pack`, `qila plugin sign`) \
                            and install it (`qila plugin install`), or start with --dev"
                        .into(),
                });
                continue;
            }
            let loaded = match std::fs::read(&path) {
                Ok(bytes) => sandbox
                    .load(&bytes, PluginPolicy::default())
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match loaded {
                Ok(plugin) if plugins.loaded.contains_key(plugin.name()) => {
                    let first = &plugins.loaded[plugin.name()].origin;
                    plugins.failures.push(LoadFailure {
                        origin,
                        error: format!(
                            "a plugin named `{}` is already loaded from {first}",
                            plugin.name()
                        ),
                    });
                }
                Ok(plugin) => {
                    let policy = config.policy_for(plugin.name())?;
                    let max_tlp = config.max_tlp_for(plugin.name(), &policy)?;
                    let plugin = plugin.with_policy(policy);
                    plugins.insert(plugin, Origin::File(path), max_tlp);
                }
                Err(error) => plugins.failures.push(LoadFailure { origin, error }),
            }
        }
        for failure in &plugins.failures {
            tracing::warn!(plugin = %failure.origin, error = %failure.error, "plugin not loaded");
        }
        Ok(Self {
            sandbox,
            store,
            data_dir: data_dir.to_path_buf(),
            dev,
            secrets,
            current: RwLock::new(Arc::new(plugins)),
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// The plugins in use now.
    pub fn snapshot(&self) -> Arc<Plugins> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, f: impl FnOnce(&mut Plugins)) {
        let mut guard = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = (**guard).clone();
        f(&mut next);
        *guard = Arc::new(next);
    }

    /// Whether unsigned packages and loose components are accepted.
    pub fn dev(&self) -> bool {
        self.dev
    }

    /// Verifies and installs a package (see [`PluginAdmin::install`]).
    pub async fn install(
        &self,
        bytes: &[u8],
        choice: GrantChoice,
        actor: &str,
    ) -> Result<Value, InstallError> {
        let _one_at_a_time = self.changes.lock().await;
        let package = Package::parse(bytes)?;
        let trusted = trusted_keys(&self.store).await?;
        let signer = match package.verify(&trusted) {
            Ok(key) => Some(key.id()),
            Err(PackageError::Unsigned | PackageError::UntrustedKey { .. }) if self.dev => {
                tracing::warn!(plugin = %package.manifest().name, "installing an unsigned or untrusted package (development mode)");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let manifest = package.manifest();
        let caps = &manifest.capabilities;
        for pattern in &caps.egress {
            pattern
                .parse::<HostPattern>()
                .map_err(|e| InstallError::Refused(format!("capabilities.egress: {e}")))?;
        }
        let grants = resolve_grants(choice, caps)?;
        let (policy, max_tlp) = policy_from_grants(&grants)?;
        if let Some(existing) = self.snapshot().loaded.get(&manifest.name) {
            match &existing.origin {
                Origin::Package {
                    signer: Some(before),
                    ..
                } if signer.as_ref() != Some(before) => {
                    return Err(InstallError::Conflict(format!(
                        "plugin `{}` is installed from a package signed by key {before}; a package signed by {} \
                         cannot replace it (another vendor may not take over a plugin's name)",
                        manifest.name,
                        signer
                            .as_deref()
                            .map_or("no key".to_string(), |k| format!("key {k}")),
                    )));
                }
                Origin::Package { .. } => {}
                other => {
                    return Err(InstallError::Conflict(format!(
                        "a plugin named `{}` is already loaded ({other}); a package cannot replace it",
                        manifest.name
                    )));
                }
            }
        }
        let plugin = self
            .sandbox
            .load(package.component(), policy)
            .await
            .map_err(|e| InstallError::Refused(format!("the component does not load: {e}")))?;
        check_component(&package, &plugin).map_err(InstallError::Refused)?;

        let dir = self.data_dir.join("packages");
        std::fs::create_dir_all(&dir).map_err(|e| InstallError::Io(dir.clone(), e))?;
        let digest = package.digest();
        let relative = format!(
            "packages/{}-{}-{}.qpkg",
            manifest.name,
            manifest.version,
            &digest[..12]
        );
        let file = self.data_dir.join(&relative);
        write_atomically(&file, bytes).map_err(|e| InstallError::Io(file.clone(), e))?;
        let grants_json = serde_json::to_value(&grants).unwrap_or_default();
        self.store
            .record_install(InstallRow {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
                package_digest: digest.clone(),
                component_sha256: plugin.digest().to_owned(),
                manifest: serde_json::to_value(manifest).unwrap_or_default(),
                grants: grants_json.clone(),
                signer: signer.clone(),
                file: relative,
                installed_by: actor.to_owned(),
                installed_at: now_ms(),
                active: true,
            })
            .await?;
        tracing::info!(plugin = %manifest.name, version = %manifest.version, signer = ?signer, by = %actor, "plugin installed");
        let name = manifest.name.clone();
        let origin = Origin::Package {
            file,
            signer: signer.clone(),
            grants,
        };
        self.replace(|p| p.insert(plugin, origin, max_tlp));
        Ok(self.describe(&name).unwrap_or(json!({ "name": name })))
    }

    /// Replaces an installed plugin's grants (see [`PluginAdmin::regrant`]).
    pub async fn regrant(
        &self,
        name: &str,
        choice: GrantChoice,
        actor: &str,
    ) -> Result<Value, InstallError> {
        let _one_at_a_time = self.changes.lock().await;
        let snapshot = self.snapshot();
        let Some(loaded) = snapshot.loaded.get(name) else {
            return Err(InstallError::Refused(format!(
                "no plugin named `{name}`{}",
                did_you_mean(name, snapshot.loaded.keys().map(String::as_str))
            )));
        };
        let Origin::Package { file, signer, .. } = &loaded.origin else {
            return Err(InstallError::Conflict(format!(
                "`{name}` is {}: its grants come from the configuration file, not from an install",
                loaded.origin
            )));
        };
        let row = self
            .store
            .installs(false)
            .await?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| InstallError::Refused(format!("`{name}` has no install record")))?;
        let manifest: qila_package::Manifest =
            serde_json::from_value(row.manifest).map_err(|e| {
                InstallError::Refused(format!("the recorded manifest is unreadable: {e}"))
            })?;
        let grants = resolve_grants(choice, &manifest.capabilities)?;
        let (policy, max_tlp) = policy_from_grants(&grants)?;
        let grants_json = serde_json::to_value(&grants).unwrap_or_default();
        self.store.set_grants(name, grants_json, actor).await?;
        let plugin = loaded.plugin.with_policy(policy);
        let origin = Origin::Package {
            file: file.clone(),
            signer: signer.clone(),
            grants,
        };
        self.replace(|p| p.insert(plugin, origin, max_tlp));
        Ok(self.describe(name).unwrap_or(json!({ "name": name })))
    }

    /// One plugin as the API lists it.
    pub fn describe(&self, name: &str) -> Option<Value> {
        let snapshot = self.snapshot();
        snapshot.loaded.get(name).map(describe)
    }

    /// The names and values of the secrets `plugin` may reveal, to keep out of what it returns.
    pub fn revealable(&self, plugin: &Plugin) -> Vec<(String, String)> {
        plugin
            .policy()
            .reveal
            .iter()
            .filter_map(|name| self.secrets.resolve(name).map(|v| (name.clone(), v)))
            .collect()
    }

    /// Sets a secret's value in the store (sealed) and in memory.
    pub async fn set_secret(&self, name: &str, value: &str, actor: &str) -> Result<(), StoreError> {
        self.store.set_secret(name, value, actor).await?;
        self.secrets.stored_changed(name, Some(value.to_owned()));
        Ok(())
    }

    /// Deletes a secret; false when there was none.
    pub async fn delete_secret(&self, name: &str, actor: &str) -> Result<bool, StoreError> {
        let deleted = self.store.delete_secret(name, actor).await?;
        self.secrets.stored_changed(name, None);
        Ok(deleted)
    }
}

impl Plugins {
    fn insert(&mut self, plugin: Plugin, origin: Origin, max_tlp: Tlp) {
        self.loaded.insert(
            plugin.name().to_owned(),
            LoadedPlugin {
                plugin,
                origin,
                max_tlp,
            },
        );
    }
}

/// One plugin as the API and `qila plugin list --json` show it.
pub fn describe(p: &LoadedPlugin) -> Value {
    let m = p.plugin.manifest();
    let policy = p.plugin.policy();
    let (signer, grants) = match &p.origin {
        Origin::Package { signer, grants, .. } => (signer.clone(), Some(grants)),
        _ => (None, None),
    };
    json!({
        "name": m.name, "version": m.version, "vendor": m.vendor, "origin": p.origin.to_string(),
        "digest": p.plugin.digest(), "signer": signer,
        "actions": m.actions.iter().map(|a| &a.name).collect::<Vec<_>>(),
        "imports": p.plugin.imports(),
        "grants": grants.map(|g| json!(g)).unwrap_or_else(|| json!({
            "egress": policy.egress.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "secrets": policy.secrets, "reveal": policy.reveal, "packs": policy.packs,
            "tlp": p.max_tlp,
        })),
        "max_tlp": p.max_tlp,
    })
}

impl ActionCatalog for Registry {
    fn input_schema(&self, plugin: &str, action: &str) -> Result<Value, String> {
        if plugin == crate::siem::PACK {
            return crate::siem::input_schema(action);
        }
        let snapshot = self.snapshot();
        let Some(p) = snapshot.loaded.get(plugin) else {
            return Err(format!(
                "unknown plugin `{plugin}`{}",
                did_you_mean(plugin, snapshot.loaded.keys().map(String::as_str))
            ));
        };
        match p.plugin.action(action) {
            Some(a) => Ok(a.input_schema.clone()),
            None => Err(format!(
                "plugin `{plugin}` has no action `{action}`{}",
                did_you_mean(
                    action,
                    p.plugin.manifest().actions.iter().map(|a| a.name.as_str())
                )
            )),
        }
    }
}

impl qila_engine::PluginCatalog for Registry {
    fn digest(&self, plugin: &str) -> Option<String> {
        if plugin == crate::siem::PACK {
            return Some(crate::siem::PACK_DIGEST.to_owned());
        }
        self.snapshot()
            .loaded
            .get(plugin)
            .map(|p| p.plugin.digest().to_string())
    }

    fn max_tlp(&self, plugin: &str) -> Tlp {
        self.snapshot()
            .loaded
            .get(plugin)
            .map_or(Tlp::Red, |p| p.max_tlp)
    }
}

/// The server's plugin administration, over the registry.
pub struct Admin(pub Arc<Registry>);

impl PluginAdmin for Admin {
    fn list(&self) -> AdminFuture<'_, Value> {
        Box::pin(async move {
            let snapshot = self.0.snapshot();
            let failed: Vec<Value> = snapshot
                .failures
                .iter()
                .map(|f| json!({"origin": f.origin, "error": f.error}))
                .collect();
            Ok(json!({
                "plugins": snapshot.loaded.values().map(describe).collect::<Vec<_>>(),
                "failed": failed,
                "dev": self.0.dev(),
            }))
        })
    }

    fn install(
        &self,
        package: qila_server::Bytes,
        grants: GrantChoice,
        actor: String,
    ) -> AdminFuture<'_, Value> {
        Box::pin(async move { Ok(self.0.install(&package, grants, &actor).await?) })
    }

    fn regrant(&self, name: String, grants: GrantChoice, actor: String) -> AdminFuture<'_, Value> {
        Box::pin(async move { Ok(self.0.regrant(&name, grants, &actor).await?) })
    }

    fn set_secret(&self, name: String, value: String, actor: String) -> AdminFuture<'_, ()> {
        Box::pin(async move { Ok(self.0.set_secret(&name, &value, &actor).await?) })
    }

    fn delete_secret(&self, name: String, actor: String) -> AdminFuture<'_, bool> {
        Box::pin(async move { Ok(self.0.delete_secret(&name, &actor).await?) })
    }
}

/// Secret values for plugins: those stored in the data directory (sealed at rest, opened into memory at start
/// and on change) before those the configuration file points at. Reveals are audited in the store.
pub struct HostSecrets {
    configured: HashMap<String, String>,
    stored: RwLock<HashMap<String, String>>,
    store: Store,
}

impl HostSecrets {
    /// The secrets of the configuration and of the store.
    pub async fn load(config: &Config, store: Store) -> Result<Self, StoreError> {
        Ok(Self {
            configured: config.resolve_secrets(),
            stored: RwLock::new(store.secret_values().await?),
            store,
        })
    }

    fn stored_changed(&self, name: &str, value: Option<String>) {
        let mut guard = match self.stored.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match value {
            Some(v) => guard.insert(name.to_owned(), v),
            None => guard.remove(name),
        };
    }
}

impl SecretStore for HostSecrets {
    fn resolve(&self, name: &str) -> Option<String> {
        let stored = match self.stored.read() {
            Ok(g) => g.get(name).cloned(),
            Err(p) => p.into_inner().get(name).cloned(),
        };
        stored.or_else(|| self.configured.get(name).cloned())
    }

    fn audit_reveal<'a>(
        &'a self,
        plugin: &'a str,
        secret: &'a str,
        run_id: &'a str,
        step_id: &'a str,
    ) -> qila_sandbox::KvFuture<'a, ()> {
        Box::pin(async move {
            self.store
                .audit_reveal(plugin, secret, run_id, step_id)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

async fn trusted_keys(store: &Store) -> Result<TrustedKeys, StoreError> {
    let mut keys = Vec::new();
    for row in store.trusted_keys().await? {
        match PublicKey::parse(&row.public_key) {
            Ok(key) => keys.push(key),
            Err(e) => {
                tracing::warn!(key = %row.id, error = %e, "a trusted key is unreadable; ignored")
            }
        }
    }
    Ok(TrustedKeys::new(keys))
}

/// Loads an installed package again at start: the file must still verify (unless it was installed unsigned in
/// development mode and the host is still in development mode) and match its record.
async fn load_installed(
    sandbox: &Sandbox,
    file: &Path,
    row: &InstallRow,
    trusted: &TrustedKeys,
    dev: bool,
) -> Result<(Plugin, Grants, Tlp), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read the package: {e}"))?;
    let package = Package::parse(&bytes).map_err(|e| e.to_string())?;
    if package.digest() != row.package_digest {
        return Err("the package file changed since it was installed".into());
    }
    match (&row.signer, package.verify(trusted)) {
        (Some(_), Ok(_)) => {}
        (None, _) if dev => {}
        (None, _) => {
            return Err(
                "installed unsigned in development mode; start with --dev, or install a signed package".into(),
            );
        }
        (Some(_), Err(e)) => return Err(e.to_string()),
    }
    let grants: Grants = serde_json::from_value(row.grants.clone())
        .map_err(|e| format!("the recorded grants are unreadable: {e}"))?;
    let (policy, max_tlp) = policy_from_grants(&grants).map_err(|e| e.to_string())?;
    let plugin = sandbox
        .load(package.component(), policy)
        .await
        .map_err(|e| e.to_string())?;
    check_component(&package, &plugin)?;
    Ok((plugin, grants, max_tlp))
}

/// The component must be what its manifest says: same name, version and actions, and no import its
/// capabilities do not account for.
fn check_component(package: &Package, plugin: &Plugin) -> Result<(), String> {
    let m = package.manifest();
    let d = plugin.manifest();
    if d.name != m.name || d.version != m.version {
        return Err(format!(
            "the component describes itself as `{}` {} but the manifest says `{}` {}",
            d.name, d.version, m.name, m.version
        ));
    }
    let described: Vec<(&str, &Value, &Value)> = d
        .actions
        .iter()
        .map(|a| (a.name.as_str(), &a.input_schema, &a.output_schema))
        .collect();
    let declared: Vec<(&str, &Value, &Value)> = m
        .actions
        .iter()
        .map(|a| (a.name.as_str(), &a.input_schema, &a.output_schema))
        .collect();
    if described != declared {
        return Err(
            "the component's actions or schemas differ from the manifest's: pack it again".into(),
        );
    }
    check_imports(&m.capabilities, plugin.imports()).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        format!(
            "the component imports more than its manifest declares: {}",
            lines.join("; ")
        )
    })
}

fn resolve_grants(
    choice: GrantChoice,
    caps: &qila_package::Capabilities,
) -> Result<Grants, InstallError> {
    let grants = match choice {
        GrantChoice::All => Grants::all(caps),
        GrantChoice::Nothing => Grants::none(caps),
        GrantChoice::Exactly(value) => {
            let mut object = value;
            // Limits not given keep what the plugin asks for.
            if let Some(map) = object.as_object_mut()
                && !map.contains_key("limits")
            {
                map.insert("limits".into(), json!(caps.limits));
            }
            serde_json::from_value(object)
                .map_err(|e| InstallError::Refused(format!("the grants are malformed: {e}")))?
        }
    };
    grants
        .check_within(caps)
        .map_err(|e| InstallError::Refused(e.to_string()))?;
    Ok(grants)
}

/// The sandbox policy and TLP limit that enforce `grants`.
pub fn policy_from_grants(grants: &Grants) -> Result<(PluginPolicy, Tlp), InstallError> {
    let egress = grants
        .egress
        .iter()
        .map(|p| p.parse::<HostPattern>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| InstallError::Refused(format!("grants.egress: {e}")))?;
    let mut limits = Limits::default();
    let l = &grants.limits;
    if let Some(v) = l.memory_bytes {
        limits.memory_bytes = usize::try_from(v).unwrap_or(usize::MAX);
    }
    if let Some(v) = l.cpu_ms {
        limits.cpu = Duration::from_millis(v);
    }
    if let Some(v) = l.timeout_ms {
        limits.timeout = Duration::from_millis(v);
    }
    if let Some(v) = l.output_bytes {
        limits.max_output_bytes = usize::try_from(v).unwrap_or(usize::MAX);
    }
    let policy = PluginPolicy {
        egress,
        secrets: grants.secrets.clone(),
        reveal: grants.reveal.clone(),
        packs: grants.packs.clone(),
        limits,
    };
    Ok((policy, grants.tlp))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("qpkg.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `*.wasm` files directly in `dir`, sorted; none when `dir` does not exist.
fn component_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the plugins directory {}", dir.display()));
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    files.sort();
    Ok(files)
}
