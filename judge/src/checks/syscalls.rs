//! SPEC.md "Rings", `syscalls.*`: privileged operations only inside the Required or a
//! Requested ring.

use super::view::View;
use super::{fail_at, na, pass, Check};

pub fn privileged_in_ring(v: &View) -> Check {
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    let first = v.first_drop().map(|e| e.t_ns);
    let mut allowed = rings.requested_sets();
    allowed.push(super::ring::required_ring(v, rings));
    allowed.retain(|s| !s.is_empty());
    let mut count = 0;
    let last = v.plan().facts.cap_last_cap;
    for (e, call, _) in v.privileged() {
        count += 1;
        let set = e.own().map(|t| t.effective).unwrap_or_default();
        let why = if first.is_none_or(|f| e.t_ns < f) {
            Some("before the first drop")
        } else if !allowed.contains(&set) {
            Some(if set.is_empty() {
                "in the Unprivileged ring"
            } else {
                "outside every ring"
            })
        } else {
            None
        };
        if let Some(why) = why {
            return fail_at(
                "privileged operations only in the Required or a Requested ring",
                format!(
                    "{} by pid {} tid {} with E={} at +{} ms, {why}",
                    call.describe(last),
                    e.pid,
                    e.tid,
                    v.set(set),
                    e.t_ns / 1_000_000
                ),
                e.t_ns,
            );
        }
    }
    if count == 0 && rings.required.is_empty() {
        return na("no privileged operation was made, and none is needed: the selected events load no eBPF and have no Required capability");
    }
    if count == 0 {
        return super::fail(
            "privileged operations only in the Required or a Requested ring",
            format!("no privileged operation at all ({})", v.exit_text()),
        );
    }
    pass(
        "privileged operations only in the Required or a Requested ring",
        format!("{count} operations, all inside"),
    )
}
