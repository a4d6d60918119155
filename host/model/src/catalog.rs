//! What the model needs to know about plugins: the input schema of each `plugin.action`.

use std::collections::BTreeMap;

use serde_json::Value;

/// Looks up the input JSON Schema of a plugin action.
pub trait ActionCatalog {
    /// The JSON Schema of `plugin.action`'s input, or an error message naming what is missing
    /// (unknown plugin / unknown action, with suggestions), e.g.
    /// ``unknown action `classify-ipp` in plugin `enrich` (did you mean `classify-ip`?)``.
    /// The schema is returned owned so that a catalog may change while the host runs (a plugin installed).
    fn input_schema(&self, plugin: &str, action: &str) -> Result<Value, String>;
}

/// An in-memory catalog (`plugin -> action -> input schema`), for tests and simple hosts.
#[derive(Debug, Clone, Default)]
pub struct StaticCatalog {
    plugins: BTreeMap<String, BTreeMap<String, Value>>,
}

impl StaticCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) `plugin.action` with its input schema.
    pub fn add(&mut self, plugin: &str, action: &str, input_schema: Value) -> &mut Self {
        self.plugins
            .entry(plugin.to_owned())
            .or_default()
            .insert(action.to_owned(), input_schema);
        self
    }

    /// Builder form of [`StaticCatalog::add`].
    pub fn with(mut self, plugin: &str, action: &str, input_schema: Value) -> Self {
        self.add(plugin, action, input_schema);
        self
    }
}

impl ActionCatalog for StaticCatalog {
    fn input_schema(&self, plugin: &str, action: &str) -> Result<Value, String> {
        let Some(actions) = self.plugins.get(plugin) else {
            return Err(format!(
                "unknown plugin `{plugin}`{}",
                did_you_mean(plugin, self.plugins.keys().map(String::as_str))
            ));
        };
        actions.get(action).cloned().ok_or_else(|| {
            format!(
                "unknown action `{action}` in plugin `{plugin}`{}",
                did_you_mean(action, actions.keys().map(String::as_str))
            )
        })
    }
}

/// The candidate closest to `name` by edit distance, if close enough to be a plausible typo
/// (distance at most a third of the name's length, and at least 1 allowed). Names longer than
/// [`SUGGEST_MAX_CHARS`] get no suggestion; a candidate whose length is too different is not compared, so the
/// cost is linear in the number of candidates.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let len = name.chars().count();
    if len > SUGGEST_MAX_CHARS {
        return None;
    }
    let limit = (len / 3).max(1);
    let name: Vec<char> = name.chars().collect();
    let mut buffers = Buffers::default();
    candidates
        .into_iter()
        .filter(|c| c.len() <= 4 * (SUGGEST_MAX_CHARS + limit))
        .filter(|c| c.chars().count().abs_diff(len) <= limit)
        .map(|c| (levenshtein(&name, c, &mut buffers), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The longest name (in characters) for which [`closest`] looks for a suggestion.
pub const SUGGEST_MAX_CHARS: usize = 64;

/// ``" (did you mean `x`?)"`` when a close candidate exists, else `""`.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Rows reused by [`levenshtein`] across candidates.
#[derive(Default)]
struct Buffers {
    b: Vec<char>,
    d: Vec<usize>,
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
fn levenshtein(a: &[char], b: &str, buffers: &mut Buffers) -> usize {
    let Buffers { b: bv, d } = buffers;
    bv.clear();
    bv.extend(b.chars());
    let b = bv.as_slice();
    let w = b.len() + 1;
    d.clear();
    d.resize((a.len() + 1) * w, 0);
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(closest("clasify", ["classify", "lookup"]), Some("classify"));
        assert_eq!(closest("zzz", ["classify", "lookup"]), None);
        assert_eq!(closest("wiht", ["with", "uses"]), Some("with"));
        let c = StaticCatalog::new().with("enrich", "classify-ip", serde_json::json!({}));
        assert_eq!(
            c.input_schema("enrih", "x").unwrap_err(),
            "unknown plugin `enrih` (did you mean `enrich`?)"
        );
        assert_eq!(
            c.input_schema("enrich", "classify-ipp").unwrap_err(),
            "unknown action `classify-ipp` in plugin `enrich` (did you mean `classify-ip`?)"
        );
    }
}
