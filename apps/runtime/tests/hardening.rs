//! Slow and hostile clients against the real binary over loopback TCP, the
//! way issue 19 found them: stalled and trickled bodies, stalled headers, a
//! flood past the connection limit, descriptors running out, a client that
//! pipelines and never reads, made-up methods, and requests hyper refuses
//! before routing. Timeouts are set small through the environment so that
//! each test takes seconds.

mod support;

use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::process::Server;

/// Sends `bytes` on a new connection and reads until the server closes it
/// (or `within` passes); the status and the JSON body of the answer.
fn exchange(addr: &str, bytes: &[u8], within: Duration) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    // The server may answer and close before taking all of a huge request.
    let _ = stream.write_all(bytes);
    parse_response(&read_to_close(&mut stream))
}

fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => break,
            Err(error) => panic!("no answer: {error}"),
        }
    }
    response
}

fn parse_response(response: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

/// `GET /healthz` on a fresh connection: how long the answer took.
fn healthz_latency(server: &Server) -> Duration {
    let started = Instant::now();
    let (status, body) = server.call("GET", "/healthz", None);
    assert_eq!(status, 200, "{body}");
    started.elapsed()
}

/// Resident memory of the server, in KiB.
fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Whether the server has closed `stream` (EOF or reset) by `deadline`,
/// reading (and dropping) whatever it answered first.
fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

const STALLED_BODY: &[u8] = b"POST /internal/v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\n\r\n{";

#[test]
fn stalled_bodies_are_dropped_while_healthz_answers_and_memory_comes_back() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        data.path(),
        &[
            ("RUNTIME_BODY_READ_TIMEOUT_MS", "2000"),
            // Room for every stalled body: this test is about time.
            ("RUNTIME_MAX_BODY_BYTES_IN_FLIGHT", "4294967296"),
        ],
    );
    let baseline = rss_kib(&server);
    let mut worst = Duration::ZERO;
    for _round in 0..2 {
        let mut stalled: Vec<TcpStream> = (0..1000)
            .map(|_| {
                let mut stream = TcpStream::connect(&server.addr).unwrap();
                stream.write_all(STALLED_BODY).unwrap();
                stream
            })
            .collect();
        let attack_started = Instant::now();
        // While all of them are stalled, a fresh client is still served.
        for _ in 0..5 {
            worst = worst.max(healthz_latency(&server));
        }
        assert!(
            attack_started.elapsed() < Duration::from_millis(2000),
            "healthz was measured during the stall"
        );
        // Each stalled body is answered 408 and its connection closed.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut first = Vec::new();
        stalled[0]
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stalled[0].read_to_end(&mut first);
        let (status, body) = parse_response(&first);
        assert_eq!(
            (status, body["error"].as_str()),
            (408, Some("request_timeout")),
            "{body}"
        );
        for stream in &mut stalled[1..] {
            assert!(closed_by(stream, deadline), "a stalled body was held");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(&server);
    eprintln!(
        "stalled bodies: healthz worst {worst:?}; RSS {baseline} KiB before, {after} KiB after"
    );
    assert!(
        worst < Duration::from_secs(1),
        "healthz took {worst:?} during the stall"
    );
    assert!(
        after < baseline + 64 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB"
    );
}

#[test]
fn a_body_trickled_slower_than_the_minimum_rate_is_cut_off() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        data.path(),
        &[
            ("RUNTIME_BODY_READ_TIMEOUT_MS", "1000"),
            ("RUNTIME_BODY_MIN_BYTES_PER_SEC", "100"),
        ],
    );
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.write_all(STALLED_BODY).unwrap();
    let started = Instant::now();
    // Five bytes a second, never a pause as long as the pause timeout.
    let mut cut_off = None;
    while started.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(200));
        if stream.write_all(b" ").is_err() {
            cut_off = Some(started.elapsed());
            break;
        }
        stream
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(n) => {
                let (status, _) = parse_response(&buf[..n]);
                assert!(
                    n == 0 || status == 408,
                    "{}",
                    String::from_utf8_lossy(&buf[..n])
                );
                cut_off = Some(started.elapsed());
                break;
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                cut_off = Some(started.elapsed());
                break;
            }
        }
    }
    let cut_off = cut_off.expect("the trickle was held for 6 s");
    assert!(
        cut_off < Duration::from_secs(4),
        "cut off after {cut_off:?}"
    );
    assert_eq!(server.call("GET", "/healthz", None).0, 200);
}

#[test]
fn stalled_headers_are_dropped() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[("RUNTIME_HEADER_READ_TIMEOUT_MS", "500")]);
    let mut streams: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(&server.addr).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n")
                .unwrap();
            stream
        })
        .collect();
    assert!(healthz_latency(&server) < Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(5);
    for stream in &mut streams {
        assert!(closed_by(stream, deadline), "stalled headers were held");
    }
}

#[test]
fn bodies_in_flight_are_bounded_by_the_byte_budget() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        data.path(),
        &[
            ("RUNTIME_MAX_BODY_BYTES_IN_FLIGHT", "2097152"),
            ("RUNTIME_BODY_READ_TIMEOUT_MS", "3000"),
        ],
    );
    // Two stalled 1 MiB bodies hold the whole budget...
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(&server.addr).unwrap();
            stream.write_all(STALLED_BODY).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // ...so a third is refused at once, before its body is read.
    let started = Instant::now();
    let (status, body) = exchange(&server.addr, STALLED_BODY, Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason_code"], "body_budget_exhausted", "{body}");
    // A chunked body is reserved chunk by chunk, and refused the same way.
    let chunked = b"POST /internal/v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    let (status, body) = exchange(&server.addr, chunked, Duration::from_secs(5));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason_code"], "body_budget_exhausted", "{body}");
    // Bodiless requests need no budget.
    assert_eq!(server.call("GET", "/healthz", None).0, 200);
    // Once the stalled bodies time out, the budget is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    for stream in &mut held {
        assert!(closed_by(stream, deadline));
    }
    let (status, body) = server.call("POST", "/internal/v1/runs", Some(serde_json::json!({})));
    assert_eq!(status, 201, "{body}");
    let (status, body) = exchange(&server.addr, chunked, Duration::from_secs(5));
    assert_eq!(status, 201, "{body}");
}

#[test]
fn connections_past_the_limit_are_shed_and_the_accepted_ones_served() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        data.path(),
        &[
            ("RUNTIME_MAX_CONNECTIONS", "50"),
            ("RUNTIME_HEADER_READ_TIMEOUT_MS", "3000"),
        ],
    );
    let mut held: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut stream = TcpStream::connect(&server.addr).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n")
                .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // One more is closed at once, without an answer.
    let mut extra = TcpStream::connect(&server.addr).unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n");
    assert!(closed_by(
        &mut extra,
        Instant::now() + Duration::from_secs(1)
    ));
    // The accepted ones are still served when they finish their request.
    let stream = &mut held[0];
    stream.write_all(b"connection: close\r\n\r\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert_eq!(parse_response(&answer).0, 200);
    // When the stalled ones are dropped, fresh clients are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    for stream in &mut held[1..] {
        assert!(closed_by(stream, deadline));
    }
    let (_, metrics) = raw_get(&server.addr, "/metrics");
    assert!(
        metrics.lines().any(
            |line| line.starts_with("runtime_http_connections_shed_total") && !line.ends_with(" 0")
        ),
        "{metrics}"
    );
}

/// A GET on a new connection; the status and the body as text.
fn raw_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let response = read_to_close(&mut stream);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned());
    (status, body.unwrap_or_default())
}

#[test]
fn running_out_of_descriptors_pauses_accepting_and_the_service_recovers() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // 64 descriptors: the log, the runtime's own and a few dozen sockets.
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec {}",
            env!("CARGO_BIN_EXE_openagents-runtime-service")
        ))
        .env("RUNTIME_BIND_ADDR", &addr)
        .env("RUNTIME_EVENT_LOG_PATH", data.path().join("events.jsonl"))
        .env(
            "RUNTIME_CHECKPOINT_PATH",
            data.path().join("projections.json"),
        )
        .env("RUNTIME_HEADER_READ_TIMEOUT_MS", "60000")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, addr };
    server.wait_ready();
    // Fewer than fit in the listen backlog (128) past the descriptors, so
    // that every connect completes at once.
    let target = server.addr.parse().unwrap();
    let stalled: Vec<TcpStream> = (0..150)
        .filter_map(|_| {
            let mut stream =
                TcpStream::connect_timeout(&target, Duration::from_millis(500)).ok()?;
            stream.write_all(b"GET /healthz HTTP/1.1\r\n").ok()?;
            Some(stream)
        })
        .collect();
    assert!(stalled.len() > 64, "the flood reached past the descriptors");
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before = cpu_ticks(&server);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(&server) - cpu_before;
    assert!(spent < 50, "accepting spun for {spent} ticks in one second");
    drop(stalled);
    // Descriptors come back as the flood goes; the service serves again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, _)) = server.try_call("GET", "/healthz", None) {
            break;
        }
        assert!(Instant::now() < deadline, "the service did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// User and system CPU time of the server, in clock ticks.
fn cpu_ticks(server: &Server) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.child.id())).unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_client_that_pipelines_and_never_reads_is_dropped() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[("RUNTIME_WRITE_TIMEOUT_MS", "500")]);
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let request = b"GET /metrics HTTP/1.1\r\nhost: t\r\n\r\n".repeat(100);
    let started = Instant::now();
    let mut dropped = false;
    while started.elapsed() < Duration::from_secs(20) {
        match stream.write_all(&request) {
            Ok(()) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // Both directions are full; the server's write timeout runs.
            }
            Err(_) => {
                dropped = true;
                break;
            }
        }
    }
    assert!(dropped, "the connection was held for 20 s");
    assert!(healthz_latency(&server) < Duration::from_secs(1));
}

#[test]
fn made_up_methods_do_not_grow_the_metrics() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[]);
    let send_methods = |range: std::ops::Range<u32>| {
        let mut stream = TcpStream::connect(&server.addr).unwrap();
        let mut requests = Vec::new();
        for n in range {
            write!(requests, "M{n}X /healthz HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
        }
        write!(
            requests,
            "GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        stream.write_all(&requests).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        read_to_close(&mut stream);
    };
    let series = || {
        let (status, text) = raw_get(&server.addr, "/metrics");
        assert_eq!(status, 200);
        (text.lines().count(), text.len())
    };
    send_methods(0..10);
    // The scrapes' own series exist from the second one on.
    series();
    let (lines_before, _) = series();
    for batch in 0..4 {
        send_methods(batch * 1000..(batch + 1) * 1000);
    }
    let (lines_after, bytes_after) = series();
    assert_eq!(
        lines_before, lines_after,
        "4,000 made-up methods added series to /metrics"
    );
    let (_, metrics) = raw_get(&server.addr, "/metrics");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    assert!(!metrics.contains("M17X"));
    assert!(bytes_after < 64 << 10);
}

#[test]
fn requests_hyper_refuses_are_answered_with_the_envelope() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[]);
    let within = Duration::from_secs(10);
    let long_path = format!(
        "GET /internal/v1/runs/{} HTTP/1.1\r\nhost: t\r\n\r\n",
        "a".repeat(100_000)
    );
    let (status, body) = exchange(&server.addr, long_path.as_bytes(), within);
    assert_eq!(
        (status, body["error"].as_str()),
        (414, Some("uri_too_long")),
        "{body}"
    );
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (status, body) = exchange(&server.addr, big_header.as_bytes(), within);
    assert_eq!(
        (status, body["error"].as_str()),
        (431, Some("headers_too_large")),
        "{body}"
    );
    let nul = b"GET /internal/v1/khala/topics/run:x:events/messages HTTP/1.1\r\nhost: t\r\nauthorization: Bearer a\0b\r\n\r\n";
    let (status, body) = exchange(&server.addr, nul, within);
    assert_eq!(
        (status, body["reason_code"].as_str()),
        (400, Some("malformed_http")),
        "{body}"
    );
    let gzip = b"POST /internal/v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ntransfer-encoding: gzip, chunked\r\nconnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    let (status, body) = exchange(&server.addr, gzip, within);
    assert_eq!(
        (status, body["reason_code"].as_str()),
        (501, Some("unsupported_transfer_coding")),
        "{body}"
    );
    // A 60 KB path segment gets through hyper; its echo is clipped.
    let segment = format!(
        "GET /internal/v1/runs/{} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        "b".repeat(60_000)
    );
    let (status, body) = exchange(&server.addr, segment.as_bytes(), within);
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().len() < 300, "{body}");
    // The service still serves.
    assert_eq!(server.call("GET", "/healthz", None).0, 200);
}

#[test]
fn a_denied_poll_logs_a_clipped_topic() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("service.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_openagents-runtime-service"))
        .env("RUNTIME_BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("RUNTIME_EVENT_LOG_PATH", data.path().join("events.jsonl"))
        .env(
            "RUNTIME_CHECKPOINT_PATH",
            data.path().join("projections.json"),
        )
        .env("RUNTIME_SYNC_TOKEN_SIGNING_KEY", "k")
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    server.wait_ready();
    let topic = format!("worker:{}:lifecycle", "w".repeat(60_000));
    for _ in 0..20 {
        let (status, body) = server.call(
            "GET",
            &format!("/internal/v1/khala/topics/{topic}/messages"),
            None,
        );
        assert_eq!(
            body["reason_code"], "missing_authorization",
            "{status} {body}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let written = std::fs::read_to_string(&log).unwrap();
    let denials = written
        .lines()
        .filter(|line| line.contains("khala request denied"))
        .count();
    assert_eq!(denials, 20, "{written}");
    assert!(
        written.len() < 20 * 1024,
        "20 denials wrote {} bytes",
        written.len()
    );
}

#[test]
fn a_long_poll_outlives_the_header_body_and_write_timeouts() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        data.path(),
        &[
            ("RUNTIME_HEADER_READ_TIMEOUT_MS", "300"),
            ("RUNTIME_BODY_READ_TIMEOUT_MS", "300"),
            ("RUNTIME_WRITE_TIMEOUT_MS", "300"),
            ("RUNTIME_SYNC_TOKEN_SIGNING_KEY", support::tokens::KEY),
        ],
    );
    let (_, created) = server.call("POST", "/internal/v1/runs", Some(serde_json::json!({})));
    let run = created["run"]["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let (status, body) = server.call_authorized(
        &format!("/internal/v1/khala/topics/run:{run}:events/messages?after_seq=1&wait_ms=1500"),
        &support::tokens::user_token(1),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "the poll waited"
    );
    assert_eq!(body["messages"], serde_json::json!([]));
}
