//! The `runs-query` scenario: the run list route on a log of 20,000 runs,
//! 95% of them finished, and the bytes of the console's first page load.
//!
//! The log is written in-process (`preload`: each run its `run.started` and
//! three notes), then the service finishes 19 runs of every 20 over HTTP,
//! leaving 1,000 `running`. One client then asks for the first page of the
//! running runs, back to back: on an idle service, and again while 32
//! connections append to the running runs.

use super::{Bench, CONNECTIONS, Runs, Workload, prepare};
use crate::bench::load::{Call, LoadResult, LoadShape, run_load, send_all};
use crate::bench::preload;
use crate::bench::report::{Figure, Target};
use crate::bench::server::Server;
use anyhow::{Context, bail, ensure};
use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs of the log.
const RUNS: usize = 20_000;
/// Events of each run as preloaded (`run.started` and three notes).
const EVENTS_PER_RUN: u64 = 4;
/// One run in this many stays `running`; the others are finished.
const RUNNING_EVERY: usize = 20;
/// The query of the figure.
const QUERY: &str = "/internal/v1/runs?status=running&limit=100";
/// Most bytes a console asset may have before the crawl gives up.
const MAX_ASSET_BYTES: usize = 1 << 20;

const QUERY_P99_TARGET_US: Target = Target::AtMost(20_000.0);
const CONSOLE_KB_TARGET: Target = Target::AtMost(300.0);

impl Bench<'_> {
    /// `runs-query`: see the module documentation.
    pub(super) async fn runs_query(&mut self) -> anyhow::Result<()> {
        let dir = self.fresh_dir()?;
        eprintln!("bench:   preloading {RUNS} runs of {EVENTS_PER_RUN} events");
        let preloaded = preload::preload(&dir, RUNS, RUNS as u64 * EVENTS_PER_RUN).await?;
        let mut server = Server::spawn(self.binary, &dir)?;
        server.wait_ready().await?;
        let measured = self.measure_queries(server.addr, &preloaded.run_ids).await;
        let stopped = server.stop().await;
        super::remove_folder(&dir);
        let (idle, loaded, console_bytes) = measured?;
        stopped?;
        let scenario = "runs-query";
        self.report.note(format!(
            "runs-query: {RUNS} runs, {} running, {} events before the finishing appends",
            RUNS / RUNNING_EVERY,
            preloaded.events
        ));
        for (label, results) in [("idle", &idle), ("while appending", &loaded)] {
            let p50 = results.iter().map(|r| r.percentile_us(0.50)).collect();
            let p99 = results.iter().map(|r| r.percentile_us(0.99)).collect();
            let name = format!("GET {QUERY}, {label}");
            self.report
                .add(Figure::new(scenario, &format!("{name} p50"), "us", p50));
            let p99 = Figure::new(scenario, &format!("{name} p99"), "us", p99);
            self.report.add(if label == "idle" {
                p99.with_target(QUERY_P99_TARGET_US)
            } else {
                p99
            });
        }
        self.report.add(
            Figure::new(
                scenario,
                "console first page load (heads and bodies)",
                "KB",
                vec![console_bytes as f64 / 1024.0],
            )
            .with_target(CONSOLE_KB_TARGET),
        );
        Ok(())
    }

    /// Finishes most runs, checks the query's answer, then measures it.
    async fn measure_queries(
        &self,
        addr: SocketAddr,
        runs: &[uuid::Uuid],
    ) -> anyhow::Result<(Vec<LoadResult>, Vec<LoadResult>, usize)> {
        let (running, finished): (Vec<_>, Vec<_>) = runs
            .iter()
            .enumerate()
            .partition(|(at, _)| at % RUNNING_EVERY == 0);
        let finish = finished
            .iter()
            .map(|(_, run)| {
                Call::post(
                    format!("/internal/v1/runs/{run}/events"),
                    r#"{"event_type":"run.finished","payload":{"status":"succeeded"}}"#,
                )
            })
            .collect();
        send_all(addr, CONNECTIONS, finish).await?;
        check_first_page(addr, running.len()).await?;
        let running: Vec<String> = running.iter().map(|(_, run)| run.to_string()).collect();
        let one_client = LoadShape {
            connections: 1,
            ..self.load_shape()
        };
        let query: crate::bench::load::MakeCall = std::sync::Arc::new(|_| Call::get(QUERY));
        let (mut idle, mut loaded) = (Vec::new(), Vec::new());
        for _ in 0..self.options.repeats {
            idle.push(run_load(addr, one_client, query.clone()).await?);
            let appends = prepare(addr, Workload::Append(Runs::Existing(running.clone()))).await?;
            let (load, follower) = tokio::join!(
                run_load(addr, self.load_shape(), appends),
                run_load(addr, one_client, query.clone())
            );
            load?;
            loaded.push(follower?);
            eprintln!(
                "bench:   p99 idle {} us, while appending {} us",
                idle.last().map_or(0.0, |r| r.percentile_us(0.99)),
                loaded.last().map_or(0.0, |r| r.percentile_us(0.99))
            );
        }
        Ok((idle, loaded, console_first_load(addr).await?))
    }
}

/// The first page is 100 running runs, newest first, with a next page.
async fn check_first_page(addr: SocketAddr, running: usize) -> anyhow::Result<()> {
    let mut connection = crate::bench::load::Connection::open(addr).await?;
    let body = connection.send_ok(&Call::get(QUERY)).await?;
    let page: Value = serde_json::from_slice(&body).context("the run list answer")?;
    let runs = page["runs"].as_array().context("runs")?;
    ensure!(runs.len() == 100.min(running), "{} runs", runs.len());
    ensure!(
        runs.iter().all(|run| run["status"] == "running"),
        "a run that is not running"
    );
    ensure!(page["next_cursor"].is_string(), "no next page");
    Ok(())
}

/// Bytes on the wire (heads and bodies) of `GET /console` and every asset
/// it loads: the files the page names and those their modules import.
async fn console_first_load(addr: SocketAddr) -> anyhow::Result<usize> {
    let mut pending = vec!["/console".to_owned()];
    let mut fetched: Vec<String> = Vec::new();
    let mut total = 0;
    while let Some(path) = pending.pop() {
        if fetched.contains(&path) {
            continue;
        }
        let (wire, body) = fetch(addr, &path).await?;
        total += wire;
        pending.extend(referenced(&body));
        fetched.push(path);
    }
    eprintln!(
        "bench:   console first load: {} files, {total} bytes",
        fetched.len()
    );
    Ok(total)
}

/// The asset paths `text` names: `/console/assets/…` and `./….js`.
fn referenced(text: &str) -> Vec<String> {
    let absolute = text
        .split("\"/console/assets/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|name| format!("/console/assets/{name}"));
    let relative = text
        .split("from \"./")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|name| format!("/console/assets/{name}"));
    absolute.chain(relative).collect()
}

/// One `GET` on its own connection: the bytes received and the body.
async fn fetch(addr: SocketAddr, path: &str) -> anyhow::Result<(usize, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut wire = Vec::new();
    (&mut stream)
        .take(MAX_ASSET_BYTES as u64)
        .read_to_end(&mut wire)
        .await?;
    let text = String::from_utf8(wire).context("a console answer that is not UTF-8")?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("GET {path}: no header end");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok((text.len(), body.to_owned()))
}
