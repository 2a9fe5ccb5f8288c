//! Outcome classification.

use capring_vm::outcome::{classify, console_marker, Deadline, Evidence, Outcome};

fn ev() -> Evidence {
    Evidence {
        hello: true,
        done: Some(true),
        qemu_status: Some(33),
        ..Default::default()
    }
}

#[test]
fn pass_needs_done_ok_and_a_clean_exit() {
    assert_eq!(classify(&ev()).0, Outcome::Pass);
    // power-off fallback (no debug-exit): DONE is authoritative
    assert_eq!(
        classify(&Evidence {
            qemu_status: Some(0),
            ..ev()
        })
        .0,
        Outcome::Pass
    );
    // DONE ok, but QEMU had to be killed: a hang is never a pass
    assert_eq!(
        classify(&Evidence {
            qemu_status: None,
            deadline: Some(Deadline::Exit),
            ..ev()
        })
        .0,
        Outcome::Fail
    );
    // DONE ok contradicted by the debug-exit code
    assert_eq!(
        classify(&Evidence {
            qemu_status: Some((0x23 << 1) | 1),
            ..ev()
        })
        .0,
        Outcome::Fail
    );
}

#[test]
fn failures() {
    assert_eq!(
        classify(&Evidence {
            done: Some(false),
            qemu_status: Some((0x21 << 1) | 1),
            ..ev()
        })
        .0,
        Outcome::Fail
    );
    assert_eq!(
        classify(&Evidence {
            failed_commands: vec!["check (code=1)".into()],
            ..ev()
        })
        .0,
        Outcome::Fail
    );
    assert_eq!(
        classify(&Evidence {
            protocol_errors: vec!["second DONE".into()],
            ..ev()
        })
        .0,
        Outcome::Fail
    );
}

#[test]
fn panics_and_early_exits() {
    let panic = Evidence {
        done: None,
        console_panic: Some("Kernel panic - not syncing: sysrq triggered crash".into()),
        qemu_status: Some(0),
        ..ev()
    };
    assert_eq!(classify(&panic).0, Outcome::KernelPanic);
    // QEMU exited after HELLO without DONE (reboot on panic with -no-reboot)
    assert_eq!(
        classify(&Evidence {
            done: None,
            qemu_status: Some(0),
            ..ev()
        })
        .0,
        Outcome::KernelPanic
    );
    // QEMU exited before HELLO
    assert_eq!(
        classify(&Evidence {
            hello: false,
            done: None,
            qemu_status: Some(0),
            ..ev()
        })
        .0,
        Outcome::KernelPanic
    );
    // The agent itself failed before HELLO (debug-exit failure)
    assert_eq!(
        classify(&Evidence {
            hello: false,
            done: None,
            qemu_status: Some((0x2f << 1) | 1),
            ..ev()
        })
        .0,
        Outcome::Fail
    );
    // A panic after DONE does not hide the verdict
    assert_eq!(
        classify(&Evidence {
            console_panic: Some("Kernel panic".into()),
            ..ev()
        })
        .0,
        Outcome::Pass
    );
}

#[test]
fn timeouts() {
    let boot = Evidence {
        hello: false,
        done: None,
        qemu_status: None,
        deadline: Some(Deadline::Boot),
        ..ev()
    };
    assert_eq!(classify(&boot).0, Outcome::BootTimeout);
    let test = Evidence {
        done: None,
        qemu_status: None,
        deadline: Some(Deadline::Test),
        ..ev()
    };
    assert_eq!(classify(&test).0, Outcome::TestTimeout);
}

#[test]
fn console_markers() {
    let mut n = 0;
    assert!(console_marker(
        "[    1.0] Kernel panic - not syncing: VFS",
        &mut n
    ));
    assert!(console_marker(
        "rcu: RCU grace-period kthread stack dump:",
        &mut n
    ));
    assert!(!console_marker(
        "watchdog: BUG: soft lockup - CPU#0 stuck",
        &mut n
    ));
    assert!(
        console_marker("watchdog: BUG: soft lockup - CPU#0 stuck", &mut n),
        "second soft lockup counts"
    );
    assert!(!console_marker("Run /init as init process", &mut n));
}

#[test]
fn outcome_names() {
    let names: Vec<String> = [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::KernelPanic,
        Outcome::BootTimeout,
        Outcome::TestTimeout,
    ]
    .iter()
    .map(|o| o.to_string())
    .collect();
    assert_eq!(
        names,
        [
            "PASS",
            "FAIL",
            "KERNEL_PANIC",
            "BOOT_TIMEOUT",
            "TEST_TIMEOUT"
        ]
    );
}
