//! The `openagents-client` crate against the real binary over TCP: its
//! retries never duplicate an event, whether the answer was lost after the
//! write or the server was killed (SIGKILL) and restarted mid-load; and its
//! subscriptions, on both lanes, re-bootstrap on a stale cursor, persist
//! their cursor, and follow on across a killed and restarted server.

mod support;

use openagents_client::{
    AppendEvent, Client, ClientError, CreateRun, Lane, RetryPolicy, StaleCursor,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::process::Server;
use support::tokens::{KEY, user_token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// A service on a fixed address, so that a restart comes back where the
/// client is pointed.
#[derive(Clone)]
struct Site {
    data: PathBuf,
    addr: String,
    extra: Vec<(&'static str, String)>,
}

impl Site {
    fn new(data: &Path, extra: &[(&'static str, String)]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Site {
            data: data.to_owned(),
            addr: format!("127.0.0.1:{port}"),
            extra: extra.to_vec(),
        }
    }

    fn start(&self) -> Server {
        let mut env = vec![
            (
                "RUNTIME_EVENT_LOG_PATH",
                self.data.join("events.jsonl").display().to_string(),
            ),
            (
                "RUNTIME_CHECKPOINT_PATH",
                self.data.join("projections.json").display().to_string(),
            ),
            ("RUNTIME_SYNC_TOKEN_SIGNING_KEY", KEY.to_owned()),
        ];
        env.extend(self.extra.iter().cloned());
        Server::start_at(&self.addr, &env)
    }

    /// Starts it off the async runtime (the start blocks until ready).
    async fn start_async(&self) -> Server {
        let site = self.clone();
        tokio::task::spawn_blocking(move || site.start())
            .await
            .unwrap()
    }

    fn client(&self) -> Client {
        Client::new(&format!("http://{}", self.addr))
            .unwrap()
            .with_retry(RetryPolicy {
                max_attempts: 200,
                initial_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(200),
            })
            .with_request_timeout(Duration::from_secs(10))
    }
}

/// Every `note` payload of the run, counted: each must be there once.
async fn notes(client: &Client, run: Uuid) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    let mut cursor = 0;
    loop {
        let page = client.events(run, cursor, 1000).await.unwrap();
        for event in page.events.iter().filter(|e| e.event_type == "note") {
            *seen.entry(event.payload.to_string()).or_default() += 1;
        }
        if page.next_cursor >= page.head_seq {
            return seen;
        }
        cursor = page.next_cursor;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_never_duplicate_an_event_across_a_killed_and_restarted_server() {
    let data = tempfile::tempdir().unwrap();
    let site = Site::new(data.path(), &[]);
    let server = site.start_async().await;
    let client = site.client();
    let run = client
        .create_run(&CreateRun {
            owner_user_id: Some(1),
            ..CreateRun::default()
        })
        .await
        .unwrap();
    let (writers, per_writer) = (8, 40);
    let acked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (client, acked) = (client.clone(), Arc::clone(&acked));
            tokio::spawn(async move {
                for n in 0..per_writer {
                    let event = AppendEvent::new("note", json!({"w": w, "n": n}));
                    client.append(run.id, &event).await?;
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, ClientError>(())
            })
        })
        .collect();
    // Kill it mid-load, with appends in flight, then bring it back.
    while acked.load(Ordering::Relaxed) < writers * per_writer / 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(server);
    let killed_at = acked.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _server = site.start_async().await;
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert!(
        killed_at < writers * per_writer,
        "the kill came after the load"
    );
    let seen = notes(&client, run.id).await;
    assert_eq!(seen.len(), writers * per_writer);
    assert!(seen.values().all(|&count| count == 1), "{seen:?}");
    let run = client.get_run(run.id).await.unwrap();
    assert_eq!(run.latest_seq, 1 + (writers * per_writer) as u64);
}

/// A proxy that forwards the first connection's request and drops its
/// answer, then forwards every later connection whole: a write that was
/// committed but whose answer was lost.
async fn lossy_proxy(upstream: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = listener.accept().await {
            let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            if std::mem::take(&mut first) {
                tokio::spawn(async move {
                    let (mut from_client, _) = client.split();
                    let (mut from_server, mut to_server) = server.split();
                    let forward = tokio::io::copy(&mut from_client, &mut to_server);
                    let mut answer = [0u8; 1];
                    // Once the server starts answering, it has committed.
                    tokio::select! {
                        _ = forward => {}
                        _ = from_server.read(&mut answer) => {}
                    }
                    let _ = client.shutdown().await;
                });
            } else {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_retried_under_the_same_key() {
    let data = tempfile::tempdir().unwrap();
    let site = Site::new(data.path(), &[]);
    let _server = site.start_async().await;
    let direct = site.client();
    let run = direct.create_run(&CreateRun::default()).await.unwrap();
    let proxy = lossy_proxy(site.addr.clone()).await;
    let through = Client::new(&format!("http://{proxy}")).unwrap();
    let appended = through
        .append(run.id, &AppendEvent::new("note", json!({"once": true})))
        .await
        .unwrap();
    assert!(
        appended.idempotent_replay,
        "the first attempt was not written"
    );
    assert_eq!(appended.event.seq, 2);
    let seen = notes(&direct, run.id).await;
    assert_eq!(seen.into_values().collect::<Vec<_>>(), vec![1]);
    // A caller's own key is the one sent, and a different body under it is
    // refused, not appended.
    let keyed = AppendEvent::new("note", json!({"k": 1})).with_idempotency_key("mine");
    direct.append(run.id, &keyed).await.unwrap();
    let clash = AppendEvent::new("note", json!({"k": 2})).with_idempotency_key("mine");
    match direct.append(run.id, &clash).await {
        Err(ClientError::Api(error)) => {
            assert_eq!(error.status, 409);
            assert_eq!(error.reason_code.as_deref(), Some("idempotency_key_reused"));
        }
        other => panic!("a reused key was accepted: {other:?}"),
    }
}

async fn subscription_follows_across_a_stale_cursor_and_a_restart(lane: Lane) {
    let data = tempfile::tempdir().unwrap();
    let site = Site::new(
        data.path(),
        &[("RUNTIME_FANOUT_QUEUE_CAPACITY", "4".to_owned())],
    );
    let server = site.start_async().await;
    let client = site.client();
    let run = client
        .create_run(&CreateRun {
            owner_user_id: Some(1),
            ..CreateRun::default()
        })
        .await
        .unwrap();
    for n in 0..9 {
        let event = AppendEvent::new("note", json!({"n": n}));
        client.append(run.id, &event).await.unwrap();
    }
    let cursors = Arc::new(Mutex::new(Vec::new()));
    let stale: Arc<Mutex<Option<StaleCursor>>> = Arc::default();
    let (saved, seen_stale) = (Arc::clone(&cursors), Arc::clone(&stale));
    let mut subscription = client
        .subscribe(&format!("run:{}:events", run.id), 0)
        .lane(lane)
        .sync_token(user_token(1))
        .on_cursor(move |cursor| saved.lock().unwrap().push(cursor))
        .on_stale(move |details| {
            // Re-bootstrapped from elsewhere up to the window's floor; the
            // topic serves the rest.
            let floor = details.oldest_available_cursor;
            *seen_stale.lock().unwrap() = Some(details);
            async move { Some(floor) }
        })
        .start();
    let append = |n: u64| {
        let client = client.clone();
        async move {
            let event = AppendEvent::new("note", json!({"n": n}));
            client.append(run.id, &event).await.unwrap();
        }
    };
    append(9).await;
    let mut delivered = Vec::new();
    for _ in 0..4 {
        delivered.push(subscription.next().await.unwrap());
    }
    let sequences: Vec<u64> = delivered.iter().map(|m| m.sequence).collect();
    assert_eq!(sequences, vec![8, 9, 10, 11]);
    assert_eq!(delivered[3].payload, json!({"n": 9}));
    let details = stale
        .lock()
        .unwrap()
        .clone()
        .expect("the stale callback ran");
    assert_eq!(
        (
            details.requested_cursor,
            details.oldest_available_cursor,
            details.head_cursor
        ),
        (0, 7, 11)
    );
    // Killed and restarted: the subscription reconnects from its cursor.
    drop(server);
    let _server = site.start_async().await;
    append(10).await;
    append(11).await;
    let next: Vec<u64> = vec![
        subscription.next().await.unwrap().sequence,
        subscription.next().await.unwrap().sequence,
    ];
    assert_eq!(next, vec![12, 13]);
    assert_eq!(subscription.cursor(), 13);
    assert_eq!(*cursors.lock().unwrap(), vec![7, 8, 9, 10, 11, 12, 13]);

    // A refusal a retry cannot fix ends the subscription at once.
    let mut foreign = client
        .subscribe(&format!("run:{}:events", run.id), 0)
        .lane(lane)
        .sync_token(user_token(2))
        .start();
    match foreign.next().await {
        Err(ClientError::Api(error)) => {
            assert_eq!(error.status, 403);
            assert_eq!(error.reason_code.as_deref(), Some("owner_mismatch"));
        }
        other => panic!("a foreign token was followed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_subscription_rebootstraps_and_reconnects() {
    subscription_follows_across_a_stale_cursor_and_a_restart(Lane::Sse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_subscription_rebootstraps_and_reconnects() {
    subscription_follows_across_a_stale_cursor_and_a_restart(Lane::WebSocket).await;
}
