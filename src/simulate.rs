//! `flow-store simulate`: play the platform against a running store — save,
//! load, update, replay an older version, delete — checking every response
//! and every reply token, printing each step, stopping at the first failure.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::cli::output::outln;
use crate::client::{Client, ClientOptions, Reply, Trust};
use crate::http::auth::{PLATFORM_KEY_HEADER, RECEIVER_KEY_HEADER, SIGNATURE_HEADER};
use crate::platform::{Encryption, PlatformKeys};

/// What to simulate against.
#[derive(Debug)]
pub struct SimulateOptions {
    /// Base URL, e.g. `https://127.0.0.1:8443/api/storage/1`.
    pub url: String,
    /// Platform key pair file.
    pub platform_key: PathBuf,
    /// Receiver key file (public part suffices).
    pub receiver_key: PathBuf,
    /// CA certificate to trust instead of the system's.
    pub ca: Option<PathBuf>,
    /// Accept any certificate.
    pub insecure: bool,
    /// The tenant to use; random when `None`.
    pub tenant: Option<Uuid>,
    /// HTTP Basic credentials `user:password`, if the store requires them.
    pub basic: Option<String>,
    /// The state id to use; random when `None`.
    pub state: Option<Uuid>,
    /// What to do.
    pub mode: Mode,
    /// Padding added to the content of the state `--mode save` keeps (and
    /// `--mode load` expects), in KiB: large states take a different path
    /// through the database (sled keeps values over ~128 KiB as blob files).
    pub pad_kib: usize,
}

/// What `simulate` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Save, load, update, replay an older version, delete.
    #[default]
    Full,
    /// Only save a state (whose content names its id) and keep it.
    Save,
    /// Only load that state and check its content.
    Load,
}

/// The file `serve --dev` writes so that `simulate --dev` needs no arguments.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DevTarget {
    /// Base URL.
    pub url: String,
    /// Platform key pair file.
    pub platform_key: PathBuf,
    /// Receiver key file.
    pub receiver_key: PathBuf,
    /// The dev certificate.
    pub ca: PathBuf,
}

impl SimulateOptions {
    /// Options from `dir/simulate.json`, written by `serve --dev`.
    pub fn from_dev_dir(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("simulate.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (start the store with `flow-store serve --dev` first)",
                path.display()
            )
        })?;
        let target: DevTarget =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Self {
            url: target.url,
            platform_key: target.platform_key,
            receiver_key: target.receiver_key,
            ca: Some(target.ca),
            insecure: false,
            tenant: None,
            basic: None,
            state: None,
            mode: Mode::Full,
            pad_kib: 0,
        })
    }
}

struct Target {
    client: Client,
    base_path: String,
    basic: Option<String>,
}

/// Runs the whole scenario; `Ok` only if every step passed.
pub async fn run(options: SimulateOptions) -> anyhow::Result<()> {
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let keys =
        PlatformKeys::from_json(&read(&options.platform_key)?, &read(&options.receiver_key)?)?;
    if options.mode == Mode::Full && options.pad_kib > 0 {
        bail!("--pad-kib applies to --mode save and --mode load only");
    }
    let target = Target::new(&options)?;
    let tenant = options.tenant.unwrap_or_else(Uuid::new_v4);
    let id = options.state.unwrap_or_else(Uuid::new_v4);
    outln!(
        "simulating the platform against {} (tenant {tenant}, state {id})",
        options.url
    );

    step("health", || async {
        let r = target.send(Method::GET, "/health", None, None).await?;
        expect_status(&r, StatusCode::OK)
    })
    .await?;
    match options.mode {
        Mode::Full => full_scenario(&target, &keys, tenant, id).await?,
        Mode::Save => {
            let content = kept_content(id, options.pad_kib);
            let now = OffsetDateTime::now_utc();
            step("save a state and keep it", || {
                target.save(&keys, tenant, id, &content, now, Encryption::default())
            })
            .await?;
        }
        Mode::Load => {
            let content = kept_content(id, options.pad_kib);
            step("load the kept state and check its content", || {
                target.expect_content(&keys, tenant, id, &content)
            })
            .await?;
        }
    }
    outln!("all steps passed");
    Ok(())
}

/// The content `--mode save` writes and `--mode load` expects: it names the
/// state and carries `pad_kib` KiB of padding.
fn kept_content(id: Uuid, pad_kib: usize) -> String {
    let padding = "x".repeat(pad_kib * 1024);
    json!({"flow-store-simulate": "kept state", "id": id, "padding": padding}).to_string()
}

async fn full_scenario(
    target: &Target,
    keys: &PlatformKeys,
    tenant: Uuid,
    id: Uuid,
) -> anyhow::Result<()> {
    let first = OffsetDateTime::now_utc();
    let content_v1 = json!({"id": id, "values": [{"developerName": "Greeting", "contentValue": "Hello, Zoë ✓"}]}).to_string();
    step("save a new state", || {
        target.save(keys, tenant, id, &content_v1, first, Encryption::default())
    })
    .await?;
    step("load it back and open the reply token", || {
        target.expect_content(keys, tenant, id, &content_v1)
    })
    .await?;

    let later = first + time::Duration::milliseconds(1);
    let content_v2 =
        json!({"id": id, "values": [{"developerName": "Greeting", "contentValue": "updated"}]})
            .to_string();
    let a256 = Encryption {
        alg: "ECDH-ES+A256KW",
        enc: "A256CBC-HS512",
        zip: false,
    };
    step(
        "update it (newer updatedAt, A256KW + A256CBC-HS512)",
        || target.save(keys, tenant, id, &content_v2, later, a256),
    )
    .await?;
    step("load the update", || {
        target.expect_content(keys, tenant, id, &content_v2)
    })
    .await?;
    step("replay the older version (must be ignored)", || {
        target.save(keys, tenant, id, &content_v1, first, Encryption::default())
    })
    .await?;
    step("load: still the update", || {
        target.expect_content(keys, tenant, id, &content_v2)
    })
    .await?;

    step("delete it", || async {
        let body = serde_json::to_vec(&json!([id]))?;
        let path = format!("/states/{tenant}");
        let r = target
            .send(Method::DELETE, &path, Some(body), Some((keys, tenant)))
            .await?;
        expect_status(&r, StatusCode::NO_CONTENT)
    })
    .await?;
    step("load after delete answers 404", || async {
        let path = format!("/states/{tenant}/{id}");
        let r = target
            .send(Method::GET, &path, None, Some((keys, tenant)))
            .await?;
        expect_status(&r, StatusCode::NOT_FOUND)
    })
    .await
}

async fn step<F, Fut>(name: &str, f: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    match f().await {
        Ok(()) => {
            outln!(
                "  ok    {name} ({:.1} ms)",
                started.elapsed().as_secs_f64() * 1000.0
            );
            Ok(())
        }
        Err(e) => {
            outln!("  FAIL  {name}: {e:#}");
            Err(e.context(format!("step \"{name}\" failed")))
        }
    }
}

fn expect_status(reply: &Reply, expected: StatusCode) -> anyhow::Result<()> {
    if reply.status != expected {
        bail!(
            "expected {expected}, got {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)])
        );
    }
    Ok(())
}

impl Target {
    fn new(options: &SimulateOptions) -> anyhow::Result<Self> {
        let uri: hyper::Uri = options.url.parse().context("--url is not a URL")?;
        let trust = match (&options.ca, options.insecure) {
            (_, true) => Trust::Insecure,
            (Some(ca), false) => Trust::pem_file(ca).context("--ca")?,
            (None, false) => Trust::System,
        };
        let client = Client::new(&options.url, ClientOptions::new(trust)).context("--url")?;
        Ok(Self {
            client,
            base_path: uri.path().trim_end_matches('/').to_string(),
            basic: options.basic.clone(),
        })
    }

    async fn save(
        &self,
        keys: &PlatformKeys,
        tenant: Uuid,
        id: Uuid,
        content: &str,
        updated: OffsetDateTime,
        encryption: Encryption,
    ) -> anyhow::Result<()> {
        let updated_at = updated.format(&time::format_description::well_known::Rfc3339)?;
        let state = json!({
            "id": id, "tenant": tenant, "parent": null, "flow": Uuid::new_v4(), "flowVersion": Uuid::new_v4(),
            "currentMapElement": Uuid::new_v4(), "currentUser": null, "isDone": false,
            "createdAt": updated_at, "updatedAt": updated_at, "expiresAt": null, "content": content,
        });
        let token = keys.state_token(tenant, &state, OffsetDateTime::now_utc(), encryption)?;
        let body = serde_json::to_vec(&json!([{ "token": token }]))?;
        let r = self
            .send(
                Method::POST,
                &format!("/states/{tenant}"),
                Some(body),
                Some((keys, tenant)),
            )
            .await?;
        expect_status(&r, StatusCode::NO_CONTENT)
    }

    async fn expect_content(
        &self,
        keys: &PlatformKeys,
        tenant: Uuid,
        id: Uuid,
        expected: &str,
    ) -> anyhow::Result<()> {
        let r = self
            .send(
                Method::GET,
                &format!("/states/{tenant}/{id}"),
                None,
                Some((keys, tenant)),
            )
            .await?;
        expect_status(&r, StatusCode::OK)?;
        let body: Value =
            serde_json::from_slice(&r.body).context("the load response is not JSON")?;
        let token = body
            .get("token")
            .and_then(Value::as_str)
            .context("the load response has no token")?;
        let content = keys.open_reply(token, tenant, id, OffsetDateTime::now_utc())?;
        if content != expected {
            bail!("the loaded content differs from what was saved");
        }
        Ok(())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        signed: Option<(&PlatformKeys, Uuid)>,
    ) -> anyhow::Result<Reply> {
        let full_path = format!("{}{path}", self.base_path);
        let mut request = Request::builder().method(method).uri(&full_path);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        if let Some((keys, tenant)) = signed {
            request = request
                .header(PLATFORM_KEY_HEADER, keys.platform_kid())
                .header(RECEIVER_KEY_HEADER, keys.receiver_kid())
                .header(
                    SIGNATURE_HEADER,
                    keys.request_signature(tenant, &full_path, OffsetDateTime::now_utc())?,
                );
        }
        if let Some(basic) = &self.basic {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(basic);
            request = request.header("authorization", format!("Basic {encoded}"));
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        self.client
            .send(request)
            .await
            .with_context(|| format!("{}{full_path}", self.client.origin()))
    }
}
