//! "204 means durable", down to the disk: the contract asks that a state
//! survive a power cut the instant after its 204, which SIGKILL tests
//! cannot show (the kernel keeps what the process wrote). So the real
//! binary runs with `strace` attached and every save and delete must have
//! waited for an `fsync`/`fdatasync` of sled's log that began after the
//! request was sent and returned before its 204; a large state's blob
//! file, and its name in `blobs/`, must be synced before that log sync.
//! No `sync_file_range` may be used at all: it neither flushes the drive's
//! write cache nor writes the metadata appended data needs (sled 0.34.7
//! used it for every flush; `vendor/sled/PATCHED.md`). And `restore`,
//! under `strace -f`, must leave a database whose files and names are
//! synced, its rename into place included.

use std::path::Path;

use crate::common::syscalls::{run_traced, wall_clock, SyncCall, SyncTrace};
use crate::common::{uuid, Deployment};

/// When a request was sent and when its 204 came back.
struct Acknowledged {
    what: String,
    sent: f64,
    acknowledged: f64,
}

impl Acknowledged {
    fn describe(&self) -> String {
        format!(
            "{} (sent at {:.6}, 204 at {:.6})",
            self.what, self.sent, self.acknowledged
        )
    }
}

/// The first durable sync of `path` inside `window` that began at or
/// after `after`.
fn synced<'a>(
    calls: &'a [SyncCall],
    path: &Path,
    window: &Acknowledged,
    after: f64,
) -> Option<&'a SyncCall> {
    calls.iter().find(|call| {
        call.is_durable()
            && call.path == path
            && call.within(window.sent.max(after), window.acknowledged)
    })
}

/// Content that no compressor shrinks much, `len` characters as a JSON
/// string: well over sled's 128 KiB threshold, so it is stored as a blob.
fn large_content(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let body: String = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                    [(x % 62) as usize],
            )
        })
        .collect();
    format!("\"{body}\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_204_waited_for_its_write_to_be_synced_to_disk() {
    let d = Deployment::new();
    let run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    run.health().await.expect_status(200);
    let data = std::fs::canonicalize(d.data_dir()).expect("the data directory");
    let trace = SyncTrace::attach(run.pid());

    let t = uuid();
    let mut small = Vec::new();
    let mut ids = Vec::new();
    for n in 0..8 {
        let id = uuid();
        let sent = wall_clock();
        run.save_ok(&t, &id, &format!("\"small {n}\""), "2024-01-01T00:00:00Z")
            .await;
        small.push(Acknowledged {
            what: format!("save {n}"),
            sent,
            acknowledged: wall_clock(),
        });
        ids.push(id);
    }
    let sent = wall_clock();
    run.delete(&t, &[&ids[0], &ids[1]]).await.expect_status(204);
    small.push(Acknowledged {
        what: "delete".to_string(),
        sent,
        acknowledged: wall_clock(),
    });
    let (big_id, big) = (uuid(), large_content(200 * 1024));
    let sent = wall_clock();
    run.save_ok(&t, &big_id, &big, "2024-01-01T00:00:00Z").await;
    let large = Acknowledged {
        what: "save of 200 KiB".to_string(),
        sent,
        acknowledged: wall_clock(),
    };
    let calls = trace.stop();

    let listing = || format!("{calls:#?}");
    assert!(
        !calls.iter().any(|c| c.name == "sync_file_range"),
        "sync_file_range is not durable; calls:\n{}",
        listing()
    );
    let log = data.join("db");
    for write in &small {
        assert!(
            synced(&calls, &log, write, f64::MIN).is_some(),
            "{}: no fsync/fdatasync of {} began after it was sent and returned before its \
             204; calls:\n{}",
            write.describe(),
            log.display(),
            listing()
        );
    }
    let blobs = data.join("blobs");
    let blob_file = calls
        .iter()
        .find(|c| {
            c.is_durable()
                && c.path.parent() == Some(blobs.as_path())
                && c.within(large.sent, large.acknowledged)
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: its blob file was never synced; calls:\n{}",
                large.describe(),
                listing()
            )
        });
    let blob_name = synced(&calls, &blobs, &large, blob_file.entered).unwrap_or_else(|| {
        panic!(
            "{}: the blobs directory was not synced after its blob; calls:\n{}",
            large.describe(),
            listing()
        )
    });
    assert!(
        synced(&calls, &log, &large, blob_name.returned).is_some(),
        "{}: no sync of the log after its blob and the blob's name; calls:\n{}",
        large.describe(),
        listing()
    );

    // And it is all there, once the traced binary has restarted.
    run.terminate().await;
    let run = d
        .spawn()
        .unwrap_or_else(|f| panic!("did not restart: {f:?}"));
    assert_eq!(run.content(&t, &big_id).await, big);
    run.expect_absent(&t, &ids[0]).await;
    assert_eq!(run.content(&t, &ids[7]).await, "\"small 7\"");
    run.terminate().await;
}

/// A restored database is durable before `restore` says it is done: the
/// `conf` file sled writes once for a new database (torn, its checksum
/// would fail and the database not open), the directory holding `db`,
/// `conf` and `blobs/`, the restored states in the log, and the rename of
/// that directory into place, which lasts only once its parent is synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_database_syncs_its_files_and_their_names() {
    let d = Deployment::new();
    let run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    let (t, id) = (uuid(), uuid());
    run.save_ok(&t, &id, "\"backed up\"", "2024-01-01T00:00:00Z")
        .await;
    let file = d.data_dir().with_file_name("full.backup");
    let out = d.cli(&["backup", "--output", &file.to_string_lossy()]);
    assert!(out.status.success(), "backup failed: {out:?}");
    run.terminate().await;
    std::fs::remove_dir_all(d.data_dir()).expect("remove the database");

    let (out, calls) = run_traced(&d.cli_command(&["restore", &file.to_string_lossy()]));
    assert!(out.status.success(), "restore failed: {out:?}");
    let listing = || format!("{calls:#?}");
    assert!(
        !calls.iter().any(|c| c.name == "sync_file_range"),
        "sync_file_range is not durable; calls:\n{}",
        listing()
    );
    // sled writes into a staging directory beside the target, renamed last.
    let conf = calls
        .iter()
        .find(|c| c.is_durable() && c.path.file_name() == Some("conf".as_ref()))
        .unwrap_or_else(|| panic!("no sync of a new conf file; calls:\n{}", listing()));
    let staging = conf.path.parent().expect("conf has a directory");
    for path in [staging.to_path_buf(), staging.join("db")] {
        assert!(
            calls.iter().any(|c| c.is_durable() && c.path == path),
            "{} was never synced; calls:\n{}",
            path.display(),
            listing()
        );
    }
    let renamed = calls
        .iter()
        .filter(|c| c.name.starts_with("rename") && c.result == 0)
        .map(|c| c.returned)
        .fold(f64::MIN, f64::max);
    assert!(renamed > f64::MIN, "no rename; calls:\n{}", listing());
    let parent = std::fs::canonicalize(d.data_dir().parent().expect("a parent"))
        .expect("the data directory's parent");
    assert!(
        calls
            .iter()
            .any(|c| c.is_durable() && c.path == parent && c.entered >= renamed),
        "{} was not synced after the rename; calls:\n{}",
        parent.display(),
        listing()
    );

    let run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    assert_eq!(run.content(&t, &id).await, "\"backed up\"");
    run.terminate().await;
}
