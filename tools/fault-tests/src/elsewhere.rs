//! Items 3, 4, 7 and 8 are proven elsewhere (unit tests, `fuzz/`); the
//! report still shows their counts, read from the source tree this binary
//! was built from. Nothing here runs them.

use std::path::{Path, PathBuf};

/// The source tree this binary was built from (it lives in `tools/fault-tests`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `git rev-parse --short HEAD`, with `+dirty` when the tree has changes.
pub fn git_commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown (not a git checkout)".into();
    };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if !changes.is_empty() => format!("{head}+dirty"),
        _ => head,
    }
}

/// `#[test]` functions after `mod <module>` in `file`.
fn tests_in_module(file: &Path, module: &str) -> Option<usize> {
    let text = std::fs::read_to_string(file).ok()?;
    let start = text.find(&format!("mod {module}"))?;
    Some(text[start..].matches("#[test]").count())
}

/// `#[test]` and `#[tokio::test…]` functions in `file`.
fn tests_in_file(file: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(file).ok()?;
    Some(text.matches("#[test]").count() + text.matches("#[tokio::test").count())
}

/// Executions libFuzzer reported (`Done N runs`) in log files under `dir`.
fn fuzz_executions(dir: &Path) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let runs: u64 = text
                .lines()
                .filter_map(|l| l.strip_prefix("Done "))
                .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                .sum();
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            found.push((name, runs));
        }
    }
    found.sort();
    found
}

/// Prints the counts.
pub fn print() {
    let root = root();
    println!("\n== 3, 4, 7, 8: proven elsewhere (counts read from the tree)");
    match tests_in_module(&root.join("src/crypto/token.rs"), "hostile_tests") {
        Some(n) => println!("   3. hostile tokens: {n} named regression tests in src/crypto/token.rs hostile_tests (run by cargo test)"),
        None => println!("   3. hostile tokens: hostile_tests not found"),
    }
    let targets_dir = root.join("fuzz/fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&targets_dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.path()
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    targets.sort();
    let corpus = |t: &str| {
        std::fs::read_dir(root.join("fuzz/corpus").join(t))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    println!(
        "   4. fuzzing: {} targets ({}); fuzz/run.sh {}",
        targets.len(),
        targets
            .iter()
            .map(|t| format!("{t}: {} seeds", corpus(t)))
            .collect::<Vec<_>>()
            .join(", "),
        if root.join("fuzz/run.sh").is_file() {
            "present"
        } else {
            "not present yet"
        }
    );
    let executions: Vec<(String, u64)> = [root.join("fuzz/logs"), root.join("fuzz")]
        .iter()
        .flat_map(|d| fuzz_executions(d))
        .collect();
    if executions.is_empty() {
        println!("      executions: no libFuzzer logs (*.log with \"Done N runs\") under fuzz/ or fuzz/logs/");
    } else {
        for (name, runs) in executions {
            println!("      {name}: {runs} executions");
        }
    }
    match tests_in_file(&root.join("src/http/auth.rs")) {
        Some(n) => println!("   7. Basic authentication: {n} tests in src/http/auth.rs"),
        None => println!("   7. Basic authentication: src/http/auth.rs not found"),
    }
    match tests_in_file(&root.join("src/keys.rs")) {
        Some(n) => println!("   8. key file permissions and secrets: {n} tests in src/keys.rs"),
        None => println!("   8. key file permissions: src/keys.rs not found"),
    }
}
