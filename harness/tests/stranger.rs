//! A tracer that does not speak the seed's grammar, judged through its profile alone.
//!
//! `stranger-tracer` (fixtures/tracers/handmade) has a bare `--no-drop`, one `--keep-cap`
//! / `--lose-cap` per capability in bare lowercase, a bypass variable of its own, probes given
//! as specs instead of event names, no capability listing, no rules engine, and exit codes
//! 64/77. Its rings are right. capring must judge its rings (the Requested clauses included,
//! through the catalog event with a per-event need) and report the interfaces it lacks as
//! "not supported", never as misbehaviour and never as a pass.
//!
//! Needs root and a built workspace (CI has both); fails loudly otherwise.

use std::path::Path;

use capring_judge::catalog::run_catalog;
use capring_judge::checks::Verdict;
use capring_judge::profile::Profile;
use capring_judge::scenario;
use capring_spec::clauses::Level;

#[test]
fn the_stranger_is_judged_through_its_profile() {
    assert!(capring_spec::sys::is_root(), "needs root (CI runs as root)");
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tracers/handmade/stranger.toml");
    let profile = Profile::load(&path).unwrap();
    capring_judge::catalog::check_programs(&profile)
        .unwrap_or_else(|e| panic!("{e}: build the workspace first"));
    let (report, _) = run_catalog(&profile, &scenario::builtin(), true, 1, |_| {}).unwrap();
    // Misbehaviour (not "unsupported") only where the fixture is known to be imperfect: its
    // missing-capability message names the library's event names, not its own.
    let wrong: Vec<String> = report
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .filter(|r| !(r.scenario == "missing-required" && r.clause == "caps.missing-required"))
        .map(|r| {
            format!(
                "{} {}: {} → {}",
                r.scenario, r.clause, r.expected, r.observed
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // What it lacks, and only that, is unsupported.
    let mut unsupported: Vec<&str> = report
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::Unsupported)
        .map(|r| r.clause.as_str())
        .collect();
    unsupported.sort();
    unsupported.dedup();
    assert_eq!(
        unsupported,
        [
            "drop.requested",
            "env.add-drop",
            "env.cli-wins",
            "help.lists-kernel-caps",
            "rules.allcaps",
            "rules.bypass-env",
            "rules.env-add-drop-ignored",
            "rules.no-add-drop",
            "rules.unprivileged",
            "usage.exit",
        ]
    );
    // Its own interface works: bypass by flag and by its variable, add and drop per
    // capability, usage errors with its own code, and the Requested ring judged.
    for (s, c) in [
        ("bypass-flag", "bypass.flag"),
        ("bypass-env", "bypass.env"),
        ("add-flag", "add.required"),
        ("drop-flag", "drop.required"),
        ("usage-unknown-capability", "usage.exit"),
        ("usage-add-drop-conflict", "usage.add-drop-conflict"),
        ("requested-per-event", "ring.requested.single"),
        ("requested-per-event", "ring.requested.returns"),
        ("requested-startup", "ring.requested.returns"),
    ] {
        let r = report
            .results
            .iter()
            .find(|r| r.scenario == s && r.clause == c)
            .unwrap_or_else(|| panic!("{s} {c} not judged"));
        assert_eq!(r.verdict, Verdict::Pass, "{s} {c}: {}", r.observed);
    }
    assert!(report
        .results
        .iter()
        .all(|r| r.level == Level::Must || r.level == Level::Should));
}
