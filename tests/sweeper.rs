//! The background sweeper purges expired states from disk (not only hides
//! them), on its configured interval, driven by the injectable clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use flow_store::app::App;
use flow_store::clock::ManualClock;
use flow_store::config::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_states_are_purged_by_the_sweeper() {
    let dir = tempfile::tempdir().unwrap();
    let keys = StoreKeys::generate();
    let (cert, key) = test_cert().write_to(&dir.path().join("tls"));
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.tls.cert = cert;
    config.tls.key = key;
    config.storage.path = dir.path().join("data");
    config.storage.sweep_interval_seconds = 1;
    config.stores.push(keys.store_entry("sweeper"));
    let clock = ManualClock::at_unix(T0);
    let app = App::open(&config, Arc::new(clock.clone()))
        .await
        .expect("open");
    let service = app.service();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));
    let client = Client {
        http: Http::new(addr, &test_cert().cert_der),
        base: BASE.to_string(),
        platform: Platform::new(keys),
        now: Now::Manual(Arc::new(std::sync::atomic::AtomicI64::new(T0))),
        basic: None,
    };
    let t = uuid();
    let (short, forever) = (uuid(), uuid());
    let mut claims = client.claims(&t, &short, "\"short-lived\"", &rfc3339(T0));
    claims["expiresAt"] = serde_json::json!(rfc3339(T0 + 60));
    client
        .save(&t, &[client.token(&claims)])
        .await
        .expect_status(204);
    client.save_ok(&t, &forever, "\"kept\"", &rfc3339(T0)).await;
    assert_eq!(stored(&service).await, 2);

    clock.advance(Duration::from_secs(61));
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored(&service).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the sweeper did not purge within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    drop(service);
    // On disk, after a restart: the expired state is gone, the other is kept.
    let app = App::open(&config, Arc::new(clock.clone()))
        .await
        .expect("reopen");
    assert_eq!(stored(&app.service()).await, 1);
}

/// States in the database, expired ones not yet purged included.
async fn stored(service: &flow_store::service::Service) -> u64 {
    service.store().stats().await.expect("stats").states
}
