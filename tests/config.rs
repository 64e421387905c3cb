//! The binary's configuration as operators meet it: relative paths resolve
//! against the file's directory (every binary test runs from another
//! working directory), unknown keys and bad keys stop start-up with a
//! message naming them, `FLOW_STORE_*` overrides the file, the Java
//! reference store's `PLATFORM_KEY`/`RECEIVER_KEY` add a store, and Basic
//! credentials come from a password file.

use std::path::Path;

use flow_store::config::{Config, KeySource, StoreEntry};

use crate::common::{jwk_json, set_mode, uuid, Client, Deployment, Failed, Platform, StoreKeys};

fn refused(d: &Deployment, what: &str) -> Failed {
    match d.spawn() {
        Ok(run) => panic!("started with {what}; stderr:\n{}", run.stderr_text()),
        Err(f) => {
            assert!(!f.status.success(), "{what}: exit {}", f.status);
            f
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_is_an_error_naming_it() {
    let d = Deployment::new();
    d.edit_config(
        "max_body_bytes = 33554432",
        "max_body_bytes = 33554432\nmax_bodee_bytes = 1",
    );
    let f = refused(&d, "an unknown key");
    assert!(
        f.stderr.contains("max_bodee_bytes"),
        "stderr:\n{}",
        f.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_the_file() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let d = Deployment::new();
    d.configure(|c| c.server.listen = taken.local_addr().unwrap().to_string());
    let run = d
        .spawn_with_env(&[("FLOW_STORE_SERVER__LISTEN", "127.0.0.1:0")])
        .unwrap_or_else(|f| panic!("FLOW_STORE_SERVER__LISTEN ignored: {f:?}"));
    assert_ne!(run.http.addr, taken.local_addr().unwrap());
    run.health().await.expect_status(200);
    run.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_readable_receiver_key_is_refused() {
    let d = Deployment::new();
    set_mode(&d.dir.path().join("keys/receiver.jwk"), 0o644);
    let f = refused(&d, "a world-readable receiver key");
    assert!(f.stderr.contains("receiver.jwk"), "stderr:\n{}", f.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_refused_naming_the_file() {
    let d = Deployment::new();
    let keys = d.dir.path().join("keys");
    let good_platform = std::fs::read(keys.join("platform.jwk")).unwrap();
    let good_receiver = std::fs::read(keys.join("receiver.jwk")).unwrap();

    std::fs::write(
        keys.join("platform.jwk"),
        jwk_json(&crate::common::public_jwk(&crate::common::p256_jwk())),
    )
    .unwrap();
    let f = refused(&d, "a P-256 platform key");
    assert!(f.stderr.contains("platform.jwk"), "stderr:\n{}", f.stderr);

    let mut no_kid = d.keys.platform_public();
    no_kid.set_parameter("kid", None).unwrap();
    std::fs::write(keys.join("platform.jwk"), jwk_json(&no_kid)).unwrap();
    let f = refused(&d, "a platform key without kid");
    assert!(f.stderr.contains("platform.jwk"), "stderr:\n{}", f.stderr);

    std::fs::write(keys.join("platform.jwk"), b"{ not json").unwrap();
    let f = refused(&d, "a platform key that is not JSON");
    assert!(f.stderr.contains("platform.jwk"), "stderr:\n{}", f.stderr);

    std::fs::write(keys.join("platform.jwk"), &good_platform).unwrap();
    std::fs::write(
        keys.join("receiver.jwk"),
        jwk_json(&d.keys.receiver_public()),
    )
    .unwrap();
    let f = refused(&d, "a receiver key without its private part");
    assert!(f.stderr.contains("receiver.jwk"), "stderr:\n{}", f.stderr);

    // And back to good: it starts.
    std::fs::write(keys.join("receiver.jwk"), &good_receiver).unwrap();
    let run = d
        .spawn()
        .unwrap_or_else(|f| panic!("good keys refused: {f:?}"));
    run.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_keys_under_one_kid_are_refused() {
    let d = Deployment::new();
    // A second store (from the Java variables) whose platform key is
    // another key under the file's platform kid.
    let mut other = StoreKeys::generate();
    other.platform.set_key_id(d.keys.platform_kid());
    let platform = jwk_json(&other.platform_public());
    let receiver = jwk_json(&other.receiver);
    match d.spawn_with_env(&[("PLATFORM_KEY", &platform), ("RECEIVER_KEY", &receiver)]) {
        Ok(run) => panic!(
            "started with a duplicate platform kid; stderr:\n{}",
            run.stderr_text()
        ),
        Err(f) => {
            assert!(!f.status.success());
            assert!(
                f.stderr.contains(&d.keys.platform_kid()),
                "stderr names the kid:\n{}",
                f.stderr
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_reference_variables_add_a_store() {
    let d = Deployment::new();
    let extra = StoreKeys::generate();
    let platform = jwk_json(&extra.platform_public());
    let receiver = jwk_json(&extra.receiver);
    let run = d
        .spawn_with_env(&[("PLATFORM_KEY", &platform), ("RECEIVER_KEY", &receiver)])
        .unwrap_or_else(|f| panic!("did not start: {f:?}"));
    let second = Client {
        platform: Platform::new(extra),
        ..run.client.clone()
    };
    let (t, id) = (uuid(), uuid());
    second
        .save_ok(&t, &id, "\"via env\"", "2024-01-01T00:00:00Z")
        .await;
    assert_eq!(second.content(&t, &id).await, "\"via env\"");
    // The file's store still works.
    run.save_ok(&t, &uuid(), "\"via file\"", "2024-01-01T00:00:00Z")
        .await;
    run.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_from_a_relative_password_file() {
    let d = Deployment::new();
    let secret = d.dir.path().join("secret.txt");
    std::fs::write(&secret, "pa55word").unwrap();
    set_mode(&secret, 0o600);
    d.configure(|c| {
        c.auth.basic_username = Some("flow".into());
        c.auth.basic_password_file = Some("secret.txt".into());
    });
    let run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    let (t, id) = (uuid(), uuid());
    let token = run.token(&run.claims(&t, &id, "\"b\"", "2024-01-01T00:00:00Z"));
    run.save(&t, std::slice::from_ref(&token))
        .await
        .expect_error(401);
    let with_basic = Client {
        basic: Some(("flow".into(), "pa55word".into())),
        ..run.client.clone()
    };
    with_basic.save(&t, &[token]).await.expect_status(204);
    assert_eq!(with_basic.content(&t, &id).await, "\"b\"");
    run.health().await.expect_status(200);
    run.terminate().await;
}

/// Both configuration files the project ships (`config.example.toml` and the
/// package's `packaging/config.toml`) parse, pass `check`'s static checks,
/// and mention every key of the schema with its real default (or, for a key
/// unset by default, only commented out), and no key the schema lacks: a
/// key added to `Config` cannot be forgotten in either.
#[test]
fn shipped_config_files_follow_the_schema() {
    let schema = schema_keys();
    assert!(schema.len() > 20, "schema walk found only {schema:?}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["config.example.toml", "packaging/config.toml"] {
        let path = root.join(file);
        let (report, config) = flow_store::admin::check::static_checks(&path, &[]);
        assert!(
            report.passed() && config.is_some(),
            "{file}:\n{}",
            report.render()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let mentions = key_mentions(&text);
        for (key, default) in &schema {
            let found: Vec<&Mention> = mentions.iter().filter(|m| &m.key == key).collect();
            assert!(!found.is_empty(), "{file} does not mention {key}");
            match default {
                Some(literal) => assert!(
                    found
                        .iter()
                        .any(|m| m.value == *literal || m.comment.contains(literal.as_str())),
                    "{file}: {key} appears, but neither as `{key} = {literal}` nor with \
                     {literal} (its default) in its comment"
                ),
                None => assert!(
                    found.iter().all(|m| m.commented),
                    "{file}: {key} has no default, so it must only appear commented out"
                ),
            }
        }
        for mention in &mentions {
            assert!(
                schema.iter().any(|(key, _)| *key == mention.key),
                "{file} mentions {}, which is not a key of the schema",
                mention.key
            );
        }
    }
}

/// Every key of the schema (`section.key`, `stores.key`) with its default
/// as TOML text, `None` when unset by default; read from `Config` itself.
fn schema_keys() -> Vec<(String, Option<String>)> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, Option<String>)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (name, inner) in map {
                    let key = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    walk(&key, inner, out);
                }
            }
            serde_json::Value::Null => out.push((prefix.to_string(), None)),
            other => out.push((prefix.to_string(), Some(other.to_string()))),
        }
    }
    let mut keys = Vec::new();
    let mut defaults = serde_json::to_value(Config::default()).unwrap();
    defaults.as_object_mut().unwrap().remove("stores");
    walk("", &defaults, &mut keys);
    // A store has no default; every field of one is a key to mention.
    let store = StoreEntry {
        name: "n".into(),
        platform_key: KeySource::File("p".into()),
        receiver_key: KeySource::File("r".into()),
    };
    for field in serde_json::to_value(store)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
    {
        keys.push((format!("stores.{field}"), None));
    }
    keys
}

/// A `key = value` line of a config file, active or commented out.
struct Mention {
    key: String,
    value: String,
    commented: bool,
    /// The comment lines just above it.
    comment: String,
}

fn key_mentions(text: &str) -> Vec<Mention> {
    let mut mentions = Vec::new();
    let (mut section, mut comment) = (String::new(), String::new());
    for line in text.lines() {
        let trimmed = line.trim();
        let commented = trimmed.starts_with('#');
        let bare = trimmed.trim_start_matches(['#', ' ']);
        if let Some(name) = bare
            .strip_prefix('[')
            .map(|rest| rest.trim_matches(['[', ']']))
            .filter(|name| {
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
            })
        {
            section = name.to_string();
            comment.clear();
            continue;
        }
        let key_value = bare.split_once(" = ").filter(|(key, _)| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        });
        match key_value {
            Some((key, value)) if !section.is_empty() => {
                mentions.push(Mention {
                    key: format!("{section}.{key}"),
                    value: value.trim().to_string(),
                    commented,
                    comment: std::mem::take(&mut comment),
                });
            }
            _ if commented => {
                comment.push_str(bare);
                comment.push('\n');
            }
            _ => comment.clear(),
        }
    }
    mentions
}
