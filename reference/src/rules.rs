//! The rules engine behind `ref-rules`: a few real detections over ref-tracer's JSON lines.
//!
//! It exists so the suite has a second program with a different capability contract: the
//! rules engine needs no capability at all, so it drops everything at start and only knows
//! `--allcaps`.

use serde::Serialize;
use serde_json::Value;

/// One rule that fired on one event; `ref-rules` prints each as a JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detection {
    /// The rule's stable name, e.g. `exec-from-temp-dir`, `shadow-write`, `kernel-module-load`.
    pub rule: &'static str,
    /// `medium`, `high` or `critical`: how urgent a finding of this rule is.
    pub severity: &'static str,
    /// One human-readable sentence naming what was seen (program, path or system call).
    pub summary: String,
    /// The ref-tracer event line that fired the rule, unchanged.
    pub event: Value,
}

const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;

fn text<'a>(event: &'a Value, key: &str) -> &'a str {
    event.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Applies every rule to one event.
pub fn detect(event: &Value) -> Vec<Detection> {
    let mut out = Vec::new();
    let kind = text(event, "event");
    let mut hit = |rule, severity, summary: String| {
        out.push(Detection {
            rule,
            severity,
            summary,
            event: event.clone(),
        })
    };
    match kind {
        "execve" | "sched_process_exec" => {
            let file = text(event, "filename");
            if ["/tmp/", "/dev/shm/", "/var/tmp/"]
                .iter()
                .any(|d| file.starts_with(d))
            {
                hit(
                    "exec-from-temp-dir",
                    "high",
                    format!("program executed from a temporary directory: {file}"),
                );
            }
        }
        "openat" => {
            let path = text(event, "path");
            let flags = event.get("flags").and_then(Value::as_u64).unwrap_or(0);
            if path == "/etc/shadow" && flags & (O_WRONLY | O_RDWR) != 0 {
                hit(
                    "shadow-write",
                    "critical",
                    format!("/etc/shadow opened for writing by {}", text(event, "comm")),
                );
            }
        }
        "module_load" => {
            let call = text(event, "syscall");
            if call == "init_module" || call == "finit_module" {
                hit(
                    "kernel-module-load",
                    "medium",
                    format!("{} called {call}", text(event, "comm")),
                );
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_fire_and_stay_quiet() {
        assert_eq!(
            detect(&json!({"event":"execve","filename":"/tmp/x"}))[0].rule,
            "exec-from-temp-dir"
        );
        assert!(detect(&json!({"event":"execve","filename":"/usr/bin/true"})).is_empty());
        assert_eq!(
            detect(&json!({"event":"openat","path":"/etc/shadow","flags":1}))[0].rule,
            "shadow-write"
        );
        assert!(detect(&json!({"event":"openat","path":"/etc/shadow","flags":0})).is_empty());
        assert_eq!(
            detect(&json!({"event":"module_load","syscall":"finit_module"}))[0].rule,
            "kernel-module-load"
        );
        assert!(detect(&json!({"event":"net_packet"})).is_empty());
        assert!(detect(&json!("not an object")).is_empty());
    }
}
