//! The Kubernetes Indexed Job (`deploy/k8s/loadtest/`) run as Kubernetes would run it, minus
//! the cluster: its containers' command lines and environments, as the manifests give them,
//! become processes of the real binary, one per completion index, against the in-process
//! stack; then the merge Job's command combines their shards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_norway::Value;

fn manifest(name: &str) -> Value {
    let path = super::workspace_dir()
        .join("deploy/k8s/loadtest")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().expect("a list").iter().map(text).collect()
}

/// A pod's only container, after checking the pod template's basics.
fn container(job: &Value) -> &Value {
    assert_eq!(job["kind"], "Job");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["restartPolicy"], "Never",
        "a finished audience is not rerun"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let containers = pod["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    c
}

/// The one volume mount's path and its claim, which must be the claim the kustomization makes.
fn mount(job: &Value, claim: &str) -> String {
    let c = container(job);
    let mounts = c["volumeMounts"].as_sequence().expect("volumeMounts");
    assert_eq!(mounts.len(), 1);
    let volumes = job["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .expect("volumes");
    let volume = volumes
        .iter()
        .find(|v| v["name"] == mounts[0]["name"])
        .expect("the mounted volume");
    assert_eq!(text(&volume["persistentVolumeClaim"]["claimName"]), claim);
    text(&mounts[0]["mountPath"])
}

/// `$(NAME)` references expanded as the kubelet does, from the variables defined before.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = value.to_string();
    for (name, v) in env {
        out = out.replace(&format!("$({name})"), v);
    }
    assert!(
        !out.contains("$("),
        "{value:?} refers to an undefined variable"
    );
    out
}

/// A command line with the volume's mount path moved to `root` and the binary to the one built.
fn local(args: &[String], mount: &str, root: &Path) -> Vec<String> {
    args.iter()
        .map(|a| {
            a.replace(mount, &root.display().to_string()).replace(
                "livecast-loadtest ",
                &format!("{} ", env!("CARGO_BIN_EXE_livecast-loadtest")),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_indexed_job_runs_one_audience_in_shards() {
    let kustomization = manifest("kustomization.yaml");
    let job = manifest("job.yaml");
    let merge = manifest("merge.yaml");
    let claim = manifest("claim.yaml");
    let resources = strings(&kustomization["resources"]);
    assert_eq!(resources, ["claim.yaml", "job.yaml"]);
    assert_eq!(claim["kind"], "PersistentVolumeClaim");
    assert_eq!(
        strings(&claim["spec"]["accessModes"]),
        ["ReadWriteMany"],
        "copies on different nodes share it"
    );
    let claim_name = text(&claim["metadata"]["name"]);

    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let copies = spec["completions"].as_u64().expect("completions");
    assert_eq!(
        spec["parallelism"].as_u64(),
        Some(copies),
        "all copies run at once, as one audience"
    );
    let c = container(&job);
    let generated = &kustomization["configMapGenerator"][0];
    assert_eq!(
        c["envFrom"][0]["configMapRef"]["name"], generated["name"],
        "the container reads the generated ConfigMap"
    );
    let mut config = BTreeMap::new();
    for literal in strings(&generated["literals"]) {
        let (k, v) = literal.split_once('=').expect("KEY=value");
        config.insert(k.to_string(), v.to_string());
    }
    let job_mount = mount(&job, &claim_name);
    assert_eq!(mount(&merge, &claim_name), job_mount);
    let shard = c["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|v| v["name"] == "LIVECAST_SHARD")
        .map(|v| text(&v["value"]))
        .expect("LIVECAST_SHARD");
    assert_eq!(
        shard,
        format!("$(JOB_COMPLETION_INDEX)/{copies}"),
        "shard i of as many as there are completions"
    );
    let command = strings(&c["command"]);
    assert_eq!(command[..2], ["livecast-loadtest", "run"]);

    let stack = super::start(&[]).await;
    let mut publisher = super::publish(stack.dir.path(), stack.rtmp, "k8s");
    let url = format!("http://{}/hls/k8s/index.m3u8", stack.proxy);
    super::wait_for_playlist(&url).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // What a cluster would set in an overlay: where the stream is, a small, short audience.
    config.insert("LIVECAST_URL".into(), url);
    config.insert("LIVECAST_VIEWERS".into(), "6".into());
    config.insert("LIVECAST_DURATION".into(), "8s".into());
    config.insert("LIVECAST_RAMP".into(), "1s".into());
    config.insert(
        "LIVECAST_VIEWERS_URL".into(),
        format!("http://{}/metrics", stack.logship_admin),
    );
    let root = stack.dir.path().join("claim");
    std::fs::create_dir_all(&root).expect("claim dir");

    let mut copies_running = Vec::new();
    for index in 0..copies {
        let mut env = config.clone();
        for var in c["env"].as_sequence().expect("env") {
            let name = text(&var["name"]);
            let value = if var["valueFrom"]["fieldRef"]["fieldPath"]
                == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
            {
                index.to_string()
            } else {
                expand(&text(&var["value"]), &env)
            };
            env.insert(name, value);
        }
        let argv = local(&command, &job_mount, &root);
        copies_running.push(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_livecast-loadtest"))
                .args(&argv[1..])
                .env_clear()
                .envs(&env)
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("a copy"),
        );
    }
    for (index, mut copy) in copies_running.into_iter().enumerate() {
        let status = tokio::time::timeout(Duration::from_secs(60), copy.wait())
            .await
            .expect("a copy ends by itself")
            .expect("wait");
        assert!(
            status.success(),
            "copy {index} missed the job's thresholds: {status}"
        );
    }
    let merge_command = local(&strings(&container(&merge)["command"]), &job_mount, &root);
    let merged = std::process::Command::new(&merge_command[0])
        .args(&merge_command[1..])
        .output()
        .expect("run the merge command");
    let _ = publisher.kill().await;
    stack.shutdown.cancel();
    let _ = stack.task.await;
    assert!(
        merged.status.success(),
        "merge: {}",
        String::from_utf8_lossy(&merged.stderr)
    );
    let shards: Vec<PathBuf> = std::fs::read_dir(root.join("run"))
        .expect("run dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(
        shards.len() as u64,
        copies,
        "one shard per copy: {shards:?}"
    );
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("merged/summary.json")).expect("merged summary"),
    )
    .expect("json");
    assert_eq!(summary["viewers"], 6, "the copies were one audience of 6");
    assert_eq!(summary["never_started"], 0);
    assert!(root.join("merged/report.html").exists());
}
