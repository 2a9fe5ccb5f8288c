//! The search for the minimal sufficient capability sets, over a black-box predicate
//! "the tracer works with this set" (one run of the tracer each; see [`super::trial`]).
//!
//! Why this shape: every answer costs a run of seconds (tens of seconds under emulation),
//! so the search asks as few questions as it can and says what it spent.
//!
//! * **Monotonicity** is assumed: a superset of a working set works, a subset of a failing
//!   set fails (capabilities only ever allow more). Every answer is remembered, and an
//!   answer that follows from one already known is *inferred*, not run.
//! * **One minimal set** ([`Search::minimize`]): the seeds are tried first (the oracle's
//!   predictions: when one works, the rest of the search only has to confirm it), then delta
//!   debugging by complements: remove half of the set, then quarters, …, down to single
//!   capabilities. It ends with a set from which no single capability can be removed, which
//!   by monotonicity is minimal. Greedy removal would cost |S| runs; with k needed
//!   capabilities this costs about 2k·log2(|S|/k), and a seed that is already minimal costs
//!   1 + |seed| runs.
//! * **Every minimal set** ([`Search::enumerate`]): after sets M1…Mk are found, any other
//!   minimal set avoids at least one capability of each Mi, so its complement in the
//!   universe contains a minimal *transversal* T of {M1…Mk} (a set meeting every Mi). The
//!   search tests U − T for each minimal transversal T: one that works is minimized into a
//!   new minimal set (it cannot be an old one: T meets them all); when none works there is
//!   no other minimal set within U, and the enumeration is exhaustive. Each new set costs its
//!   minimization plus the transversal tests; the run budget bounds the whole, and the
//!   result says whether it was exhaustive.

use capring_spec::caps::{Cap, CapSet};

use crate::measured::keep_minimal;

/// Why a search stopped before it finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The run budget (`--max-runs`) is spent.
    Budget(usize),
    /// capring was interrupted (Ctrl-C).
    Interrupted,
    /// The harness could not run the tracer (not the tracer failing: that is an answer).
    Harness(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Budget(n) => write!(f, "the run budget ({n} runs) is spent"),
            Stop::Interrupted => f.write_str("interrupted"),
            Stop::Harness(e) => write!(f, "harness error: {e}"),
        }
    }
}

/// A search over one predicate, with everything it learnt.
pub struct Search<F> {
    test: F,
    good: Vec<CapSet>,
    bad: Vec<CapSet>,
    runs: usize,
    inferred: usize,
    max_runs: usize,
}

/// What [`Search::enumerate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enumeration {
    /// Every minimal sufficient set found (within the universe), in the order found.
    pub minimal_sets: Vec<CapSet>,
    /// No other minimal set exists within the universe (under monotonicity).
    pub exhaustive: bool,
    /// Why it stopped early, if it did.
    pub stopped: Option<Stop>,
}

impl<F: FnMut(CapSet) -> Result<bool, Stop>> Search<F> {
    /// A search that may run the predicate `max_runs` times.
    pub fn new(max_runs: usize, test: F) -> Search<F> {
        Search {
            test,
            good: Vec::new(),
            bad: Vec::new(),
            runs: 0,
            inferred: 0,
            max_runs,
        }
    }

    /// Runs of the predicate so far.
    pub fn runs(&self) -> usize {
        self.runs
    }

    /// Answers given without a run (they followed from earlier ones).
    pub fn inferred(&self) -> usize {
        self.inferred
    }

    /// Whether `set` works: from what is known if it follows, else by a run.
    pub fn works(&mut self, set: CapSet) -> Result<bool, Stop> {
        if self.good.iter().any(|g| g.is_subset(set)) {
            self.inferred += 1;
            return Ok(true);
        }
        if self.bad.iter().any(|b| set.is_subset(*b)) {
            self.inferred += 1;
            return Ok(false);
        }
        if self.runs >= self.max_runs {
            return Err(Stop::Budget(self.max_runs));
        }
        self.runs += 1;
        let ok = (self.test)(set)?;
        if ok {
            self.good.push(set);
        } else {
            self.bad.push(set);
        }
        Ok(ok)
    }

    /// One minimal sufficient subset of `start`, which must work: the first seed inside it
    /// that works, confirmed by removing one capability at a time; else delta debugging by
    /// complements down to single capabilities.
    pub fn minimize(&mut self, start: CapSet, seeds: &[CapSet]) -> Result<CapSet, Stop> {
        for &seed in seeds {
            if seed != start && seed.is_subset(start) && self.works(seed)? {
                // A working seed is likely minimal already: confirm it one capability at a
                // time (|seed| runs) rather than by halves.
                return self.greedy(seed);
            }
        }
        self.ddmin(start)
    }

    /// Removes single capabilities while the rest works: |set| questions.
    fn greedy(&mut self, set: CapSet) -> Result<CapSet, Stop> {
        let mut current = set;
        for cap in set.iter() {
            let rest = current.difference(CapSet::EMPTY.with(cap));
            if self.works(rest)? {
                current = rest;
            }
        }
        Ok(current)
    }

    /// Delta debugging by complements, down to single capabilities.
    fn ddmin(&mut self, start: CapSet) -> Result<CapSet, Stop> {
        let mut current = start;
        let mut n = 2;
        while current.len() >= 2 {
            let mut reduced = false;
            for chunk in split(current, n) {
                let rest = current.difference(chunk);
                if self.works(rest)? {
                    current = rest;
                    n = (n - 1).max(2);
                    reduced = true;
                    break;
                }
            }
            if !reduced {
                if n >= current.len() {
                    break;
                }
                n = (2 * n).min(current.len());
            }
        }
        if current.len() == 1 && self.works(CapSet::EMPTY)? {
            current = CapSet::EMPTY;
        }
        Ok(current)
    }

    /// Every minimal sufficient subset of `universe` (see the module docs), seeds first.
    pub fn enumerate(&mut self, universe: CapSet, seeds: &[CapSet]) -> Enumeration {
        let mut found: Vec<CapSet> = Vec::new();
        let stopped = loop {
            match self.next_minimal(universe, seeds, &found) {
                Ok(Some(m)) => found.push(m),
                Ok(None) => break None,
                Err(stop) => break Some(stop),
            }
        };
        Enumeration {
            minimal_sets: found,
            exhaustive: stopped.is_none(),
            stopped,
        }
    }

    /// A minimal set not in `found`, or `None` when there is no other.
    fn next_minimal(
        &mut self,
        universe: CapSet,
        seeds: &[CapSet],
        found: &[CapSet],
    ) -> Result<Option<CapSet>, Stop> {
        for t in minimal_transversals(found) {
            let candidate = universe.difference(t);
            if self.works(candidate)? {
                let inside: Vec<CapSet> = seeds
                    .iter()
                    .copied()
                    .filter(|s| s.is_subset(candidate))
                    .collect();
                return self.minimize(candidate, &inside).map(Some);
            }
        }
        Ok(None)
    }
}

/// `set` cut into `n` parts of (nearly) equal size, lowest capabilities first.
fn split(set: CapSet, n: usize) -> Vec<CapSet> {
    let caps: Vec<Cap> = set.iter().collect();
    let n = n.clamp(1, caps.len().max(1));
    (0..n)
        .map(|i| {
            caps[i * caps.len() / n..(i + 1) * caps.len() / n]
                .iter()
                .copied()
                .collect()
        })
        .collect()
}

/// The minimal sets that meet every set of `sets` (Berge's algorithm), smallest first;
/// `[∅]` for no sets, none at all when one of the sets is empty.
pub fn minimal_transversals(sets: &[CapSet]) -> Vec<CapSet> {
    let mut ts = vec![CapSet::EMPTY];
    for &m in sets {
        let mut next = Vec::new();
        for &t in &ts {
            if t.intersection(m).is_empty() {
                next.extend(m.iter().map(|c| t.with(c)));
            } else {
                next.push(t);
            }
        }
        ts = keep_minimal(next);
    }
    ts.sort_by_key(|t| (t.len(), t.bits()));
    ts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> CapSet {
        CapSet::from_names(names.iter().copied()).unwrap()
    }

    /// A monotone predicate given by its minimal sets: a set works when it holds one.
    fn by_minimal(sets: Vec<CapSet>) -> impl FnMut(CapSet) -> Result<bool, Stop> {
        move |s| Ok(sets.iter().any(|m| m.is_subset(s)))
    }

    fn candidates() -> CapSet {
        set(&[
            "cap_bpf",
            "cap_perfmon",
            "cap_sys_admin",
            "cap_sys_resource",
            "cap_ipc_lock",
            "cap_net_admin",
            "cap_syslog",
            "cap_sys_ptrace",
            "cap_dac_read_search",
            "cap_dac_override",
        ])
    }

    fn sorted(mut v: Vec<CapSet>) -> Vec<CapSet> {
        v.sort();
        v
    }

    #[test]
    fn finds_every_minimal_set_of_the_ebpf_base() {
        let truth = vec![set(&["cap_bpf", "cap_perfmon"]), set(&["cap_sys_admin"])];
        let mut s = Search::new(100, by_minimal(truth.clone()));
        let e = s.enumerate(candidates(), &[]);
        assert!(e.exhaustive, "{e:?}");
        assert_eq!(sorted(e.minimal_sets), sorted(truth));
        // Without seeds: far fewer runs than the 2^10 subsets, and fewer than greedy
        // removal (10 runs per set) twice over.
        assert!(s.runs() <= 20, "{} runs", s.runs());
    }

    #[test]
    fn a_minimal_seed_costs_one_run_plus_one_per_capability() {
        let truth = vec![set(&["cap_bpf", "cap_perfmon", "cap_net_admin"])];
        let mut s = Search::new(100, by_minimal(truth.clone()));
        let m = s.minimize(candidates(), &truth).unwrap();
        assert_eq!(m, truth[0]);
        assert_eq!(s.runs(), 1 + 3);
    }

    #[test]
    fn a_seed_that_is_not_minimal_is_minimized_further() {
        let truth = vec![set(&["cap_bpf", "cap_net_admin"])];
        let seed = set(&["cap_bpf", "cap_perfmon", "cap_net_admin"]);
        let mut s = Search::new(100, by_minimal(truth.clone()));
        assert_eq!(s.minimize(candidates(), &[seed]).unwrap(), truth[0]);
    }

    #[test]
    fn a_seed_that_does_not_work_is_passed_over() {
        let truth = vec![set(&["cap_sys_admin", "cap_syslog"])];
        let mut s = Search::new(100, by_minimal(truth.clone()));
        let m = s
            .minimize(candidates(), &[set(&["cap_bpf", "cap_perfmon"])])
            .unwrap();
        assert_eq!(m, truth[0]);
    }

    #[test]
    fn overlapping_minimal_sets() {
        let truth = vec![
            set(&["cap_bpf", "cap_perfmon", "cap_net_admin"]),
            set(&["cap_sys_admin"]),
            set(&["cap_bpf", "cap_perfmon", "cap_syslog"]),
            set(&["cap_perfmon", "cap_dac_override", "cap_ipc_lock"]),
        ];
        let mut s = Search::new(200, by_minimal(truth.clone()));
        let e = s.enumerate(candidates(), &[]);
        assert!(e.exhaustive);
        assert_eq!(sorted(e.minimal_sets), sorted(truth));
    }

    #[test]
    fn nothing_needed_and_nothing_sufficient() {
        let mut s = Search::new(10, |_| Ok(true));
        let e = s.enumerate(candidates(), &[]);
        assert_eq!((e.minimal_sets, e.exhaustive), (vec![CapSet::EMPTY], true));
        let mut s = Search::new(10, |_| Ok(false));
        let e = s.enumerate(candidates(), &[]);
        assert_eq!((e.minimal_sets.len(), e.exhaustive, s.runs()), (0, true, 1));
    }

    #[test]
    fn a_single_needed_capability() {
        let truth = vec![set(&["cap_net_admin"])];
        let mut s = Search::new(100, by_minimal(truth.clone()));
        let e = s.enumerate(candidates(), &[]);
        assert_eq!(e.minimal_sets, truth);
        assert!(e.exhaustive);
    }

    #[test]
    fn the_budget_stops_the_search_and_says_so() {
        let truth = vec![set(&["cap_bpf", "cap_perfmon"]), set(&["cap_sys_admin"])];
        let mut s = Search::new(3, by_minimal(truth));
        let e = s.enumerate(candidates(), &[]);
        assert!(!e.exhaustive);
        assert_eq!(e.stopped, Some(Stop::Budget(3)));
        assert_eq!(s.runs(), 3);
    }

    #[test]
    fn answers_that_follow_from_known_ones_are_not_run() {
        let mut calls = 0;
        let mut s = Search::new(100, |x: CapSet| {
            calls += 1;
            Ok(x.contains(Cap::BPF))
        });
        assert!(s.works(set(&["cap_bpf"])).unwrap());
        assert!(s.works(set(&["cap_bpf", "cap_syslog"])).unwrap());
        assert!(!s.works(set(&["cap_syslog", "cap_kill"])).unwrap());
        assert!(!s.works(set(&["cap_kill"])).unwrap());
        assert_eq!((s.runs(), s.inferred()), (2, 2));
        drop(s);
        assert_eq!(calls, 2);
    }

    /// The cost the module docs state: over all 40 capabilities, one minimal set by halves
    /// costs far fewer runs than greedy removal (one per capability), and the oracle's seeds
    /// cut the whole enumeration to a few runs.
    #[test]
    fn delta_debugging_and_seeds_cost_less_than_greedy_removal() {
        let all = CapSet::all_up_to(40);
        for truth in [
            vec![set(&["cap_bpf", "cap_perfmon"]), set(&["cap_sys_admin"])],
            vec![
                set(&["cap_bpf", "cap_net_admin"]),
                set(&["cap_net_admin", "cap_sys_admin"]),
            ],
        ] {
            let mut one = Search::new(1000, by_minimal(truth.clone()));
            let m = one.minimize(all, &[]).unwrap();
            assert!(truth.contains(&m));
            assert!(one.runs() * 2 < all.len(), "{} runs", one.runs());
            let mut seeded = Search::new(1000, by_minimal(truth.clone()));
            let e = seeded.enumerate(all, &truth);
            assert!(e.exhaustive);
            assert!(seeded.runs() <= 8, "{} runs", seeded.runs());
            let mut blind = Search::new(1000, by_minimal(truth.clone()));
            let e = blind.enumerate(all, &[]);
            assert_eq!(sorted(e.minimal_sets), sorted(truth));
            assert!(blind.runs() < all.len(), "{} runs", blind.runs());
        }
    }

    #[test]
    fn transversals() {
        let a = set(&["cap_bpf", "cap_perfmon"]);
        let b = set(&["cap_sys_admin"]);
        assert_eq!(minimal_transversals(&[]), vec![CapSet::EMPTY]);
        assert_eq!(
            minimal_transversals(&[a, b]),
            vec![
                set(&["cap_sys_admin", "cap_perfmon"]),
                set(&["cap_sys_admin", "cap_bpf"])
            ]
        );
        assert!(minimal_transversals(&[CapSet::EMPTY]).is_empty());
        let c = set(&["cap_bpf", "cap_syslog"]);
        // {cap_bpf} meets a and c; with b it is {cap_bpf, cap_sys_admin}.
        assert!(minimal_transversals(&[a, c, b]).contains(&set(&["cap_bpf", "cap_sys_admin"])));
    }
}
