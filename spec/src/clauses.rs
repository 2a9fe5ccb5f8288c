//! The clauses of `spec/SPEC.md`, parsed from the document itself so that the document is
//! the one place clause ids are defined.
//!
//! A clause heading looks like ``### `ring.unprivileged.empty` — MUST`` (or ``— SHOULD (MUST
//! in strict)``); the first `> ` line after it is the seed sentence, a `*Consequence:*`
//! paragraph derives a MUST the seed does not state in so many words, and an `*Tracee:*`
//! paragraph explains a deliberate difference.

use serde::{Deserialize, Serialize};

/// The text of `spec/SPEC.md`, built in: the clause ids a binary knows are the ones of the
/// document it was built from.
pub const SPEC_MD: &str = include_str!("../SPEC.md");
/// The seed page the clauses quote (`spec/seed.md`).
pub const SEED_MD: &str = include_str!("../seed.md");

/// A clause's requirement level, in the RFC 2119 sense. Serialized and displayed as
/// `MUST` / `SHOULD`; `Must` sorts first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    /// A seed sentence states it, or a written consequence derives it: a tracer that fails
    /// it does not conform.
    #[serde(rename = "MUST")]
    Must,
    /// Capring's own reading where the seed is silent: reported, but not a conformance
    /// failure (unless the clause is strict and the profile opts in).
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

/// One clause of SPEC.md: a ``### `id` — LEVEL`` heading and the paragraphs under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Clause {
    /// Stable dotted id (`ring.unprivileged.empty`): checks, reports and snapshots refer
    /// to the clause by it, and a changed rule gets a new id.
    pub id: String,
    /// The level written in the heading (before any strict opt-in, see [`Clause::level_for`]).
    pub level: Level,
    /// The `## ` heading the clause sits under (`Rings`, `Bypass`, …), for grouping in
    /// reports.
    pub section: String,
    /// The quoted seed sentence (the first `> ` line), word for word from `seed.md`.
    pub seed: String,
    /// The rule itself: the clause's plain paragraphs joined into one line (no seed quote,
    /// consequence or Tracee note).
    pub text: String,
    /// SHOULD here, MUST for a profile that opts into `level = "strict"`.
    pub strict: bool,
    /// How the MUST follows from the seed sentence, when the sentence does not state it.
    pub consequence: Option<String>,
    /// The `*Tracee:*` note: where Tracee's code differs from the rule and why the
    /// reference follows the seed instead. `None` when they agree.
    pub tracee_difference: Option<String>,
}

impl Clause {
    /// The level for a tracer that opted into the strict level (or not).
    pub fn level_for(&self, strict: bool) -> Level {
        if strict && self.strict {
            Level::Must
        } else {
            self.level
        }
    }
}

/// Why a SPEC.md-shaped document was refused: its clause ids would not be reliable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClauseError {
    /// A ``### ` `` heading without a closing backtick, with an empty id or blanks in it,
    /// or with a level other than `MUST`, `SHOULD` or `SHOULD (MUST in strict)`.
    #[error("SPEC.md line {line}: malformed clause heading: {text}")]
    Heading {
        /// 1-based line number in the document.
        line: usize,
        /// The whole heading line as written.
        text: String,
    },
    /// The clause (by id) quotes no seed sentence: every rule must rest on one.
    #[error("SPEC.md: clause {0} has no seed sentence")]
    NoSeed(String),
    /// Two headings use this id.
    #[error("SPEC.md: clause {0} is defined twice")]
    Duplicate(String),
}

/// Which paragraph of a clause a line continues.
#[derive(Clone, Copy)]
enum Paragraph {
    Text,
    Consequence,
    Tracee,
}

/// Parses clause sections out of a SPEC.md-shaped document.
pub fn parse(doc: &str) -> Result<Vec<Clause>, ClauseError> {
    let mut out: Vec<Clause> = Vec::new();
    let mut section = String::new();
    let mut paragraph = Paragraph::Text;
    for (i, line) in doc.lines().enumerate() {
        if let Some(s) = line.strip_prefix("## ") {
            section = s.trim().to_string();
        } else if let Some(rest) = line.strip_prefix("### `") {
            let bad = || ClauseError::Heading {
                line: i + 1,
                text: line.to_string(),
            };
            let (id, tail) = rest.split_once('`').ok_or_else(bad)?;
            let (level, strict) = match tail.trim().trim_start_matches('—').trim() {
                "MUST" => (Level::Must, false),
                "SHOULD" => (Level::Should, false),
                "SHOULD (MUST in strict)" => (Level::Should, true),
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
                strict,
                consequence: None,
                tracee_difference: None,
            });
        } else if let Some(c) = out.last_mut() {
            if let Some(seed) = line.strip_prefix("> ") {
                if c.seed.is_empty() {
                    c.seed = seed.trim().to_string();
                    continue;
                }
            }
            if line.trim().is_empty() {
                paragraph = Paragraph::Text;
            } else if let Some(diff) = line.strip_prefix("*Tracee:*") {
                c.tracee_difference = Some(diff.trim().to_string());
                paragraph = Paragraph::Tracee;
            } else if let Some(why) = line.strip_prefix("*Consequence:*") {
                c.consequence = Some(why.trim().to_string());
                paragraph = Paragraph::Consequence;
            } else if let (Paragraph::Tracee, Some(d)) = (paragraph, c.tracee_difference.as_mut()) {
                d.push(' ');
                d.push_str(line.trim());
            } else if let (Paragraph::Consequence, Some(d)) = (paragraph, c.consequence.as_mut()) {
                d.push(' ');
                d.push_str(line.trim());
            } else if !line.starts_with('#') {
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

    #[test]
    fn spec_md_parses() {
        let clauses = all();
        assert!(clauses.len() >= 30, "{}", clauses.len());
        let c = get("ring.unprivileged.empty").unwrap();
        assert_eq!(c.level, Level::Must);
        assert!(c.seed.contains("Unprivileged (ring 3)"));
        assert!(get("add.required").unwrap().tracee_difference.is_some());
        let cli = get("env.cli-wins").unwrap();
        assert_eq!((cli.level, cli.strict), (Level::Should, true));
        assert_eq!(cli.level_for(true), Level::Must);
        assert_eq!(cli.level_for(false), Level::Should);
        let bypass_only = get("ring.privileged.bypass-only").unwrap();
        assert!(bypass_only.consequence.unwrap().contains("almost never"));
        assert!(!bypass_only.text.contains("Consequence"));
    }

    /// A MUST rests on the seed: either its quote states it, or a written consequence
    /// derives it. Capring's own choices are SHOULD (strict at most).
    #[test]
    fn every_must_is_stated_or_derived() {
        for c in all().iter().filter(|c| c.level == Level::Must) {
            assert!(!c.strict, "{}: a MUST cannot also be strict-only", c.id);
            let stated = c.consequence.is_none();
            if stated {
                // Stated outright: the clause's own quote is one of the seed's rules.
                assert!(c.seed.len() > 20, "{}: {:?}", c.id, c.seed);
            }
        }
        let strict: Vec<String> = all()
            .into_iter()
            .filter(|c| c.strict)
            .map(|c| c.id)
            .collect();
        for id in [
            "env.cli-wins",
            "usage.exit",
            "usage.add-drop-conflict",
            "rules.no-add-drop",
        ] {
            assert!(strict.iter().any(|s| s == id), "{id} should be strict-only");
        }
    }

    /// Every seed quote must be a real sentence of the seed page (whitespace-normalised).
    #[test]
    fn seeds_quote_the_seed_page() {
        let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let seed = norm(SEED_MD);
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
