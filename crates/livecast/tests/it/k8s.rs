//! The Kubernetes base (`deploy/k8s/base/`), checked without a cluster: every container is
//! hardened as SECURITY.md says and only the traffic ports face users (deploy.rs checks that
//! every command line and variable is one the real service accepts).

use serde_norway::Value;

use crate::support::workspace_dir;

/// Every document of every file the kustomization lists.
fn documents() -> Vec<Value> {
    let dir = workspace_dir().join("deploy/k8s/base");
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let kustomization: Value = serde_norway::from_str(&read("kustomization.yaml")).expect("yaml");
    let mut docs = Vec::new();
    for file in kustomization["resources"].as_sequence().expect("resources") {
        let text = read(file.as_str().expect("a file name"));
        for doc in serde_norway::Deserializer::from_str(&text) {
            docs.push(<Value as serde::Deserialize>::deserialize(doc).expect("a yaml document"));
        }
    }
    docs
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn every_container_is_hardened_and_mounts_only_claims_the_base_makes() {
    let docs = documents();
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    let names: Vec<&str> = deployments
        .iter()
        .map(|d| d["metadata"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["ingest", "web", "proxy", "logship"]);
    for deployment in deployments {
        let name = deployment["metadata"]["name"].as_str().expect("name");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["securityContext"]["runAsUser"], 10001, "{name}");
        for c in pod["containers"].as_sequence().expect("containers") {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
            assert!(sc["capabilities"]["add"].is_null(), "{name}");
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
            // Each claim mounted is one the base makes.
            for mount in c["volumeMounts"].as_sequence().into_iter().flatten() {
                let volume = pod["volumes"]
                    .as_sequence()
                    .expect("volumes")
                    .iter()
                    .find(|v| v["name"] == mount["name"])
                    .expect("the mounted volume");
                let claim = volume["persistentVolumeClaim"]["claimName"]
                    .as_str()
                    .expect("claim");
                assert!(
                    docs.iter()
                        .any(|d| d["kind"] == "PersistentVolumeClaim"
                            && d["metadata"]["name"] == claim),
                    "{name}: claim {claim}"
                );
            }
        }
    }
    // The front-ends only read the HLS volume.
    let web = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "web")
        .expect("web");
    let mounts = web["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_sequence()
        .expect("mounts");
    let hls = mounts
        .iter()
        .find(|m| m["mountPath"] == "/data/hls")
        .expect("hls");
    assert_eq!(hls["readOnly"], true);
}

#[test]
fn only_the_traffic_ports_face_users_and_admin_ports_stay_inside() {
    let docs = documents();
    let services: Vec<(&str, &Value)> = docs
        .iter()
        .filter(|d| d["kind"] == "Service")
        .map(|d| (d["metadata"]["name"].as_str().expect("name"), d))
        .collect();
    let ports = |s: &Value| -> Vec<u64> {
        s["spec"]["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .map(|p| p["port"].as_u64().expect("port"))
            .collect()
    };
    for (name, service) in &services {
        let kind = service["spec"]["type"].as_str().unwrap_or("ClusterIP");
        match *name {
            "proxy" => assert_eq!(ports(service), [8080]),
            "ingest" => assert_eq!(ports(service), [1935]),
            "web" => {
                assert_eq!(ports(service), [8081]);
                assert_eq!(
                    service["spec"]["clusterIP"], "None",
                    "headless for discovery"
                );
            }
            "logship" => {
                assert_eq!(ports(service), [9104]);
                assert_eq!(
                    kind, "ClusterIP",
                    "the shipper's admin port stays in the cluster"
                );
            }
            other => panic!("unexpected Service {other}"),
        }
        for admin in [9101, 9102, 9103] {
            assert!(!ports(service).contains(&admin), "{name} exposes {admin}");
        }
    }
    assert_eq!(services.len(), 4);
}
