//! Protocol parsing: framing, nonce filtering, DONE uniqueness, FILE reassembly.

use capring_vm::protocol::{
    debug_exit_fail, decode_qemu_status, deflate, parse_line, safe_relpath, DebugExit, Event,
    ExitStatus, ProtocolError, Transcript, DEBUG_EXIT_OK, FILE_CHUNK,
};

const N: &str = "0123abcd";

fn line(ev: Event) -> String {
    ev.to_line(N)
}

#[test]
fn events_round_trip() {
    let evs = vec![
        Event::Hello {
            release: "6.1.0-50-cloud-amd64".into(),
            clocksource: "tsc".into(),
        },
        Event::Info("mount bpf: EPERM".into()),
        Event::Start {
            name: "check".into(),
        },
        Event::Out("ok 1 - scenario with  spaces ".into()),
        Event::Out(String::new()),
        Event::Err("warning: x".into()),
        Event::File {
            path: "a/b.json".into(),
            chunk: vec![0, 255, 10, 13],
        },
        Event::FileEnd {
            path: "a/b.json".into(),
            size: 4,
            deflated: false,
        },
        Event::FileEnd {
            path: "a/c.json".into(),
            size: 9,
            deflated: true,
        },
        Event::Exit {
            name: "check".into(),
            status: ExitStatus::Signal(9),
        },
        Event::Exit {
            name: "check".into(),
            status: ExitStatus::Timeout,
        },
        Event::Exit {
            name: "check".into(),
            status: ExitStatus::Code(3),
        },
        Event::Done { ok: false },
    ];
    for ev in evs {
        let l = line(ev.clone());
        assert_eq!(parse_line(N, &l).unwrap(), Some(ev.clone()), "{l}");
        // serial lines may arrive with CRLF
        assert_eq!(parse_line(N, &format!("{l}\r\n")).unwrap(), Some(ev));
    }
}

#[test]
fn wrong_nonce_and_noise_are_ignored() {
    let mut t = Transcript::new(N);
    assert_eq!(
        t.feed(&Event::Done { ok: true }.to_line("ffffffff"))
            .unwrap(),
        None
    );
    assert_eq!(t.feed("random kernel noise").unwrap(), None);
    assert_eq!(t.feed("@@CAPRING").unwrap(), None);
    assert_eq!(t.feed("@@CAPRINGX 0123abcd DONE ok").unwrap(), None);
    assert_eq!(
        t.feed(" @@CAPRING 0123abcd DONE ok").unwrap(),
        None,
        "marker must be at column 0"
    );
    assert_eq!(t.done, None);
    assert_eq!(t.ignored_lines, 5);
    assert!(t.errors.is_empty());
}

#[test]
fn duplicate_done_is_rejected() {
    let mut t = Transcript::new(N);
    t.feed(&line(Event::Hello {
        release: "r".into(),
        clocksource: "tsc".into(),
    }))
    .unwrap();
    t.feed(&line(Event::Done { ok: true })).unwrap();
    assert_eq!(
        t.feed(&line(Event::Done { ok: true })),
        Err(ProtocolError::DuplicateDone)
    );
    assert!(matches!(
        t.feed(&line(Event::Out("late".into()))),
        Err(ProtocolError::AfterDone(_))
    ));
    assert_eq!(t.done, Some(true));
    assert_eq!(t.errors.len(), 2);
}

#[test]
fn file_chunks_reassemble() {
    let data: Vec<u8> = (0..(FILE_CHUNK * 2 + 17))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut t = Transcript::new(N);
    t.feed(&line(Event::Start { name: "c".into() })).unwrap();
    for c in data.chunks(FILE_CHUNK) {
        t.feed(&line(Event::File {
            path: "junit.xml".into(),
            chunk: c.to_vec(),
        }))
        .unwrap();
    }
    assert!(t.files.is_empty(), "not complete before FILEEND");
    t.feed(&line(Event::FileEnd {
        path: "junit.xml".into(),
        size: data.len() as u64,
        deflated: false,
    }))
    .unwrap();
    assert_eq!(t.files["junit.xml"], data);
    // A resend replaces the earlier copy.
    t.feed(&line(Event::File {
        path: "junit.xml".into(),
        chunk: b"new".to_vec(),
    }))
    .unwrap();
    t.feed(&line(Event::FileEnd {
        path: "junit.xml".into(),
        size: 3,
        deflated: false,
    }))
    .unwrap();
    assert_eq!(t.files["junit.xml"], b"new");
}

#[test]
fn file_size_mismatch_and_bad_input_are_errors() {
    let mut t = Transcript::new(N);
    t.feed(&line(Event::File {
        path: "x".into(),
        chunk: vec![1, 2],
    }))
    .unwrap();
    assert!(matches!(
        t.feed(&line(Event::FileEnd {
            path: "x".into(),
            size: 3,
            deflated: false,
        })),
        Err(ProtocolError::SizeMismatch {
            announced: 3,
            received: 2,
            ..
        })
    ));
    assert!(matches!(
        t.feed("@@CAPRING 0123abcd FILE ../etc/passwd AAAA"),
        Err(ProtocolError::BadPath(_))
    ));
    assert!(matches!(
        t.feed("@@CAPRING 0123abcd FILE /abs AAAA"),
        Err(ProtocolError::BadPath(_))
    ));
    assert!(matches!(
        t.feed("@@CAPRING 0123abcd FILE ok.txt !!!"),
        Err(ProtocolError::BadBase64(_))
    ));
    assert!(matches!(
        t.feed("@@CAPRING 0123abcd EXIT c code=x"),
        Err(ProtocolError::Malformed(_))
    ));
    assert!(matches!(
        t.feed("@@CAPRING 0123abcd DONE maybe"),
        Err(ProtocolError::Malformed(_))
    ));
    assert!(matches!(
        t.feed("@@CAPRING 0123abcd HELLO"),
        Err(ProtocolError::Malformed(_))
    ));
    assert!(matches!(
        t.feed("@@CAPRING 0123abcd BOGUS x"),
        Err(ProtocolError::UnknownVerb(_))
    ));
    assert!(!t.files.contains_key("x"));
}

#[test]
fn output_goes_to_the_running_command() {
    let mut t = Transcript::new(N);
    for ev in [
        Event::Start { name: "a".into() },
        Event::Out("one".into()),
        Event::Exit {
            name: "a".into(),
            status: ExitStatus::Code(0),
        },
        Event::Start { name: "b".into() },
        Event::Err("two".into()),
        Event::Exit {
            name: "b".into(),
            status: ExitStatus::Timeout,
        },
        Event::Done { ok: false },
    ] {
        t.feed(&line(ev)).unwrap();
    }
    assert_eq!(t.commands.len(), 2);
    assert_eq!(t.commands[0].stdout, ["one"]);
    assert_eq!(t.commands[1].stderr, ["two"]);
    assert_eq!(t.commands[1].exit, Some(ExitStatus::Timeout));
}

#[test]
fn relpaths() {
    assert!(safe_relpath("a/b.json"));
    for bad in ["", "/a", "a/../b", "..", "a//b", "./a", "a\\b"] {
        assert!(!safe_relpath(bad), "{bad}");
    }
}

#[test]
fn qemu_exit_status_decoding() {
    // isa-debug-exit: QEMU exits with (value << 1) | 1.
    assert_eq!(
        decode_qemu_status(((DEBUG_EXIT_OK as i32) << 1) | 1),
        DebugExit::Ok
    );
    assert_eq!(decode_qemu_status(33), DebugExit::Ok);
    assert_eq!(
        decode_qemu_status(((debug_exit_fail(3) as i32) << 1) | 1),
        DebugExit::Fail(3)
    );
    assert_eq!(debug_exit_fail(200), 0x2f);
    assert_eq!(
        debug_exit_fail(0),
        0x21,
        "a failure never encodes as code 0"
    );
    assert_eq!(decode_qemu_status(0), DebugExit::None);
    assert_eq!(decode_qemu_status(1), DebugExit::None);
}

#[test]
fn deflated_files_inflate_on_the_host_and_shrink_on_the_wire() {
    // A timeline-like JSON document: repetitive, as the real ones are.
    let doc: String = (0..2000)
        .map(|i| format!("{{\"t_ns\": {i}, \"effective\": [\"cap_bpf\", \"cap_perfmon\"]}},\n"))
        .collect();
    let packed = deflate(doc.as_bytes());
    assert!(
        packed.len() * 10 < doc.len(),
        "{} bytes packed to {}",
        doc.len(),
        packed.len()
    );
    let mut t = Transcript::new(N);
    for c in packed.chunks(FILE_CHUNK) {
        t.feed(&line(Event::File {
            path: "timelines/a.json".into(),
            chunk: c.to_vec(),
        }))
        .unwrap();
    }
    t.feed(&line(Event::FileEnd {
        path: "timelines/a.json".into(),
        size: packed.len() as u64,
        deflated: true,
    }))
    .unwrap();
    assert_eq!(t.files["timelines/a.json"], doc.as_bytes());
}

#[test]
fn a_corrupt_deflated_file_is_an_error_not_a_file() {
    let mut t = Transcript::new(N);
    t.feed(&line(Event::File {
        path: "x.json".into(),
        chunk: b"not zlib".to_vec(),
    }))
    .unwrap();
    assert!(matches!(
        t.feed(&line(Event::FileEnd {
            path: "x.json".into(),
            size: 8,
            deflated: true,
        })),
        Err(ProtocolError::BadDeflate(p)) if p == "x.json"
    ));
    assert!(t.files.is_empty());
    assert!(matches!(
        t.feed("@@CAPRING 0123abcd FILEEND x.json 8 gzip"),
        Err(ProtocolError::Malformed(_))
    ));
}
