use super::{Follows, PinChange, Touched, check_ring};

fn touched(name: &str, replaced: bool) -> Touched {
    Touched {
        id: uuid::Uuid::new_v4(),
        name: name.into(),
        host: "h\t1".into(),
        ring: "stable".into(),
        desired_state: "running".into(),
        paused: false,
        status: Some("online".into()),
        status_reason: None,
        runtime_image_digest: None,
        replaced,
        not_replaced: (!replaced).then(|| "no container yet".into()),
    }
}

#[test]
fn row_text_cannot_break_the_preview_tables() {
    let change = PinChange {
        kind: "pin",
        runtime: "agent".into(),
        ring: "stable".into(),
        from: None,
        to: format!("sha256:{}", "a".repeat(64)),
        note: None,
        by: None,
        history_id: None,
        recorded_as: None,
        follows: None,
        stable_at: None,
        touched: vec![
            touched("one\nws-fake  w  h1", true),
            touched("\x1b[2Jtwo", false),
        ],
        local_build_note: None,
        halted_on: Vec::new(),
        applied: false,
    };
    let out = change.render();
    assert!(!out.contains(['\x1b', '\t']), "{out:?}");
    // The header line, then per group its line, table header and row.
    assert_eq!(out.lines().count(), 7, "{out}");
    assert!(out.contains(r#""one\nws-fake  w  h1""#), "{out}");
    assert!(out.contains(r#""\u{1b}[2Jtwo""#), "{out}");
    assert!(out.contains(r#""h\t1""#), "{out}");
    let json = serde_json::to_value(&change).unwrap();
    assert_eq!(json["touched"][1]["name"], "\x1b[2Jtwo");
}

#[test]
fn a_note_and_a_ring_typed_with_control_characters_are_shown_escaped() {
    let change = PinChange {
        kind: "pin",
        runtime: "agent".into(),
        ring: "canary\u{1b}[2J".into(),
        from: None,
        follows: Some(Follows::MovingTag),
        to: format!("sha256:{}", "a".repeat(64)),
        note: Some("fix\u{1b}[31m red\nsecond line".into()),
        by: Some("ops\u{7}".into()),
        history_id: None,
        stable_at: None,
        recorded_as: None,
        touched: Vec::new(),
        local_build_note: None,
        halted_on: Vec::new(),
        applied: false,
    };
    let out = change.render();
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(
        out.contains(r#"note: "fix\u{1b}[31m red\nsecond line""#),
        "{out}"
    );
    assert!(out.contains(r#"pin agent/"canary\u{1b}[2J""#), "{out}");
    assert!(out.contains("(no pin: follows the moving tag)"), "{out}");
}

#[test]
fn a_ring_is_a_word() {
    for ok in ["stable", "canary", "ring-2", "eu.west_1"] {
        assert!(check_ring(ok).is_ok(), "{ok}");
    }
    for bad in ["", " ", "canary ", "a b", "x\u{1b}[2J", "t\tab"] {
        assert!(check_ring(bad).is_err(), "{bad:?}");
    }
}
