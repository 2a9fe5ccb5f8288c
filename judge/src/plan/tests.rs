//! Plans built from a profile and a scenario: what the profile adds to a scenario's needs.

use std::path::Path;

use capring_spec::facts::EnvFacts;

use super::{plan, NoPlan, Options};
use crate::profile::Profile;
use crate::scenario::{self, Need, Scenario};

fn profile(extra: &str) -> Profile {
    let text = format!("name = \"x\"\nbinary = \"/bin/true\"\n{extra}");
    Profile::parse(&text, Path::new("x.toml")).unwrap()
}

fn steady_state() -> Scenario {
    scenario::builtin()
        .into_iter()
        .find(|s| s.name == "steady-state")
        .unwrap()
}

#[test]
fn a_profiles_needs_join_every_scenarios() {
    let s = steady_state();
    assert!(!s.needs.contains(&Need::Tracefs), "{:?}", s.needs);
    let p = plan(
        &profile("needs = [\"tracefs\"]\n"),
        &s,
        &EnvFacts::example(),
        Options::default(),
    )
    .unwrap();
    assert!(p.scenario.needs.contains(&Need::Tracefs));
    let p = plan(&profile(""), &s, &EnvFacts::example(), Options::default()).unwrap();
    assert!(!p.scenario.needs.contains(&Need::Tracefs));
}

#[test]
fn a_profile_need_the_machine_lacks_makes_every_scenario_not_applicable() {
    let mut facts = EnvFacts::example();
    facts.cgroup2 = None;
    let s = steady_state();
    assert!(plan(&profile(""), &s, &facts, Options::default()).is_ok());
    match plan(
        &profile("needs = [\"cgroup2\"]\n"),
        &s,
        &facts,
        Options::default(),
    ) {
        Err(NoPlan::NotApplicable(why)) => assert!(why.contains("cgroup v2"), "{why}"),
        other => panic!("expected not applicable, got {other:?}"),
    }
}

#[test]
fn an_unknown_need_is_a_profile_error() {
    let err = Profile::parse(
        "name = \"x\"\nbinary = \"/bin/true\"\nneeds = [\"debugfs\"]\n",
        Path::new("x.toml"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("debugfs"), "{err}");
}
