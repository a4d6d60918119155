//! The limits a playbook document meets when it is loaded ([`crate::Playbook::parse`] and
//! [`crate::Playbook::load`]: `qila validate`, `qila run`, publishing through the API, and loading a stored
//! version again). They are constants, not settings, so that a version published under them always loads
//! again. `docs/playbooks.md` lists them with their error messages; `docs/security.md` with their tests.
//!
//! Publishing through the API meets the server's request body limit first (1 MiB by default).

/// The largest document accepted, in bytes of UTF-8 source.
pub const MAX_SOURCE_BYTES: usize = 8 * 1024 * 1024;

/// The most bytes a document may stand for once every alias (`*name`) is replaced by a copy of what its
/// anchor (`&name`) marks: the bytes of every key and scalar, plus one for every node. A document without
/// aliases never exceeds it (it stands for at most 1.5 times its source); expansion stops at the alias that
/// crosses it.
pub const MAX_EXPANDED_BYTES: usize = 2 * MAX_SOURCE_BYTES;

/// The most nodes (scalars, keys, lists and mappings) a document may have, aliases expanded. A step takes
/// about ten, so 100,000 steps fit.
pub const MAX_NODES: usize = 2_000_000;

/// The most nodes all the aliases of a document may stand for together. Within the limits above, what
/// aliases make costs memory at every later stage (JSON values, templates, positions), so it is held to a
/// tenth of [`MAX_NODES`].
pub const MAX_ALIAS_NODES: usize = 200_000;

/// The deepest nesting of lists and mappings accepted.
pub const MAX_DEPTH: usize = 64;

/// The most `${{ }}` expressions one playbook may hold (aliases count each time). A compiled expression
/// takes about 6 KiB, so this holds them to about 90 MiB; the largest realistic document the API accepts
/// (3,000 steps of three expressions, 1 MiB) holds 10,000.
pub const MAX_EXPRESSIONS: usize = 15_000;

/// The most problems reported for one document; the rest are counted in a last diagnostic.
pub const MAX_DIAGNOSTICS: usize = 100;

/// The most bytes of JSON pointers (one per value of a step's `with`, e.g. `/headers/0/name`) that the static
/// check against an action's input schema may have to report on; a `with` that does not match its schema and
/// is larger than this is reported as too large to check.
pub const MAX_SCHEMA_POINTER_BYTES: usize = 16 * 1024 * 1024;
