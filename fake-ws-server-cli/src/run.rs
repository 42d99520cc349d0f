//! The process: parse the arguments, read the scenario, start the fake and the admin
//! API, print the ready line, and serve until SIGTERM or SIGINT.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use actix_web::{App, HttpServer, web};
use clap::{Parser, ValueEnum};
use fake_ws_server::{AsyncApi, FakeServer};
use serde::Serialize;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::admin::{self, Admin};
use crate::scenario::{Json, Scenario};

/// A fake WebSocket server for testing WebSocket clients, driven over an admin HTTP
/// API. Prints one JSON line to stdout when ready: `{"ws_url": ..., "admin_url": ...}`;
/// logs go to stderr.
#[derive(Debug, Parser)]
#[command(name = "fake-ws-server", version)]
pub struct Args {
    /// The address both ports listen on (0.0.0.0 in a container).
    #[arg(long, env = "FAKE_WS_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The WebSocket port; 0 for a free one (the ready line says which).
    #[arg(long, env = "FAKE_WS_PORT", default_value_t = 0)]
    pub port: u16,
    /// The admin API's port; 0 for a free one (the ready line says which).
    #[arg(long, env = "FAKE_WS_ADMIN_PORT", default_value_t = 0)]
    pub admin_port: u16,
    /// The path WebSocket upgrades are accepted on (others get 404).
    #[arg(long, env = "FAKE_WS_PATH", default_value = "/", value_parser = absolute_path)]
    pub path: String,
    /// A scenario file, JSON or YAML (`.yaml`, `.yml`): rules, handshake rules,
    /// messages sent on connect.
    #[arg(long, env = "FAKE_WS_SCENARIO")]
    pub scenario: Option<PathBuf>,
    /// The subprotocol to select when the client offers it.
    #[arg(long, env = "FAKE_WS_SUBPROTOCOL")]
    pub subprotocol: Option<String>,
    /// Messages nobody looked at are no problem for `POST /verify` (invalid frames
    /// and rules short of their `times` still are).
    #[arg(long, env = "FAKE_WS_LENIENT")]
    pub lenient: bool,
    /// An AsyncAPI 3 document (YAML or JSON): every client message must fit a message
    /// of the channel whose address is its path, else it is a contract violation.
    #[arg(long, env = "FAKE_WS_ASYNCAPI")]
    pub asyncapi: Option<PathBuf>,
    /// Whose side the AsyncAPI document takes: a server's lists what clients send under
    /// `receive` operations, a client's under `send`.
    #[arg(long, env = "FAKE_WS_ASYNCAPI_DESCRIBES", value_enum, default_value_t = Describes::Server)]
    pub asyncapi_describes: Describes,
    /// Serves wss:// with a certificate for 127.0.0.1 and localhost, signed by a root
    /// generated at start: the ready line carries it in PEM (`root_certificate_pem`),
    /// for the client to trust, and so does `GET /tls/root-certificate`.
    #[arg(long, env = "FAKE_WS_TLS")]
    pub tls: bool,
}

/// The application an AsyncAPI document describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Describes {
    /// The server: client messages are those of its `receive` operations.
    Server,
    /// The client: client messages are those of its `send` operations.
    Client,
}

/// What the files name: the scenario, and the AsyncAPI contract if any.
struct Setup {
    scenario: Scenario,
    contract: Option<AsyncApi>,
}

/// Reads the scenario and the AsyncAPI document the arguments name.
fn load(args: &Args) -> Result<Setup, String> {
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path).map_err(|e| e.to_string())?,
        None => Scenario::default(),
    };
    let contract = match &args.asyncapi {
        Some(path) => {
            let contract = AsyncApi::from_path(path)
                .map_err(|e| format!("AsyncAPI document {}: {e}", path.display()))?;
            Some(match args.asyncapi_describes {
                Describes::Server => contract,
                Describes::Client => contract.describing_the_client(),
            })
        }
        None => None,
    };
    Ok(Setup { scenario, contract })
}

/// A path that starts with `/`.
fn absolute_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        Ok(path.to_owned())
    } else {
        Err(format!("{path:?} does not start with '/'"))
    }
}

/// The line printed to stdout once both ports listen.
#[derive(Debug, Serialize)]
struct Ready {
    ws_url: String,
    admin_url: String,
    /// With `--tls`: the root the server's certificate is signed by.
    #[serde(skip_serializing_if = "Option::is_none")]
    root_certificate_pem: Option<String>,
}

/// Runs the process; exit code 2 for a scenario or AsyncAPI document it cannot take, 1 for a port it
/// cannot bind.
pub fn main(args: Args) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let setup = match load(&args) {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("fake-ws-server: {e}");
            return ExitCode::from(2);
        }
    };
    match actix_web::rt::System::new().block_on(serve(args, setup)) {
        Ok(()) => {
            // Not dropping the fake: its drop would panic on what a test left unchecked,
            // which `POST /verify` reports instead.
            let _ = std::io::stdout().flush();
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("fake-ws-server: {e}");
            ExitCode::from(1)
        }
    }
}

/// Starts the fake from `scenario` and the admin API, prints the ready line, and
/// serves until a signal.
async fn serve(args: Args, setup: Setup) -> std::io::Result<()> {
    let ws_addr = SocketAddr::new(args.host, args.port);
    if args.port != 0 {
        // The fake panics when it cannot bind: say why here instead.
        std::net::TcpListener::bind(ws_addr).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {ws_addr}: {e}"))
        })?;
    }
    // Listen for signals before the ready line: a supervisor that reads it may
    // send SIGTERM at once, and an unhandled one kills the process with no cleanup.
    let shutdown = ShutdownSignals::install()?;
    let fake = start_fake(&args, setup).await;
    let ws_url = fake.url();
    let root_certificate_pem = args.tls.then(|| fake.root_certificate_pem());
    let admin = web::Data::new(Admin::new(fake));
    let server = HttpServer::new({
        let admin = admin.clone();
        move || {
            App::new()
                .app_data(admin.clone())
                .configure(admin::configure)
        }
    })
    .workers(2)
    .disable_signals()
    .bind((args.host, args.admin_port))?;
    let admin_addr = loopback_if_unspecified(server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let ready = Ready {
        ws_url,
        admin_url: format!("http://{admin_addr}"),
        root_certificate_pem,
    };
    println!(
        "{}",
        serde_json::to_string(&ready).expect("the ready line serialises")
    );
    std::io::stdout().flush()?;
    tracing::info!(ws_url = %ready.ws_url, admin_url = %ready.admin_url, "fake-ws-server ready");
    shutdown.received().await;
    tracing::info!("stopping");
    admin.fake.stop().await;
    handle.stop(true).await;
    Ok(())
}

/// The fake, with the scenario's rules mounted and the contract checked.
async fn start_fake(args: &Args, setup: Setup) -> FakeServer<Json, Json> {
    let Setup { scenario, contract } = setup;
    let mut builder = FakeServer::json()
        .bind(SocketAddr::new(args.host, args.port))
        .path(args.path.clone());
    if let Some(subprotocol) = &args.subprotocol {
        builder = builder.subprotocol(subprotocol.clone());
    }
    if args.lenient {
        builder = builder.lenient();
    }
    if args.tls {
        builder = builder.tls();
    }
    if let Some(contract) = contract {
        builder = builder.asyncapi(contract);
    }
    if !scenario.on_connect.is_empty() {
        let greeting = scenario.on_connect.clone();
        builder = builder.on_connect(move |_| greeting.clone());
    }
    for rule in &scenario.rules {
        builder = builder.rule(rule.rule());
    }
    for rule in &scenario.handshake_rules {
        builder = builder.handshake_rule(rule.rule());
    }
    let fake = builder.start().await;
    for matcher in &scenario.allow {
        fake.allow(matcher.matcher());
    }
    fake
}

/// 127.0.0.1 (or ::1) in place of an unspecified address, for a URL a client can use.
fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// SIGTERM and SIGINT, listened for from `install` on.
struct ShutdownSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the first of them.
    async fn received(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}
