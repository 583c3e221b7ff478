//! The Zabbix sink against a real Zabbix server (Debian's zabbix-server-pgsql with
//! PostgreSQL), with a host and trapper items created for the test: the values must arrive in
//! Zabbix's history tables.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{append, http_get, log_line, start};

struct ZabbixServer {
    port: u16,
    dir: PathBuf,
    db: String,
}

impl ZabbixServer {
    fn start(dir: &Path) -> Self {
        // Zabbix takes ListenPort from 1024 to 32767 only, so the kernel's ephemeral range
        // will not do: probe for a free port below it.
        let base = 20_000 + (std::process::id() % 10_000) as u16;
        let port = (0..2_000u16)
            .map(|i| 20_000 + (base - 20_000 + i * 7) % 12_000)
            .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .expect("a free port below 32768");
        let out = Command::new(script())
            .args(["start", &port.to_string()])
            .arg(dir)
            .output()
            .expect("run scripts/zabbix-test-server.sh");
        assert!(
            out.status.success(),
            "cannot start the Zabbix test server (needs root, postgresql and zabbix-server-pgsql; \
             scripts/test.sh installs them): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            port,
            dir: dir.to_path_buf(),
            // The script prints the database name as its last line.
            db: String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }

    fn query(&self, sql: &str) -> String {
        let out = Command::new("su")
            .args(["postgres", "-c"])
            .arg(format!("psql -d {} -tAc \"{sql}\"", self.db))
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql failed on database {:?}: {}",
            self.db,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for ZabbixServer {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["stop", &self.port.to_string()])
            .arg(&self.dir)
            .status();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/zabbix-test-server.sh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_counts_and_request_rates_arrive_in_a_real_zabbix() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    // The server runs as the postgres user and must reach its directory inside ours.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let zabbix = ZabbixServer::start(&dir.path().join("zabbix"));
    let shipper = start(
        dir.path(),
        None,
        &[
            &format!("--zabbix-server=127.0.0.1:{}", zabbix.port),
            "--zabbix-host=livecast",
            "--zabbix-interval-secs=1",
        ],
    )
    .await;
    // Three viewers behind one address, ten requests.
    let text: String = (0..10)
        .map(|i| log_line(i, ["a", "b", "c"][i % 3]))
        .collect();
    append(&dir.path().join("logs/web-1.log"), &text);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let viewers = zabbix.query(
            "select value from history_uint where itemid = 900101 order by clock desc limit 1",
        );
        let requests = zabbix.query("select max(value) from history where itemid = 900102");
        if viewers == "3" && requests.parse::<f64>().is_ok_and(|r| r > 0.0) {
            assert_eq!(
                requests.parse::<f64>().ok(),
                Some(10.0),
                "ten requests in one second"
            );
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let metrics = http_get(shipper.admin, "/metrics").await;
            let log = std::fs::read_to_string(zabbix.dir.join("server.log")).unwrap_or_default();
            panic!(
                "values did not arrive in Zabbix (viewers {viewers:?}, requests {requests:?})\n\
                 shipper metrics:\n{}\nserver log:\n{}",
                metrics
                    .lines()
                    .filter(|l| l.contains("zabbix") || l.contains("viewers"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                log.lines()
                    .filter(|l| !l.contains(" started ["))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = http_get(shipper.admin, "/metrics").await;
    assert!(
        metrics.contains("livecast_logship_zabbix_values_total{result=\"processed\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("livecast_logship_zabbix_values_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");
}
