//! The local admin channel: a Unix socket (`[admin] socket`), HTTP/1.1 +
//! JSON, for the operator commands (`status`, `backup`). Never on the
//! network.
//!
//! Server side, [`AdminListener`] is one more [`Listener`] for the one
//! accept loop: it binds the socket mode 0660 and checks every peer's
//! **credentials** (`SO_PEERCRED`), not only the file mode: root, the
//! daemon's own user, and members of the `flow-store` group (by the peer's
//! gid, its user's primary group, or the group's member list in
//! `/etc/group`) are served; anyone else gets 403 and is disconnected.
//! Client side, [`request`] connects and turns the two failures an
//! operator meets into plain words ([`AdminError`]).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::{ServiceAccount, SERVICE_USER};
use crate::server::Listener;

/// Mode of the socket file: owner and group only.
pub const SOCKET_MODE: u32 = 0o660;

/// How long a refused peer gets to send its request before it is dropped.
const REFUSE_WAIT: Duration = Duration::from_secs(2);

/// Why the admin socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another daemon answers on the socket.
    #[error("another flow-store already answers on the admin socket {0}; stop it first")]
    InUse(PathBuf),
    /// The directory or socket cannot be created.
    #[error("cannot create the admin socket {path} (admin.socket): {error}; under systemd the unit's RuntimeDirectory=flow-store creates /run/flow-store")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
}

/// The bound admin socket; removes its file when dropped.
#[derive(Debug)]
pub struct AdminListener {
    listener: UnixListener,
    path: PathBuf,
    own_uid: Option<u32>,
}

impl AdminListener {
    /// Binds `path` (replacing a stale socket file) with mode
    /// [`SOCKET_MODE`]. Must run inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<AdminListener, BindError> {
        let io = |error| BindError::Io {
            path: path.to_path_buf(),
            error,
        };
        remove_stale(path)?;
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(io)?;
        Ok(AdminListener {
            listener,
            path: path.to_path_buf(),
            own_uid: super::effective_uid(),
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AdminListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// A socket file nobody answers on is left by a crash: replace it. One
// somebody answers on belongs to a running store: refuse.
fn remove_stale(path: &Path) -> Result<(), BindError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let io = |error| BindError::Io {
        path: path.to_path_buf(),
        error,
    };
    if !meta.file_type().is_socket() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        )));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(BindError::InUse(path.to_path_buf()));
    }
    std::fs::remove_file(path).map_err(io)
}

/// Who is on the other end of an admin connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The peer process's uid.
    pub uid: u32,
    /// Its pid, if the kernel told.
    pub pid: Option<i32>,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "admin peer uid {} pid {pid}", self.uid),
            None => write!(f, "admin peer uid {}", self.uid),
        }
    }
}

impl Listener for AdminListener {
    type Io = UnixStream;
    type Peer = Peer;

    async fn accept(&self) -> std::io::Result<(UnixStream, Peer)> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            let cred = stream.peer_cred()?;
            let peer = Peer {
                uid: cred.uid(),
                pid: cred.pid(),
            };
            if may_administer(cred.uid(), cred.gid(), self.own_uid, &HostAccounts::read()) {
                return Ok((stream, peer));
            }
            log::warn!("{peer} refused: neither root nor a member of group {SERVICE_USER}");
            tokio::spawn(refuse(stream));
        }
    }
}

// Answers 403 once the request has come (so the client reads a response,
// not a reset), then closes.
async fn refuse(mut stream: UnixStream) {
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(REFUSE_WAIT, stream.read(&mut buf)).await;
    let body = br#"{"error":"permission denied: run as root or as a member of flow-store"}"#;
    let head = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

/// The host's user and group databases, as text.
#[derive(Debug, Default)]
pub struct HostAccounts {
    /// `/etc/passwd`.
    pub passwd: String,
    /// `/etc/group`.
    pub group: String,
}

impl HostAccounts {
    /// Reads them now (a member added since start counts at once); an
    /// unreadable file counts as empty.
    pub fn read() -> HostAccounts {
        HostAccounts {
            passwd: std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
            group: std::fs::read_to_string("/etc/group").unwrap_or_default(),
        }
    }
}

/// Whether a peer with `uid` and `gid` may use the admin socket: root, the
/// daemon's own user (`own_uid`), or a member of group [`SERVICE_USER`]
/// (running with its gid, or a user whose groups include it).
pub fn may_administer(uid: u32, gid: u32, own_uid: Option<u32>, hosts: &HostAccounts) -> bool {
    if uid == 0 || Some(uid) == own_uid {
        return true;
    }
    let Some(service_gid) =
        ServiceAccount::parse(&hosts.passwd, &hosts.group, SERVICE_USER).and_then(|a| a.gid)
    else {
        return false;
    };
    if gid == service_gid {
        return true;
    }
    let name = hosts.passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    });
    name.and_then(|name| ServiceAccount::parse(&hosts.passwd, &hosts.group, &name))
        .is_some_and(|peer| peer.groups.contains(&service_gid))
}

/// Why an admin request failed, as the operator should read it.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No socket file: the daemon is not running (or elsewhere).
    #[error("the store is not running (no socket at {0}); start it with `systemctl start flow-store`, or give --socket")]
    NotRunning(PathBuf),
    /// A socket file nobody answers on.
    #[error("the store is not running (nothing answers on {0}); start it with `systemctl start flow-store`")]
    NotAnswering(PathBuf),
    /// The file mode or the daemon's peer check refused us.
    #[error("permission denied: run as root or as a member of flow-store")]
    PermissionDenied,
    /// Anything else on the way.
    #[error("talking to the store on {path}: {detail}")]
    Failed {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The store answered with an error.
    #[error("the store refused: {0}")]
    Refused(String),
}

/// Sends `request` to the daemon on `socket` and returns its response,
/// status checked (403 and non-2xx become [`AdminError`]s).
pub async fn request(
    socket: &Path,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, AdminError> {
    let failed = |detail: String| AdminError::Failed {
        path: socket.to_path_buf(),
        detail,
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AdminError::NotRunning(socket.to_path_buf()),
            std::io::ErrorKind::PermissionDenied => AdminError::PermissionDenied,
            std::io::ErrorKind::ConnectionRefused => AdminError::NotAnswering(socket.to_path_buf()),
            _ => failed(e.to_string()),
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    if status == hyper::StatusCode::FORBIDDEN {
        return Err(AdminError::PermissionDenied);
    }
    if !status.is_success() {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("HTTP {status}"));
        return Err(AdminError::Refused(message));
    }
    Ok(response)
}

/// A GET of `path` (e.g. `/status`) for [`request`].
pub fn get(path: &str) -> Request<Full<Bytes>> {
    build(hyper::Method::GET, path, Bytes::new())
}

/// A POST of JSON `body` to `path` for [`request`].
pub fn post_json(path: &str, body: &serde_json::Value) -> Request<Full<Bytes>> {
    build(
        hyper::Method::POST,
        path,
        Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
    )
}

fn build(method: hyper::Method, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    // A path of ours is always a valid URI; the fallback is never taken.
    *request.uri_mut() = path.parse().unwrap_or_default();
    request.headers_mut().insert(
        hyper::header::HOST,
        hyper::header::HeaderValue::from_static("flow-store"),
    );
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> HostAccounts {
        HostAccounts {
            passwd: "root:x:0:0::/root:/bin/bash\n\
                     flow-store:x:998:997::/var/lib/flow-store:/usr/sbin/nologin\n\
                     ops:x:1000:1000::/home/ops:/bin/bash\n\
                     primary:x:1001:997::/home/p:/bin/bash\n\
                     eve:x:1002:1002::/home/eve:/bin/bash\n"
                .into(),
            group: "root:x:0:\nops:x:1000:\nflow-store:x:997:ops\neve:x:1002:\n".into(),
        }
    }

    #[test]
    fn root_the_service_and_members_may_administer_nobody_else() {
        let h = hosts();
        assert!(may_administer(0, 0, Some(998), &h));
        assert!(may_administer(998, 997, Some(998), &h));
        assert!(may_administer(1000, 1000, Some(998), &h), "listed member");
        assert!(may_administer(1001, 1001, Some(998), &h), "primary group");
        assert!(
            may_administer(1002, 997, Some(998), &h),
            "running with the group's gid"
        );
        assert!(!may_administer(1002, 1002, Some(998), &h));
        assert!(!may_administer(65534, 65534, Some(998), &h));
        let no_group = HostAccounts {
            group: "root:x:0:\n".into(),
            ..hosts()
        };
        assert!(!may_administer(1000, 1000, Some(0), &no_group));
    }
}
