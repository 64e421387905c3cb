//! `flow-store generate-docs` (run by the package build): a man page for
//! the command and each documented subcommand, and completions for bash,
//! zsh and fish, all from the clap definitions.

use crate::common::{run_bounded, tool_command};

#[test]
fn man_pages_and_completions_cover_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let (man, completions) = (dir.path().join("man"), dir.path().join("completions"));
    let out = run_bounded(
        tool_command(&["generate-docs", "--man"])
            .arg(&man)
            .arg("--completions")
            .arg(&completions),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "flow-store",
        "flow-store-serve",
        "flow-store-simulate",
        "flow-store-check",
        "flow-store-keys",
        "flow-store-keys-import",
        "flow-store-keys-list",
        "flow-store-status",
        "flow-store-backup",
        "flow-store-backup-verify",
        "flow-store-restore",
    ] {
        let text = std::fs::read_to_string(man.join(format!("{page}.8")))
            .unwrap_or_else(|e| panic!("{page}.8: {e}"));
        assert!(
            text.contains(&format!(".TH {page} 8")),
            "{page}.8 is not a section-8 page"
        );
    }
    assert!(
        !man.join("flow-store-generate-docs.8").exists(),
        "hidden commands get no page"
    );
    let backup = std::fs::read_to_string(man.join("flow-store-backup.8")).unwrap();
    assert!(
        backup.contains("\\-\\-output") && backup.contains("flow\\-store backup"),
        "{backup}"
    );
    for (file, mention) in [
        ("flow-store.bash", "backup"),
        ("_flow-store", "restore"),
        ("flow-store.fish", "status"),
    ] {
        let text = std::fs::read_to_string(completions.join(file)).unwrap();
        assert!(text.contains(mention), "{file} does not complete {mention}");
    }
}
