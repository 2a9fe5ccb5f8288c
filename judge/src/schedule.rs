//! Runs a list of jobs a few at a time, in list order, where some jobs must run alone.
//!
//! `capring check --jobs N` runs independent scenarios side by side; a scenario that changes or
//! judges machine-wide state (`perf_event_paranoid`, the kernel's BPF program list) waits until
//! nothing else runs, and nothing starts next to it. Jobs start in list order, so a job that must
//! run alone holds back the ones after it.

use std::sync::{Condvar, Mutex};

/// Runs `work(index, item)` for every item on up to `workers` threads and returns the results
/// in item order. An item for which `alone(item)` holds runs with no other item running.
pub fn run_ordered<T, R>(
    items: &[T],
    workers: usize,
    alone: impl Fn(&T) -> bool + Sync,
    work: impl Fn(usize, &T) -> R + Sync,
) -> Vec<R>
where
    T: Sync,
    R: Send,
{
    struct Queue<R> {
        next: usize,
        running: usize,
        alone_running: bool,
        done: Vec<Option<R>>,
    }
    let queue = Mutex::new(Queue {
        next: 0,
        running: 0,
        alone_running: false,
        done: (0..items.len()).map(|_| None).collect(),
    });
    let turn = Condvar::new();
    let worker = || loop {
        let (i, by_itself) = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let Some(item) = items.get(q.next) else {
                    return;
                };
                let by_itself = alone(item);
                let free = if by_itself {
                    q.running == 0
                } else {
                    !q.alone_running
                };
                if free {
                    let i = q.next;
                    q.next += 1;
                    q.running += 1;
                    q.alone_running = by_itself;
                    break (i, by_itself);
                }
                q = turn.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let r = work(i, &items[i]);
        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
        q.running -= 1;
        if by_itself {
            q.alone_running = false;
        }
        q.done[i] = Some(r);
        turn.notify_all();
    };
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            scope.spawn(worker);
        }
    });
    queue
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .done
        .into_iter()
        .map(|r| r.expect("every item ran (a panicking job propagates out of the scope)"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::run_ordered;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Jobs marked `true` must run alone.
    fn exercise(marks: &[bool], workers: usize) -> (Vec<usize>, usize, Vec<String>) {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let violations = Mutex::new(Vec::new());
        let out = run_ordered(
            marks,
            workers,
            |&a| a,
            |i, &a| {
                let now = running.fetch_add(1, SeqCst) + 1;
                peak.fetch_max(now, SeqCst);
                if a && now != 1 {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("job {i} started next to others"));
                }
                std::thread::sleep(Duration::from_millis(15));
                if a && running.load(SeqCst) != 1 {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("job {i} got company"));
                }
                running.fetch_sub(1, SeqCst);
                i * 10
            },
        );
        (out, peak.load(SeqCst), violations.into_inner().unwrap())
    }

    #[test]
    fn results_come_back_in_item_order() {
        let marks = [false, true, false, false, true, false, false, false];
        let (out, _, _) = exercise(&marks, 3);
        assert_eq!(out, (0..marks.len()).map(|i| i * 10).collect::<Vec<_>>());
    }

    #[test]
    fn lone_jobs_never_overlap_and_others_do() {
        let marks = [
            false, false, false, true, false, false, true, true, false, false,
        ];
        let (_, peak, violations) = exercise(&marks, 3);
        assert!(violations.is_empty(), "{violations:?}");
        assert!(
            peak >= 2,
            "independent jobs never ran side by side (peak {peak})"
        );
        assert!(peak <= 3, "more jobs at once than workers (peak {peak})");
    }

    #[test]
    fn one_worker_runs_one_at_a_time() {
        let (out, peak, violations) = exercise(&[false, true, false, false], 1);
        assert_eq!(peak, 1);
        assert!(violations.is_empty());
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn no_items_no_threads_no_results() {
        let out: Vec<u8> = run_ordered(&[] as &[u8], 4, |_| false, |_, &x| x);
        assert!(out.is_empty());
    }
}
