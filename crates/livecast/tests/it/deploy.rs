//! Every deployment file against the binaries it runs: each `livecast-*` command line and each
//! `LIVECAST_*` variable a file sets (compose and Swarm, Kubernetes, the AWS user data and the
//! Ansible templates) is one the binary's own flag parser accepts, with the value given where
//! the file gives one; every health or readiness probe asks the service's admin port for a
//! path it serves; and every grace period covers the service's shutdown delay and drain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser};
use serde_norway::Value;

use crate::support::workspace_dir;

/// What a deployment file runs: a command line and the environment it sets (`None` for a
/// value the file does not fix: a secret, a ConfigMap key, a template placeholder).
#[derive(Debug)]
pub struct Launch {
    /// Where it was found, for messages.
    pub origin: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, Option<String>)>,
}

/// What the parsed configuration says about stopping and probing the service.
#[derive(Debug)]
pub struct Parsed {
    /// The admin port (/metrics, /livez, /readyz).
    pub admin_port: Option<u16>,
    /// How long the service may take to stop after SIGTERM (shutdown delay plus drain).
    pub stop: Duration,
}

/// The binary's clap command for a command line (the subcommand's for `livecast-loadtest`).
fn clap_command(argv: &[String]) -> Result<clap::Command, String> {
    Ok(match argv.first().map(String::as_str) {
        Some("livecast-ingest") => livecast_ingest::Config::command(),
        Some("livecast-web") => livecast_web::Config::command(),
        Some("livecast-proxy") => livecast_proxy::Config::command(),
        Some("livecast-logship") => livecast_logship::Config::command(),
        Some("livecast-loadtest") => {
            let root = livecast_loadtest::Cli::command();
            let sub = argv
                .get(1)
                .ok_or("livecast-loadtest without a subcommand")?;
            let mut command = root
                .find_subcommand(sub)
                .ok_or_else(|| format!("livecast-loadtest has no subcommand {sub:?}"))?
                .clone();
            // The flattened log flags belong to the root command.
            for arg in root.get_arguments() {
                command = command.arg(arg.clone());
            }
            command
        }
        other => return Err(format!("not a livecast service: {other:?}")),
    })
}

fn is_root_flag(long: &str) -> bool {
    livecast_loadtest::Cli::command()
        .get_arguments()
        .any(|a| a.get_long() == Some(long))
}

/// `sh -c "exec livecast-… args"` as the command line it runs.
fn unwrap_shell(argv: Vec<String>) -> Vec<String> {
    match argv.as_slice() {
        [sh, c, script] if sh == "sh" && c == "-c" => script
            .split_whitespace()
            .skip_while(|w| *w == "exec")
            .map(String::from)
            .collect(),
        _ => argv,
    }
}

/// Parses a launch as its binary would (variables given as flags, so that their values are
/// checked too) and validates the configuration.
pub fn accept(launch: &Launch) -> Result<Parsed, String> {
    let command = clap_command(&launch.argv)?;
    let mut argv = launch.argv.clone();
    let mut positional = Vec::new();
    for (name, value) in &launch.env {
        if !name.starts_with("LIVECAST_") {
            continue;
        }
        let arg = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
            .ok_or_else(|| format!("{name} is not a variable of {}", launch.argv[0]))?;
        // An empty variable counts as unset (livecast_telemetry::parse_flags).
        let Some(value) = value.as_ref().filter(|v| !v.is_empty()) else {
            continue;
        };
        match arg.get_long() {
            // The load tester's own flags go before its subcommand.
            Some(long) if launch.argv[0] == "livecast-loadtest" && is_root_flag(long) => {
                argv.insert(1, format!("--{long}={value}"))
            }
            Some(long) => argv.push(format!("--{long}={value}")),
            None => positional.push(value.clone()),
        }
    }
    argv.extend(positional);
    let err = |e: &dyn std::fmt::Display| format!("{argv:?}: {e}");
    Ok(match launch.argv[0].as_str() {
        "livecast-ingest" => {
            let c = livecast_ingest::Config::try_parse_from(&argv).map_err(|e| err(&e))?;
            c.validate().map_err(|e| err(&e))?;
            Parsed {
                admin_port: Some(c.admin_listen.port()),
                stop: Duration::ZERO,
            }
        }
        "livecast-web" => {
            let c = livecast_web::Config::try_parse_from(&argv).map_err(|e| err(&e))?;
            c.validate().map_err(|e| err(&e))?;
            Parsed {
                admin_port: Some(c.admin_listen.port()),
                stop: Duration::from_millis(c.shutdown_delay_ms)
                    + Duration::from_secs(c.drain_secs),
            }
        }
        "livecast-proxy" => {
            let c = livecast_proxy::Config::try_parse_from(&argv).map_err(|e| err(&e))?;
            c.validate().map_err(|e| err(&e))?;
            Parsed {
                admin_port: Some(c.admin_listen.port()),
                stop: Duration::ZERO,
            }
        }
        "livecast-logship" => {
            let c = livecast_logship::Config::try_parse_from(&argv).map_err(|e| err(&e))?;
            c.validate().map_err(|e| err(&e))?;
            Parsed {
                admin_port: Some(c.admin_listen.port()),
                stop: Duration::from_secs(c.drain_secs),
            }
        }
        _ => {
            livecast_loadtest::Cli::try_parse_from(&argv).map_err(|e| err(&e))?;
            Parsed {
                admin_port: None,
                stop: Duration::ZERO,
            }
        }
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document of a file, merge keys (`<<: *anchor`) applied.
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut v = <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            v.apply_merge().expect("merge keys");
            v
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other)
                        .expect("scalar")
                        .trim()
                        .into(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A compose value with its `${VAR:-default}` interpolation done the way an empty `.env`
/// does it: the default, or nothing.
fn interpolate(value: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${") + start;
        let inner = &rest[start + 2..end];
        match inner.split_once(":-") {
            Some((_, default)) => out.push_str(default),
            None => return None,
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// A compose duration in seconds (`stop_grace_period` is 10 s where a service does not say).
fn compose_duration(v: &Value) -> Duration {
    let s = v.as_str().unwrap_or("10s");
    let secs: f64 = s
        .strip_suffix('s')
        .expect("seconds")
        .parse()
        .expect("number");
    Duration::from_secs_f64(secs)
}

/// The compose files: the stack (also the Swarm stack) and the files beside it.
fn compose_files() -> Vec<PathBuf> {
    let root = workspace_dir();
    let mut files = vec![root.join("docker-compose.yml")];
    let mut extra: Vec<PathBuf> = std::fs::read_dir(root.join("deploy/compose"))
        .expect("deploy/compose")
        .map(|e| e.expect("entry").path())
        .collect();
    extra.sort();
    files.extend(extra);
    files
}

#[test]
fn compose_and_swarm_services_run_what_the_binaries_accept() {
    let mut checked = BTreeMap::new();
    for path in compose_files() {
        let doc = yaml_documents(&path).remove(0);
        for (name, service) in doc["services"].as_mapping().expect("services") {
            let name = name.as_str().expect("name");
            let argv = strings(&service["command"]);
            if argv.first().is_none_or(|b| !b.starts_with("livecast-")) {
                continue;
            }
            let env = service["environment"]
                .as_mapping()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let v = match v {
                                Value::String(s) => interpolate(s),
                                Value::Null => None,
                                other => {
                                    Some(serde_norway::to_string(other).unwrap().trim().into())
                                }
                            };
                            (k.as_str().expect("key").to_string(), v)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let launch = Launch {
                origin: format!("{}: {name}", path.display()),
                argv,
                env,
            };
            let parsed = accept(&launch).unwrap_or_else(|e| panic!("{}: {e}", launch.origin));
            let grace = compose_duration(&service["stop_grace_period"]);
            assert!(
                grace > parsed.stop,
                "{}: stop_grace_period {grace:?} does not cover the service's {:?}",
                launch.origin,
                parsed.stop
            );
            if let Some(port) = parsed.admin_port {
                let test = strings(&service["healthcheck"]["test"]);
                assert_eq!(
                    test,
                    [
                        "CMD",
                        "livecast",
                        "probe",
                        &format!("http://127.0.0.1:{port}/readyz")
                    ],
                    "{}",
                    launch.origin
                );
            }
            checked.insert(name.to_string(), launch.env.len());
        }
    }
    let names: Vec<&str> = checked.keys().map(String::as_str).collect();
    assert_eq!(names, ["ingest", "loadtest", "logship", "proxy", "web"]);
}

/// A Kubernetes container as a launch: its command (or, in an overlay's patch that does not
/// repeat it, the binary its name stands for) and its `env` and literal ConfigMap entries.
fn k8s_launches(docs: &[Value], origin: &str) -> Vec<(Launch, Value, Value)> {
    let mut out = Vec::new();
    for doc in docs {
        let pod = match doc["kind"].as_str() {
            Some("Deployment") | Some("Job") => &doc["spec"]["template"]["spec"],
            _ => continue,
        };
        for c in pod["containers"].as_sequence().into_iter().flatten() {
            let name = c["name"].as_str().expect("container name");
            let mut argv = unwrap_shell(strings(&c["command"]));
            if argv.is_empty() {
                argv = match name {
                    "loadtest" => vec!["livecast-loadtest".into(), "run".into()],
                    other => vec![format!("livecast-{other}")],
                };
            }
            let env = c["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|e| {
                    let name = e["name"].as_str().expect("env name").to_string();
                    (name, e["value"].as_str().map(String::from))
                })
                .collect();
            out.push((
                Launch {
                    origin: format!(
                        "{origin}: {} {name}",
                        doc["metadata"]["name"].as_str().unwrap_or("?")
                    ),
                    argv,
                    env,
                },
                c.clone(),
                pod.clone(),
            ));
        }
    }
    out
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn kubernetes_containers_run_what_the_binaries_accept_and_probe_what_they_serve() {
    let root = workspace_dir();
    let mut containers = 0;
    for path in yaml_files(&root.join("deploy/k8s")) {
        let docs = yaml_documents(&path);
        let origin = path.strip_prefix(&root).unwrap().display().to_string();
        for doc in &docs {
            // ConfigMaps made by kustomize from literals: the load test's settings.
            for generator in doc["configMapGenerator"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                let env: Vec<(String, Option<String>)> = strings(&generator["literals"])
                    .iter()
                    .map(|l| {
                        let (k, v) = l.split_once('=').expect("KEY=value");
                        (k.to_string(), Some(v.to_string()))
                    })
                    .collect();
                if generator["name"] == "livecast-loadtest" {
                    let launch = Launch {
                        origin: format!("{origin}: configMapGenerator"),
                        argv: vec![
                            "livecast-loadtest".into(),
                            "run".into(),
                            "--out=/tmp/x".into(),
                        ],
                        env,
                    };
                    accept(&launch).unwrap_or_else(|e| panic!("{}: {e}", launch.origin));
                }
            }
        }
        for (mut launch, container, pod) in k8s_launches(&docs, &origin) {
            containers += 1;
            let partial = container["command"].is_null();
            if partial || launch.argv[0] == "livecast-loadtest" {
                // A patch or a Job whose required settings come from elsewhere: names only.
                let command = clap_command(&launch.argv).unwrap();
                for (name, _) in &launch.env {
                    assert!(
                        !name.starts_with("LIVECAST_")
                            || command
                                .get_arguments()
                                .any(|a| a.get_env().is_some_and(|e| e == name.as_str())),
                        "{}: {name} is not a variable of {}",
                        launch.origin,
                        launch.argv[0]
                    );
                }
                continue;
            }
            launch.env.retain(|(k, _)| k.starts_with("LIVECAST_"));
            let parsed = accept(&launch).unwrap_or_else(|e| panic!("{}: {e}", launch.origin));
            let port_of = |probe: &Value| -> u64 {
                let port = &probe["httpGet"]["port"];
                port.as_u64().unwrap_or_else(|| {
                    container["ports"]
                        .as_sequence()
                        .expect("ports")
                        .iter()
                        .find(|p| p["name"] == *port)
                        .and_then(|p| p["containerPort"].as_u64())
                        .expect("a named port")
                })
            };
            let admin = u64::from(parsed.admin_port.expect("a service"));
            for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/livez")] {
                let probe = &container[probe];
                assert_eq!(probe["httpGet"]["path"], path, "{}", launch.origin);
                assert_eq!(
                    port_of(probe),
                    admin,
                    "{}: {path} on the admin port",
                    launch.origin
                );
            }
            let pre_stop = strings(&container["lifecycle"]["preStop"]["exec"]["command"]);
            let pre_stop = match pre_stop.as_slice() {
                [] => Duration::ZERO,
                [sleep, secs] if sleep == "sleep" => Duration::from_secs(secs.parse().unwrap()),
                other => panic!("{}: preStop {other:?}", launch.origin),
            };
            let grace =
                Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
            assert!(
                grace > pre_stop + parsed.stop,
                "{}: terminationGracePeriodSeconds {grace:?} does not cover preStop {pre_stop:?} + {:?}",
                launch.origin,
                parsed.stop
            );
        }
    }
    assert!(containers >= 8, "{containers} containers found");
}

#[test]
fn a_variable_no_binary_reads_is_refused() {
    // The check above can fail: a misspelt variable and a bad value are both caught.
    let launch = |k: &str, v: &str| Launch {
        origin: "test".into(),
        argv: vec!["livecast-web".into()],
        env: vec![(k.into(), Some(v.into()))],
    };
    assert!(accept(&launch("LIVECAST_DRAIN_SECS", "10")).is_ok());
    let e = accept(&launch("LIVECAST_DRAIN_SECONDS", "10")).unwrap_err();
    assert!(e.contains("not a variable of livecast-web"), "{e}");
    assert!(accept(&launch("LIVECAST_DRAIN_SECS", "ten")).is_err());
    assert!(
        accept(&launch("LIVECAST_DRAIN_SECS", "")).is_ok(),
        "empty counts as unset"
    );
}

/// The settings the Ansible template renders for `role`: the lines outside any
/// `{% if livecast_role == … %}` block and those of the role's block (a value with a Jinja
/// placeholder is left open).
fn ansible_env(template: &str, role: &str) -> Vec<(String, Option<String>)> {
    let mut current: Option<String> = None;
    let mut env = Vec::new();
    for line in template.lines() {
        let line = line.trim();
        if let Some(rest) = line
            .strip_prefix("{% if livecast_role == '")
            .or_else(|| line.strip_prefix("{% elif livecast_role == '"))
        {
            current = Some(rest.split('\'').next().expect("a role").to_string());
            continue;
        }
        if line.starts_with("{% endif") {
            current = None;
            continue;
        }
        if line.starts_with('#') || line.starts_with("{%") || line.is_empty() {
            continue;
        }
        if current.as_deref().is_some_and(|r| r != role) {
            continue;
        }
        let (name, value) = line.split_once('=').expect("NAME=value");
        let value = (!value.contains("{{")).then(|| value.to_string());
        env.push((name.to_string(), value));
    }
    env
}

#[test]
fn the_aws_instances_run_what_the_binaries_accept() {
    let dir = workspace_dir().join("deploy/aws/ansible");
    let template = read(&dir.join("templates/livecast.env.j2"));
    let unit = read(&dir.join("templates/livecast.service.j2"));
    let defaults = yaml_documents(&dir.join("group_vars/all.yml")).remove(0);
    let stop_timeout = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .map(|s| Duration::from_secs(s.parse().expect("seconds")))
        .expect("TimeoutStopSec");
    assert!(
        unit.contains("ExecStart={{ livecast_bin_dir }}/livecast-{{ livecast_role }}\n"),
        "the unit runs the role's binary with its settings from the environment file"
    );
    for role in ["web", "ingest", "logship"] {
        let launch = Launch {
            origin: format!("deploy/aws/ansible/templates/livecast.env.j2 ({role})"),
            argv: vec![format!("livecast-{role}")],
            env: ansible_env(&template, role),
        };
        assert!(
            launch.env.iter().any(|(k, _)| k.ends_with("_DIR")),
            "{}: no settings found",
            launch.origin
        );
        let parsed = accept(&launch).unwrap_or_else(|e| panic!("{}: {e}", launch.origin));
        // The playbooks wait on /readyz at the port group_vars names: the service's own.
        assert_eq!(
            defaults["livecast_admin_ports"][role].as_u64(),
            parsed.admin_port.map(u64::from),
            "{}: admin port",
            launch.origin
        );
        assert!(
            stop_timeout > parsed.stop,
            "{}: TimeoutStopSec {stop_timeout:?} does not cover {:?}",
            launch.origin,
            parsed.stop
        );
    }
}
