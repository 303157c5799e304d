//! Rows that cannot make a safe container, each with the reason and the
//! words of its message.

use serde_json::json;

use super::*;
use crate::model::{Reason, WorkspaceAccess};
use crate::plan::InvalidSpec;

fn judge(row: &WorkspaceRow) -> InvalidSpec {
    spec(row, &Catalogue::seeded(), &Settings::test()).expect_err("an invalid row")
}

fn rejects(row: WorkspaceRow, reason: Reason, words: &str) {
    let e = judge(&row);
    assert_eq!(e.reason, reason, "{e}");
    assert!(e.message.contains(words), "{:?} lacks {words:?}", e.message);
}

#[test]
fn an_empty_env_key_is_invalid() {
    rejects(
        row(1).with_env(json!({"": "x"})),
        Reason::InvalidSpec,
        "is empty",
    );
}

#[test]
fn an_env_key_with_equals_or_nul_is_invalid() {
    rejects(
        row(1).with_env(json!({"A=B": "x"})),
        Reason::InvalidSpec,
        "contains '='",
    );
    rejects(
        row(1).with_env(json!({"A\u{0}": "x"})),
        Reason::InvalidSpec,
        "NUL",
    );
}

#[test]
fn a_non_string_env_value_is_invalid_and_not_shown() {
    rejects(
        row(1).with_env(json!({"N": 5})),
        Reason::InvalidSpec,
        "\"N\" is not a string",
    );
    rejects(
        row(1).with_env(json!(["x"])),
        Reason::InvalidSpec,
        "not a JSON object",
    );
}

#[test]
fn an_env_entry_over_128_kib_with_its_key_and_nul_is_invalid() {
    // `OK=` + value + NUL fill the 128 KiB a process's entry may hold.
    let at_limit = "v".repeat(128 * 1024 - 4);
    assert!(
        spec(
            &row(1).with_env(json!({"OK": at_limit})),
            &Catalogue::seeded(),
            &Settings::test()
        )
        .is_ok()
    );
    let value = "v".repeat(128 * 1024);
    rejects(
        row(1).with_env(json!({"BIG": value})),
        Reason::InvalidSpec,
        "131077-byte entry",
    );
    let key = "K".repeat(200_000);
    rejects(
        row(1).with_env(json!({ key: "x" })),
        Reason::InvalidSpec,
        "128 KiB",
    );
}

#[test]
fn a_config_file_name_or_path_longer_than_a_file_system_takes_is_invalid() {
    let long_name = format!("dir/{}", "n".repeat(256));
    rejects(
        row(1).with_config_files(json!({"config.yaml": "a", long_name: "x"})),
        Reason::InvalidSpec,
        "256 bytes, over the 255 a file name may hold",
    );
    let deep = vec!["d".repeat(200); 21].join("/");
    rejects(
        row(1).with_config_files(json!({"config.yaml": "a", deep: "x"})),
        Reason::InvalidSpec,
        "a path may hold",
    );
    let fits = format!("dir/{}", "n".repeat(255));
    assert!(
        spec(
            &row(1).with_config_files(json!({"config.yaml": "a", fits: "x"})),
            &Catalogue::seeded(),
            &Settings::test()
        )
        .is_ok()
    );
}

#[test]
fn a_total_env_over_1_mib_is_invalid() {
    let chunk = "v".repeat(100 * 1024);
    let env: serde_json::Map<String, serde_json::Value> =
        (0..11).map(|i| (format!("K{i}"), json!(chunk))).collect();
    rejects(row(1).with_env(env.into()), Reason::InvalidSpec, "1 MiB");
}

#[test]
fn access_without_a_directory_is_invalid() {
    let r = row(1).with_workspace(None, WorkspaceAccess::ReadOnly);
    rejects(r, Reason::InvalidSpec, "needs workspace_dir");
}

#[test]
fn a_relative_or_unnormal_directory_is_invalid() {
    let r = row(1).with_workspace(Some("srv/workspaces/a"), WorkspaceAccess::ReadWrite);
    rejects(r, Reason::InvalidSpec, "not absolute");
    let r = row(1).with_workspace(Some("/srv/workspaces/../etc"), WorkspaceAccess::ReadWrite);
    rejects(r, Reason::InvalidSpec, "'..'");
    let r = row(1).with_workspace(Some("/srv/workspaces/a:/etc"), WorkspaceAccess::ReadWrite);
    rejects(r, Reason::InvalidSpec, "':'");
}

#[test]
fn a_directory_outside_the_allowed_roots_is_invalid() {
    let r = row(1).with_workspace(Some("/etc"), WorkspaceAccess::ReadOnly);
    rejects(r, Reason::InvalidSpec, "outside the allowed roots");
    let sibling = row(1).with_workspace(Some("/srv/workspaces2/a"), WorkspaceAccess::ReadOnly);
    rejects(sibling, Reason::InvalidSpec, "outside the allowed roots");
}

#[test]
fn a_bad_image_reference_is_invalid() {
    rejects(row(1).with_image("Not A Ref"), Reason::InvalidSpec, "image");
    rejects(
        row(1).with_image("r.io/x@sha256:abc"),
        Reason::InvalidSpec,
        "bad digest",
    );
}

#[test]
fn an_unknown_runtime_without_an_explicit_image_is_invalid() {
    rejects(
        row(1).with_runtime("nope"),
        Reason::InvalidSpec,
        "not in the runtimes catalogue",
    );
    let explicit = row(1).with_runtime("nope").with_image("r.io/x:1");
    assert!(spec(&explicit, &Catalogue::seeded(), &Settings::test()).is_ok());
}

#[test]
fn a_config_file_path_that_escapes_configs_is_invalid() {
    for path in ["../x", "/etc/passwd", "a/../../b", "", "a//b", "./a"] {
        let r = row(1).with_config_files(json!({ path: "x" }));
        rejects(r, Reason::InvalidSpec, "inside /configs");
    }
    rejects(
        row(1).with_config_files(json!({"a": 1})),
        Reason::InvalidSpec,
        "not a string",
    );
}

#[test]
fn a_config_file_that_is_also_a_directory_is_invalid() {
    for files in [
        json!({"config.yaml": "x", "a": "x", "a/b": "y"}),
        json!({"config.yaml": "x", "a/b": "x", "a/b/c/d": "y", "a-z": "z"}),
    ] {
        rejects(
            row(1).with_config_files(files),
            Reason::InvalidSpec,
            "is a file and also the directory of",
        );
    }
    // Siblings and shared prefixes are fine.
    let fine =
        row(1).with_config_files(json!({"config.yaml": "x", "a/b": "x", "a/c": "y", "ab": "z"}));
    assert!(spec(&fine, &Catalogue::seeded(), &Settings::test()).is_ok());
}

#[test]
fn config_files_over_4_mib_in_a_row_are_invalid_before_anything_is_made() {
    let big = "y".repeat(2 * 1024 * 1024 + 1);
    rejects(
        row(1).with_config_files(json!({"config.yaml": "x", "a": big, "b": big})),
        Reason::InvalidSpec,
        "more than the 4 MiB a row may carry",
    );
    let fits = "y".repeat(2 * 1024 * 1024 - 1);
    let row = row(1).with_config_files(json!({"config.yaml": "x", "a": fits, "b": fits}));
    assert!(spec(&row, &Catalogue::seeded(), &Settings::test()).is_ok());
}

#[test]
fn tier_4_is_not_allowed_unless_configured() {
    rejects(
        row(1).with_tier(4),
        Reason::TierNotAllowed,
        "BERTH_ALLOW_HOST_ROOT_TIER",
    );
}

#[test]
fn a_relative_template_path_is_invalid() {
    let mut r = row(1);
    r.template_path = Some("templates/x".into());
    rejects(r, Reason::InvalidSpec, "template_path");
}

#[test]
fn a_long_message_is_cut_for_last_error_on_a_character_boundary() {
    use crate::plan::StatusUpdate;
    use crate::plan::status::MAX_LAST_ERROR;
    let long = format!("{}é{}", "x".repeat(MAX_LAST_ERROR - 1), "y".repeat(5000));
    let update = StatusUpdate::reason(Reason::Creating, Some(long));
    let detail = update.detail.unwrap();
    assert!(detail.ends_with("… (cut)"), "{detail}");
    assert!(detail.len() <= MAX_LAST_ERROR + "… (cut)".len());
    let short = StatusUpdate::reason(Reason::Creating, Some("short".into()));
    assert_eq!(short.detail.as_deref(), Some("short"));
}

#[test]
fn an_auth_token_over_64_kib_is_invalid_and_not_shown() {
    let mut r = row(1);
    r.auth_token = Some(crate::model::Secret::new("t".repeat(64 * 1024)));
    assert!(spec(&r, &Catalogue::seeded(), &Settings::test()).is_ok());
    r.auth_token = Some(crate::model::Secret::new("t".repeat(64 * 1024 + 1)));
    let e = judge(&r);
    assert_eq!(e.reason, Reason::InvalidSpec);
    assert!(e.message.contains("auth_token holds 65537 bytes"), "{e}");
    assert!(!e.message.contains("tttt"), "{e}");
}
