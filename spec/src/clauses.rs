//! The clauses of `spec/SPEC.md`, parsed from the document itself so that the document is
//! the one place clause ids are defined.
//!
//! A clause heading looks like ``### `ring.unprivileged.empty` — MUST``; the first `> ` line
//! after it is the seed sentence, an `*Tracee:*` paragraph explains a deliberate difference.

use serde::Serialize;

pub const SPEC_MD: &str = include_str!("../SPEC.md");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    #[serde(rename = "MUST")]
    Must,
    #[serde(rename = "SHOULD")]
    Should,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Clause {
    pub id: String,
    pub level: Level,
    pub section: String,
    pub seed: String,
    pub text: String,
    pub tracee_difference: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClauseError {
    #[error("SPEC.md line {line}: malformed clause heading: {text}")]
    Heading { line: usize, text: String },
    #[error("SPEC.md: clause {0} has no seed sentence")]
    NoSeed(String),
    #[error("SPEC.md: clause {0} is defined twice")]
    Duplicate(String),
}

/// Parses clause sections out of a SPEC.md-shaped document.
pub fn parse(doc: &str) -> Result<Vec<Clause>, ClauseError> {
    let mut out: Vec<Clause> = Vec::new();
    let mut section = String::new();
    for (i, line) in doc.lines().enumerate() {
        if let Some(s) = line.strip_prefix("## ") {
            section = s.trim().to_string();
        } else if let Some(rest) = line.strip_prefix("### `") {
            let bad = || ClauseError::Heading {
                line: i + 1,
                text: line.to_string(),
            };
            let (id, tail) = rest.split_once('`').ok_or_else(bad)?;
            let level = match tail.trim().trim_start_matches('—').trim() {
                "MUST" => Level::Must,
                "SHOULD" => Level::Should,
                _ => return Err(bad()),
            };
            if id.is_empty() || id.contains(char::is_whitespace) {
                return Err(bad());
            }
            if out.iter().any(|c| c.id == id) {
                return Err(ClauseError::Duplicate(id.into()));
            }
            out.push(Clause {
                id: id.into(),
                level,
                section: section.clone(),
                seed: String::new(),
                text: String::new(),
                tracee_difference: None,
            });
        } else if let Some(c) = out.last_mut() {
            if let Some(seed) = line.strip_prefix("> ") {
                if c.seed.is_empty() {
                    c.seed = seed.trim().to_string();
                    continue;
                }
            }
            if let Some(diff) = line.strip_prefix("*Tracee:*") {
                c.tracee_difference = Some(diff.trim().to_string());
            } else if let Some(d) = c
                .tracee_difference
                .as_mut()
                .filter(|_| !line.trim().is_empty())
            {
                d.push(' ');
                d.push_str(line.trim());
            } else if !line.trim().is_empty() && !line.starts_with('#') {
                if !c.text.is_empty() {
                    c.text.push(' ');
                }
                c.text.push_str(line.trim());
            }
        }
    }
    if let Some(c) = out.iter().find(|c| c.seed.is_empty()) {
        return Err(ClauseError::NoSeed(c.id.clone()));
    }
    Ok(out)
}

/// Every clause of the project's SPEC.md.
pub fn all() -> Vec<Clause> {
    parse(SPEC_MD).expect("SPEC.md is checked by a unit test")
}

/// One clause by id.
pub fn get(id: &str) -> Option<Clause> {
    all().into_iter().find(|c| c.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed page lives in the steering repo's `shared/`, next to this checkout (CI lays
    /// it there too). Its absence is a failure, not a skip.
    fn seed_page() -> String {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/seed/000_c3a860d21a2aa916.txt"
        );
        std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!("the seed page {path} must be present beside the checkout: {e}")
        })
    }

    #[test]
    fn spec_md_parses() {
        let clauses = all();
        assert!(clauses.len() >= 30, "{}", clauses.len());
        let c = get("ring.unprivileged.empty").unwrap();
        assert_eq!(c.level, Level::Must);
        assert!(c.seed.contains("Unprivileged (ring 3)"));
        assert!(get("add.required").unwrap().tracee_difference.is_some());
    }

    /// Every seed quote must be a real sentence of the seed page (whitespace-normalised).
    #[test]
    fn seeds_quote_the_seed_page() {
        let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let seed = norm(&seed_page());
        for c in all() {
            assert!(
                seed.contains(&norm(&c.seed)),
                "{}: seed not found in the page: {:?}",
                c.id,
                c.seed
            );
        }
    }

    #[test]
    fn malformed_headings_are_refused() {
        assert!(matches!(
            parse("### `x` — MAYBE\n> s\n"),
            Err(ClauseError::Heading { line: 1, .. })
        ));
        assert!(matches!(
            parse("### `x` — MUST\ntext\n"),
            Err(ClauseError::NoSeed(_))
        ));
        assert!(matches!(
            parse("### `x` — MUST\n> a\n### `x` — MUST\n> b\n"),
            Err(ClauseError::Duplicate(_))
        ));
    }
}
