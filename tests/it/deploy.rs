//! The deployment examples (`deploy/`, the `Containerfile`) hold together with the broker they
//! deploy: the ConfigMap's configuration loads (every `$env` it names comes from the
//! Deployment, every secret key the Deployment reads is in the example Secret), the ports,
//! probes, mount path, arguments and user agree across the Deployment, the Service, the
//! NetworkPolicy, the configuration and the image. No cluster is needed to check what a typo
//! in one of them would break at rollout.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde_yaml_ng::Value;
use token_broker::config::{EnvLookup, load_str};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn repo(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn manifest(path: &str) -> Value {
    serde_yaml_ng::from_str(&repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn str_of<'v>(v: &'v Value, what: &str) -> &'v str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
}

/// A list of strings (`args`, `resources`).
fn strs<'v>(v: &'v Value, what: &str) -> Vec<&'v str> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what} is not a list: {v:?}"))
        .iter()
        .map(|x| str_of(x, what))
        .collect()
}

struct MapEnv(HashMap<String, String>);

impl EnvLookup for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

#[test]
fn the_kubernetes_example_and_the_image_agree_with_the_broker() {
    let cm = manifest("deploy/configmap.yaml");
    let secret = manifest("deploy/secret.example.yaml");
    let dep = manifest("deploy/deployment.yaml");
    let svc = manifest("deploy/service.yaml");
    let np = manifest("deploy/networkpolicy.yaml");
    let kustomization = manifest("deploy/kustomization.yaml");

    // The container's environment comes from the Secret, key by key.
    let pod = &dep["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let secret_name = str_of(&secret["metadata"]["name"], "Secret name");
    let mut env = HashMap::new();
    for e in container["env"].as_sequence().expect("env list") {
        let name = str_of(&e["name"], "env name");
        let r = &e["valueFrom"]["secretKeyRef"];
        assert_eq!(
            str_of(&r["name"], "secretKeyRef.name"),
            secret_name,
            "{name}"
        );
        let key = str_of(&r["key"], "secretKeyRef.key");
        let value = str_of(&secret["stringData"][key], key);
        env.insert(name.to_owned(), value.to_owned());
    }

    // The configuration loads with exactly that environment (an unknown `$env` fails it).
    let mount = container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| {
            let vol = str_of(&m["name"], "mount name");
            pod["volumes"]
                .as_sequence()
                .expect("volumes")
                .iter()
                .any(|v| {
                    v["name"].as_str() == Some(vol)
                        && v["configMap"]["name"] == cm["metadata"]["name"]
                })
        })
        .expect("the ConfigMap is mounted");
    let dir = str_of(&mount["mountPath"], "mountPath");
    let (file, text) = cm["data"]
        .as_mapping()
        .expect("ConfigMap data")
        .iter()
        .next()
        .map(|(k, v)| (str_of(k, "data key"), str_of(v, "config")))
        .expect("one configuration file");
    let cfg = load_str(text, &MapEnv(env), Path::new(dir))
        .unwrap_or_else(|e| panic!("deploy/configmap.yaml does not load:\n{e}"));

    // The Deployment starts `serve` on that file, as the image does by default.
    let config_path = format!("{dir}/{file}");
    let args = strs(&container["args"], "args");
    assert_eq!(args, ["serve", "--config", config_path.as_str()]);
    let containerfile = repo("Containerfile");
    let line = |word: &str| -> &str {
        containerfile
            .lines()
            .filter_map(|l| l.strip_prefix(word))
            .next_back()
            .unwrap_or_else(|| panic!("Containerfile has no {word}"))
            .trim()
    };
    let cmd: Vec<String> = serde_json::from_str(line("CMD ")).expect("CMD in exec form");
    assert_eq!(cmd, args);
    assert_eq!(
        line("USER ").parse::<i64>().ok(),
        pod["securityContext"]["runAsUser"].as_i64(),
        "the image's user is the pod's"
    );

    // Ports: the listeners of the configuration, the container's named ports, the image's
    // EXPOSE, the Service, the NetworkPolicy and the scrape annotation.
    let port = |name: &str| -> u16 {
        container["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    let (http, admin) = (port("http"), port("admin"));
    assert_eq!(cfg.server.listen.port(), http);
    assert_eq!(cfg.admin.listen.map(|a| a.port()), Some(admin));
    let exposed: BTreeSet<u16> = line("EXPOSE ")
        .split_whitespace()
        .map(|p| p.parse().expect("EXPOSE port"))
        .collect();
    assert_eq!(exposed, BTreeSet::from([http, admin]));
    let annotations = &dep["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        str_of(&annotations["prometheus.io/port"], "scrape port"),
        admin.to_string()
    );
    assert_eq!(
        str_of(&annotations["prometheus.io/path"], "scrape path"),
        "/metrics"
    );
    // Only the public port is a Service: the admin listener stays inside the cluster.
    let svc_ports = svc["spec"]["ports"].as_sequence().expect("Service ports");
    assert_eq!(svc_ports.len(), 1);
    assert_eq!(str_of(&svc_ports[0]["targetPort"], "targetPort"), "http");
    let policy_ports: BTreeSet<u64> = np["spec"]["ingress"]
        .as_sequence()
        .expect("ingress rules")
        .iter()
        .flat_map(|r| r["ports"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(
        policy_ports,
        BTreeSet::from([u64::from(http), u64::from(admin)])
    );

    // The probes ask the admin listener for its health paths.
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(str_of(&get["path"], probe), path, "{probe}");
        assert_eq!(str_of(&get["port"], probe), "admin", "{probe}");
    }

    // kustomize applies every manifest but the examples (the Secret and Redis are made by hand).
    let listed: BTreeSet<&str> = strs(&kustomization["resources"], "resources")
        .into_iter()
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(root().join("deploy"))
        .expect("deploy/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && !n.contains(".example.") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed,
        present.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
}
