//! HAProxy (Debian's package) in front of the local fleet, as `deploy/fleet/haproxy.cfg`
//! puts it in front of the compose one: the same timeouts, health checks and retries,
//! with 127.0.0.1 ports instead of container names, and a stats page that says which
//! servers are in.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// One server behind HAProxy: its name and port.
#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    pub port: u16,
}

/// The load balancer's ports and the servers behind it.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Orders' API (HTTP).
    pub api: u16,
    /// The payment page (HTTP to customers, HTTPS with a client certificate to Payments).
    pub page: u16,
    /// The link (TCP, TLS passed through).
    pub link: u16,
    /// The stats page (`/stats;csv`).
    pub stats: u16,
    pub orders: Vec<Server>,
    pub payments: Vec<Server>,
}

/// The configuration: `ca` and `pem` (HAProxy's client certificate and key, one file)
/// for its HTTPS to Payments and its health checks.
pub fn config(layout: &Layout, ca: &Path, pem: &Path) -> String {
    let (ca, pem) = (ca.display(), pem.display());
    let servers = |list: &[Server], extra: &str| {
        list.iter()
            .map(|s| format!("    server {} 127.0.0.1:{} check{extra}\n", s.name, s.port))
            .collect::<String>()
    };
    let page_ssl = format!(" ssl verify required ca-file {ca} crt {pem}");
    let check_ssl = format!(" check-ssl verify required ca-file {ca} crt {pem}");
    format!(
        "global\n    maxconn 4096\n    hard-stop-after 5s\n\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    \
         timeout server 30s\n    timeout http-request 5s\n    timeout http-keep-alive 5s\n    \
         timeout tunnel 1h\n    retries 3\n    option redispatch 1\n    \
         retry-on conn-failure empty-response response-timeout\n    \
         default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 2\n\n\
         frontend stats\n    bind 127.0.0.1:{stats}\n    stats enable\n    stats uri /stats\n\n\
         frontend orders_api\n    bind 127.0.0.1:{api}\n    default_backend orders\n\n\
         backend orders\n    option httpchk GET /readyz\n    http-check expect status 200\n{orders}\n\
         frontend payments_page\n    bind 127.0.0.1:{page}\n    default_backend payments_page\n\n\
         backend payments_page\n    option httpchk GET /readyz\n    http-check expect status 200\n{pages}\n\
         frontend payments_link\n    mode tcp\n    bind 127.0.0.1:{link}\n    default_backend payments_link\n\n\
         backend payments_link\n    mode tcp\n    option httpchk GET /readyz\n    \
         http-check expect status 200\n{links}",
        stats = layout.stats,
        api = layout.api,
        page = layout.page,
        link = layout.link,
        orders = servers(&layout.orders, ""),
        pages = servers(&layout.payments, &page_ssl),
        links = servers(&layout.payments, &check_ssl),
    )
}

/// HAProxy, running.
pub struct Haproxy {
    child: Child,
    stats: String,
    http: reqwest::Client,
}

impl Haproxy {
    /// Checks the configuration (`haproxy -c`), starts HAProxy with its output to
    /// `log`, and waits until its stats page answers.
    pub async fn start(bin: &Path, cfg: &Path, log: PathBuf, stats: u16) -> anyhow::Result<Self> {
        let check = Command::new(bin)
            .args(["-c", "-q", "-f"])
            .arg(cfg)
            .output()
            .await
            .with_context(|| format!("running {} (apt-get install haproxy)", bin.display()))?;
        if !check.status.success() {
            bail!(
                "haproxy -c refused {}: {}",
                cfg.display(),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let file = std::fs::File::create(&log).with_context(|| format!("creating {log:?}"))?;
        let child = Command::new(bin)
            .args(["-W", "-db", "-f"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let haproxy = Haproxy {
            child,
            stats: format!("http://127.0.0.1:{stats}/stats;csv"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while haproxy.states().await.is_err() {
            if Instant::now() >= deadline {
                bail!("HAProxy's stats page did not answer within 10 s; see {log:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(haproxy)
    }

    /// Every (backend, server, status) of the stats page: `UP`, `DOWN`, `UP 1/2`…
    pub async fn states(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        let csv = self.http.get(&self.stats).send().await?.text().await?;
        parse_states(&csv)
    }

    /// Waits until `server` is `UP` in every backend it is in, `within` at most: how
    /// long that took.
    pub async fn wait_up(&self, server: &str, within: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let states = self.states().await.unwrap_or_default();
            let mine: Vec<_> = states.iter().filter(|(_, s, _)| s == server).collect();
            if !mine.is_empty() && mine.iter().all(|(_, _, status)| status == "UP") {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= within {
                bail!("{server} not UP in HAProxy within {within:?}: {mine:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The (pxname, svname, status) of each server row of HAProxy's stats CSV.
pub fn parse_states(csv: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut lines = csv.lines();
    let header = lines.next().context("empty stats")?;
    let names: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| names.iter().position(|n| *n == name);
    let (Some(px), Some(sv), Some(status)) = (col("pxname"), col("svname"), col("status")) else {
        bail!("no pxname/svname/status in the stats header: {header}");
    };
    Ok(lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > status && !matches!(f[sv], "FRONTEND" | "BACKEND"))
        .map(|f| (f[px].to_owned(), f[sv].to_owned(), f[status].to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::parse_states;

    #[test]
    fn reads_server_rows_only() {
        let csv = "# pxname,svname,qcur,status,x\n\
                   orders,FRONTEND,,OPEN,\n\
                   orders,orders-a,0,UP,\n\
                   orders,orders-b,0,DOWN 1/2,\n\
                   orders,BACKEND,0,UP,\n";
        let rows = parse_states(csv).unwrap();
        assert_eq!(
            rows,
            vec![
                ("orders".into(), "orders-a".into(), "UP".into()),
                ("orders".into(), "orders-b".into(), "DOWN 1/2".into()),
            ]
        );
        assert!(parse_states("# a,b\n").is_err());
    }
}
