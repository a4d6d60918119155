//! Loading Sigma rules: every file, every document, every rule either loads or is reported with its reason.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rsigma_eval::pipeline::{Pipeline, apply_pipelines, parse_pipeline};
use rsigma_eval::{CorrelationConfig, CorrelationEngine, CorrelationEventMode, compile_rule};
use rsigma_parser::{
    ConditionOperator, CorrelationCondition, CorrelationRule, CorrelationType, FilterRule,
    SigmaCollection, SigmaRule, parse_sigma_yaml,
};
use serde::{Deserialize, Serialize};

use crate::DetectError;
use crate::route::RuleSource;

/// A rule that loaded.
#[derive(Debug, Clone, Serialize)]
pub struct RuleInfo {
    /// The rule's `id` (its title when it has none).
    pub id: String,
    /// Its title.
    pub title: String,
    /// `detection`, `correlation` or `filter`.
    pub kind: &'static str,
    /// Its level, when it gives one.
    pub level: Option<String>,
    /// The file it came from.
    pub origin: String,
}

/// A rule, document or file that did not load, and why.
#[derive(Debug, Clone, Serialize)]
pub struct RuleFailure {
    /// The file (or source name) it is in.
    pub origin: String,
    /// The rule's title, when it got that far.
    pub rule: Option<String>,
    /// Why it did not load.
    pub reason: String,
}

/// What [`RuleSet::load`] loaded and what it could not.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// How many rule files were read.
    pub files: usize,
    /// The rules in use.
    pub loaded: Vec<RuleInfo>,
    /// What was left out, each with its reason.
    pub failed: Vec<RuleFailure>,
}

impl LoadReport {
    /// The share of rules that loaded, between 0 and 1 (1 when there were none).
    pub fn loaded_share(&self) -> f64 {
        let total = self.loaded.len() + self.failed.len();
        if total == 0 {
            1.0
        } else {
            self.loaded.len() as f64 / total as f64
        }
    }
}

/// A compiled, ready set of Sigma detection, correlation and filter rules.
pub struct RuleSet {
    engine: CorrelationEngine,
    /// How many `group-by` fields each correlation has, by id (or title).
    group_by: HashMap<String, usize>,
    sources: Vec<RuleSource>,
    correlations: usize,
    report: LoadReport,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.sources.len())
            .field("correlations", &self.correlations)
            .field("failed", &self.report.failed.len())
            .finish()
    }
}

/// How many events a correlation window remembers for its finding.
const MAX_WINDOW_EVENTS: usize = 100;

impl RuleSet {
    /// Loads every `.yml`/`.yaml` file under `paths` (files or directories, searched recursively, in name order),
    /// with field mapping by the processing pipelines in `pipelines` (pySigma's YAML format). A path that cannot
    /// be read or a malformed pipeline is an error; a rule that cannot be loaded is reported in [`Self::report`].
    pub fn load(paths: &[PathBuf], pipelines: &[PathBuf]) -> Result<Self, DetectError> {
        Self::load_with(Vec::new(), paths, pipelines)
    }

    /// Like [`Self::load`], with in-memory sources `(origin, YAML)` (e.g. rules embedded in the binary) first.
    pub fn load_with(
        mut documents: Vec<(String, String)>,
        paths: &[PathBuf],
        pipelines: &[PathBuf],
    ) -> Result<Self, DetectError> {
        let mut sources = Vec::new();
        for path in paths {
            collect_files(path, &mut sources)?;
        }
        let mut unreadable = Vec::new();
        for file in sources {
            let origin = file.display().to_string();
            match std::fs::read_to_string(&file) {
                Ok(text) => documents.push((origin, text)),
                Err(e) => unreadable.push(RuleFailure {
                    origin,
                    rule: None,
                    reason: format!("cannot read the file: {e}"),
                }),
            }
        }
        let mut parsed = Vec::with_capacity(pipelines.len());
        for path in pipelines {
            let text = std::fs::read_to_string(path).map_err(|source| DetectError::Read {
                path: path.clone(),
                source,
            })?;
            let pipeline = parse_pipeline(&text).map_err(|e| DetectError::Pipeline {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            parsed.push(pipeline);
        }
        let mut set = Self::from_sources(&documents, parsed);
        set.report.failed.splice(0..0, unreadable);
        Ok(set)
    }

    /// Loads rules from in-memory YAML sources, each `(origin, text)`; `origin` names it in the report.
    pub fn from_sources(sources: &[(String, String)], pipelines: Vec<Pipeline>) -> Self {
        let mut report = LoadReport {
            files: sources.len(),
            ..LoadReport::default()
        };
        let mut rules: Vec<(String, SigmaRule)> = Vec::new();
        let mut correlations: Vec<(String, CorrelationRule)> = Vec::new();
        let mut filters: Vec<(String, FilterRule)> = Vec::new();
        let mut ids: HashMap<String, String> = HashMap::new();

        for (origin, text) in sources {
            let collection = match parse_sigma_yaml(text) {
                Ok(c) => c,
                Err(e) => {
                    report.failed.push(RuleFailure {
                        origin: origin.clone(),
                        rule: None,
                        reason: format!("not a Sigma rule file: {e}"),
                    });
                    continue;
                }
            };
            for error in &collection.errors {
                report.failed.push(RuleFailure {
                    origin: origin.clone(),
                    rule: None,
                    reason: error.clone(),
                });
            }
            for mut rule in collection.rules {
                // rsigma 0.15 finds a matched rule's correlations by its id only, so a rule known only by
                // `name` (as the specification's examples refer to them) takes its name as id.
                if rule.id.is_none() {
                    rule.id = rule.name.clone();
                }
                let mut mapped = rule.clone();
                let checked = apply_pipelines(&pipelines, &mut mapped)
                    .map_err(|e| format!("field mapping failed: {e}"))
                    .and_then(|()| compile_rule(&mapped).map(|_| ()).map_err(|e| e.to_string()));
                if let Err(reason) = checked {
                    report.failed.push(RuleFailure {
                        origin: origin.clone(),
                        rule: Some(rule.title.clone()),
                        reason,
                    });
                    continue;
                }
                if let Some(first) = duplicate(&mut ids, rule.id.as_deref(), origin) {
                    report.failed.push(RuleFailure {
                        origin: origin.clone(),
                        rule: Some(rule.title.clone()),
                        reason: format!("its id is already used by a rule in {first}"),
                    });
                    continue;
                }
                rules.push((origin.clone(), rule));
            }
            for mut corr in collection.correlations {
                require_every_rule(&mut corr, text);
                if let Some(first) = duplicate(&mut ids, corr.id.as_deref(), origin) {
                    report.failed.push(RuleFailure {
                        origin: origin.clone(),
                        rule: Some(corr.title.clone()),
                        reason: format!("its id is already used by a rule in {first}"),
                    });
                    continue;
                }
                correlations.push((origin.clone(), corr));
            }
            filters.extend(collection.filters.into_iter().map(|f| (origin.clone(), f)));
        }

        // A correlation must refer to rules that loaded (by id or name); one that does not is reported.
        let mut known: HashSet<String> = HashSet::new();
        for (_, rule) in &rules {
            known.extend(rule.id.iter().cloned());
            known.extend(rule.name.iter().cloned());
        }
        for (_, corr) in &correlations {
            known.extend(corr.id.iter().cloned());
            known.extend(corr.name.iter().cloned());
        }
        correlations.retain(|(origin, corr)| {
            let missing: Vec<&String> = corr.rules.iter().filter(|r| !known.contains(*r)).collect();
            if missing.is_empty() {
                return true;
            }
            report.failed.push(RuleFailure {
                origin: origin.clone(),
                rule: Some(corr.title.clone()),
                reason: format!(
                    "it refers to rules that are not loaded: {}",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
            false
        });

        let mut engine = new_engine(&pipelines);
        let collection = SigmaCollection {
            rules: rules.iter().map(|(_, r)| r.clone()).collect(),
            correlations: Vec::new(),
            filters: filters.iter().map(|(_, f)| f.clone()).collect(),
            errors: Vec::new(),
        };
        if let Err(e) = engine.add_collection(&collection) {
            // Every rule compiled on its own above, so this is a filter that does not apply.
            for (origin, filter) in &filters {
                report.failed.push(RuleFailure {
                    origin: origin.clone(),
                    rule: Some(filter.title.clone()),
                    reason: format!("the filters could not be applied: {e}"),
                });
            }
            filters.clear();
            engine = new_engine(&pipelines);
            let bare = SigmaCollection {
                filters: Vec::new(),
                ..collection
            };
            if let Err(e) = engine.add_collection(&bare) {
                report.failed.push(RuleFailure {
                    origin: "(rule set)".to_owned(),
                    rule: None,
                    reason: format!("the detection rules could not be compiled together: {e}"),
                });
            }
        }
        let mut added = 0;
        let mut group_by = HashMap::new();
        for (origin, corr) in &correlations {
            match engine.add_correlation(corr) {
                Ok(()) => {
                    added += 1;
                    group_by.insert(
                        corr.id.clone().unwrap_or_else(|| corr.title.clone()),
                        corr.group_by.len(),
                    );
                    report.loaded.push(RuleInfo {
                        id: corr.id.clone().unwrap_or_else(|| corr.title.clone()),
                        title: corr.title.clone(),
                        kind: "correlation",
                        level: corr.level.map(|l| l.as_str().to_owned()),
                        origin: origin.clone(),
                    });
                }
                Err(e) => report.failed.push(RuleFailure {
                    origin: origin.clone(),
                    rule: Some(corr.title.clone()),
                    reason: e.to_string(),
                }),
            }
        }
        for (origin, rule) in &rules {
            report.loaded.push(RuleInfo {
                id: rule.id.clone().unwrap_or_else(|| rule.title.clone()),
                title: rule.title.clone(),
                kind: "detection",
                level: rule.level.map(|l| l.as_str().to_owned()),
                origin: origin.clone(),
            });
        }
        for (origin, filter) in &filters {
            report.loaded.push(RuleInfo {
                id: filter.id.clone().unwrap_or_else(|| filter.title.clone()),
                title: filter.title.clone(),
                kind: "filter",
                level: None,
                origin: origin.clone(),
            });
        }
        let sources = engine
            .engine()
            .rules()
            .iter()
            .map(|r| RuleSource {
                product: r.logsource.product.clone(),
                service: r.logsource.service.clone(),
                category: r.logsource.category.clone(),
            })
            .collect();
        Self {
            engine,
            group_by,
            sources,
            correlations: added,
            report,
        }
    }

    /// What loaded and what did not.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// How many detection rules are in use.
    pub fn detection_rules(&self) -> usize {
        self.sources.len()
    }

    /// How many correlation rules are in use.
    pub fn correlation_rules(&self) -> usize {
        self.correlations
    }

    /// How many `group-by` fields the correlation `id` has.
    pub(crate) fn group_by_len(&self, id: &str) -> usize {
        self.group_by.get(id).copied().unwrap_or(0)
    }

    pub(crate) fn has_correlations(&self) -> bool {
        self.correlations > 0
    }

    pub(crate) fn logsources(&self) -> Vec<RuleSource> {
        self.sources.clone()
    }

    pub(crate) fn engine(&self) -> &CorrelationEngine {
        &self.engine
    }

    pub(crate) fn engine_mut(&mut self) -> &mut CorrelationEngine {
        &mut self.engine
    }
}

/// The Sigma specification says a `temporal` correlation without a condition fires when *all* its rules matched
/// within the timespan; rsigma 0.15 defaults it to "at least one". A temporal rule whose YAML has no `condition`
/// gets `gte: <number of rules>`.
fn require_every_rule(corr: &mut CorrelationRule, text: &str) {
    if corr.correlation_type != CorrelationType::Temporal || explicit_condition(text, &corr.title) {
        return;
    }
    if let CorrelationCondition::Threshold { predicates, .. } = &mut corr.condition {
        *predicates = vec![(ConditionOperator::Gte, corr.rules.len() as u64)];
    }
}

/// Whether the YAML document titled `title` gives its correlation a `condition`.
fn explicit_condition(text: &str, title: &str) -> bool {
    serde_yaml::Deserializer::from_str(text)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .filter(|doc| doc.get("title").and_then(|t| t.as_str()) == Some(title))
        .any(|doc| {
            doc.get("correlation")
                .and_then(|c| c.get("condition"))
                .is_some()
        })
}

fn new_engine(pipelines: &[Pipeline]) -> CorrelationEngine {
    let config = CorrelationConfig {
        correlation_event_mode: CorrelationEventMode::Refs,
        max_correlation_events: MAX_WINDOW_EVENTS,
        // As the Sigma specification says: a rule used by a correlation (with `generate: false`, the default)
        // produces no finding of its own.
        emit_detections: false,
        ..CorrelationConfig::default()
    };
    let mut engine = CorrelationEngine::new(config);
    for pipeline in pipelines {
        engine.add_pipeline(pipeline.clone());
    }
    engine
}

/// Records `id` as coming from `origin`; returns where it was first seen when it is a duplicate.
fn duplicate(ids: &mut HashMap<String, String>, id: Option<&str>, origin: &str) -> Option<String> {
    let id = id?;
    if let Some(first) = ids.get(id) {
        return Some(first.clone());
    }
    ids.insert(id.to_owned(), origin.to_owned());
    None
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), DetectError> {
    let meta = std::fs::metadata(path).map_err(|source| DetectError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| DetectError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_files(&entry, out)?;
        } else if entry
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"))
        {
            out.push(entry);
        }
    }
    Ok(())
}
