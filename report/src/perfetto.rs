//! Perfetto export: a run's thread lanes as Chrome Trace Event JSON, which Perfetto
//! (ui.perfetto.dev, `trace_processor`) and chrome://tracing open.
//!
//! Why: tracing people already read this kind of picture in Perfetto, with zoom, search and
//! SQL. The file follows the Trace Event Format: a `traceEvents` array of events with `ph`
//! (phase), `ts` (microseconds, fractional for nanoseconds), `pid` and `tid`:
//! * `M` metadata events name every process (`process_name`) and every thread
//!   (`thread_name`, exactly one per tid), so each thread is one track;
//! * one `X` (complete) slice per ring segment of a thread, named by the ring, with the five
//!   sets as `args`; a thread's segments follow each other, so slices on a track never
//!   overlap (Perfetto rejects partial overlaps);
//! * one `i` (instant, thread scope) event per marked call (credential change, privileged
//!   call, injected fault) with the call, its result and the caller's sets after it;
//! * one global instant event per failing clause, at the moment it failed (or at the end of
//!   the run, said in its args, when the check named no moment).
//!
//! The lanes come from [`crate::lanes`], shared with the HTML report.

use serde_json::{json, Map, Value};

use crate::lanes::{FailureMark, Lanes, Sets};

/// Nanoseconds as the format's microseconds (three decimals keep every nanosecond).
fn us(t_ns: u64) -> Value {
    json!(t_ns as f64 / 1000.0)
}

fn sets_args(sets: &Sets, cap_last_cap: u8) -> Map<String, Value> {
    sets.named(cap_last_cap)
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect()
}

/// What the trace is about, kept in `otherData`.
#[derive(Debug, Clone, Default)]
pub(crate) struct TraceInfo {
    pub tracer: String,
    pub scenario: String,
    pub kernel: String,
    pub feature_key: String,
}

/// The Chrome Trace Event document of one run.
pub(crate) fn trace(lanes: &Lanes, failures: &[FailureMark], info: &TraceInfo) -> Value {
    let mut events = metadata(lanes);
    for lane in lanes.lanes() {
        for s in &lane.segments {
            let mut args = sets_args(&s.sets, lanes.cap_last_cap);
            args.insert("ring".into(), json!(s.ring.key()));
            events.push(json!({
                "ph": "X", "name": s.ring.label(), "cat": "ring",
                "ts": us(s.start_ns), "dur": us(s.end_ns - s.start_ns),
                "pid": lane.pid, "tid": lane.tid, "args": args,
            }));
        }
    }
    for m in &lanes.marks {
        let mut args = m
            .sets
            .map(|s| sets_args(&s, lanes.cap_last_cap))
            .unwrap_or_default();
        args.insert("call".into(), json!(m.text));
        args.insert("injected".into(), json!(m.injected));
        events.push(json!({
            "ph": "i", "s": "t", "name": m.syscall, "cat": m.kinds().join(","),
            "ts": us(m.t_ns), "pid": m.pid, "tid": m.tid, "args": args,
        }));
    }
    for f in failures {
        events.push(json!({
            "ph": "i", "s": "g", "name": format!("{} {}", f.label, f.clause), "cat": "failure",
            "ts": us(f.t_ns), "pid": lanes.root_pid, "tid": lanes.root_pid,
            "args": {
                "clause": f.clause, "expected": f.expected, "observed": f.observed,
                "time": if f.at_end { "end of run: the check named no moment" } else { "when the clause failed" },
            },
        }));
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {
            "generator": format!("capring {}", env!("CARGO_PKG_VERSION")),
            "tracer": info.tracer, "scenario": info.scenario,
            "kernel": info.kernel, "feature_key": info.feature_key,
        },
    })
}

/// `process_name` per process, `thread_name` once per tid (a tid seen in two processes
/// keeps the first), and sort indexes that keep the tree's order of appearance.
fn metadata(lanes: &Lanes) -> Vec<Value> {
    let mut events = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for (i, p) in lanes.processes.iter().enumerate() {
        let name = format!("{} (pid {})", p.comms.join(" → "), p.pid);
        events.push(json!({"ph": "M", "name": "process_name", "pid": p.pid, "tid": p.pid, "args": {"name": name}}));
        events.push(json!({"ph": "M", "name": "process_sort_index", "pid": p.pid, "tid": p.pid, "args": {"sort_index": i}}));
        for (j, l) in p.lanes.iter().enumerate() {
            if !named.insert(l.tid) {
                continue;
            }
            let name = format!("{} (tid {})", l.comm, l.tid);
            events.push(json!({"ph": "M", "name": "thread_name", "pid": p.pid, "tid": l.tid, "args": {"name": name}}));
            events.push(json!({"ph": "M", "name": "thread_sort_index", "pid": p.pid, "tid": l.tid, "args": {"sort_index": j}}));
        }
    }
    events
}
