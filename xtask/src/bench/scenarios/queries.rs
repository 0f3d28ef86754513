//! The `runs-query` scenario: the run list route on the history log
//! (20,000,000 events over 20,000 runs, 95% of them finished, written by
//! `generate`), and the bytes of the console's first page load.
//!
//! One client asks for the first page of the running runs, back to back:
//! on an idle service, and again while 32 connections append to the
//! running runs. `--quick` keeps the 20,000 runs but gives each only a few
//! events, so the index the route walks is the same size.

use super::{Bench, Runs, Workload, prepare};
use crate::bench::generate;
use crate::bench::load::{Call, Connection, LoadResult, LoadShape, MakeCall, run_load};
use crate::bench::report::{Figure, Target};
use crate::bench::server::Server;
use anyhow::{Context, bail, ensure};
use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs of the log, and records per run (start and finish included).
const RUNS: usize = 20_000;
const EVENTS_PER_RUN: u64 = 1_000;
/// Records per run of the `--quick` variant.
const QUICK_EVENTS_PER_RUN: u64 = 5;
/// Runs that stay `running` (the newest 5%).
const RUNNING: usize = RUNS / 20;
/// Longest the first start on the generated log may take.
const FIRST_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);
/// The query of the figure.
const QUERY: &str = "/internal/v1/runs?status=running&limit=100";
/// Most bytes a console asset may have before the crawl gives up.
const MAX_ASSET_BYTES: usize = 1 << 20;

const QUERY_P99_TARGET_US: Target = Target::AtMost(20_000.0);
const CONSOLE_KB_TARGET: Target = Target::AtMost(300.0);

impl Bench<'_> {
    /// `runs-query`: see the module documentation.
    pub(super) async fn runs_query(&mut self) -> anyhow::Result<()> {
        let per_run = if self.options.quick {
            QUICK_EVENTS_PER_RUN
        } else {
            EVENTS_PER_RUN
        };
        let dir = self.fresh_dir()?;
        let log = dir.join(crate::bench::server::EVENT_LOG);
        eprintln!("bench:   generating {RUNS} runs of {per_run} events");
        let generated = tokio::task::spawn_blocking(move || {
            generate::history_log(&log, RUNS, per_run, RUNNING)
        })
        .await??;
        let mut server = Server::spawn(self.binary, &dir)?;
        // The first start scans the whole log and indexes its sealed segments.
        let ready = server.wait_ready_within(FIRST_START_TIMEOUT).await?;
        eprintln!("bench:   ready after {ready:?}");
        let measured = self.measure_queries(server.addr).await;
        let stopped = server.stop().await;
        super::remove_folder(&dir);
        let (idle, loaded, console_bytes) = measured?;
        stopped?;
        let scenario = "runs-query";
        self.report.note(format!(
            "runs-query: {} events over {} runs, {} finished, {:.1} GB of log",
            generated.events,
            generated.runs,
            generated.finished,
            generated.bytes as f64 / 1e9
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

    /// Checks the query's answer, then measures it idle and under appends.
    async fn measure_queries(
        &self,
        addr: SocketAddr,
    ) -> anyhow::Result<(Vec<LoadResult>, Vec<LoadResult>, usize)> {
        let running = running_runs(addr).await?;
        let one_client = LoadShape {
            connections: 1,
            ..self.load_shape()
        };
        let query: MakeCall = std::sync::Arc::new(|_| Call::get(QUERY));
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

/// Every running run, paged through the route itself: each page holds only
/// running runs, newest first, none repeated, and the pages add up to the
/// runs the log left live.
async fn running_runs(addr: SocketAddr) -> anyhow::Result<Vec<String>> {
    let mut connection = Connection::open(addr).await?;
    let mut ids: Vec<String> = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("{QUERY}{cursor}");
        let body = connection.send_ok(&Call::get(path)).await?;
        let page: Value = serde_json::from_slice(&body).context("the run list answer")?;
        let runs = page["runs"].as_array().context("runs")?;
        for run in runs {
            ensure!(run["status"] == "running", "a run that is not running");
            let id = run["id"].as_str().context("run id")?.to_owned();
            ensure!(ids.last().is_none_or(|last| *last > id), "not newest first");
            ids.push(id);
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    ensure!(
        ids.len() == RUNNING,
        "{} running runs, not {RUNNING}",
        ids.len()
    );
    Ok(ids)
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
