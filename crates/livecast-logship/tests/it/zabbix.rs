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

/// The script serialises starting PostgreSQL with a lock file. A flock belongs to the open
/// file, so a server started while the script held it, and inheriting the descriptor, would
/// keep it taken after the script exits: every later start of a test server would then wait
/// for it forever (which is how a run where PostgreSQL was down before `prepare` once hung).
#[test]
fn postgresql_started_for_the_tests_does_not_keep_the_scripts_lock() {
    let out = Command::new(script())
        .arg("prepare")
        .output()
        .expect("run scripts/zabbix-test-server.sh prepare");
    assert!(
        out.status.success(),
        "prepare failed (needs root, postgresql and zabbix-server-pgsql): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lock = Path::new("/tmp/livecast-zabbix-test-postgres.lock");
    // Other tests' runs of the script (and the psql it runs) hold the file for a moment; a
    // daemon must never.
    let daemons = ["postgres", "zabbix_server", "php"];
    let mut holders = Vec::new();
    for process in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let comm = std::fs::read_to_string(process.path().join("comm")).unwrap_or_default();
        if !daemons.contains(&comm.trim()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == lock))
        {
            holders.push(format!(
                "{} {}",
                process.file_name().to_string_lossy(),
                comm.trim()
            ));
        }
    }
    assert!(
        holders.is_empty(),
        "these servers hold {} open: {holders:?}",
        lock.display()
    );
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
            // This host has hand-made items only (the template test covers discovery).
            "--zabbix-discovery=false",
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

/// Calls the Zabbix API (JSON-RPC over HTTP) with curl.
fn api(
    port: u16,
    token: Option<&str>,
    method: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    let mut request =
        serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    if let Some(token) = token {
        request["auth"] = token.into();
    }
    let out = Command::new("curl")
        .args([
            "-sS",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json-rpc",
            "--data-binary",
            "@-",
        ])
        .arg(format!("http://127.0.0.1:{port}/api_jsonrpc.php"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(request.to_string().as_bytes())?;
            child.wait_with_output()
        })
        .expect("curl");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{method}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(answer["error"].is_null(), "{method}: {answer}");
    answer["result"].clone()
}

/// The shipped template (deploy/zabbix) imports into a real Zabbix 6.0 through its API; linked
/// to the shipper's host, it discovers each stream from the shipper's values, including a live
/// stream nobody watches (from --streams-url), which gets 0 viewers and its triggers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_imports_and_discovers_every_live_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let t0 = std::time::Instant::now();
    let zabbix = ZabbixServer::start(&dir.path().join("zabbix"));
    eprintln!("zabbix server up after {:?}", t0.elapsed());
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = Command::new(script())
        .args(["frontend", &zabbix.port.to_string()])
        .arg(&zabbix.dir)
        .arg(api_port.to_string())
        .output()
        .expect("run scripts/zabbix-test-server.sh frontend");
    assert!(
        out.status.success(),
        "cannot start the Zabbix frontend (zabbix-frontend-php, php-pgsql; scripts/test.sh \
         installs them): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("its API up after {:?}", t0.elapsed());
    let token = api(
        api_port,
        None,
        "user.login",
        serde_json::json!({"username": "Admin", "password": "zabbix"}),
    );
    let token = token.as_str().expect("a session token");
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/zabbix/livecast-template.yaml"),
    )
    .expect("the template");
    let create = serde_json::json!({"createMissing": true, "updateExisting": true});
    let imported = api(
        api_port,
        Some(token),
        "configuration.import",
        serde_json::json!({
            "format": "yaml",
            "source": template,
            "rules": {
                "groups": {"createMissing": true},
                "templates": create, "discoveryRules": create, "items": create,
                "triggers": create, "graphs": create,
            },
        }),
    );
    assert_eq!(imported, true);
    eprintln!("template imported after {:?}", t0.elapsed());
    let templates = api(
        api_port,
        Some(token),
        "template.get",
        serde_json::json!({"filter": {"host": ["Livecast by trapper"]}, "output": ["templateid"]}),
    );
    let templateid = templates[0]["templateid"]
        .as_str()
        .expect("the imported template")
        .to_string();
    let groups = api(
        api_port,
        Some(token),
        "hostgroup.create",
        serde_json::json!({"name": "livecast"}),
    );
    let groupid = groups["groupids"][0].as_str().expect("group").to_string();
    api(
        api_port,
        Some(token),
        "host.create",
        serde_json::json!({
            "host": "livecast-tpl",
            "groups": [{"groupid": groupid}],
            "templates": [{"templateid": templateid}],
        }),
    );

    // The stream list: "cam" is watched, "idle" is live with nobody watching.
    let list = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let list_addr = list.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/api/streams",
        axum::routing::get(|| async { r#"{"streams":[{"name":"cam"},{"name":"idle"}]}"# }),
    );
    tokio::spawn(async move { axum::serve(list, app).await });
    let shipper = start(
        dir.path(),
        None,
        &[
            &format!("--zabbix-server=127.0.0.1:{}", zabbix.port),
            "--zabbix-host=livecast-tpl",
            "--zabbix-interval-secs=1",
            &format!("--streams-url=http://{list_addr}/api/streams"),
        ],
    )
    .await;
    eprintln!("host linked and shipper started after {:?}", t0.elapsed());
    let value_of = |key: &str| {
        zabbix.query(&format!(
            "select hu.value from history_uint hu join items i on i.itemid = hu.itemid \
             join hosts h on h.hostid = i.hostid \
             where h.host = 'livecast-tpl' and i.key_ = '{key}' order by hu.clock desc limit 1"
        ))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        // Viewers keep coming while we wait, so the count stays 3.
        let text: String = (0..3)
            .map(|i| log_line(i, ["a", "b", "c"][i % 3]))
            .collect();
        append(&dir.path().join("logs/web-1.log"), &text);
        let (cam, idle) = (
            value_of("livecast.viewers[cam]"),
            value_of("livecast.viewers[idle]"),
        );
        if cam == "3" && idle == "0" {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let log = std::fs::read_to_string(zabbix.dir.join("server.log")).unwrap_or_default();
            panic!(
                "discovered items got no values (cam {cam:?}, idle {idle:?}); items: {}\nserver log:\n{}",
                zabbix.query("select key_, flags from items i join hosts h on h.hostid = i.hostid where h.host = 'livecast-tpl'"),
                log.lines().filter(|l| !l.contains(" started [")).collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("discovered items got their values after {:?}", t0.elapsed());
    // The trigger prototypes became triggers for each stream.
    let triggers = zabbix.query(
        "select count(distinct t.triggerid) from triggers t join functions f on f.triggerid = t.triggerid \
         join items i on i.itemid = f.itemid join hosts h on h.hostid = i.hostid \
         where h.host = 'livecast-tpl' and t.flags = 4",
    );
    assert_eq!(triggers, "4", "two triggers for each of two streams");
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");
}
